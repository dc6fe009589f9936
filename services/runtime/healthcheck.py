"""Asks a service's gRPC health: used by the orchestrator, the tests and container probes.

``python -m services.runtime.healthcheck HOST:PORT [SERVICE]`` exits 0 when SERVING, so a
Dockerfile HEALTHCHECK or a Kubernetes exec probe needs nothing else.
"""

from __future__ import annotations

import sys
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


def _stub(channel: grpc.Channel | grpc.aio.Channel) -> Any:
    # The published stubs declare HealthStub without its methods; Any keeps callers honest
    # about what they get back through the typed wrappers below.
    return health_pb2_grpc.HealthStub(channel)


async def status(channel: grpc.aio.Channel, service: str = "", deadline: float | None = 5.0) -> int:
    """The health status (``SERVING``, ``NOT_SERVING`` ...) of ``service`` on ``channel``."""
    reply = await _stub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=deadline)
    return int(reply.status)


def status_sync(channel: grpc.Channel, service: str = "", timeout: float | None = 5.0) -> int:
    """Blocking twin of ``status`` for scripts and probes."""
    reply = _stub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=timeout)
    return int(reply.status)


def main(argv: list[str]) -> int:
    if not argv or len(argv) > 2:
        print("usage: python -m services.runtime.healthcheck HOST:PORT [SERVICE]", file=sys.stderr)
        return 2
    with grpc.insecure_channel(argv[0]) as channel:
        try:
            state = status_sync(channel, argv[1] if len(argv) > 1 else "", timeout=3)
        except grpc.RpcError as exc:
            print(f"unhealthy: {exc.code().name}", file=sys.stderr)  # type: ignore[attr-defined]
            return 1
    name = health_pb2.HealthCheckResponse.ServingStatus.Name(state)  # type: ignore[arg-type]
    print(name)
    return 0 if state == SERVING else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
