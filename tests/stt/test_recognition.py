"""Recognition with the real Whisper base model over loopback gRPC."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from parole.audio.v1 import audio_pb2
from parole.stt.v1 import stt_pb2
from services.runtime.audio import Pcm, read_wav, silence, wav_bytes
from services.testkit.speech import espeak, real_samples
from services.testkit.stt import paced_requests
from services.testkit.transcripts import normalise, word_error_rate
from tests.stt.conftest import (
    FRENCH_KEY_WORDS,
    JOE_TEXT,
    Served,
    collect,
    config,
    padded,
    stream_requests,
)

EVENT = stt_pb2.SpeechEventType


def finals(responses: list[stt_pb2.StreamingRecognizeResponse]) -> list[stt_pb2.RecognitionResult]:
    return [r.result for r in responses if r.HasField("result") and r.result.is_final]


async def test_english_stream_is_word_correct_with_interims_first_and_final_in_time(
    stt: Served, joe_sentence: Pcm
) -> None:
    """Streamed at real-time pace: interims come before the final, in order; the final is
    word-correct and arrives within the end-of-speech silence plus its decode time."""
    cfg = config(language="en", interim_results=True, word_timestamps=True)
    lead, tail = 0.3, 1.0
    audio = padded(joe_sentence, lead, tail)
    speech_end = lead + joe_sentence.duration
    sent_at: dict[str, float] = {}
    got: list[tuple[float, stt_pb2.StreamingRecognizeResponse]] = []

    async for response in stt.stub.StreamingRecognize(paced_requests(cfg, audio, speech_end, sent_at)):
        got.append((time.perf_counter(), response))

    kinds = [
        "final" if r.result.is_final else "interim" if r.HasField("result") else EVENT.Name(r.speech_event)
        for _, r in got
    ]
    assert kinds[0] == "SPEECH_EVENT_TYPE_SPEECH_STARTED"
    assert kinds.count("final") == 1 and kinds[-1] == "final"
    assert "interim" in kinds, kinds
    assert kinds.index("interim") < kinds.index("final")
    interims = [r.result for _, r in got if r.HasField("result") and not r.result.is_final]
    assert [i.end_seconds for i in interims] == sorted(i.end_seconds for i in interims)
    final_at, final_msg = got[-1]
    final = final_msg.result
    assert word_error_rate(JOE_TEXT, final.transcript) == 0.0, final.transcript
    assert final.language == "en" and final.language_probability == pytest.approx(1.0)
    assert 0.5 < final.confidence <= 1.0
    assert final.engine == "base" and final.utterance_index == 0
    # Words: one per transcript word, in order, inside the utterance, in stream time.
    assert len(final.words) == len(final.transcript.split())
    starts = [w.start_seconds for w in final.words]
    assert starts == sorted(starts)
    # The utterance ends where the voice stopped; the decoded audio runs on by the 160 ms
    # speculative pause, so a word may end up to that much later in Whisper's timing.
    assert final.start_seconds <= starts[0] and final.words[-1].end_seconds <= final.end_seconds + 0.2
    assert final.start_seconds < lead + 0.2 and abs(final.end_seconds - speech_end) < 0.5
    # Latency budget: the configured silence (300 ms), the decode, and one chunk plus VAD
    # window of detection granularity with scheduling slack.
    latency = final_at - sent_at["speech_end"]
    assert latency <= 0.3 + final.decode_seconds + 0.5, (latency, final.decode_seconds)


async def test_two_utterances_give_two_finals_in_order(stt: Served, short_phrase: Pcm) -> None:
    second = espeak("Play some music please.", "en")
    audio = padded(short_phrase, 0.2, 1.0) + second.data + silence(0.8)
    responses = await collect(stt.stub, stream_requests(config(language="en"), audio))
    results = finals(responses)
    assert [r.utterance_index for r in results] == [0, 1]
    assert "light" in " ".join(normalise(results[0].transcript))
    assert "music" in normalise(results[1].transcript)
    assert results[0].end_seconds <= results[1].start_seconds
    events = [r.speech_event for r in responses if not r.HasField("result")]
    assert events == [EVENT.SPEECH_EVENT_TYPE_SPEECH_STARTED, EVENT.SPEECH_EVENT_TYPE_SPEECH_ENDED] * 2
    # Each end says where the voice stopped (its final's end), before the silence that ended it.
    ends = [r for r in responses if r.speech_event == EVENT.SPEECH_EVENT_TYPE_SPEECH_ENDED]
    assert [e.voice_end_seconds for e in ends] == pytest.approx([r.end_seconds for r in results])
    assert all(e.voice_end_seconds < e.event_seconds for e in ends)


async def test_single_utterance_stops_after_the_first_final(stt: Served, short_phrase: Pcm) -> None:
    audio = padded(short_phrase, 0.2, 1.0) + short_phrase.data + silence(0.8)
    responses = await collect(stt.stub, stream_requests(config(language="en", single_utterance=True), audio))
    assert len(finals(responses)) == 1
    assert responses[-1].result.is_final


async def test_french_stream_detects_language_and_key_words(stt: Served, french_sentence: Pcm) -> None:
    responses = await collect(stt.stub, stream_requests(config(), padded(french_sentence)))
    (final,) = finals(responses)
    words = normalise(final.transcript)
    assert all(k in words for k in FRENCH_KEY_WORDS), final.transcript
    assert final.language == "fr" and 0.5 < final.language_probability <= 1.0


async def test_unary_wav_at_44k_is_word_correct_and_then_cached(stt: Served, joe_sentence: Pcm) -> None:
    from services.runtime.audio import resample_pcm16

    wav = wav_bytes(resample_pcm16(joe_sentence.data, 16000, 44100), 44100)
    request = stt_pb2.RecognizeRequest(
        config=config(encoding=audio_pb2.AUDIO_ENCODING_WAV, language="en", word_timestamps=True), audio=wav
    )
    first = await stt.stub.Recognize(request)
    assert word_error_rate(JOE_TEXT, first.result.transcript) == 0.0, first.result.transcript
    assert first.result.is_final and not first.cached
    assert first.audio_duration_seconds == pytest.approx(joe_sentence.duration, abs=0.01)
    assert len(first.result.words) == len(first.result.transcript.split())
    again = await stt.stub.Recognize(request)
    assert again.cached and again.result.transcript == first.result.transcript


async def test_unary_pcm_at_8k_telephone_rate(stt: Served, short_phrase: Pcm) -> None:
    from services.runtime.audio import resample_pcm16

    pcm8 = resample_pcm16(short_phrase.data, 16000, 8000)
    reply = await stt.stub.Recognize(stt_pb2.RecognizeRequest(config=config(rate=8000, language="en"), audio=pcm8))
    assert "light" in " ".join(normalise(reply.result.transcript))


async def test_list_engines_shows_the_chain(stt: Served) -> None:
    reply = await stt.stub.ListEngines(stt_pb2.ListEnginesRequest())
    (engine,) = reply.engines
    assert (engine.name, engine.model, engine.device, engine.compute_type) == ("base", "whisper-base", "cpu", "int8")
    assert engine.breaker_state == "closed"


async def test_real_recordings(stt: Served, speech_dir: Path) -> None:
    """Real voices from shared/speech (skipped when absent): every clip close to its reference."""
    report = []
    for sample in real_samples(speech_dir):
        pcm = read_wav(sample.path)
        reply = await stt.stub.Recognize(
            stt_pb2.RecognizeRequest(config=config(rate=pcm.sample_rate, language=sample.language), audio=pcm.data)
        )
        report.append(
            (sample.path.name, word_error_rate(sample.transcript, reply.result.transcript), reply.result.transcript)
        )
    # Whisper base is a small model: a word or two per clip may go wrong (liaisons in
    # French, "greasy wash water"), but the corpus as a whole must be recognized.
    total = sum(wer for _, wer, _ in report) / len(report)
    assert total <= 0.2, report
    assert all(wer <= 0.5 for _, wer, _ in report), report
