"""``python -m client.demo.make``: recreates the demo questions and their manifest.

English questions are spoken by the Piper joe voice (natural; needs ``make models``; from
``services.testkit.speech``), French ones by espeak-ng (the offline model
set has no French Piper voice). Output: 16 kHz mono PCM16, silence trimmed, so each file stays
small (< 100 KB).

espeak-ng's French is hard for the offline Whisper base model: of the phrasings and voices
tried, "Quelle est la capitale de l'Espagne ?" with the ``fr+f3`` voice, slower and with word
gaps, was the one it transcribed well enough to answer ("Que la capitale de l'Espagne?");
"Quelle est la capitale de l'Italie ?" with the plain voice came back as nonsense.
"""

from __future__ import annotations

import csv
import shutil
import subprocess
import sys

import numpy as np

from client.demo import DEMO_DIR, MANIFEST
from services.models.store import ModelStore
from services.runtime.audio import SPEECH_RATE, Pcm, read_wav_bytes, resample_pcm16, write_wav
from services.runtime.config import default_model_dir

# Questions a small model answers well and briefly; each is under ~3 s of speech.
QUESTIONS: list[tuple[str, str, str]] = [
    ("en-capital-france.wav", "en", "What is the capital of France?"),
    ("en-days-week.wav", "en", "How many days are in a week?"),
    ("en-two-plus-three.wav", "en", "What is two plus three?"),
    ("fr-capitale-espagne.wav", "fr", "Quelle est la capitale de l'Espagne ?"),
]
ESPEAK_FR = ["-v", "fr+f3", "-s", "140", "-g", "4"]
PAD_SECONDS = 0.15
MAX_SECONDS = 3.0


def trim(pcm: Pcm, threshold: int = 300) -> Pcm:
    """Drops leading and trailing silence, keeping a short pad (the client adds its own)."""
    samples = np.frombuffer(pcm.data, dtype="<i2")
    loud = np.flatnonzero(np.abs(samples.astype(np.int32)) > threshold)
    if loud.size == 0:
        return pcm
    pad = int(PAD_SECONDS * pcm.sample_rate)
    start, end = max(0, int(loud[0]) - pad), min(samples.size, int(loud[-1]) + pad)
    return Pcm(samples[start:end].tobytes(), pcm.sample_rate)


def espeak_fr(text: str) -> Pcm:
    exe = shutil.which("espeak-ng")
    if exe is None:
        raise SystemExit("espeak-ng is not installed: run make install")
    wav = subprocess.run([exe, *ESPEAK_FR, "--stdout", text], capture_output=True, check=True).stdout
    pcm = read_wav_bytes(wav)
    return Pcm(resample_pcm16(pcm.data, pcm.sample_rate, SPEECH_RATE), SPEECH_RATE)


def synthesize(language: str, text: str, store: ModelStore) -> tuple[Pcm, str]:
    if language == "en":
        from services.testkit.speech import piper_joe

        return piper_joe(text, store, SPEECH_RATE), "piper en_US-joe-medium"
    return espeak_fr(text), "espeak-ng " + " ".join(ESPEAK_FR)


def main() -> int:
    store = ModelStore(default_model_dir())
    rows = []
    for old in DEMO_DIR.glob("*.wav"):
        old.unlink()
    for name, language, text in QUESTIONS:
        pcm, how = synthesize(language, text, store)
        pcm = trim(pcm)
        if pcm.duration > MAX_SECONDS:
            print(f"{name}: {pcm.duration:.1f} s is longer than {MAX_SECONDS} s; shorten the question", file=sys.stderr)
            return 1
        write_wav(DEMO_DIR / name, pcm.data, pcm.sample_rate)
        rows.append({"file": name, "language": language, "text": text, "made_with": how})
        print(f"{name}: {pcm.duration:.2f} s  {text}")
    with MANIFEST.open("w", encoding="utf-8", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["file", "language", "text", "made_with"], delimiter="\t")
        writer.writeheader()
        writer.writerows(rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
