"""Fallback chain through the real ``ollama`` client against a fake Ollama over real HTTP."""

from __future__ import annotations

import socket

import grpc
import pytest

from parole.llm.v1 import llm_pb2
from services.llm.backends.canned import CannedBackend
from services.llm.backends.llamacpp import LlamaCppBackend
from services.llm.backends.ollama import OllamaBackend
from services.llm.config import LlmSettings
from tests.llm.conftest import ask, make_settings, serve
from tests.llm.fake_ollama import FakeOllama

OPTS = {"max_tokens": 8, "temperature": 0.0, "language": "en"}


def ollama_for(url: str, settings: LlmSettings) -> OllamaBackend:
    o = settings.ollama
    return OllamaBackend(url, o.model, keep_alive=o.keep_alive, timeout_seconds=settings.timeout_for("ollama"))


def closed_port() -> int:
    """A loopback port nobody listens on (bound then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_ollama_answers_with_keep_alive_and_limits(fake_ollama: FakeOllama, smol: LlamaCppBackend) -> None:
    settings = make_settings(timeout_seconds=5)
    async with serve(settings, [ollama_for(fake_ollama.url, settings), smol, CannedBackend()]) as s:
        answer = await ask(s.stub, "Salut", session_id="o1", options=OPTS)
    assert answer.text == "Bonjour depuis Ollama."
    assert answer.deltas == ["Bonjour", " depuis", " Ollama", "."]
    assert answer.summary.backend == "ollama"
    assert answer.summary.model == "nous-hermes-2-mistral-7b-dpo"
    assert list(answer.summary.fallbacks) == []
    assert answer.summary.finish_reason == llm_pb2.FINISH_REASON_STOP
    assert answer.summary.prompt_tokens_evaluated == 42
    chat = fake_ollama.chats()[-1]
    assert chat["model"] == "nous-hermes-2-mistral-7b-dpo"
    assert chat["stream"] is True
    assert chat["keep_alive"] == "30m"
    assert chat["options"]["num_predict"] == 8
    assert chat["messages"][0]["role"] == "system"
    assert chat["messages"][-1] == {"role": "user", "content": "Salut"}
    # At start-up the service asked Ollama to load the model (in the background).
    assert [(w["model"], w["keep_alive"]) for w in fake_ollama.warm_ups()] == [("nous-hermes-2-mistral-7b-dpo", "30m")]


async def test_ollama_down_falls_back_to_llamacpp(smol: LlamaCppBackend) -> None:
    settings = make_settings(timeout_seconds=5)
    down = ollama_for(f"http://127.0.0.1:{closed_port()}", settings)
    async with serve(settings, [down, smol, CannedBackend()]) as s:
        answer = await ask(s.stub, "Hello there", session_id="down", options=OPTS)
    assert answer.summary.backend == "llamacpp"
    assert answer.summary.model == "smollm2-135m-instruct-q4_1"
    assert len(answer.summary.fallbacks) == 1
    assert answer.summary.fallbacks[0].startswith("ollama: ")
    assert "connect" in answer.summary.fallbacks[0].lower()
    assert answer.text


@pytest.mark.parametrize(
    ("mode", "needle"),
    [("slow", "within 0.5 s"), ("garbage", "json"), ("drop", "peer closed connection"), ("error", "model is broken")],
)
async def test_ollama_faults_fall_back(fake_ollama: FakeOllama, smol: LlamaCppBackend, mode: str, needle: str) -> None:
    fake_ollama.mode = mode
    settings = make_settings(timeout_seconds=0.5)
    async with serve(settings, [ollama_for(fake_ollama.url, settings), smol, CannedBackend()]) as s:
        answer = await ask(s.stub, "Hello there", session_id=f"f-{mode}", options=OPTS)
        assert answer.summary.backend == "llamacpp"
        assert len(answer.summary.fallbacks) == 1
        assert answer.summary.fallbacks[0].startswith("ollama: ")
        assert needle in answer.summary.fallbacks[0].lower()
        assert fake_ollama.chats(), "the chat request reached the fake server"
        # The service still serves: the fault was Ollama's, not the server's.
        fake_ollama.mode = "ok"
        again = await ask(s.stub, "Hello again", session_id=f"f-{mode}", options=OPTS)
        assert again.summary.backend == "ollama"


async def test_drop_after_first_delta_ends_with_unavailable(fake_ollama: FakeOllama, smol: LlamaCppBackend) -> None:
    """Text already sent cannot be taken back: no fallback, UNAVAILABLE after the deltas."""
    fake_ollama.mode = "drop_after_delta"
    settings = make_settings(timeout_seconds=5)
    async with serve(settings, [ollama_for(fake_ollama.url, settings), smol, CannedBackend()]) as s:
        deltas: list[str] = []
        request = llm_pb2.GenerateRequest(
            text="Salut", session_id="cut", options=llm_pb2.GenerationOptions(max_tokens=8)
        )
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for r in s.stub.Generate(request, timeout=30):
                assert not r.HasField("summary")
                deltas.append(r.delta)
        assert err.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "incomplete" in (err.value.details() or "")
        assert deltas == ["Bonjour", " depuis"]
        # The cut answer is not remembered.
        history = await s.stub.GetSession(llm_pb2.GetSessionRequest(session_id="cut"))
        assert [m.role for m in history.messages] == [llm_pb2.ROLE_SYSTEM]
        fake_ollama.mode = "ok"
        assert (await ask(s.stub, "Salut", session_id="cut", options=OPTS)).summary.backend == "ollama"


@pytest.mark.parametrize(
    ("language", "expected"),
    [
        ("fr", "J'ai entendu : « Quelle heure est-il ? ». Désolé, le modèle de langage n'est pas disponible"),
        ("en", 'I heard: "Quelle heure est-il ?". Sorry, the language model is unavailable'),
    ],
)
async def test_everything_down_gives_canned_reply(language: str, expected: str) -> None:
    settings = make_settings(timeout_seconds=2)
    down = ollama_for(f"http://127.0.0.1:{closed_port()}", settings)
    async with serve(settings, [down, CannedBackend()]) as s:
        answer = await ask(s.stub, "Quelle heure  est-il ?", session_id="c1", options={"language": language})
        assert answer.text.startswith(expected)
        assert answer.summary.backend == "canned"
        assert answer.summary.finish_reason == llm_pb2.FINISH_REASON_FALLBACK
        assert [f.split(":")[0] for f in answer.summary.fallbacks] == ["ollama"]
        history = await s.stub.GetSession(llm_pb2.GetSessionRequest(session_id="c1"))
        assert len(history.messages) == 1, "a canned reply is not an answer to remember"


async def test_breaker_opens_after_repeated_failures(fake_ollama: FakeOllama) -> None:
    fake_ollama.mode = "error"
    settings = make_settings(timeout_seconds=2, breaker_threshold=2, breaker_ttl_seconds=60)
    async with serve(settings, [ollama_for(fake_ollama.url, settings), CannedBackend()]) as s:
        for _ in range(2):
            answer = await ask(s.stub, "Bonjour", session_id="b", options=OPTS)
            assert "model is broken" in answer.summary.fallbacks[0]
        calls = len(fake_ollama.chats())
        models = await s.stub.ListModels(llm_pb2.ListModelsRequest())
        assert [(m.backend, m.breaker_state) for m in models.models] == [("ollama", "open"), ("canned", "closed")]
        answer = await ask(s.stub, "Bonjour", session_id="b", options=OPTS)
        assert answer.summary.fallbacks[0] == "ollama: breaker open"
        assert len(fake_ollama.chats()) == calls, "an open breaker skips the backend without calling it"


async def test_requested_backend_goes_first(fake_ollama: FakeOllama, smol: LlamaCppBackend) -> None:
    settings = make_settings(timeout_seconds=5)
    async with serve(settings, [ollama_for(fake_ollama.url, settings), smol, CannedBackend()]) as s:
        answer = await ask(s.stub, "Hi", session_id="r", options={**OPTS, "backend": "llamacpp"})
        assert answer.summary.backend == "llamacpp"
        assert not fake_ollama.chats()
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ask(s.stub, "Hi", session_id="r", options={"backend": "gpt-17"})
        assert err.value.code() == grpc.StatusCode.NOT_FOUND
