"""Bad input: each case gets a clear status (or a harmless empty answer), and the service
keeps serving afterwards."""

from __future__ import annotations

import asyncio
import difflib
import re
from collections.abc import AsyncIterator

import grpc
import numpy as np
import pytest

from parole.audio.v1 import audio_pb2
from parole.stt.v1 import stt_pb2
from services.models.store import ModelStore
from services.runtime.audio import Pcm, chunks, resample_pcm16, silence
from services.runtime.errors import field_violations
from services.stt.config import StreamingSettings
from services.stt.engine import WhisperEngine
from services.testkit.speech import piper_joe
from services.testkit.stt import loopback_settings
from services.testkit.transcripts import normalise
from tests.stt.conftest import (
    Served,
    assert_serving,
    collect,
    config,
    padded,
    serve,
    shutdown,
    stream_requests,
)


async def expect_error(served: Served, requests: list[stt_pb2.StreamingRecognizeRequest]) -> grpc.aio.AioRpcError:
    """The error a stream ends with. Cases that fail on the first message send only that one:
    grpc's client marks a call INTERNAL when a write races the server's early close, hiding
    the status the server sent."""
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await collect(served.stub, requests)
    return info.value


async def test_audio_before_config(stt: Served, short_phrase: Pcm) -> None:
    err = await expect_error(stt, stream_requests(None, short_phrase.data[:3200]))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "must carry `config`; `audio` came first" in (err.details() or "")
    await assert_serving(stt, short_phrase)


async def test_second_config_mid_stream(stt: Served, short_phrase: Pcm) -> None:
    requests = stream_requests(config(), short_phrase.data[:3200])
    requests.append(stt_pb2.StreamingRecognizeRequest(config=config()))
    err = await expect_error(stt, requests)
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "`config` may only be sent once" in (err.details() or "")
    await assert_serving(stt, short_phrase)


@pytest.mark.parametrize("rate", [11025, 96000, 1])
async def test_unsupported_sample_rate(stt: Served, short_phrase: Pcm, rate: int) -> None:
    err = await expect_error(stt, stream_requests(config(rate=rate), b""))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "config.audio_format.sample_rate_hz" in field_violations(err)
    unary_err: grpc.aio.AioRpcError
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stt.stub.Recognize(stt_pb2.RecognizeRequest(config=config(rate=rate), audio=short_phrase.data))
    unary_err = info.value
    assert unary_err.code() == grpc.StatusCode.INVALID_ARGUMENT
    await assert_serving(stt, short_phrase)


async def test_common_rate_48k_is_resampled_in_a_stream(stt: Served, short_phrase: Pcm) -> None:
    pcm48 = resample_pcm16(padded(short_phrase, 0.2, 0.6), 16000, 48000)
    responses = await collect(stt.stub, stream_requests(config(rate=48000, language="en"), pcm48, 48000))
    final = [r.result for r in responses if r.result.is_final]
    assert len(final) == 1 and "light" in " ".join(normalise(final[0].transcript))


async def test_odd_number_of_bytes(stt: Served, short_phrase: Pcm) -> None:
    requests = stream_requests(config(), short_phrase.data[:3200])
    requests.append(stt_pb2.StreamingRecognizeRequest(audio=b"\x01\x02\x03"))
    err = await expect_error(stt, requests)
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and "audio" in field_violations(err)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stt.stub.Recognize(stt_pb2.RecognizeRequest(config=config(), audio=short_phrase.data + b"\x00"))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await assert_serving(stt, short_phrase)


async def test_empty_stream_and_config_only(stt: Served, short_phrase: Pcm) -> None:
    assert await collect(stt.stub, []) == []
    assert await collect(stt.stub, [stt_pb2.StreamingRecognizeRequest(config=config())]) == []
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stt.stub.Recognize(stt_pb2.RecognizeRequest(config=config(), audio=b""))
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    await assert_serving(stt, short_phrase)


async def test_silence_only_gives_no_speech_and_an_empty_transcript(stt: Served, short_phrase: Pcm) -> None:
    responses = await collect(stt.stub, stream_requests(config(), silence(3.0)))
    assert responses == []  # no speech started, so nothing to report
    reply = await stt.stub.Recognize(stt_pb2.RecognizeRequest(config=config(), audio=silence(3.0)))
    assert reply.result.is_final and reply.result.transcript == ""
    assert reply.audio_duration_seconds == pytest.approx(3.0)
    await assert_serving(stt, short_phrase)


