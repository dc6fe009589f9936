"""The embedded backend's mechanics with the tiny model: streaming, prefix cache, cancel, queue."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncGenerator, AsyncIterator

import grpc
import pytest

from parole.llm.v1 import llm_pb2
from services.llm.backends.base import ChatMessage, Delta, Finish, GenerationParams
from services.llm.backends.canned import CannedBackend
from services.llm.backends.llamacpp import LlamaCppBackend
from services.llm.backends.llamacpp_cache import common_prefix, dropped_block
from services.models.store import ModelStore
from services.runtime.errors import InvalidArgument, ResourceExhausted
from tests.llm.conftest import SMOL, Served, ask, make_settings, serve

LONG = "Count from 1 to 1000, separated by commas."


@pytest.fixture(scope="module")
async def served(smol: LlamaCppBackend) -> AsyncIterator[Served]:
    async with serve(make_settings(backends=["llamacpp", "canned"]), [smol, CannedBackend()]) as s:
        yield s


async def wait_idle(backend: LlamaCppBackend, within: float) -> float:
    """Seconds until the worker thread is idle; fails past ``within``."""
    started = time.perf_counter()
    while backend.running:
        assert time.perf_counter() - started < within, "the generation thread kept running"
        await asyncio.sleep(0.01)
    return time.perf_counter() - started


async def test_max_tokens_ends_with_length(served: Served) -> None:
    answer = await ask(served.stub, LONG, session_id="len", options={"max_tokens": 5, "temperature": 0.0})
    assert answer.summary.finish_reason == llm_pb2.FINISH_REASON_LENGTH
    assert answer.summary.completion_tokens == 5
    assert answer.summary.tokens_per_second > 0


async def test_second_turn_reads_only_new_tokens(served: Served) -> None:
    opts = {"max_tokens": 12, "temperature": 0.0, "language": "en"}
    one = await ask(served.stub, "Hello, who are you?", session_id="warm", options=opts)
    two = await ask(served.stub, "And what can you do?", session_id="warm", options=opts)
    s1, s2 = one.summary, two.summary
    new_part = s2.prompt_tokens - s1.prompt_tokens
    assert s2.prompt_tokens_evaluated <= new_part < s2.prompt_tokens
    # Cold, the same prompt is read whole.
    await served.app.engine.backends[0].reset_cache()  # type: ignore[attr-defined]
    cold = await ask(
        served.stub,
        messages=[
            llm_pb2.ChatMessage(role=llm_pb2.ROLE_SYSTEM, content=served.app.settings.system_prompts["en"]),
            llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="Hello, who are you?"),
            llm_pb2.ChatMessage(role=llm_pb2.ROLE_ASSISTANT, content=one.text),
            llm_pb2.ChatMessage(role=llm_pb2.ROLE_USER, content="And what can you do?"),
        ],
        options=opts,
    )
    assert cold.summary.prompt_tokens == s2.prompt_tokens
    assert cold.summary.prompt_tokens_evaluated == s2.prompt_tokens


async def test_interleaved_sessions_keep_their_cache(smol: LlamaCppBackend) -> None:
    """Switching conversation saves the live cache and restores it when the first comes back."""
    system = ChatMessage("system", "You are brief.")

    async def turn(key: str, messages: list[ChatMessage]) -> tuple[str, Finish]:
        text, finish = "", None
        async for item in smol.stream(messages, GenerationParams(10, 0.0, "en", key)):
            if isinstance(item, Delta):
                text += item.text
            else:
                finish = item
        assert finish is not None
        return text, finish

    a1 = [system, ChatMessage("user", "Tell me about the sea and its many colours.")]
    text_a, _ = await turn("A", a1)
    await turn("B", [system, ChatMessage("user", "Name a fruit that is yellow and long.")])
    a2 = [*a1, ChatMessage("assistant", text_a), ChatMessage("user", "And the sky?")]
    _, finish = await turn("A", a2)
    assert smol.last_run is not None and smol.last_run.restored_snapshot
    assert finish.prompt_tokens_evaluated < 25 < finish.prompt_tokens


async def test_primed_system_prompts_are_cached_for_every_language(smol: LlamaCppBackend) -> None:
    """Once both languages' prompts are primed, the first turn of a new conversation in
    either language reads only its own words and the chat markup after them, not the system
    prompt (before, only the last primed prompt stayed cached)."""
    prompts = {
        "en": "You are a voice assistant. Answer briefly.",
        "fr": "Tu es un assistant vocal. Réponds brièvement.",
    }
    questions = {"en": "What is the capital of {}?", "fr": "Quelle est la capitale de {} ?"}

    def messages(language: str, session: str) -> list[ChatMessage]:
        # A different question each time: a repeated one would find itself in the live cache.
        return [ChatMessage("system", prompts[language]), ChatMessage("user", questions[language].format(session))]

    async def first_turn(language: str, session: str) -> Finish:
        finish = None
        async for item in smol.stream(messages(language, session), GenerationParams(2, 0.0, language, session)):
            if isinstance(item, Finish):
                finish = item
        assert finish is not None
        return finish

    await smol.reset_cache()
    cold = await first_turn("en", "cold-en")
    assert cold.prompt_tokens_evaluated == cold.prompt_tokens  # nothing cached: the whole prompt
    await smol.prime(list(prompts.values()))
    try:
        for language, session in (("en", "Spain"), ("fr", "Italie"), ("en", "Peru"), ("fr", "Chine")):
            finish = await first_turn(language, session)
            primed = smol._cache.primes[prompts[language]]
            expected = finish.prompt_tokens - common_prefix(
                primed.tokens, smol._prompt_tokens(messages(language, session))
            )
            assert finish.prompt_tokens_evaluated == expected, (language, session, finish)
            assert expected < 18  # the question and the markup around it, no more
    finally:
        await smol.reset_cache()


async def test_snapshots_stay_within_their_memory_budget(smol: LlamaCppBackend) -> None:
    """The oldest snapshots go once the saved caches would pass ``session_snapshot_bytes``."""

    async def turn(key: str, question: str) -> None:
        messages = [ChatMessage("system", "You are brief."), ChatMessage("user", question)]
        async for _ in smol.stream(messages, GenerationParams(4, 0.0, "en", key)):
            pass

    budget = smol.session_snapshot_bytes
    try:
        await smol.reset_cache()
        await turn("m1", "Tell me about the sea and its many colours.")
        await turn("m2", "Name a fruit that is yellow and long.")  # saves m1
        one = smol.snapshot_bytes
        assert one > 0
        smol.session_snapshot_bytes = int(one * 1.5)  # room for one snapshot, not two
        await turn("m3", "What colour is the sky on a clear day?")  # saves m2: m1 must go
        assert 0 < smol.snapshot_bytes <= smol.session_snapshot_bytes
        assert list(smol._cache.snapshots) == ["m2"]
    finally:
        smol.session_snapshot_bytes = budget
        await smol.reset_cache()


async def test_cancel_mid_stream_stops_generation(served: Served, smol: LlamaCppBackend) -> None:
    request = llm_pb2.GenerateRequest(
        text=LONG, session_id="cancel", options=llm_pb2.GenerationOptions(max_tokens=1000, temperature=0.0)
    )
    call = served.stub.Generate(request, timeout=60)
    received = 0
    async for _ in call:
        received += 1
        if received == 3:
            call.cancel()
            break
    assert await wait_idle(smol, within=10.0) < 10.0
    assert smol.last_run is not None
    assert smol.last_run.cancelled, "the thread saw the stop flag (it did not finish on its own)"
    assert smol.last_run.completion_tokens < 200
    # Nothing half-done was remembered, and the service still serves.
    history = await served.stub.GetSession(llm_pb2.GetSessionRequest(session_id="cancel"))
    assert len(history.messages) == 1
    answer = await ask(served.stub, "Hi", session_id="cancel", options={"max_tokens": 4})
    assert answer.summary.backend == "llamacpp"


async def test_full_queue_is_resource_exhausted(served: Served, smol: LlamaCppBackend) -> None:
    smol.max_waiting = 1
    opts = llm_pb2.GenerationOptions(max_tokens=1000, temperature=0.0)
    running = served.stub.Generate(llm_pb2.GenerateRequest(text=LONG, session_id="q1", options=opts))
    waiting = served.stub.Generate(llm_pb2.GenerateRequest(text=LONG, session_id="q2", options=opts))
    try:
        await running.read()  # the first delta: it holds the model
        await asyncio.sleep(0.2)  # the second is queued behind it
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await ask(served.stub, "Hi", session_id="q3", options={"max_tokens": 4})
        assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    finally:
        smol.max_waiting = 4
        running.cancel()
        waiting.cancel()
    await wait_idle(smol, within=10.0)
    answer = await ask(served.stub, "Hi", session_id="q3", options={"max_tokens": 4})
    assert answer.summary.backend == "llamacpp"


async def test_concurrent_sessions_are_serialised(served: Served) -> None:
    answers = await asyncio.gather(
        *(ask(served.stub, f"Say hello number {i}", session_id=f"par{i}", options={"max_tokens": 6}) for i in range(3))
    )
    for a in answers:
        assert a.summary.backend == "llamacpp"
        assert a.summary.completion_tokens > 0


async def test_context_overflow_drops_oldest_exchanges(smol: LlamaCppBackend) -> None:
    system = ChatMessage("system", "You are brief.")
    filler = "The quick brown fox jumps over the lazy dog. " * 40  # ~400 tokens
    history: list[ChatMessage] = []
    for i in range(8):  # ~3,200 tokens: more than the 2,048 of the test model's context
        history += [ChatMessage("user", f"{i} {filler}"), ChatMessage("assistant", f"ok {i}")]
    messages = [system, *history, ChatMessage("user", "Say hi.")]
    finish = None
    async for item in smol.stream(messages, GenerationParams(4, 0.0, "en")):
        if isinstance(item, Finish):
            finish = item
    assert finish is not None
    assert 1000 < finish.prompt_tokens <= smol.n_ctx - 4


async def test_a_turn_larger_than_the_context_is_invalid(smol: LlamaCppBackend) -> None:
    huge = [ChatMessage("user", "word " * 3000)]
    with pytest.raises(InvalidArgument):
        async for _ in smol.stream(huge, GenerationParams(4, 0.0, "en")):
            pass
    await wait_idle(smol, within=5.0)
    assert smol.last_run is not None and smol.last_run.completion_tokens == 0


async def test_two_contexts_answer_two_conversations_at_once_and_keep_their_caches(model_store: ModelStore) -> None:
    """With ``parallel=2`` a second conversation's first token does not wait for the first
    answer to end, and each conversation goes back to the context holding its cache."""
    backend = LlamaCppBackend(model_store.gguf(SMOL), SMOL, n_ctx=2048, n_threads=1, parallel=2, max_waiting=0)
    await backend.load()
    system = ChatMessage("system", "You are brief.")

    def ask(key: str, text: str, max_tokens: int) -> AsyncGenerator[Delta | Finish, None]:
        return backend.stream([system, ChatMessage("user", text)], GenerationParams(max_tokens, 0.0, "en", key))

    try:
        long_a, long_b = ask("A", LONG, 1500), ask("B", LONG, 1500)
        # A's answer is being written (a long one) and B's starts beside it, not after it.
        assert isinstance(await anext(long_a), Delta) and isinstance(await anext(long_b), Delta)
        # Both contexts taken: a third is refused at once (max_waiting=0), not queued.
        with pytest.raises(ResourceExhausted):
            await anext(ask("C", "Hi", 5))
        await long_a.aclose()
        await long_b.aclose()
        await wait_idle(backend, within=10.0)
        # B comes back: its own context still holds its cache (nothing restored, little read).
        items = [i async for i in ask("B", LONG, 5)]
        finish = items[-1]
        assert isinstance(finish, Finish) and finish.prompt_tokens_evaluated <= 1 < finish.prompt_tokens
        assert backend.last_run is not None and not backend.last_run.restored_snapshot
    finally:
        await backend.close()


@pytest.mark.parametrize("first_tokens", [12, 0], ids=["first-tokens-first", "off"])
async def test_a_new_answer_writes_its_first_tokens_while_the_older_one_steps_aside(
    model_store: ModelStore, first_tokens: int
) -> None:
    """Two answers at once: the one already past its first tokens writes nothing while the
    newcomer writes its own, then goes on (off: both write side by side)."""
    backend = LlamaCppBackend(
        model_store.gguf(SMOL),
        SMOL,
        n_ctx=2048,
        n_threads=1,
        parallel=2,
        first_tokens=first_tokens,
        first_tokens_max_pause=60.0,
    )
    await backend.load()
    system = ChatMessage("system", "You are brief.")
    heard: dict[str, list[float]] = {"A": [], "B": []}
    grew = asyncio.Event()

    async def listen(key: str, count: int) -> None:
        params = GenerationParams(count, 0.0, "en", key)
        async for item in backend.stream([system, ChatMessage("user", LONG)], params):
            if isinstance(item, Delta):
                heard[key].append(time.monotonic())
                grew.set()

    async def until_heard(key: str, pieces: int) -> None:
        async with asyncio.timeout(60):
            while len(heard[key]) < pieces:
                grew.clear()
                await grew.wait()

    older = asyncio.create_task(listen("A", 400))
    try:
        await until_heard("A", 20)  # well past its first tokens
        await asyncio.wait_for(listen("B", 30), timeout=60)
        # The window in which the newcomer wrote its tokens 1 to 8 (a piece is at most a token).
        start, end = heard["B"][0], heard["B"][7]
        during = sum(start < t < end for t in heard["A"])
        if first_tokens:
            assert during <= 1, f"the older answer wrote {during} pieces during the new one's first tokens"
            await until_heard("A", len(heard["A"]) + 5)  # ...and goes on afterwards
        else:
            assert during >= 3, f"without the order both should write, the older wrote {during}"
    finally:
        older.cancel()
        await asyncio.gather(older, return_exceptions=True)
        await wait_idle(backend, within=30.0)
        await backend.close()


def test_the_dropped_block_of_a_slid_history_is_found() -> None:
    system, first, second, third, tail = [1, 2, 3], [10] * 20, list(range(20, 60)), list(range(60, 90)), [7, 8]
    cached = system + first + second + third + tail  # the last answer as generated
    slid = system + second + third + [9, 9] + [5, 6]  # as the history tokenizes it, then a question
    assert dropped_block(cached, slid) == (3, 23)
    assert dropped_block(cached, [*cached, 4]) is None  # a plain continuation: nothing dropped
    assert dropped_block(cached, system + [99] * 30) is None  # nothing of it follows
    assert dropped_block(cached, system + third[:10]) is None  # under MIN_SHIFT_MATCH tokens
