"""The orchestrator's channels spread calls over every replica when told to round-robin (the
Kubernetes set-up: a headless Service resolves to every pod), and stick to one otherwise."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import grpc
import pytest
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from services.runtime import healthcheck
from services.runtime.channel import ChannelSettings, open_channel


class Counter(grpc.aio.ServerInterceptor):
    def __init__(self) -> None:
        self.calls = 0

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]],
        handler_call_details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler | None:
        self.calls += 1
        return await continuation(handler_call_details)


@pytest.fixture
async def replicas() -> AsyncIterator[list[tuple[int, Counter]]]:
    """Two servers answering health checks, each counting the calls it gets."""
    out = []
    servers = []
    for _ in range(2):
        counter = Counter()
        server = grpc.aio.server(interceptors=[counter])
        servicer = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        await servicer.set("", health_pb2.HealthCheckResponse.SERVING)
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        servers.append(server)
        out.append((port, counter))
    yield out
    for server in servers:
        await server.stop(0)


async def spread(replicas: list[tuple[int, Counter]], policy: str | None) -> list[int]:
    # The ipv4: scheme resolves to both addresses at once, as DNS does for a headless Service.
    target = "ipv4:" + ",".join(f"127.0.0.1:{port}" for port, _ in replicas)
    channel = open_channel(ChannelSettings(target=target, load_balancing=policy))
    try:
        for _ in range(20):
            assert await healthcheck.status(channel, deadline=5) == healthcheck.SERVING
    finally:
        await channel.close()
    return [counter.calls for _, counter in replicas]


async def test_round_robin_spreads_calls_over_every_replica(replicas: list[tuple[int, Counter]]) -> None:
    calls = await spread(replicas, "round_robin")
    assert sum(calls) == 20
    assert min(calls) >= 8, calls


async def test_default_policy_pins_every_call_to_one_replica(replicas: list[tuple[int, Counter]]) -> None:
    calls = await spread(replicas, None)
    assert sorted(calls) == [0, 20]
