"""The real fleet on loopback, in this process: STT (Whisper base), LLM (Qwen 1.5B), TTS
(Piper joe + espeak-ng) and the orchestrator, each behind a fault proxy so a test can make a
stage die mid-turn."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass

import grpc
import pytest

from parole.orchestrator.v1 import orchestrator_pb2_grpc
from parole.stt.v1 import stt_pb2_grpc
from services.llm.app import build as build_llm
from services.llm.config import LlmSettings
from services.orchestrator.app import OrchestratorApp
from services.orchestrator.config import OrchestratorSettings
from services.runtime.channel import ChannelSettings
from services.runtime.config import ServerSettings
from services.runtime.server import RunningServer, start_app
from services.stt.app import SttApp
from services.stt.config import SttSettings
from services.tts.app import build as build_tts
from services.tts.config import TtsSettings
from tests.faultproxy import FaultProxy


def local() -> ServerSettings:
    return ServerSettings(host="127.0.0.1", port=0, metrics_port=None, grace_seconds=1.0)


@dataclass
class Fleet:
    stt: RunningServer
    llm: RunningServer
    tts: RunningServer
    proxies: dict[str, FaultProxy]

    def orchestrator_settings(self, **kw: object) -> OrchestratorSettings:
        targets = {name: ChannelSettings(target=p.target) for name, p in self.proxies.items()}
        return OrchestratorSettings(server=local(), dependency_wait_seconds=30, **targets, **kw)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
async def fleet() -> AsyncIterator[Fleet]:
    """The three model services, loaded once for every end-to-end test."""
    stt_settings = SttSettings(server=local().model_dump())  # type: ignore[arg-type]
    stt = await start_app(SttApp.from_settings(stt_settings), local())
    llm = await start_app(build_llm(LlmSettings(server=local(), backends=["llamacpp", "canned"])), local())
    tts = await start_app(build_tts(TtsSettings(server=local())), local())
    proxies = {
        name: await FaultProxy("127.0.0.1", running.port).start()
        for name, running in (("stt", stt), ("llm", llm), ("tts", tts))
    }
    yield Fleet(stt, llm, tts, proxies)
    for p in proxies.values():
        await p.kill()
    for running in (stt, llm, tts):
        await running.stop(0)


@dataclass
class Orchestrator:
    running: RunningServer
    channel: grpc.aio.Channel

    @property
    def stub(self) -> orchestrator_pb2_grpc.OrchestratorServiceAsyncStub:
        return orchestrator_pb2_grpc.OrchestratorServiceStub(self.channel)


@pytest.fixture
async def orchestrator(fleet: Fleet) -> AsyncIterator[Orchestrator]:
    """A fresh orchestrator over the shared fleet (its proxies revived if a test killed them)."""
    for p in fleet.proxies.values():
        if p._server is None:
            await p.revive()
        p.delay, p.reset_after_bytes = 0.0, None
    running = await start_app(OrchestratorApp(fleet.orchestrator_settings()), local())
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        yield Orchestrator(running, channel)
    await running.stop(0)


@pytest.fixture
async def stt_stub(fleet: Fleet) -> AsyncIterator[stt_pb2_grpc.SttServiceAsyncStub]:
    """Direct access to the STT service, to transcribe the assistant's answers back."""
    async with grpc.aio.insecure_channel(f"127.0.0.1:{fleet.stt.port}") as channel:
        yield stt_pb2_grpc.SttServiceStub(channel)
