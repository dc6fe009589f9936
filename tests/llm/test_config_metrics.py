"""Settings from the environment, the default prompts, and the exported metrics."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator

import pytest
from prometheus_client import REGISTRY, generate_latest

from parole.llm.v1 import llm_pb2
from services.llm.backends.canned import CannedBackend, canned_reply
from services.llm.backends.llamacpp import LlamaCppBackend
from services.llm.config import DEFAULT_SYSTEM_PROMPTS, LlmSettings
from services.runtime.config import ConfigError, load_settings
from tests.llm.conftest import Served, ask, make_settings, serve


def test_defaults_are_the_originals() -> None:
    s = LlmSettings()
    assert s.server.port == 50052 and s.server.metrics_port == 9092
    assert s.ollama.model == "nous-hermes-2-mistral-7b-dpo"
    assert s.timeout_seconds == 30 and s.max_tokens == 150
    assert s.backends == ["ollama", "llamacpp", "canned"]


def test_env_prefix_and_nesting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_OLLAMA__HOST", "http://ollama:11434")
    monkeypatch.setenv("LLM_MAX_TOKENS", "80")
    monkeypatch.setenv("LLM_BACKENDS", '["llamacpp", "canned"]')
    monkeypatch.setenv("LLM_SESSIONS__MAX_TURNS", "4")
    s = load_settings(LlmSettings)
    assert (s.ollama.host, s.max_tokens, s.backends, s.sessions.max_turns) == (
        "http://ollama:11434",
        80,
        ["llamacpp", "canned"],
        4,
    )


def test_partial_server_env_keeps_the_llm_ports(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_SERVER__HOST", "127.0.0.1")
    s = load_settings(LlmSettings)
    assert (s.server.host, s.server.port, s.server.metrics_port) == ("127.0.0.1", 50052, 9092)


@pytest.mark.parametrize(
    "env", [{"LLM_BACKENDS": "[]"}, {"LLM_BACKENDS": '["canned", "canned"]'}, {"LLM_BACKENDS": '["gpt"]'}]
)
def test_bad_chain_is_a_config_error(monkeypatch: pytest.MonkeyPatch, env: dict[str, str]) -> None:
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    with pytest.raises(ConfigError):
        load_settings(LlmSettings)


@pytest.mark.parametrize("language", ["fr", "en"])
def test_default_prompts_ask_for_short_spoken_answers(language: str) -> None:
    prompt = DEFAULT_SYSTEM_PROMPTS[language]
    assert len(prompt) < 200, "every prompt token delays the first answer token"
    assert ("markdown" in prompt) and ("emoji" in prompt)


def test_canned_reply_cuts_long_echoes() -> None:
    reply = canned_reply("mot " * 200, "en")
    assert reply.startswith('I heard: "mot mot')
    assert "…" in reply and len(reply) < 300


@pytest.fixture(scope="module")
async def served(smol: LlamaCppBackend) -> AsyncIterator[Served]:
    async with serve(make_settings(backends=["llamacpp", "canned"]), [smol, CannedBackend()]) as s:
        yield s


def sample(name: str, **labels: str) -> float:
    value = REGISTRY.get_sample_value(name, labels)
    return 0.0 if value is None else value


async def test_metrics_count_generations(served: Served) -> None:
    before_ttft = sample("parole_llm_time_to_first_token_seconds_count", backend="llamacpp")
    before_tokens = sample("parole_llm_tokens_total", backend="llamacpp", kind="completion")
    answer = await ask(served.stub, "Hello", session_id="m", options={"max_tokens": 4})
    assert sample("parole_llm_time_to_first_token_seconds_count", backend="llamacpp") == before_ttft + 1
    assert (
        sample("parole_llm_tokens_total", backend="llamacpp", kind="completion")
        == before_tokens + answer.summary.completion_tokens
    )
    text = generate_latest(REGISTRY).decode()
    assert re.search(r'parole_llm_time_to_first_token_seconds_bucket\{backend="llamacpp",le="30.0"\}', text)
    assert REGISTRY.get_sample_value("parole_breaker_state", {"service": "llm", "engine": "llamacpp"}) == 0
    models = await served.stub.ListModels(llm_pb2.ListModelsRequest())
    assert [(m.backend, m.model, m.breaker_state) for m in models.models] == [
        ("llamacpp", "smollm2-135m-instruct-q4_1", "closed"),
        ("canned", "canned", "closed"),
    ]
