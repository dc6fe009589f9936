"""Fixtures of the LLM tests: models loaded once, real gRPC servers on loopback."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest

from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from services.llm.app import LlmApp
from services.llm.backends.base import Backend
from services.llm.backends.llamacpp import LlamaCppBackend
from services.llm.config import LlmSettings
from services.models.store import ModelStore
from services.runtime.config import ServerSettings
from services.runtime.server import start_app
from tests.llm.fake_ollama import FakeOllama

SMOL = "smollm2-135m-instruct-q4_1"
QWEN = "qwen2.5-coder-1.5b-instruct-q4_k_m"


def make_settings(**overrides: Any) -> LlmSettings:
    """Settings for a test server on a free loopback port, no metrics port.

    The embedded model gets a generous timeout: the 2 cores are shared with other services'
    tests, which can make its first token slow, and no test here is about its slowness (the
    timeout tests use Ollama's, set through ``timeout_seconds``).
    """
    overrides.setdefault("llamacpp", {"timeout_seconds": 120})
    return LlmSettings(server=ServerSettings(host="127.0.0.1", port=0, metrics_port=None), **overrides)


@pytest.fixture(scope="session")
async def smol(model_store: ModelStore) -> AsyncIterator[LlamaCppBackend]:
    """The tiny model, loaded once: fast mechanical tests (its answers are not sensible)."""
    backend = LlamaCppBackend(model_store.gguf(SMOL), SMOL, n_ctx=2048, n_threads=2)
    await backend.load()
    yield backend
    await backend.close()


@pytest.fixture(scope="session")
async def qwen(model_store: ModelStore) -> AsyncIterator[LlamaCppBackend]:
    """The offline default model, loaded once: tests that need real answers."""
    backend = LlamaCppBackend(model_store.gguf(QWEN), QWEN, n_ctx=4096, n_threads=2)
    await backend.load()
    yield backend
    await backend.close()


@pytest.fixture
async def fake_ollama() -> AsyncIterator[FakeOllama]:
    server = await FakeOllama().start()
    yield server
    await server.stop()


@dataclass
class Served:
    app: LlmApp
    stub: llm_pb2_grpc.LlmServiceAsyncStub
    channel: grpc.aio.Channel


@contextlib.asynccontextmanager
async def serve(settings: LlmSettings, backends: Sequence[Backend]) -> AsyncIterator[Served]:
    """A real server for ``backends`` (shared models are not closed on exit)."""
    app = LlmApp(settings, backends)
    running = await start_app(app, settings.server)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    try:
        stub: llm_pb2_grpc.LlmServiceAsyncStub = llm_pb2_grpc.LlmServiceStub(channel)  # type: ignore[assignment]
        yield Served(app, stub, channel)
    finally:
        await channel.close()
        await running.stop(0)


@dataclass
class Answer:
    deltas: list[str]
    summary: llm_pb2.GenerationSummary

    @property
    def text(self) -> str:
        return "".join(self.deltas)


async def ask(stub: llm_pb2_grpc.LlmServiceAsyncStub, text: str = "", **fields: Any) -> Answer:
    """Calls Generate and collects the stream; checks the summary is last and matches."""
    options = fields.pop("options", {})
    request = llm_pb2.GenerateRequest(text=text, options=llm_pb2.GenerationOptions(**options), **fields)
    deltas: list[str] = []
    summary: llm_pb2.GenerationSummary | None = None
    async for response in stub.Generate(request, timeout=120):
        assert summary is None, "nothing may follow the summary"
        if response.HasField("summary"):
            summary = response.summary
        else:
            deltas.append(response.delta)
    assert summary is not None, "the stream must end with a summary"
    assert summary.text == "".join(deltas)
    return Answer(deltas, summary)
