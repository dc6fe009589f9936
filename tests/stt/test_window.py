"""Whisper's short encoder window (the utterance plus padding instead of 30 s): as accurate as
the full window on real voices, and a degenerate short-window decode is done again in full."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import pytest

from client.demo import DEMO_DIR
from services.runtime.audio import pcm16_to_float, read_wav, resample_pcm16
from services.stt.engine import FULL_WINDOW_SECONDS, DecodeOptions, WhisperEngine, _degenerate
from services.testkit.transcripts import normalise, word_error_rate


@pytest.fixture
async def engine(whisper_engine: WhisperEngine) -> WhisperEngine:
    await whisper_engine.load()  # shared and loaded once: a no-op when another test did it
    return whisper_engine


@contextmanager
def configured(engine: WhisperEngine, **changes: object) -> Iterator[WhisperEngine]:
    """The shared engine with some settings changed for the duration of a test."""
    saved = {name: getattr(engine, name) for name in changes}
    for name, value in changes.items():
        setattr(engine, name, value)
    try:
        yield engine
    finally:
        for name, value in saved.items():
            setattr(engine, name, value)


def test_window_is_the_utterance_plus_padding_in_whole_seconds(whisper_engine: WhisperEngine) -> None:
    with configured(whisper_engine, window_padding_seconds=6.0, window_min_seconds=0.0):
        assert whisper_engine.window_seconds(2.3) == 9.0
        assert whisper_engine.window_seconds(27.0) == FULL_WINDOW_SECONDS
    with configured(whisper_engine, window_padding_seconds=6.0, window_min_seconds=10.0):
        assert whisper_engine.window_seconds(2.3) == 10.0
        assert whisper_engine.window_seconds(5.5) == 12.0
    with configured(whisper_engine, window_padding_seconds=None):
        assert whisper_engine.window_seconds(2.3) == FULL_WINDOW_SECONDS


def _segments(*texts: str, tokens: int = 5) -> list[SimpleNamespace]:
    return [SimpleNamespace(text=t, tokens=list(range(tokens))) for t in texts]


@pytest.mark.parametrize(
    ("texts", "seconds", "degenerate"),
    [
        (["What is the capital of France?"], 2.0, False),
        (["how many days are in a week, how many days are in a week,"], 2.0, True),  # a phrase twice
        (["one two three four five six seven eight nine ten eleven twelve thirteen fourteen"], 1.0, True),
        (["ha " * 40], 10.0, True),  # compresses like a loop
        ([""], 2.0, True),  # nothing from two seconds of speech
        ([""], 0.5, False),  # a click may well be nothing
        (["I think I think so."], 2.0, False),  # two words said twice is speech, not a loop
    ],
)
def test_degenerate_output_is_recognised(texts: list[str], seconds: float, degenerate: bool) -> None:
    assert _degenerate(_segments(*texts), max_new_tokens=100, audio_seconds=seconds) is degenerate


def test_a_decode_that_hits_its_length_bound_is_degenerate() -> None:
    assert _degenerate(_segments("a long answer", tokens=99), max_new_tokens=100, audio_seconds=2.0)


async def test_a_degenerate_short_window_decode_falls_back_to_the_full_window(engine: WhisperEngine) -> None:
    """Two seconds of zero padding make Whisper base say this bundled question twice over;
    the guard sees the repetition and decodes it again with the full window."""
    audio = pcm16_to_float(read_wav(DEMO_DIR / "en-days-week.wav").data)
    with configured(
        engine, window_padding_seconds=2.0, window_min_seconds=0.0, pad_with_silence=False, temperatures=(0.0,)
    ):
        result = await engine.transcribe(audio, DecodeOptions(language="en"))
    assert result.window_fallback and result.window_seconds == FULL_WINDOW_SECONDS
    assert normalise(result.text) == normalise("How many days are in a week?")


def _recordings(folder: Path) -> list[tuple[str, str, Path]]:
    with (folder / "manifest.tsv").open() as f:
        return [(r["language"], r["transcript"], folder / r["file"]) for r in csv.DictReader(f, delimiter="\t")]


async def test_short_window_is_as_accurate_as_the_full_one_on_real_recordings(
    engine: WhisperEngine, speech_dir: Path
) -> None:
    """Every real recording beside the checkout (read speech, spontaneous French, commands),
    decoded with the default short window and with the full one: the word error rate against
    the reference transcripts is the same within a few words in a hundred. Greedy only, so the
    comparison is of the windows, not of the temperature fallback's sampling."""
    clips = _recordings(speech_dir)
    if (speech_dir / "turns" / "manifest.tsv").is_file():
        clips += _recordings(speech_dir / "turns")
    errors = {"short": 0.0, "full": 0.0}
    words = 0
    shorter = 0
    for language, reference, path in clips:
        pcm = read_wav(path)
        audio = pcm16_to_float(resample_pcm16(pcm.data, pcm.sample_rate, 16000))
        n = len(normalise(reference))
        words += n
        for name, padding in (("short", engine.window_padding_seconds), ("full", None)):
            with configured(engine, window_padding_seconds=padding, temperatures=(0.0,)):
                result = await engine.transcribe(audio, DecodeOptions(language=language))
            errors[name] += word_error_rate(reference, result.text) * n
            shorter += name == "short" and result.window_seconds < FULL_WINDOW_SECONDS
    short, full = errors["short"] / words, errors["full"] / words
    print(f"\n{len(clips)} recordings, {words} words: WER short window {short:.3f}, full window {full:.3f}")
    assert shorter >= len(clips) // 2, "most decodes should use the short window"
    assert short <= full + 0.03, (short, full)
