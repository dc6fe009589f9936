"""STT benchmark: clips streamed at real-time pace over loopback gRPC.

``python -m bench.stt [--out reports/bench_stt.json] [--no-interims] [--turns-only | --no-turns]``

Starts the real service in-process (Whisper base, CPU int8 by default settings), then streams
each clip in 100 ms chunks at the pace it would be spoken, with interim results on, and
measures per clip: end of speech → final (from sending the chunk where the voice stops to
receiving the final; it includes the configured 300 ms silence), the final's decode time and
real-time factor, and word error rate against the text. Peak memory is the process's
maximum resident set (model, VAD, gRPC, client all in one process).

It also times how the decode workers share the cores (``threads``): a lone decode, and four
decodes two at a time, with every core per worker (the default) against the cores split
between the workers, as a ratio from the same run.

Turn-taking (``turns``, in ``bench.stt_turns``; ``--turns-only`` runs just this). First a replay: each recording
through the endpointer with the real VAD and end-of-turn model but no decoder, in stream
time, so the figures do not depend on the host's load: silence only (the old default, 300 ms),
semantic without the transcript hold, and semantic with the hold at its bound (a transcript
never ready: what a stream sent faster than real time gets); a live stream's hold falls in
between. Then live: every real recording of
shared/speech/turns (paused clips with natural inner pauses, complete short commands) and
shared/speech, and our own recordings (Piper sentences with a pause inserted mid-sentence at a
word gap, Piper and espeak commands), each one turn, streamed at real-time pace with semantic
endpointing and with silence only (the old default, 300 ms) in the same run. Per group: the
share of turns split into several finals; for the complete commands the silence waited after
the voice, p50/p95, three ways: to the decision (stream time, what the policy waited), to the
end of the utterance (after holding for the transcript), and wall-clock to SPEECH_ENDED and to
the final; and the end-of-turn model's CPU and wall time per run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import resource
import statistics
import time
from pathlib import Path
from typing import Any

import grpc

from bench.common import SPEECH_DIR, quantile
from bench.stt_turns import LEAD, turn_taking
from parole.audio.v1 import audio_pb2
from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from services.models.store import ModelStore
from services.runtime.audio import Pcm, pcm16_to_float, read_wav, resample_pcm16, silence
from services.runtime.config import default_model_dir
from services.runtime.server import start_app
from services.stt.app import SttApp
from services.stt.config import SttServerSettings, SttSettings
from services.stt.engine import DecodeOptions, WhisperEngine
from services.testkit.speech import espeak, piper_joe, real_samples, trim
from services.testkit.stt import paced_requests
from services.testkit.transcripts import word_error_rate

JOE = [
    "Could you tell me how long it takes to drive to the airport?",
    "Please set a timer for ten minutes and remind me to call my sister.",
    "What time does the pharmacy close tonight?",
]
ESPEAK_EN = ["Turn on the lights in the kitchen.", "Play some music please."]
TAIL = 1.0
"""Silence after each clip (before it: ``LEAD``)."""


def clips(store: ModelStore) -> list[tuple[str, str, str, Pcm]]:
    out = [(f"joe-{i}", "en", t, piper_joe(t, store)) for i, t in enumerate(JOE)]
    out += [(f"espeak-en-{i}", "en", t, espeak(t, "en")) for i, t in enumerate(ESPEAK_EN)]
    if (SPEECH_DIR / "manifest.tsv").is_file():
        for s in real_samples(SPEECH_DIR):
            pcm = read_wav(s.path)
            out.append(
                (s.path.stem, s.language, s.transcript, Pcm(resample_pcm16(pcm.data, pcm.sample_rate, 16000), 16000))
            )
    return [(n, lang, text, trim(p)) for n, lang, text, p in out]


async def stream_clip(stub: Any, language: str, pcm: Pcm, interims: bool) -> dict[str, Any]:
    cfg = stt_pb2.RecognitionConfig(
        language=language,
        interim_results=interims,
        audio_format=audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE),
    )
    audio = silence(LEAD) + pcm.data + silence(TAIL)
    speech_end = LEAD + pcm.duration
    marks: dict[str, float] = {}

    finals: list[tuple[float, stt_pb2.RecognitionResult]] = []
    interim_count = 0
    async for response in stub.StreamingRecognize(paced_requests(cfg, audio, speech_end, marks)):
        if response.HasField("result"):
            if response.result.is_final:
                finals.append((time.perf_counter(), response.result))
            else:
                interim_count += 1
    last_at, last = finals[-1]
    utterance_seconds = last.end_seconds - last.start_seconds
    return {
        "transcript": " ".join(f.transcript for _, f in finals),
        "finals": len(finals),
        "interims": interim_count,
        # The chunk that holds the speech end can be sent up to 100 ms after the voice stops.
        "eos_to_final_seconds": last_at - marks["speech_end"],
        "decode_seconds": last.decode_seconds,
        "rtf": last.decode_seconds / utterance_seconds if utterance_seconds > 0 else None,
    }


async def thread_split(store: ModelStore, pcm: Pcm, workers: int, repeats: int = 3) -> dict[str, Any]:
    """Lone-decode and concurrent-decode times with each worker on every core, then on its share."""
    audio = pcm16_to_float(pcm.data)
    cores = os.cpu_count() or 1
    out: dict[str, Any] = {"workers": workers, "cores": cores, "speech_seconds": round(pcm.duration, 3)}
    for label, threads in (("every_core", cores), ("split", max(1, cores // workers))):
        engine = WhisperEngine(
            "bench",
            store.whisper("whisper-base"),
            "whisper-base",
            "cpu",
            0,
            "int8",
            cpu_threads=threads,
            workers=workers,
        )
        await engine.load()
        options = DecodeOptions(language="en")
        lone = []
        for _ in range(repeats):
            t = time.perf_counter()
            await engine.transcribe(audio, options)
            lone.append(time.perf_counter() - t)
        t = time.perf_counter()
        await asyncio.gather(*(engine.transcribe(audio, options) for _ in range(2 * workers)))
        out[label] = {
            "threads_per_worker": threads,
            "lone_decode_seconds": round(statistics.median(lone), 3),
            f"{2 * workers}_decodes_wall_seconds": round(time.perf_counter() - t, 3),
        }
        await engine.close()
    every, split = out["every_core"], out["split"]
    out["lone_speedup"] = round(split["lone_decode_seconds"] / every["lone_decode_seconds"], 2)
    key = f"{2 * workers}_decodes_wall_seconds"
    out["concurrent_throughput_ratio"] = round(split[key] / every[key], 2)
    return out


async def main(interims: bool, latency: bool = True, turns: bool = True) -> dict[str, Any]:
    store = ModelStore(default_model_dir())
    data = clips(store) if latency else []
    settings = SttSettings(server=SttServerSettings(host="127.0.0.1", port=0, metrics_port=None), cache_max_bytes=0)
    app = SttApp.from_settings(settings)
    started = time.perf_counter()
    running = await start_app(app, settings.server)
    load_seconds = time.perf_counter() - started
    rows = []
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub = stt_pb2_grpc.SttServiceStub(channel)
            await asyncio.sleep(1.0)  # let Piper's ONNX threads stop spinning before timing
            turn_report = await turn_taking(stub, store) if turns else None
            for name, language, text, pcm in data:
                row = await stream_clip(stub, language, pcm, interims)
                row.update(clip=name, language=language, speech_seconds=round(pcm.duration, 3))
                row["wer"] = round(word_error_rate(text, row["transcript"]), 3)
                rows.append(row)
                print(
                    f"{name:40s} {pcm.duration:5.2f}s eos→final {row['eos_to_final_seconds']:.3f}s "
                    f"decode {row['decode_seconds']:.3f}s rtf {row['rtf'] or 0:.3f} wer {row['wer']:.2f} "
                    f"interims {row['interims']}",
                    flush=True,
                )
    finally:
        await running.stop(0)
        await app.close()
    if not latency:
        return {"benchmark": "stt", "host": _host(), "settings": _turn_settings(settings), "turns": turn_report}
    latencies = [r["eos_to_final_seconds"] for r in rows]
    rtfs = [r["rtf"] for r in rows if r["rtf"] is not None]
    report = {
        "benchmark": "stt",
        "engine": "whisper-base cpu int8 (default settings)",
        "host": _host(),
        "settings": {
            "end_of_speech_silence_ms": settings.streaming.end_of_speech_silence_ms,
            "speculative_pause_ms": settings.streaming.speculative_pause_ms,
            "decode_workers": settings.decode_workers,
            "interim_results": interims,
            "pace": "real time, 100 ms chunks",
            **_turn_settings(settings),
        },
        "load_and_warm_seconds": round(load_seconds, 3),
        "clips": len(rows),
        "eos_to_final_seconds": {
            "p50": round(quantile(latencies, 0.5), 3),
            "p95": round(quantile(latencies, 0.95), 3),
            "mean": round(statistics.fmean(latencies), 3),
            "note": "includes the 300 ms end-of-speech silence and up to 100 ms of chunking",
        },
        "rtf": {
            "p50": round(quantile(rtfs, 0.5), 3),
            "p95": round(quantile(rtfs, 0.95), 3),
            "mean": round(statistics.fmean(rtfs), 3),
        },
        "mean_wer": round(statistics.fmean(r["wer"] for r in rows), 3),
        "threads": await thread_split(store, next(c[3] for c in data if c[1] == "en"), settings.decode_workers),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "results": rows,
        "turns": turn_report,
    }
    return report


def _host() -> dict[str, Any]:
    return {"cpus": os.cpu_count(), "machine": platform.machine(), "load_average_1m": os.getloadavg()[0]}


def _turn_settings(settings: SttSettings) -> dict[str, Any]:
    return {
        "turn": settings.streaming.turn.model_dump(),
        "speculative_pause_ms": settings.streaming.speculative_pause_ms,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.stt")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_stt.json"))
    parser.add_argument("--no-interims", action="store_true", help="stream without interim results")
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--turns-only", action="store_true", help="only the turn-taking measurements")
    which.add_argument("--no-turns", action="store_true", help="skip the turn-taking measurements")
    args = parser.parse_args()
    result = asyncio.run(main(not args.no_interims, latency=not args.turns_only, turns=not args.no_turns))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    keys = ("eos_to_final_seconds", "rtf", "mean_wer", "peak_rss_bytes", "load_and_warm_seconds", "threads")
    summary = {k: result[k] for k in keys if k in result}
    if result.get("turns"):
        summary["turns"] = {
            "replay": result["turns"]["replay"],
            "live": {
                mode: {k: v for k, v in m.items() if k != "results"} for mode, m in result["turns"]["modes"].items()
            },
        }
    print(json.dumps(summary, indent=2))
