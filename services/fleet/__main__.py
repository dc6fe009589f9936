"""``python -m services.fleet [stt llm tts orchestrator gateway]``: starts a fleet and keeps it up
until Ctrl-C (see ``services.fleet``).

Separate from ``launcher.py``: the command line only, which nothing imports.
"""

from __future__ import annotations

import argparse
import signal
import sys
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

import services.fleet as package
from services.fleet.catalog import CATALOG, DEFAULT, REPO
from services.fleet.launcher import Fleet, FleetError, announce


def _parse_ports(items: Sequence[str]) -> dict[str, int]:
    ports: dict[str, int] = {}
    for item in items:
        name, _, port = item.partition("=")
        if not port.isdigit():
            raise SystemExit(f"--port wants NAME=PORT, got {item!r}")
        ports[name] = int(port)
    return ports


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m services.fleet", description=(package.__doc__ or "").split("\n\n")[0]
    )
    parser.add_argument(
        "services", nargs="*", metavar="SERVICE", help=f"any of {', '.join(DEFAULT)} (default: all of them)"
    )
    parser.add_argument("--port", action="append", default=[], metavar="NAME=PORT", help="e.g. stt=50061")
    parser.add_argument("--log-dir", type=Path, default=REPO / "reports" / "fleet", help="one <name>.log each")
    parser.add_argument("--inherit-logs", action="store_true", help="services log to this terminal instead")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds each stage may take to be SERVING")
    args = parser.parse_args(argv)
    services: list[str] = args.services or list(DEFAULT)
    unknown = [s for s in services if s not in CATALOG]
    if unknown:
        parser.error(f"unknown services {unknown}; choose among {', '.join(DEFAULT)}")
    # The orchestrator (and the gateway) cannot run without the services they call.
    for name in ("gateway", "orchestrator"):
        if name in services:
            services = [*dict.fromkeys([*CATALOG[name].depends_on, *services])]
    services = [n for n in DEFAULT if n in services]  # dependency order
    fleet = Fleet(
        services,
        ports=_parse_ports(args.port),
        log_dir=None if args.inherit_logs else args.log_dir,
        ready_timeout=args.timeout,
        on_ready=announce,
    )

    def _terminate(signum: int, frame: FrameType | None) -> None:
        raise KeyboardInterrupt

    # SIGTERM (docker stop, a supervisor) takes the same clean path as Ctrl-C.
    signal.signal(signal.SIGTERM, _terminate)
    print(f"starting {', '.join(services)} ...", flush=True)
    try:
        with fleet:
            if "gateway" in services:
                print(f"web client: {fleet.web_client_url()} (open it in a browser)", flush=True)
            print("fleet is up; Ctrl-C stops it", flush=True)
            signal.pause()
    except FleetError as exc:
        print(f"fleet: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("stopping the fleet", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
