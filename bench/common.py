"""What the benchmarks share: where their inputs live, the spoken questions, percentiles and
the host they ran on.

``questions()`` are the spoken questions ``bench.e2e``, ``bench.load`` and ``bench.soak`` ask
(the bundled demo questions, plus the real recordings in ../shared/speech when present);
``percentile`` is the nearest-rank figure those benches report, ``quantile`` the interpolated
one of ``bench.stt`` and ``bench.tts``.
"""

from __future__ import annotations

import csv
import os
import platform
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from services.runtime.audio import Pcm, read_wav, resample_pcm16

REPO = Path(__file__).resolve().parent.parent
DEMO = REPO / "client" / "demo"
SPEECH_DIR = Path(os.environ.get("PAROLE_SPEECH_DIR", REPO.parent / "shared" / "speech"))
"""Real recordings (manifest.tsv; turns/ holds paused and complete turns), when present."""


# ----------------------------------------------------------------------------- questions
@dataclass(frozen=True)
class Question:
    """A spoken question: its name, language, reference text and 16 kHz audio."""

    name: str
    language: str
    text: str
    pcm: Pcm


def questions() -> list[Question]:
    """The bundled questions and the real recordings (short ones: long ones are speeches)."""
    out = []
    turns = SPEECH_DIR / "turns"
    for manifest, folder in (
        (DEMO / "questions.tsv", DEMO),
        (SPEECH_DIR / "manifest.tsv", SPEECH_DIR),
        (turns / "manifest.tsv", turns),
    ):
        if not manifest.is_file():
            continue
        with manifest.open() as f:
            for row in csv.DictReader(f, delimiter="\t"):
                if float(row.get("duration_s") or 0) > 6 or row.get("kind", "complete") != "complete":
                    continue  # long recordings are speeches; paused ones test turn-taking (bench.stt)
                pcm = read_wav(folder / row["file"])
                audio = Pcm(resample_pcm16(pcm.data, pcm.sample_rate, 16000), 16000)
                out.append(Question(row["file"], row["language"], row.get("text") or row["transcript"], audio))
    return out


def speech_end(pcm: Pcm) -> float:
    """Seconds into the clip where speech ends: recordings carry trailing silence, and the
    clock must start when the user stopped talking, not when the file ran out."""
    samples = np.frombuffer(pcm.data, dtype="<i2").astype(np.float32) / 32768
    frame = pcm.sample_rate // 50  # 20 ms
    n = len(samples) // frame
    rms = np.sqrt((samples[: n * frame].reshape(n, frame) ** 2).mean(axis=1))
    loud = np.nonzero(rms > max(0.01, 0.1 * float(rms.max())))[0]
    return float((loud[-1] + 1) * frame / pcm.sample_rate) if loud.size else pcm.duration


# ----------------------------------------------------------------------------- figures
def percentile(values: list[float], q: float) -> float:
    """The value at rank ``q`` (0..1) of ``values``, the nearest one (no interpolation)."""
    s = sorted(values)
    return s[min(len(s) - 1, max(0, round(q * (len(s) - 1))))]


def quantile(values: list[float], q: float) -> float:
    """The ``q`` (0..1) quantile of ``values``, interpolated linearly between ranks (numpy's
    default percentile)."""
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    """p50, p95 (interpolated), mean and count."""
    return {
        "p50": round(quantile(values, 0.5), 4),
        "p95": round(quantile(values, 0.95), 4),
        "mean": round(statistics.fmean(values), 4),
        "n": len(values),
    }


def host() -> dict[str, Any]:
    """The machine a bench ran on, and its load when it started: the CPU is shared, and a high
    load average means inflated latencies."""
    return {
        "cpus": os.cpu_count(),
        "machine": platform.machine(),
        "python": platform.python_version(),
        "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
    }
