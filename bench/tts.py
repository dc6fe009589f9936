"""TTS benchmark: time to first audio and real-time factor per engine, over gRPC on loopback.

``python -m bench.tts [--rounds N] [--out reports/bench_tts.json]``

Starts the real service in-process with the phrase cache off (engine numbers, not cache
numbers), then per voice: SynthesizeStream time to first audio, unary Synthesize latency and
RTF (wall time / audio seconds) over a set of answer-like texts; then the latency of a
repeated phrase with the cache on.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from pathlib import Path
from typing import Any

import grpc

from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.runtime.config import ServerSettings, default_model_dir
from services.runtime.server import start_app
from services.tts.app import TtsApp
from services.tts.config import TtsSettings

TEXTS = {
    "en": [
        "Sure, here is what I found about the weather in Paris today: it will be sunny, with a high of 24 degrees.",
        "Your meeting with Dr. Smith is at 10:30 am on Tuesday.",
        "The train leaves in 15 minutes. Platform 3, on your left.",
        "I could not find that file. Would you like me to search again?",
        "The total comes to $42.50, including a 10% tip.",
    ],
    "fr": [
        "Bien sûr, voici ce que j'ai trouvé sur la météo à Paris aujourd'hui : du soleil, avec 24 degrés.",
        "Votre rendez-vous avec le Dr Martin est à 14h30 mardi.",
        "Le train part dans 15 minutes. Quai 3, sur votre gauche.",
        "Je n'ai pas trouvé ce fichier. Voulez-vous que je cherche encore ?",
        "Le total est de 42,50 €, pourboire de 10 % compris.",
    ],
}
VOICES = [("en_US-joe-medium", "en"), ("espeak-ng:en-us", "en"), ("espeak-ng:fr", "fr")]


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    k = (len(ordered) - 1) * q
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def summary(values: list[float]) -> dict[str, float]:
    return {
        "p50": round(pct(values, 0.5), 4),
        "p95": round(pct(values, 0.95), 4),
        "mean": round(statistics.fmean(values), 4),
        "n": len(values),
    }


async def bench_voice(stub: Any, voice: str, language: str, rounds: int) -> dict[str, Any]:
    ttfa, latency, rtf, audio_s = [], [], [], []
    engine = ""
    for r in range(rounds):
        for text in TEXTS[language]:
            # a distinct speed per round: no two requests are the same phrase
            config = tts_pb2.SynthesisConfig(voice=voice, speed=1.0 + r * 0.001)
            t0 = time.perf_counter()
            first = None
            async for response in stub.SynthesizeStream(tts_pb2.SynthesizeStreamRequest(text=text, config=config)):
                if first is None:
                    first = time.perf_counter() - t0
                    engine = response.audio.engine
            assert first is not None
            ttfa.append(first)
            t0 = time.perf_counter()
            whole = (await stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, config=config))).audio
            seconds = time.perf_counter() - t0
            latency.append(seconds)
            rtf.append(seconds / whole.duration_seconds)
            audio_s.append(whole.duration_seconds)
    return {
        "voice": voice,
        "engine": engine,
        "language": language,
        "time_to_first_audio_s": summary(ttfa),
        "whole_text_latency_s": summary(latency),
        "rtf": summary(rtf),
        "audio_seconds_per_text": summary(audio_s),
    }


async def bench_cache(stub: Any, rounds: int) -> dict[str, Any]:
    text = "Your order has been confirmed."
    config = tts_pb2.SynthesisConfig(voice="en_US-joe-medium")
    t0 = time.perf_counter()
    first = await stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, config=config))
    miss = time.perf_counter() - t0
    hits = []
    for _ in range(max(5, rounds * 5)):
        t0 = time.perf_counter()
        again = await stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, config=config))
        hits.append(time.perf_counter() - t0)
        assert again.audio.cached and again.audio.audio == first.audio.audio
    return {"phrase": text, "first_s": round(miss, 4), "cached_s": summary(hits)}


async def run(rounds: int, threads: int) -> dict[str, Any]:
    server = ServerSettings(host="127.0.0.1", port=0, metrics_port=None)
    results: dict[str, Any] = {
        "benchmark": "tts",
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            # the CPU is shared: a high load average means inflated latencies
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
        "settings": {"rounds": rounds, "onnx_threads": threads, "transport": "gRPC loopback, one call at a time"},
    }
    for cache_bytes in (0, 16 * 1024 * 1024):
        settings = TtsSettings(server=server, model_dir=default_model_dir(), cache_bytes=cache_bytes)
        settings.device.device = "cpu"
        settings.device.threads = threads
        app = TtsApp(settings)
        t0 = time.perf_counter()
        running = await start_app(app, settings.server)
        load_s = time.perf_counter() - t0
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub = tts_pb2_grpc.TtsServiceStub(channel)
                if cache_bytes == 0:
                    results["load_and_warm_s"] = round(load_s, 3)
                    results["engines"] = [await bench_voice(stub, v, lang, rounds) for v, lang in VOICES]
                else:
                    results["cache"] = await bench_cache(stub, rounds)
        finally:
            await running.stop(0)
            await app.close()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tts", description=__doc__)
    parser.add_argument("--rounds", type=int, default=4, help="passes over the texts per voice")
    parser.add_argument("--threads", type=int, default=0, help="onnxruntime threads (0: all cores)")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_tts.json"))
    args = parser.parse_args()
    results = asyncio.run(run(args.rounds, args.threads))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    for e in results["engines"]:
        print(
            f"{e['voice']:<20} first audio p50 {e['time_to_first_audio_s']['p50'] * 1000:6.0f} ms "
            f"p95 {e['time_to_first_audio_s']['p95'] * 1000:6.0f} ms   RTF p50 {e['rtf']['p50']:.3f} "
            f"p95 {e['rtf']['p95']:.3f}"
        )
    c = results["cache"]
    print(f"cache: first {c['first_s'] * 1000:.0f} ms, repeated p50 {c['cached_s']['p50'] * 1000:.1f} ms")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
