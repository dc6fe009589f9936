"""Done-when: the embedded default model answers, in context, over loopback gRPC."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from parole.llm.v1 import llm_pb2
from services.llm.backends.canned import CannedBackend
from services.llm.backends.llamacpp import LlamaCppBackend
from tests.llm.conftest import Served, ask, make_settings, serve


@pytest.fixture(scope="module")
async def served(qwen: LlamaCppBackend) -> AsyncIterator[Served]:
    async with serve(make_settings(backends=["llamacpp", "canned"]), [qwen, CannedBackend()]) as s:
        yield s


@pytest.mark.parametrize(
    ("text", "language"),
    [("What is the capital of France?", "en"), ("Quelle est la capitale de la France ?", "fr")],
)
async def test_names_paris(served: Served, text: str, language: str) -> None:
    answer = await ask(
        served.stub,
        text,
        session_id=f"paris-{language}",
        options={"language": language, "temperature": 0.0, "max_tokens": 40},
    )
    assert "paris" in answer.text.lower()
    assert answer.summary.backend == "llamacpp"
    assert answer.summary.model == "qwen2.5-coder-1.5b-instruct-q4_k_m"
    assert len(answer.deltas) > 1, "the answer is streamed, not sent whole"
    assert answer.summary.completion_tokens > 0
    assert 0 < answer.summary.time_to_first_token_seconds < answer.summary.total_seconds
    # Voice-friendly: no markdown or list marks to read aloud.
    assert not any(mark in answer.text for mark in ("**", "#", "\n- ", "\n1."))


async def test_follow_up_in_context_then_reset_forgets(served: Served) -> None:
    opts = {"language": "en", "temperature": 0.0, "max_tokens": 30}
    first = await ask(served.stub, "My name is Zorglub. Please remember it.", session_id="memory", options=opts)
    follow = await ask(served.stub, "What is my name?", session_id="memory", options=opts)
    assert "zorglub" in follow.text.lower()
    # The second turn read only its new tokens: the system prompt, the first turn and its
    # answer came from the KV cache.
    s1, s2 = first.summary, follow.summary
    assert s2.prompt_tokens > s1.prompt_tokens + s1.completion_tokens
    assert s2.prompt_tokens_evaluated <= s2.prompt_tokens - s1.prompt_tokens
    assert s2.prompt_tokens_evaluated < 25

    history = await served.stub.GetSession(llm_pb2.GetSessionRequest(session_id="memory"))
    assert [m.role for m in history.messages] == [
        llm_pb2.ROLE_SYSTEM,
        llm_pb2.ROLE_USER,
        llm_pb2.ROLE_ASSISTANT,
        llm_pb2.ROLE_USER,
        llm_pb2.ROLE_ASSISTANT,
    ]
    assert history.messages[-1].content == follow.text
    reset = await served.stub.ResetSession(llm_pb2.ResetSessionRequest(session_id="memory"))
    assert reset.messages_removed == 4
    forgot = await ask(served.stub, "What is my name?", session_id="memory", options=opts)
    assert "zorglub" not in forgot.text.lower()


async def test_stateless_messages(served: Served) -> None:
    """Callers may send the whole conversation themselves instead of a session."""
    M = llm_pb2.ChatMessage
    answer = await ask(
        served.stub,
        messages=[
            M(role=llm_pb2.ROLE_USER, content="Ma couleur préférée est le vert. Retiens-la."),
            M(role=llm_pb2.ROLE_ASSISTANT, content="D'accord, votre couleur préférée est le vert."),
            M(role=llm_pb2.ROLE_USER, content="Quelle est ma couleur préférée ?"),
        ],
        options={"language": "fr", "temperature": 0.0, "max_tokens": 30},
    )
    assert "vert" in answer.text.lower()


async def test_a_full_history_window_slides_without_rereading(qwen: LlamaCppBackend) -> None:
    """Two exchanges kept: at the third and fourth turns the oldest exchange falls out of the
    window. The KV cache drops it and moves the rest back, so each of those turns reads only
    its own new words (not the whole remaining history), and the answer still knows what the
    kept exchanges said. With the shift off, the same turn rereads the kept history."""
    settings = make_settings(backends=["llamacpp"], sessions={"max_turns": 2})
    opts = {"language": "en", "temperature": 0.0, "max_tokens": 24}
    async with serve(settings, [qwen]) as served:
        said = [
            "I am planning a trip to the mountains.",
            "My cat is called Biscuit, please remember it.",
            "My sister lives in Lisbon.",
        ]
        answers = [await ask(served.stub, text, session_id="slide", options=opts) for text in said]
        recall = await ask(served.stub, "What is my cat called?", session_id="slide", options=opts)
        assert "biscuit" in recall.text.lower(), recall.text
        for late in (answers[2], recall):
            s = late.summary
            assert s.prompt_tokens_evaluated < 40 < s.prompt_tokens, s
        assert qwen.last_run is not None and qwen.last_run.shifted_tokens > 0
        qwen.shift_history = False
        try:
            exact = await ask(served.stub, "Where does my sister live?", session_id="slide", options=opts)
        finally:
            qwen.shift_history = True
        assert "lisbon" in exact.text.lower(), exact.text
        assert qwen.last_run is not None and qwen.last_run.shifted_tokens == 0
        # Reread from the system prompt on: the two kept exchanges and the question.
        assert exact.summary.prompt_tokens_evaluated > max(40, 2 * recall.summary.prompt_tokens_evaluated), (
            exact.summary,
            recall.summary,
        )