async def test_random_bytes(stt: Served, short_phrase: Pcm) -> None:
    noise = np.random.default_rng(7).integers(0, 256, size=32000 * 2, dtype=np.uint8).tobytes()
    # As PCM it is loud white noise: whatever is heard, the stream must end normally.
    responses = await collect(stt.stub, stream_requests(config(), noise))
    assert all(r.result.is_final or not r.HasField("result") or r.result.transcript for r in responses)
    # As a WAV file it is not one: refused clearly.
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stt.stub.Recognize(
            stt_pb2.RecognizeRequest(config=config(encoding=audio_pb2.AUDIO_ENCODING_WAV), audio=noise)
        )
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "audio" in field_violations(info.value)
    await assert_serving(stt, short_phrase)


async def test_unknown_language_and_engine(stt: Served, short_phrase: Pcm) -> None:
    for cfg, field in [(config(language="xx"), "config.language"), (config(model_hint="nope"), "config.model_hint")]:
        err = await expect_error(stt, stream_requests(cfg, b""))
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT and field in field_violations(err)
    await assert_serving(stt, short_phrase)


async def test_wav_in_a_stream_is_refused(stt: Served, short_phrase: Pcm) -> None:
    err = await expect_error(stt, stream_requests(config(encoding=audio_pb2.AUDIO_ENCODING_WAV), b""))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    await assert_serving(stt, short_phrase)


async def test_utterance_longer_than_the_cap(
    whisper_engine: WhisperEngine, short_phrase: Pcm, model_store: ModelStore
) -> None:
    """Streams cut an over-long utterance into finals and go on; unary refuses over-long audio."""
    settings = loopback_settings(
        streaming=StreamingSettings(max_utterance_seconds=2.0), max_audio_seconds=3.0, cache_max_bytes=0
    )
    served = await serve(settings, [whisper_engine])
    try:
        # Natural speech (Piper, not espeak): the check is that no word is lost or split at the
        # cuts, not how well Whisper reads a robot.
        numbers = "one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen"
        long_speech = piper_joe(numbers, model_store)
        assert long_speech.duration > 4.0
        # A long end-of-speech silence so only the cap can cut it.
        cfg = config(language="en", end_of_speech_silence_ms=2000)
        responses = await collect(served.stub, stream_requests(cfg, padded(long_speech, 0.2, 2.5)))
        finals = [r.result for r in responses if r.result.is_final]
        assert len(finals) >= 2
        assert all(f.end_seconds - f.start_seconds <= 2.0 + 1e-6 for f in finals)
        heard = " ".join(normalise(" ".join(f.transcript for f in finals)))
        # Whisper writes runs of numbers as it likes ("7 8 9" or "789"), so compare the digits:
        # all of 1..15 in order, none lost at a cut (a repeat across a cut is tolerated).
        digits, expected = re.sub(r"\D", "", heard), "".join(map(str, range(1, 16)))
        matched = sum(b.size for b in difflib.SequenceMatcher(None, expected, digits).get_matching_blocks())
        assert matched == len(expected), f"lost at a cut: {heard!r}"
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await served.stub.Recognize(stt_pb2.RecognizeRequest(config=config(), audio=long_speech.data))
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "3" in (info.value.details() or "")
        await assert_serving(served, short_phrase)
    finally:
        await shutdown(served)


async def test_client_disappears_mid_stream(stt: Served, joe_sentence: Pcm, short_phrase: Pcm) -> None:
    started = asyncio.Event()

    async def endless() -> AsyncIterator[stt_pb2.StreamingRecognizeRequest]:
        yield stt_pb2.StreamingRecognizeRequest(config=config(language="en", interim_results=True))
        for chunk in chunks(joe_sentence.data, 16000):
            yield stt_pb2.StreamingRecognizeRequest(audio=chunk)
            await asyncio.sleep(0.05)
        await asyncio.Event().wait()  # never closes: the client just goes away

    call = stt.stub.StreamingRecognize(endless())

    async def read() -> None:
        async for response in call:
            if response.speech_event == stt_pb2.SPEECH_EVENT_TYPE_SPEECH_STARTED:
                started.set()

    reader = asyncio.create_task(read())
    await asyncio.wait_for(started.wait(), 10)
    await asyncio.sleep(0.5)  # mid-utterance, an interim may be decoding
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    # Every decode of the vanished stream is released.
    for _ in range(100):
        if stt.app.queue.pending == 0:
            break
        await asyncio.sleep(0.1)
    await assert_serving(stt, short_phrase)
