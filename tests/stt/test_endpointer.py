"""The endpointer on real speech with the real Silero VAD (no model decode needed)."""

from __future__ import annotations

import numpy as np
import pytest

from services.runtime.audio import Pcm, pcm16_to_float, silence
from services.stt.config import StreamingSettings
from services.stt.engine import SileroVad
from services.stt.streaming import WINDOW, Endpointer, EndpointEvent, Paused, Resumed, SpeechEnded, SpeechStarted
from services.testkit.speech import espeak


def trimmed(pcm: Pcm) -> np.ndarray:
    """The speech without espeak's own leading and trailing silence, so gaps are exact."""
    audio = pcm16_to_float(pcm.data)
    loud = np.nonzero(np.abs(audio) > 0.01)[0]
    return audio[loud[0] : loud[-1] + 1]


def run(audio: np.ndarray, settings: StreamingSettings, chunk: int, eos_ms: int | None = None) -> list[EndpointEvent]:
    ep = Endpointer(SileroVad(), settings, eos_ms)
    events: list[EndpointEvent] = []
    for i in range(0, audio.size, chunk):
        events += ep.feed(audio[i : i + chunk])
    return events + ep.flush()


def names(events: list[EndpointEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def test_short_pause_speculates_then_resumes_and_the_final_slice_matches(short_phrase: Pcm) -> None:
    speech = trimmed(short_phrase)
    audio = np.concatenate(
        [pcm16_to_float(silence(0.3)), speech, pcm16_to_float(silence(0.2)), speech, pcm16_to_float(silence(0.6))]
    )
    events = run(audio, StreamingSettings(), 1600)
    assert names(events)[0] == "SpeechStarted" and names(events)[-1] == "SpeechEnded"
    assert names(events).count("SpeechStarted") == 1  # a 200 ms gap does not end a 300 ms endpoint
    assert "Resumed" in names(events)
    last_pause = [e for e in events if isinstance(e, Paused)][-1]
    ended = events[-1]
    assert isinstance(ended, SpeechEnded) and ended.reason == "silence"
    # The speculative slice is exactly the final's: that is what lets it stand as the final.
    assert (last_pause.start_sample, last_pause.end_sample) == (ended.start_sample, ended.end_sample)
    assert np.array_equal(last_pause.audio, ended.audio)
    # End detected 300 ms (rounded up to 32 ms windows) after the voice stopped.
    voice_end = ended.end_sample - 5 * WINDOW
    assert ended.voice_end_sample == voice_end  # the decoded slice runs on by the 160 ms pause
    assert 0.3 <= (ended.at_sample - voice_end) / 16000 <= 0.3 + 0.032


@pytest.mark.parametrize("chunk", [160, 1600, 4444])
def test_chunk_size_does_not_change_the_events(short_phrase: Pcm, chunk: int) -> None:
    audio = pcm16_to_float(silence(0.3) + short_phrase.data + silence(0.6) + short_phrase.data + silence(0.6))
    reference = run(audio, StreamingSettings(), 512)
    got = run(audio, StreamingSettings(), chunk)
    assert names(got) == names(reference)
    assert [getattr(e, "end_sample", None) for e in got] == [getattr(e, "end_sample", None) for e in reference]
    assert names(got).count("SpeechEnded") == 2


def test_longer_silence_setting_merges_utterances(short_phrase: Pcm) -> None:
    speech, gap = trimmed(short_phrase), pcm16_to_float(silence(0.5))
    audio = np.concatenate([gap, speech, gap, speech, pcm16_to_float(silence(1.2))])
    assert names(run(audio, StreamingSettings(), 1600)).count("SpeechEnded") == 2
    assert names(run(audio, StreamingSettings(), 1600, eos_ms=800)).count("SpeechEnded") == 1


def test_silence_and_end_of_stream(short_phrase: Pcm) -> None:
    assert run(pcm16_to_float(silence(2.0)), StreamingSettings(), 1600) == []
    # Speech cut off by the end of the stream still ends, with its reason.
    events = run(
        pcm16_to_float(silence(0.2) + short_phrase.data[: len(short_phrase.data) // 4 * 2]), StreamingSettings(), 1600
    )
    assert isinstance(events[0], SpeechStarted)
    assert isinstance(events[-1], SpeechEnded) and events[-1].reason == "end_of_stream"
    assert not any(isinstance(e, Resumed) for e in events)


def test_cap_cuts_in_the_gaps_between_words() -> None:
    """An utterance over the cap is cut where the signal is quietest, between two words: the
    VAD probability stays near 1 through connected speech, so its minimum often lies inside
    one. Every cut window is far quieter than the speech around it."""
    speech = trimmed(espeak("one two three four five six seven eight nine ten eleven twelve thirteen", "en"))
    audio = np.concatenate([pcm16_to_float(silence(0.2)), speech, pcm16_to_float(silence(0.6))])
    events = run(audio, StreamingSettings(max_utterance_seconds=2.0), 1600)
    cuts = [e for e in events if isinstance(e, SpeechEnded) and e.reason == "max_length"]
    assert len(cuts) >= 2
    windows = speech[: speech.size - speech.size % WINDOW].reshape(-1, WINDOW)
    typical = float(np.median(np.sqrt(np.mean(windows**2, axis=1))))
    for cut in cuts:
        last = audio[cut.end_sample - WINDOW : cut.end_sample]
        assert np.sqrt(np.mean(last**2)) < 0.15 * typical, f"cut at {cut.end_sample / 16000:.2f} s is inside a word"
        assert cut.end_sample - cut.start_sample <= 2 * 16000
