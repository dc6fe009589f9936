"""The fleet's description: each service's module, settings prefix, ports and dependencies
(``CATALOG``), and which services make up the fleet (``ALL``, ``DEFAULT``).

Separate from ``launcher.py``, which starts and supervises the processes: this is what the
deployment tests compare with the compose files and manifests, and it starts nothing.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent.parent
LOCALHOST = "127.0.0.1"


@dataclass(frozen=True)
class ServiceSpec:
    """How to run one service and where it listens."""

    name: str
    module: str
    """Run as ``python -m <module>``: the container's command."""
    env_prefix: str
    """Prefix of the service's settings variables (``STT_``)."""
    port: int
    """gRPC port; 0 picks a free one at start."""
    metrics_port: int | None = None
    """Prometheus port; None leaves the service's own setting, 0 picks a free one."""
    depends_on: tuple[str, ...] = ()
    """Services that must be SERVING first; each is passed as ``<PREFIX><DEP>__TARGET``."""
    extra_ports: tuple[tuple[str, int], ...] = ()
    """Other ports the service listens on, as (setting, port): ``("HTTP__PORT", 8000)`` is
    passed as ``<PREFIX>HTTP__PORT``. They follow the gRPC port: a free one when it is 0."""


# Ports and metrics ports are the services' documented defaults, so a fleet started here is
# reachable where a compose deployment would be.
CATALOG: dict[str, ServiceSpec] = {
    "stt": ServiceSpec("stt", "services.stt", "STT_", 50051, 9091),
    "llm": ServiceSpec("llm", "services.llm", "LLM_", 50052, 9092),
    "tts": ServiceSpec("tts", "services.tts", "TTS_", 50053, 9093),
    "orchestrator": ServiceSpec(
        "orchestrator", "services.orchestrator", "ORCH_", 50050, 9090, depends_on=("stt", "llm", "tts")
    ),
    # OpenAI-compatible HTTP/Realtime API on 8000, Wyoming ASR on 10300 and TTS on 10200; the
    # gRPC port serves health only.
    "gateway": ServiceSpec(
        "gateway",
        "services.gateway",
        "GATEWAY_",
        50054,
        9094,
        depends_on=("stt", "llm", "tts", "orchestrator"),
        extra_ports=(("HTTP__PORT", 8000), ("WYOMING__ASR_PORT", 10300), ("WYOMING__TTS_PORT", 10200)),
    ),
}
ALL = ("stt", "llm", "tts", "orchestrator")
"""The conversation's services (what the tests start as "the fleet")."""
DEFAULT = (*ALL, "gateway")
"""What ``make run`` and ``python -m services.fleet`` start: the conversation and the gateway
that opens it to OpenAI clients and Home Assistant."""
