"""Whisper's encoder window: the fixed 30 s against the utterance plus some padding.

``python -m bench.stt_window [--windows 6 8 6:10] [--rounds 2] [--out reports/bench_stt_window.json]``

Decodes every clip (the real recordings in ../shared/speech and ../shared/speech/turns when
present, the bundled demo questions, and sentences spoken here by Piper joe and espeak-ng in
English and French) with the real engine as the service runs it (Whisper base, CPU int8,
beam 5, every core), once per window setting, the settings taking turns on each clip so that
machine noise falls on all of them alike. Reports per setting and language: WER against the
reference text, decode time p50/p95 and its ratio to the full window's, and how often the
degenerate-output guard fell back to the full window.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import statistics
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import REPO, SPEECH_DIR, percentile
from client.demo import questions as demo_questions
from services.models.store import ModelStore
from services.runtime.audio import Pcm, pcm16_to_float, read_wav, resample_pcm16
from services.runtime.config import default_model_dir
from services.runtime.device import Placement
from services.stt.app import build_engine
from services.stt.config import EngineSettings
from services.stt.engine import DecodeOptions, WhisperEngine
from services.testkit.speech import espeak, piper_joe
from services.testkit.stt import loopback_settings
from services.testkit.transcripts import normalise, word_error_rate

JOE = [
    "Could you tell me how long it takes to drive to the airport?",
    "Please set a timer for ten minutes and remind me to call my sister.",
    "What time does the pharmacy close tonight?",
    "Turn off the lights in the living room.",
    "How many grams of flour do I need for twelve pancakes?",
]
ESPEAK_FR = [
    "Quel temps fera-t-il demain à Lyon ?",
    "Mets un minuteur de cinq minutes.",
    "Bonjour, je voudrais savoir quel temps il fera demain à Paris.",
    "Allume la lumière du salon, s'il te plaît.",
]
ESPEAK_EN = ["Turn on the lights in the kitchen.", "Play some music please."]


def _manifest(folder: Path) -> list[tuple[str, str, str, Pcm]]:
    out: list[tuple[str, str, str, Pcm]] = []
    if not (folder / "manifest.tsv").is_file():
        return out
    with (folder / "manifest.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            pcm = read_wav(folder / row["file"])
            pcm = Pcm(resample_pcm16(pcm.data, pcm.sample_rate, 16000), 16000)
            out.append((f"{folder.name}/{row['file']}", row["language"], row["transcript"], pcm))
    return out


def clips(store: ModelStore) -> list[tuple[str, str, str, Pcm]]:
    """(name, language, reference, 16 kHz audio) of every clip."""
    out = _manifest(SPEECH_DIR) + _manifest(SPEECH_DIR / "turns")
    for q in demo_questions():
        pcm = read_wav(q.path)
        out.append((f"demo/{q.path.name}", q.language, q.text, pcm))
    out += [(f"joe-{i}", "en", t, piper_joe(t, store)) for i, t in enumerate(JOE)]
    out += [(f"espeak-fr-{i}", "fr", t, espeak(t, "fr")) for i, t in enumerate(ESPEAK_FR)]
    out += [(f"espeak-en-{i}", "en", t, espeak(t, "en")) for i, t in enumerate(ESPEAK_EN)]
    return out


Window = tuple[float | None, float, bool]
"""(padding in seconds, or None for the full 30 s; the least window; pad with the silence
floor, not zeros)."""


def parse_window(spec: str) -> Window:
    """PAD[:LEAST][s] ("s": padded with the silence floor), "full" or "fulls"."""
    floor = spec.endswith("s")
    spec = spec.removesuffix("s")
    if spec == "full":
        return None, 0.0, floor
    pad, _, least = spec.partition(":")
    return float(pad), float(least or 0), floor


def describe(w: Window) -> str:
    pad, least, floor = w
    name = "full-30s" if pad is None else f"pad-{pad:g}s" + (f"-min-{least:g}s" if least else "")
    return name + ("-silence" if floor else "-zeros")


FULL: Window = (None, 0.0, False)
"""faster-whisper's own decode: 30 s, zero-padded (the reference the others are compared to)."""


