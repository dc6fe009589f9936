"""Starts Parole services as local processes, exactly as their containers would run them.

``make run``, the end-to-end tests and the benchmark all use this launcher, so what they test
is the command a container runs (``python -m services.stt`` ...) configured the same way: by
environment variables (``STT_SERVER__PORT`` ...). The orchestrator starts last and is told
where the others listen (``ORCH_STT__TARGET`` ...).

``python -m services.fleet [stt llm tts orchestrator gateway]`` starts a fleet and keeps it up
until Ctrl-C::

    with Fleet(["stt", "llm", "tts", "orchestrator"]) as fleet:
        target = fleet.target("orchestrator")

The package: ``catalog.py`` describes the services, ``ports.py`` probes ports, ``launcher.py``
starts and supervises the processes, ``__main__.py`` is the command line. Everything callers
use is importable from ``services.fleet``.
"""

from services.fleet.catalog import ALL, CATALOG, DEFAULT, LOCALHOST, REPO, ServiceSpec
from services.fleet.launcher import Child, Fleet, FleetError, announce, tail
from services.fleet.ports import free_port, port_holder, port_in_use

__all__ = [
    "ALL",
    "CATALOG",
    "DEFAULT",
    "LOCALHOST",
    "REPO",
    "Child",
    "Fleet",
    "FleetError",
    "ServiceSpec",
    "announce",
    "free_port",
    "port_holder",
    "port_in_use",
    "tail",
]
