"""The common ``python -m services.<name>`` entry point."""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from services.models.store import ModelError
from services.runtime.config import ConfigError, ServiceSettings, load_settings
from services.runtime.device import DeviceError
from services.runtime.logging import configure_logging, get_logger
from services.runtime.server import ServiceApp, serve

S = TypeVar("S", bound=ServiceSettings)

EXIT_CONFIG = 2
EXIT_DEVICE = 3
EXIT_MODEL = 4


def service_main(
    name: str, settings_cls: type[S], build: Callable[[S], ServiceApp], argv: list[str] | None = None
) -> int:
    """Parses ``--config``, loads settings, builds the app and serves until SIGTERM.

    Exits non-zero with a one-line reason when the configuration, the device or a model is
    wrong, so an operator (or a container restart loop) sees why at once.
    """
    parser = argparse.ArgumentParser(prog=f"python -m services.{name}")
    parser.add_argument("--config", type=Path, help="YAML settings file (env vars override it)")
    parser.add_argument("--port", type=int, help="gRPC port (overrides config)")
    args = parser.parse_args(argv)
    try:
        settings = load_settings(settings_cls, args.config)
        if args.port is not None:
            settings.server.port = args.port
    except ConfigError as exc:
        print(f"{name}: configuration error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    configure_logging(settings.log, name)
    log = get_logger(name)
    if settings.nice:
        os.nice(settings.nice)  # inherited by every thread the service starts from here

    async def main() -> None:
        # The app is built inside the running loop: grpc.aio channels and other asyncio
        # objects an app creates bind to the loop that exists when they are made.
        app = build(settings)
        await serve(name, settings, app.register, app.warm_up, app.close, getattr(app, "on_serving", None))

    try:
        asyncio.run(main())
    except DeviceError as exc:
        log.error("device check failed", error=str(exc))
        print(f"{name}: device check failed: {exc}", file=sys.stderr)
        return EXIT_DEVICE
    except ModelError as exc:
        log.error("model unavailable", error=str(exc))
        print(f"{name}: {exc}", file=sys.stderr)
        return EXIT_MODEL
    return 0
