"""The real orchestrator (its gRPC server, channels and stubs) over fake neighbours."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from parole.orchestrator.v1 import orchestrator_pb2_grpc
from services.orchestrator.app import OrchestratorApp
from services.orchestrator.config import OrchestratorSettings
from services.runtime.channel import ChannelSettings
from services.runtime.config import ServerSettings
from services.runtime.server import start_app
from tests.e2e.driver import Session, config
from tests.orchestrator.fakes import Neighbours


def local() -> ServerSettings:
    return ServerSettings(host="127.0.0.1", port=0, metrics_port=None, grace_seconds=0.5)


@dataclass
class Harness:
    fakes: Neighbours
    stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub
    app: OrchestratorApp
    channel: grpc.aio.Channel

    def session(self, **kw: object) -> Session:
        """A conversation in English unless told otherwise (the driver's default config)."""
        return Session(self.stub, config(**kw))


@pytest.fixture
async def harness() -> AsyncIterator[Harness]:
    fakes = Neighbours()
    neighbours = await start_app(fakes, local())
    target = ChannelSettings(target=f"127.0.0.1:{neighbours.port}")
    settings = OrchestratorSettings(server=local(), stt=target, llm=target, tts=target, dependency_wait_seconds=10)
    app = OrchestratorApp(settings)
    running = await start_app(app, local())
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            yield Harness(fakes, orchestrator_pb2_grpc.OrchestratorServiceStub(channel), app, channel)
    finally:
        await running.stop(0)
        await app.close()
        await neighbours.stop(0)
