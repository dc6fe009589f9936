"""The launcher: starts the fleet's services as subprocesses (the containers' commands and
environment), waits until each is SERVING, restarts one, and stops them all in order.

Separate from ``catalog.py`` (what the services are) and ``ports.py`` (probing ports): this is
the process spawning and supervision.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import IO, Self

import grpc

from services.fleet.catalog import ALL, CATALOG, LOCALHOST, REPO, ServiceSpec
from services.fleet.ports import free_port, port_holder, port_in_use
from services.runtime.healthcheck import SERVING, status_sync

# Run as ``python -c <this> <launcher pid> <command...>``: the new process asks for SIGTERM
# when the launcher dies, even by SIGKILL (so a killed test run or benchmark never leaves
# model servers behind holding ports and memory), then becomes the service (the signal
# survives exec). Not a preexec_fn: Python run in a child forked from a threaded process
# (gRPC's threads) crashes it now and then (-6, -11), as fault tests restarting services saw.
_DIE_WITH_PARENT = (
    "import ctypes, os, signal, sys; "
    "ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM); "  # PR_SET_PDEATHSIG
    "os.getppid() == int(sys.argv[1]) or sys.exit(1); "  # the launcher died already
    "os.execv(sys.argv[2], sys.argv[2:])"
)


class FleetError(RuntimeError):
    """A service could not be started; the message says which and shows its log."""


def tail(path: Path | None, lines: int = 30) -> str:
    """The last lines of a log file, indented, or a note saying there is none."""
    if path is None:
        return "    (log not captured: it went to the terminal)"
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        return f"    (cannot read {path}: {exc})"
    last = text.rstrip().splitlines()[-lines:]
    return "\n".join(f"    {line}" for line in last) if last else "    (log is empty)"


@dataclass
class Child:
    """A started service process."""

    spec: ServiceSpec
    process: subprocess.Popen[bytes]
    log_path: Path | None
    started_at: float
    serving_after: float | None = None
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def target(self) -> str:
        return f"{LOCALHOST}:{self.spec.port}"


class Fleet:
    """Starts services as subprocesses, waits for SERVING, stops them all on exit."""

    def __init__(
        self,
        services: Iterable[str | ServiceSpec] = ALL,
        *,
        base_env: Mapping[str, str] | None = None,
        env: Mapping[str, Mapping[str, str]] | None = None,
        ports: Mapping[str, int] | None = None,
        metrics_ports: Mapping[str, int | None] | None = None,
        log_dir: Path | None = REPO / "reports" / "fleet",
        ready_timeout: float = 600.0,
        stop_grace: float = 15.0,
        python: str = sys.executable,
        cwd: Path = REPO,
        on_ready: Callable[[Child], None] | None = None,
    ) -> None:
        """
        ``services``: names from ``CATALOG`` or specs (tests run their own module).
        ``base_env``: the environment every child starts from (default: this process's).
        ``env``: per-service extra variables, by service name (they win over the fleet's own).
        ``ports`` / ``metrics_ports``: per-service overrides; 0 picks a free port.
        ``log_dir``: each child's stdout and stderr go to ``<log_dir>/<name>.log``; None: inherited.
        ``on_ready``: called as each service becomes SERVING (progress while models load).
        """
        specs = [CATALOG[s] if isinstance(s, str) else s for s in services]
        names = [s.name for s in specs]
        if len(set(names)) != len(names):
            raise ValueError(f"services listed twice: {names}")
        ports = ports or {}
        metrics_ports = metrics_ports or {}
        self.specs: list[ServiceSpec] = []
        for spec in specs:
            port = ports.get(spec.name, spec.port)
            metrics = metrics_ports.get(spec.name, spec.metrics_port)
            self.specs.append(
                replace(
                    spec,
                    port=port or free_port(),
                    metrics_port=free_port() if metrics == 0 else metrics,
                    extra_ports=tuple((k, v if port else free_port()) for k, v in spec.extra_ports),
                )
            )
        for spec in self.specs:
            missing = [d for d in spec.depends_on if d not in names]
            if missing:
                raise ValueError(f"{spec.name} needs {', '.join(missing)} in the same fleet")
        self.base_env = dict(os.environ if base_env is None else base_env)
        self.env = {k: dict(v) for k, v in (env or {}).items()}
        self.log_dir = log_dir
        self.ready_timeout = ready_timeout
        self.stop_grace = stop_grace
        self.python = python
        self.cwd = cwd
        self.on_ready = on_ready
        self.children: dict[str, Child] = {}

    # -- what callers use ---------------------------------------------------------------------

    def target(self, name: str) -> str:
        """host:port of a service of this fleet."""
        for spec in self.specs:
            if spec.name == name:
                return f"{LOCALHOST}:{spec.port}"
        raise KeyError(f"{name} is not part of this fleet ({', '.join(s.name for s in self.specs)})")

    def extra_port(self, name: str, setting: str) -> int:
        """Another port of a service (``extra_port("gateway", "HTTP__PORT")``)."""
        for spec in self.specs:
            if spec.name == name:
                return dict(spec.extra_ports)[setting]
        raise KeyError(f"{name} is not part of this fleet ({', '.join(s.name for s in self.specs)})")

    def web_client_url(self) -> str:
        """Where the gateway serves the browser client, on this machine (https when the gateway
        was given a certificate)."""
        spec = next((s for s in self.specs if s.name == "gateway"), None)
        if spec is None:
            raise KeyError(f"gateway is not part of this fleet ({', '.join(s.name for s in self.specs)})")
        env = self.environment(spec)
        tls = any(env.get(f"{spec.env_prefix}{section}__TLS__CERT_FILE") for section in ("HTTP", "SERVER"))
        return f"{'https' if tls else 'http'}://{LOCALHOST}:{self.extra_port('gateway', 'HTTP__PORT')}/"

    @property
    def targets(self) -> dict[str, str]:
        return {spec.name: f"{LOCALHOST}:{spec.port}" for spec in self.specs}

    def command(self, spec: ServiceSpec) -> list[str]:
        """The command line of a service: the same as its container's."""
        return [self.python, "-m", spec.module]

    def environment(self, spec: ServiceSpec) -> dict[str, str]:
        """The environment a service starts with."""
        p = spec.env_prefix
        env = dict(self.base_env)
        env[f"{p}SERVER__HOST"] = LOCALHOST
        env[f"{p}SERVER__PORT"] = str(spec.port)
        if spec.metrics_port is not None:
            env[f"{p}SERVER__METRICS_PORT"] = str(spec.metrics_port)
            env[f"{p}SERVER__METRICS_HOST"] = LOCALHOST
        for setting, port in spec.extra_ports:
            env[f"{p}{setting}"] = str(port)
        for dep in spec.depends_on:
            env[f"{p}{dep.upper()}__TARGET"] = self.target(dep)
        # Log lines reach the file as they are written, so a failure shows its last words.
        env["PYTHONUNBUFFERED"] = "1"
        env.update(self.env.get(spec.name, {}))
        return env

    def start(self) -> None:
        """Starts every service in dependency order and returns once all are SERVING.

        Services whose dependencies are SERVING start together (stt, llm and tts load their
        models in parallel). On any failure everything already started is stopped.
        """
        try:
            self._check_ports()
            pending = list(self.specs)
            while pending:
                ready = [s for s in pending if all(d in self.children for d in s.depends_on)]
                if not ready:
                    raise ValueError(f"dependency cycle among {[s.name for s in pending]}")
                for spec in ready:
                    self._spawn(spec)
                self._wait_serving([self.children[s.name] for s in ready])
                pending = [s for s in pending if s not in ready]
        except BaseException:
            self.stop()
            raise

    def stop(self) -> dict[str, int | None]:
        """SIGTERM to every child (dependents first), SIGKILL after the grace; exit codes."""
        order = list(reversed(self.children.values()))
        for child in order:
            if child.process.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + self.stop_grace
        codes: dict[str, int | None] = {}
        for child in order:
            try:
                codes[child.spec.name] = child.process.wait(timeout=max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                child.process.kill()
                codes[child.spec.name] = child.process.wait()
            if child._log is not None:
                child._log.close()
        self.children.clear()
        return codes

    def restart(self, name: str) -> Child:
        """Starts a service of this fleet again, on the same ports with the same environment,
        after it died or was killed (fault tests); stops it first if it still runs. Returns
        once it is SERVING again (its ``serving_after`` says how long that took)."""
        old = self.children.get(name)
        if old is None:
            raise KeyError(f"{name} is not running in this fleet")
        if old.process.poll() is None:
            old.process.kill()
        old.process.wait()
        if old._log is not None:
            old._log.close()
        spec = old.spec
        self._spawn(spec, append_log=True)
        self._wait_serving([self.children[name]])
        return self.children[name]

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    async def __aenter__(self) -> Self:
        import asyncio

        # Starting blocks (health polling, process waits); a thread keeps the loop responsive.
        await asyncio.to_thread(self.start)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        import asyncio

        await asyncio.to_thread(self.stop)

    # -- inside -------------------------------------------------------------------------------

    def _check_ports(self) -> None:
        ports = [(s.name, s.port) for s in self.specs]
        ports += [(s.name, port) for s in self.specs for _, port in s.extra_ports]
        ports += [(f"{s.name} metrics", s.metrics_port) for s in self.specs if s.metrics_port]
        busy = []
        for name, port in ports:
            if port and port_in_use(port):
                holder = port_holder(port)
                busy.append(f"{name} :{port}" + (f" (held by {holder})" if holder else ""))
        if busy:
            raise FleetError(
                f"ports already in use: {', '.join(busy)}. Stop what holds them, or choose other ports"
                " (python -m services.fleet --port NAME=PORT; a metrics port: <PREFIX>SERVER__METRICS_PORT)"
            )

    def _spawn(self, spec: ServiceSpec, *, append_log: bool = False) -> None:
        log: IO[bytes] | None = None
        log_path: Path | None = None
        if self.log_dir is not None:
            self.log_dir.mkdir(parents=True, exist_ok=True)
            log_path = self.log_dir / f"{spec.name}.log"
            log = log_path.open("ab" if append_log else "wb")
        command = self.command(spec)
        # The death signal follows the *thread* that forks, so only the main thread (which
        # lives as long as the launcher) sets it; async callers start from a worker thread.
        if sys.platform == "linux" and threading.current_thread() is threading.main_thread():
            command = [self.python, "-c", _DIE_WITH_PARENT, str(os.getpid()), *command]
        process = subprocess.Popen(
            command,
            cwd=self.cwd,
            env=self.environment(spec),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT if log is not None else None,
            # Own process group: a Ctrl-C in the terminal reaches only the launcher, which then
            # stops the services in order (orchestrator first) instead of all at once.
            start_new_session=True,
        )
        self.children[spec.name] = Child(spec, process, log_path, time.monotonic(), _log=log)

    def _wait_serving(self, children: Sequence[Child]) -> None:
        deadline = time.monotonic() + self.ready_timeout
        # Short reconnect backoff: the port opens a second or two after spawn, and gRPC's
        # default backoff (up to minutes) would otherwise delay noticing it.
        options = [
            ("grpc.initial_reconnect_backoff_ms", 200),
            ("grpc.min_reconnect_backoff_ms", 200),
            ("grpc.max_reconnect_backoff_ms", 1000),
        ]
        channels = {c.spec.name: grpc.insecure_channel(c.target, options=options) for c in children}
        last: dict[str, str] = {c.spec.name: "not reachable yet" for c in children}
        try:
            waiting = list(children)
            while waiting:
                for child in list(waiting):
                    name = child.spec.name
                    code = child.process.poll()
                    if code is not None:
                        raise FleetError(
                            f"{name} (python -m {child.spec.module}) exited with code {code} before it was "
                            f"SERVING; last lines of {child.log_path or 'its output'}:\n{tail(child.log_path)}"
                        )
                    try:
                        state = status_sync(channels[name], timeout=1.0)
                    except grpc.RpcError as exc:
                        last[name] = f"health check: {exc.code().name}"  # type: ignore[attr-defined]
                        continue
                    if state == SERVING:
                        child.serving_after = time.monotonic() - child.started_at
                        waiting.remove(child)
                        if self.on_ready is not None:
                            self.on_ready(child)
                    else:
                        last[name] = "NOT_SERVING (loading)"
                if not waiting:
                    break
                if time.monotonic() > deadline:
                    child = waiting[0]
                    raise FleetError(
                        f"{child.spec.name} not SERVING after {self.ready_timeout:.0f} s ({last[child.spec.name]}); "
                        f"last lines of {child.log_path or 'its output'}:\n{tail(child.log_path)}"
                    )
                time.sleep(0.2)
        finally:
            for channel in channels.values():
                channel.close()


def announce(child: Child) -> None:
    """Prints that a service is SERVING (progress while models load)."""
    print(f"  {child.spec.name:<13} {child.target:<16} SERVING after {child.serving_after or 0:5.1f} s", flush=True)