async def run(windows: list[Window], rounds: int) -> dict[str, Any]:
    store = ModelStore(default_model_dir())
    engine = build_engine(EngineSettings(name="base"), loopback_settings(), Placement("cpu", 0, "int8"), store)
    assert isinstance(engine, WhisperEngine)
    engine.workers = 1  # one decode at a time: the lone-turn case a user waits on
    await engine.load()
    data = clips(store)
    label = {w: describe(w) for w in windows}
    rows: dict[str, list[dict[str, Any]]] = {label[w]: [] for w in windows}
    for name, language, reference, pcm in data:
        audio = pcm16_to_float(pcm.data)
        times: dict[str, list[float]] = {label[w]: [] for w in windows}
        texts: dict[str, tuple[str, bool, float]] = {}
        for r in range(rounds):
            # Settings take turns, and the order flips each round.
            for w in windows if r % 2 == 0 else list(reversed(windows)):
                engine.window_padding_seconds, engine.window_min_seconds, engine.pad_with_silence = w
                t = await engine.transcribe(audio, DecodeOptions(language=language, kind="final"))
                times[label[w]].append(t.decode_seconds)
                texts[label[w]] = (t.text, t.window_fallback, t.window_seconds)
        for w in windows:
            text, fell_back, window = texts[label[w]]
            rows[label[w]].append(
                {
                    "clip": name,
                    "language": language,
                    "audio_s": round(audio.size / 16000, 2),
                    "window_s": window,
                    "decode_s": min(times[label[w]]),
                    "wer": word_error_rate(reference, text),
                    "ref_words": len(normalise(reference)),
                    "fallback": fell_back,
                    "text": text,
                }
            )
        print(name, " ".join(f"{label[w]}={min(times[label[w]]):.2f}s" for w in windows), flush=True)
    await engine.close()
    full = rows.get(describe(FULL))
    summary: dict[str, Any] = {}
    for key, rs in rows.items():
        entry: dict[str, Any] = {}
        for lang in ("fr", "en", "all"):
            sel = [r for r in rs if lang == "all" or r["language"] == lang]
            if not sel:
                continue
            # Corpus WER: errors over reference words, so long clips weigh by their length.
            errors = sum(r["wer"] * r["ref_words"] for r in sel)
            entry[lang] = {"clips": len(sel), "wer": round(errors / max(1, sum(r["ref_words"] for r in sel)), 4)}
        decode = [r["decode_s"] for r in rs]
        entry["decode_p50_s"] = round(percentile(decode, 0.5), 3)
        entry["decode_p95_s"] = round(percentile(decode, 0.95), 3)
        if full:
            ratios = [f["decode_s"] / r["decode_s"] for f, r in zip(full, rs, strict=True)]
            entry["speedup_vs_full_p50"] = round(statistics.median(ratios), 2)
        entry["fallbacks"] = sum(r["fallback"] for r in rs)
        summary[key] = entry
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {"platform": platform.platform(), "processor": platform.processor(), "cpus": os.cpu_count()},
        "model": "whisper-base int8, beam 5, CPU, one decode at a time",
        "rounds": rounds,
        "summary": summary,
        "clips": rows,
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.stt_window", description=__doc__.splitlines()[0])
    parser.add_argument(
        "--windows",
        nargs="*",
        default=["6", "6s", "6:10s", "6:14s"],
        help="windows to try beside the stock one (full, zeros): PADDING[:LEAST] seconds (the audio plus PADDING, "
        "at least LEAST), 'full' for 30 s; a trailing 's' pads with the silence floor instead of zeros",
    )
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_stt_window.json")
    args = parser.parse_args()
    windows: list[Window] = [FULL, *(parse_window(w) for w in args.windows)]
    report = asyncio.run(run(windows, args.rounds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False))
    print(json.dumps(report["summary"], indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
