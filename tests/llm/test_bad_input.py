"""Bad input: each case gets its status, and the service keeps serving afterwards."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import grpc
import pytest

from parole.llm.v1 import llm_pb2
from services.llm.backends.canned import CannedBackend
from services.llm.backends.llamacpp import LlamaCppBackend
from services.runtime.errors import field_violations
from tests.llm.conftest import Served, ask, make_settings, serve

M = llm_pb2.ChatMessage


@pytest.fixture(scope="module")
async def served(smol: LlamaCppBackend) -> AsyncIterator[Served]:
    settings = make_settings(
        backends=["llamacpp", "canned"],
        max_text_chars=200,
        sessions={"max_turns": 2, "max_history_tokens": 1000},
    )
    async with serve(settings, [smol, CannedBackend()]) as s:
        yield s


async def still_serves(served: Served) -> None:
    answer = await ask(served.stub, "Hello", session_id="ok", options={"max_tokens": 3})
    assert answer.summary.backend == "llamacpp"


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"session_id": "s", "text": ""}, "text"),
        ({"session_id": "s", "text": " \t\n  "}, "text"),
        ({"session_id": "s", "text": "a" * 201}, "text"),
        ({"text": "a" * 201, "messages": [M(role=llm_pb2.ROLE_USER, content="hi")]}, "text"),
        ({"session_id": "bad id!", "text": "hi"}, "session_id"),
        ({"session_id": "x" * 129, "text": "hi"}, "session_id"),
        ({"session_id": "s", "text": "hi", "messages": [M(role=llm_pb2.ROLE_USER, content="hi")]}, "messages"),
        ({"messages": [M(role=llm_pb2.ROLE_ASSISTANT, content="hi")]}, "text"),
        ({"messages": []}, "text"),
        ({"messages": [M(role=llm_pb2.ROLE_UNSPECIFIED, content="hi")]}, "messages[0].role"),
        ({"messages": [M(role=llm_pb2.ROLE_USER, content="a" * 201)]}, "messages[0].content"),
        ({"messages": [M(role=llm_pb2.ROLE_USER, content="  ")]}, "messages[0].content"),
        ({"session_id": "s", "text": "hi", "options": {"language": "de"}}, "options.language"),
        ({"session_id": "s", "text": "hi", "options": {"temperature": 2.5}}, "options.temperature"),
        ({"session_id": "s", "text": "hi", "options": {"max_tokens": 100000}}, "options.max_tokens"),
        ({"session_id": "s", "text": "hi", "options": {"system_prompt": "a" * 201}}, "options.system_prompt"),
        ({"text": "hi", "messages": [M(role=llm_pb2.ROLE_USER, content="hi")], "speculative": True}, "speculative"),
    ],
)
async def test_invalid_generate(served: Served, request_fields: dict[str, Any], field: str) -> None:
    fields = dict(request_fields)
    options = llm_pb2.GenerationOptions(**fields.pop("options", {}))
    call = served.stub.Generate(llm_pb2.GenerateRequest(options=options, **fields), timeout=30)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in call:
            pass
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(err.value)
    await still_serves(served)


@pytest.mark.parametrize(
    ("request_fields", "field"),
    [
        ({"session_id": "bad id!", "user": "hi", "assistant": "hello"}, "session_id"),
        ({"session_id": "", "user": "hi", "assistant": "hello"}, "session_id"),
        ({"session_id": "s", "user": " ", "assistant": "hello"}, "user"),
        ({"session_id": "s", "user": "hi", "assistant": ""}, "assistant"),
        ({"session_id": "s", "user": "a" * 201, "assistant": "hello"}, "user"),
        ({"session_id": "s", "user": "hi", "assistant": "hello", "language": "de"}, "language"),
    ],
)
async def test_invalid_add_exchange(served: Served, request_fields: dict[str, Any], field: str) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await served.stub.AddExchange(llm_pb2.AddExchangeRequest(**request_fields), timeout=10)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(err.value)
    await still_serves(served)


async def test_a_speculative_answer_is_remembered_only_once_added(served: Served) -> None:
    """A speculative answer (to the transcript of a pause) leaves the history as it was, so
    one the user's next words make wrong is never remembered; AddExchange records one that
    stood, as a normal Generate would have."""
    first = await ask(served.stub, "My name is Ada.", session_id="spec", options={"max_tokens": 4})
    spoken = await ask(served.stub, "What is my", session_id="spec", speculative=True, options={"max_tokens": 4})
    assert spoken.summary.text
    history = await served.stub.GetSession(llm_pb2.GetSessionRequest(session_id="spec"))
    assert [m.content for m in history.messages[1:]] == ["My name is Ada.", first.summary.text]
    await served.stub.AddExchange(
        llm_pb2.AddExchangeRequest(session_id="spec", user="What is my name?", assistant="Ada."), timeout=10
    )
    history = await served.stub.GetSession(llm_pb2.GetSessionRequest(session_id="spec"))
    assert [m.content for m in history.messages[1:]][-2:] == ["What is my name?", "Ada."]
    # A new session is created by AddExchange, in the language asked.
    await served.stub.AddExchange(
        llm_pb2.AddExchangeRequest(session_id="spec-new", user="Bonjour", assistant="Salut !", language="fr")
    )
    created = await served.stub.GetSession(llm_pb2.GetSessionRequest(session_id="spec-new"))
    assert created.language == "fr" and [m.content for m in created.messages[1:]] == ["Bonjour", "Salut !"]


@pytest.mark.parametrize("rpc", ["ResetSession", "GetSession"])
async def test_unknown_session_is_not_found(served: Served, rpc: str) -> None:
    request_cls = getattr(llm_pb2, f"{rpc}Request")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await getattr(served.stub, rpc)(request_cls(session_id="never-seen"), timeout=10)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    assert "never-seen" in (err.value.details() or "")
    with pytest.raises(grpc.aio.AioRpcError) as bad:
        await getattr(served.stub, rpc)(request_cls(session_id="no/slashes"), timeout=10)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await still_serves(served)


async def test_history_beyond_window_is_trimmed(served: Served) -> None:
    texts = ["one", "two", "three", "four"]
    for t in texts:
        await ask(served.stub, f"Say {t}", session_id="window", options={"max_tokens": 3})
    history = await served.stub.GetSession(llm_pb2.GetSessionRequest(session_id="window"))
    users = [m.content for m in history.messages if m.role == llm_pb2.ROLE_USER]
    assert users == ["Say three", "Say four"]  # max_turns=2: the oldest went, no error
    assert history.messages[0].role == llm_pb2.ROLE_SYSTEM
    await still_serves(served)


async def test_stateless_history_beyond_window_is_trimmed(served: Served) -> None:
    conversation = []
    for i in range(5):
        conversation += [
            M(role=llm_pb2.ROLE_USER, content=f"question {i}"),
            M(role=llm_pb2.ROLE_ASSISTANT, content=f"answer {i}"),
        ]
    conversation.append(M(role=llm_pb2.ROLE_USER, content="last"))
    full = await ask(served.stub, messages=conversation, options={"max_tokens": 2})
    short = await ask(served.stub, messages=conversation[-5:], options={"max_tokens": 2})
    # Only the last two exchanges (plus the system prompt and the new turn) were sent.
    assert full.summary.prompt_tokens == short.summary.prompt_tokens


async def test_session_language_and_custom_prompt_are_kept(served: Served) -> None:
    await ask(
        served.stub,
        "Hello",
        session_id="custom",
        options={"max_tokens": 2, "language": "en", "system_prompt": "You are a pirate."},
    )
    await ask(served.stub, "Hello again", session_id="custom", options={"max_tokens": 2})
    history = await served.stub.GetSession(llm_pb2.GetSessionRequest(session_id="custom"))
    assert history.language == "en"
    assert history.messages[0].content == "You are a pirate."
    reset = await served.stub.ResetSession(llm_pb2.ResetSessionRequest(session_id="custom"))
    assert reset.messages_removed == 4
    history = await served.stub.GetSession(llm_pb2.GetSessionRequest(session_id="custom"))
    assert len(history.messages) == 1
