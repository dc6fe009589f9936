"""Spoken test audio made on the spot: espeak-ng (any language) and the Piper joe voice, plus
the real recordings listed in a manifest."""

from __future__ import annotations

import csv
import shutil
import subprocess
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np

from services.models.store import ModelStore
from services.runtime.audio import Pcm, read_wav_bytes, resample_pcm16


def espeak(text: str, language: str = "en", rate: int = 16000, words_per_minute: int = 150) -> Pcm:
    """Speech from the espeak-ng command (robotic but intelligible), resampled to ``rate``."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise RuntimeError("espeak-ng is not installed: run make install")
    wav = subprocess.run(
        [exe, "-v", language, "-s", str(words_per_minute), "--stdout", text], capture_output=True, check=True
    ).stdout
    pcm = read_wav_bytes(wav)
    return Pcm(resample_pcm16(pcm.data, pcm.sample_rate, rate), rate)


def slow_espeak(text: str, voice: str, words_per_minute: int) -> Pcm:
    """espeak-ng at a chosen pace, 16 kHz. ``espeak`` speaks at 150 wpm, where Whisper base
    garbles robotic French ("demain à Paris" → "de ma paille"); at 120 wpm with a male
    variant it hears every word, which is closer to how a person talks to an assistant."""
    return espeak(text, voice, 16000, words_per_minute)


@cache
def _joe(store_root: str) -> object:
    from piper import PiperVoice

    onnx, config = ModelStore(Path(store_root)).piper_voice("en_US-joe-medium")
    return PiperVoice.load(str(onnx), config_path=str(config))


def trim(pcm: Pcm) -> Pcm:
    """Drops the clip's own leading and trailing silence, so the speech end is known."""
    audio = np.frombuffer(pcm.data, dtype="<i2")
    loud = np.nonzero(np.abs(audio) > 300)[0]
    return Pcm(audio[loud[0] : loud[-1] + 1].tobytes(), pcm.sample_rate) if loud.size else pcm


def piper_joe(text: str, store: ModelStore, rate: int = 16000) -> Pcm:
    """Speech from the Piper joe voice (natural English), resampled to ``rate``.

    Without noise, so the same text is the same audio in every run: Piper's default noise
    changes phrasing and length from one call to the next (its byte count even or odd after
    resampling), and a test that passes on one draw fails on another."""
    from piper import SynthesisConfig

    voice = _joe(str(store.root))
    quiet = SynthesisConfig(noise_scale=0.0, noise_w_scale=0.0)
    data = b"".join(chunk.audio_int16_bytes for chunk in voice.synthesize(text, syn_config=quiet))  # type: ignore[attr-defined]
    native = voice.config.sample_rate  # type: ignore[attr-defined]
    return Pcm(resample_pcm16(data, native, rate), rate)


@dataclass(frozen=True)
class Sample:
    """A real recording and its reference transcript."""

    path: Path
    language: str
    transcript: str


def real_samples(speech_dir: Path) -> list[Sample]:
    """The recordings listed in manifest.tsv."""
    with (speech_dir / "manifest.tsv").open() as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [Sample(speech_dir / r["file"], r["language"], r["transcript"]) for r in rows]
