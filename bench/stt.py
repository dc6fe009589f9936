"""STT benchmark: clips streamed at real-time pace over loopback gRPC.

``python -m bench.stt [--out reports/bench_stt.json] [--no-interims]``

Starts the real service in-process (Whisper base, CPU int8 by default settings), then streams
each clip in 100 ms chunks at the pace it would be spoken, with interim results on, and
measures per clip: end of speech → final (from sending the chunk where the voice stops to
receiving the final; it includes the configured 300 ms silence), the final's decode time and
real-time factor, and word error rate against the text. Peak memory is the process's
maximum resident set (model, VAD, gRPC, client all in one process).

It also times how the decode workers share the cores (``threads``): a lone decode, and four
decodes two at a time, with every core per worker (the default) against the cores split
between the workers, as a ratio from the same run.
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
import numpy as np

from parole.audio.v1 import audio_pb2
from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from services.models.store import ModelStore
from services.runtime.audio import Pcm, pcm16_to_float, read_wav, resample_pcm16, silence
from services.runtime.config import default_model_dir
from services.runtime.server import start_app
from services.stt.app import SttApp
from services.stt.config import SttServerSettings, SttSettings
from services.stt.engine import DecodeOptions, WhisperEngine
from tests.speech import espeak, piper_joe, real_samples
from tests.stt.conftest import paced_requests, word_error_rate

SPEECH_DIR = Path(os.environ.get("PAROLE_SPEECH_DIR", Path(__file__).resolve().parents[2] / "shared" / "speech"))
JOE = [
    "Could you tell me how long it takes to drive to the airport?",
    "Please set a timer for ten minutes and remind me to call my sister.",
    "What time does the pharmacy close tonight?",
]
ESPEAK_EN = ["Turn on the lights in the kitchen.", "Play some music please."]
LEAD, TAIL = 0.3, 1.0


def trim(pcm: Pcm) -> Pcm:
    """Drops the clip's own leading and trailing silence, so the speech end is known."""
    audio = np.frombuffer(pcm.data, dtype="<i2")
    loud = np.nonzero(np.abs(audio) > 300)[0]
    return Pcm(audio[loud[0] : loud[-1] + 1].tobytes(), pcm.sample_rate) if loud.size else pcm


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


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


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


async def main(interims: bool) -> dict[str, Any]:
    store = ModelStore(default_model_dir())
    data = clips(store)
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
    latencies = [r["eos_to_final_seconds"] for r in rows]
    rtfs = [r["rtf"] for r in rows if r["rtf"] is not None]
    report = {
        "benchmark": "stt",
        "engine": "whisper-base cpu int8 (default settings)",
        "host": {"cpus": os.cpu_count(), "machine": platform.machine(), "load_average_1m": os.getloadavg()[0]},
        "settings": {
            "end_of_speech_silence_ms": settings.streaming.end_of_speech_silence_ms,
            "speculative_pause_ms": settings.streaming.speculative_pause_ms,
            "decode_workers": settings.decode_workers,
            "interim_results": interims,
            "pace": "real time, 100 ms chunks",
        },
        "load_and_warm_seconds": round(load_seconds, 3),
        "clips": len(rows),
        "eos_to_final_seconds": {
            "p50": round(pct(latencies, 50), 3),
            "p95": round(pct(latencies, 95), 3),
            "mean": round(statistics.fmean(latencies), 3),
            "note": "includes the 300 ms end-of-speech silence and up to 100 ms of chunking",
        },
        "rtf": {
            "p50": round(pct(rtfs, 50), 3),
            "p95": round(pct(rtfs, 95), 3),
            "mean": round(statistics.fmean(rtfs), 3),
        },
        "mean_wer": round(statistics.fmean(r["wer"] for r in rows), 3),
        "threads": await thread_split(store, next(c[3] for c in data if c[1] == "en"), settings.decode_workers),
        # ru_maxrss is in KiB on Linux.
        "peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "results": rows,
    }
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.stt")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_stt.json"))
    parser.add_argument("--no-interims", action="store_true", help="stream without interim results")
    args = parser.parse_args()
    result = asyncio.run(main(not args.no_interims))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2))
    summary = {
        k: result[k]
        for k in ("eos_to_final_seconds", "rtf", "mean_wer", "peak_rss_bytes", "load_and_warm_seconds", "threads")
    }
    print(json.dumps(summary, indent=2))
