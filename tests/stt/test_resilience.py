"""Fallbacks, circuit breakers, timeouts, the bounded queue and the cache, with faults
injected through fake engines (the fallback that answers is the real model)."""

from __future__ import annotations

import asyncio
import time

import grpc
import pytest

from parole.stt.v1 import stt_pb2
from services.runtime.audio import Pcm, silence
from services.runtime.errors import ResourceExhausted
from services.stt.engine import WhisperEngine
from services.stt.recognizer import DecodeQueue
from services.testkit.stt import loopback_settings
from services.testkit.transcripts import normalise
from tests.stt.conftest import Served, config, serve, shutdown
from tests.stt.fakes import FaultyEngine, GatedEngine


def distinct(pcm: Pcm, i: int) -> bytes:
    """The same speech with a different lead, so the cache cannot answer."""
    return silence(0.05 * i) + pcm.data


async def engines_state(served: Served) -> dict[str, str]:
    reply = await served.stub.ListEngines(stt_pb2.ListEnginesRequest())
    return {e.name: e.breaker_state for e in reply.engines}


async def test_breaker_opens_after_three_failures_and_closes_after_a_good_probe(
    whisper_engine: WhisperEngine, short_phrase: Pcm
) -> None:
    flaky = FaultyEngine(name="flaky")
    ttl = 4.0  # long enough for two real decodes on a busy CPU while the breaker is open
    settings = loopback_settings(breaker_ttl_seconds=ttl, cache_max_bytes=0)
    served = await serve(settings, [flaky, whisper_engine])
    try:
        for i in range(3):
            opened_by = time.time()
            reply = await served.stub.Recognize(
                stt_pb2.RecognizeRequest(config=config(language="en"), audio=distinct(short_phrase, i))
            )
            # The fallback answered, with real recognition.
            assert reply.result.engine == "base" and "light" in " ".join(normalise(reply.result.transcript))
        assert flaky.calls == 3
        assert (await engines_state(served)) == {"flaky": "open", "base": "closed"}
        # Open: the failing engine is skipped without being called.
        await served.stub.Recognize(
            stt_pb2.RecognizeRequest(config=config(language="en"), audio=distinct(short_phrase, 3))
        )
        assert flaky.calls == 3
        await asyncio.sleep(max(0.0, opened_by + ttl + 0.1 - time.time()))
        assert (await engines_state(served))["flaky"] == "half-open"
        flaky.failing = False
        reply = await served.stub.Recognize(
            stt_pb2.RecognizeRequest(config=config(language="en"), audio=distinct(short_phrase, 4))
        )
        assert reply.result.engine == "flaky" and reply.result.transcript == "healed"
        assert (await engines_state(served))["flaky"] == "closed"
    finally:
        await shutdown(served)


async def test_a_hung_engine_times_out_and_the_next_one_answers(short_phrase: Pcm) -> None:
    hung = FaultyEngine(name="hung", failing=False, hang_seconds=30)
    backup = FaultyEngine(name="backup", failing=False, text="from the backup")
    settings = loopback_settings(
        decode_timeout_base_seconds=0.3, decode_timeout_per_audio_second=0.01, cache_max_bytes=0
    )
    served = await serve(settings, [hung, backup])
    try:
        started = time.perf_counter()
        reply = await served.stub.Recognize(
            stt_pb2.RecognizeRequest(config=config(language="en"), audio=short_phrase.data)
        )
        # 0.3 s + 0.01 s per second of audio, not the 30 s the engine would hang.
        assert time.perf_counter() - started < 2.0
        assert reply.result.engine == "backup" and hung.calls == 1
        # A model hint puts an engine first; the rest of the chain still backs it up.
        reply = await served.stub.Recognize(
            stt_pb2.RecognizeRequest(config=config(language="en", model_hint="backup"), audio=distinct(short_phrase, 1))
        )
        assert reply.result.engine == "backup" and hung.calls == 1
    finally:
        await shutdown(served)


async def test_every_engine_failing_is_unavailable_and_the_service_survives() -> None:
    settings = loopback_settings(cache_max_bytes=0)
    served = await serve(settings, [FaultyEngine(name="a"), FaultyEngine(name="b")])
    try:
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await served.stub.Recognize(stt_pb2.RecognizeRequest(config=config(), audio=silence(0.5)))
        assert info.value.code() == grpc.StatusCode.UNAVAILABLE
        assert "a: RuntimeError" in (info.value.details() or "")
        assert set(await engines_state(served)) == {"a", "b"}
    finally:
        await shutdown(served)


async def test_full_queue_is_resource_exhausted_then_drains() -> None:
    gated = GatedEngine()
    settings = loopback_settings(decode_workers=1, max_pending_decodes=2, cache_max_bytes=0)
    served = await serve(settings, [gated])
    try:
        calls = [
            asyncio.ensure_future(
                served.stub.Recognize(stt_pb2.RecognizeRequest(config=config(), audio=silence(0.5 + 0.1 * i)))
            )
            for i in range(2)
        ]
        for _ in range(500):  # polling: the queue has no event to wait on, and needs none
            if served.app.queue.pending >= 2:
                break
            await asyncio.sleep(0.01)
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await served.stub.Recognize(stt_pb2.RecognizeRequest(config=config(), audio=silence(1.5)))
        assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        gated.gate.set()
        replies = await asyncio.gather(*calls)
        assert [r.result.transcript for r in replies] == ["released", "released"]
        assert served.app.queue.pending == 0
    finally:
        await shutdown(served)


async def test_queue_serves_finals_before_speculative_and_keeps_a_worker_from_interims() -> None:
    queue = DecodeQueue(workers=2, max_pending=8)
    order: list[str] = []
    release = asyncio.Event()

    async def job(kind: str) -> None:
        async with queue.slot(kind):  # type: ignore[arg-type]
            order.append(kind)
            await release.wait()

    interim = asyncio.create_task(job("interim"))
    await asyncio.sleep(0)
    assert not queue.interim_welcome  # one interim already holds all but one worker
    with pytest.raises(ResourceExhausted):
        async with queue.slot("interim"):
            pass
    first = asyncio.create_task(job("final"))  # takes the free worker at once
    await asyncio.sleep(0)
    spec = asyncio.create_task(job("speculative"))
    final = asyncio.create_task(job("final"))
    await asyncio.sleep(0)
    assert order == ["interim", "final"]
    release.set()
    await asyncio.gather(interim, first, spec, final)
    assert order == ["interim", "final", "final", "speculative"]
    assert queue.pending == 0


async def test_cache_answers_repeats_but_not_other_options(short_phrase: Pcm) -> None:
    counting = FaultyEngine(name="counting", failing=False)
    served = await serve(loopback_settings(), [counting])
    try:
        request = stt_pb2.RecognizeRequest(config=config(language="en"), audio=short_phrase.data)
        first = await served.stub.Recognize(request)
        second = await served.stub.Recognize(request)
        other = await served.stub.Recognize(
            stt_pb2.RecognizeRequest(config=config(language="fr"), audio=short_phrase.data)
        )
        assert (first.cached, second.cached, other.cached) == (False, True, False)
        assert counting.calls == 2
        assert served.app.recognizer.cache is not None and served.app.recognizer.cache.bytes_used > 0
    finally:
        await shutdown(served)
