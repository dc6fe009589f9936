"""TTS benchmark: per voice, how well it is understood and how fast it speaks, over gRPC.

``python -m bench.tts [--rounds N] [--voices V ...] [--out reports/bench_tts.json]``

Starts the real service in-process with the phrase cache off (engine numbers, not cache
numbers), then per voice:

- round-trip WER: everyday assistant answers (36 in French; their English translation for
  the English voices) synthesised by the service at 16 kHz and read back by our own STT
  engine (Whisper base, the STT service's default engine and decoding);
- time to first audio of a short first chunk (the first few words of each answer, as the
  pipeline sends first), p50 / p95;
- real-time factor of whole answers (wall time / audio seconds);
- memory: resident set added by loading the voice's engine and speaking, in a child process
  per engine (Kokoro's styles and blends share one model, hence one figure; ``bench.tts_engines``).

Then the voice against the LLM on the same cores (a turn speaks its first pieces while the
LLM still writes): LLM decode speed alone and beside Kokoro, Kokoro's chunk time alone and
beside the LLM, for 1 or 2 threads each (``bench.tts_engines``); and the phrase cache. The
answers spoken are ``bench.tts_answers``'.

The CPU is shared: compare voices as ratios within one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import time
from pathlib import Path
from typing import Any

import grpc

from bench.common import host, summary
from bench.tts_answers import ANSWERS, FIRST_CHUNK_WORDS, first_chunk
from bench.tts_engines import contention, memory
from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.runtime.config import ServerSettings, default_model_dir

KOKORO_STYLES = ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
KOKORO_BLENDS = ["jf_nezumi*0.5+jm_kumo*0.5", "jf_gongitsune*0.5+jf_nezumi*0.5", "jf_nezumi*0.7+jm_kumo*0.3"]
"""Blends considered beside the named styles (the best styles of a first pass, mixed)."""


def default_voices() -> list[tuple[str, str]]:
    voices = [("espeak-ng:fr", "fr"), ("fr_FR-siwis-medium", "fr")]
    voices += [(f"kokoro:{style}", "fr") for style in KOKORO_STYLES]
    voices += [(f"kokoro:{blend}", "fr") for blend in KOKORO_BLENDS]
    return [*voices, ("en_US-joe-medium", "en"), ("espeak-ng:en-us", "en")]


# ----------------------------------------------------------------------------- scoring
def words(text: str, language: str) -> list[str]:
    """Comparable words: the service's own normalisation (numbers read out), then no case,
    hyphens or punctuation."""
    from services.tts.text import normalize

    spoken = normalize(text, language).text.lower().replace("’", "'").replace("-", " ")
    return re.findall(r"[\w']+", spoken)


def edit_distance(ref: list[str], hyp: list[str]) -> int:
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1]


def wer(pairs: list[tuple[str, str]], language: str) -> float:
    """Word error rate over a corpus: total edits / total reference words."""
    edits = sum(edit_distance(words(ref, language), words(hyp, language)) for ref, hyp in pairs)
    total = sum(len(words(ref, language)) for ref, _ in pairs)
    return edits / max(1, total)


# ----------------------------------------------------------------------------- per voice
class Listener:
    """Our STT: the STT service's default engine (Whisper base) with its default decoding."""

    def __init__(self) -> None:
        from services.models.store import ModelStore
        from services.runtime.device import resolve_placement
        from services.stt.app import build_engine
        from services.stt.config import SttSettings

        settings = SttSettings()
        settings.device.device = "cpu"
        self.engine = build_engine(
            settings.engines[0], settings, resolve_placement(settings.device), ModelStore(settings.model_dir)
        )

    async def load(self) -> None:
        await self.engine.load()

    async def hear(self, chunk: tts_pb2.AudioChunk, language: str) -> str:
        from services.runtime.audio import pcm16_to_float, resample
        from services.stt.engine import DecodeOptions

        audio = resample(pcm16_to_float(chunk.audio), chunk.format.sample_rate_hz, 16000)
        return (await self.engine.transcribe(audio, DecodeOptions(language=language))).text


async def bench_voice(
    stub: tts_pb2_grpc.TtsServiceAsyncStub, listener: Listener, voice: str, language: str, rounds: int
) -> dict[str, Any]:
    answers = ANSWERS[language]
    ttfa: list[float] = []
    cpu: list[float] = []
    rtf: list[float] = []
    heard: list[tuple[str, str]] = []
    engine = ""
    for r in range(rounds):
        # a distinct speed per round: no two requests are the same phrase
        config = tts_pb2.SynthesisConfig(voice=voice, speed=1.0 + r * 0.001, sample_rate_hz=16000)
        for text in answers:
            t0, c0 = time.perf_counter(), time.process_time()
            async for _ in stub.SynthesizeStream(
                tts_pb2.SynthesizeStreamRequest(text=first_chunk(text), config=config)
            ):
                ttfa.append(time.perf_counter() - t0)
                # CPU time of this process (server and client in one, one call at a time): the
                # work itself, less inflated than wall time by other loads on a shared machine
                cpu.append(time.process_time() - c0)
                break
            t0 = time.perf_counter()
            whole = (await stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, config=config))).audio
            rtf.append((time.perf_counter() - t0) / whole.duration_seconds)
            engine = whole.engine
            if whole.voice != voice:
                raise RuntimeError(f"{voice} was asked for but {whole.voice} answered: is its model there?")
            if r == 0:
                heard.append((text, await listener.hear(whole, language)))
    worst = sorted(
        heard,
        key=lambda p: -edit_distance(words(p[0], language), words(p[1], language)) / len(words(p[0], language)),
    )
    return {
        "voice": voice,
        "engine": engine,
        "language": language,
        "round_trip_wer": round(wer(heard, language), 4),
        "answers": len(heard),
        "time_to_first_audio_s": summary(ttfa),
        "first_chunk_cpu_s": summary(cpu),
        "rtf": summary(rtf),
        "worst_heard": [{"said": s, "heard": h} for s, h in worst[:3]],
    }


async def bench_cache(stub: tts_pb2_grpc.TtsServiceAsyncStub, rounds: int) -> dict[str, Any]:
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


# ----------------------------------------------------------------------------- run
async def run(
    rounds: int, threads: int | None, voices: list[tuple[str, str]], with_memory: bool, with_llm: bool
) -> dict[str, Any]:
    from services.runtime.server import start_app
    from services.tts.app import TtsApp
    from services.tts.config import TtsSettings

    server = ServerSettings(host="127.0.0.1", port=0, metrics_port=None)
    results: dict[str, Any] = {
        "benchmark": "tts",
        "host": host(),
        "settings": {
            "rounds": rounds,
            "transport": "gRPC loopback, one call at a time",
            "answers": {lang: len(texts) for lang, texts in ANSWERS.items()},
            "first_chunk": f"first {FIRST_CHUNK_WORDS} words of each answer (to its first comma if sooner)",
            "listener": "STT service default engine: Whisper base int8, its default decoding, language given",
        },
    }
    listener = Listener()
    await listener.load()
    for cache_bytes in (0, 16 * 1024 * 1024):
        settings = TtsSettings(server=server, model_dir=default_model_dir(), cache_bytes=cache_bytes)
        settings.device.device = "cpu"
        if threads is not None:
            settings.device.threads = settings.kokoro.threads = threads
        settings.kokoro.blends = KOKORO_BLENDS
        results["settings"]["onnx_threads"] = {"piper": settings.device.threads, "kokoro": settings.kokoro.threads}
        results["settings"]["kokoro_pace"] = settings.kokoro.pace
        app = TtsApp(settings)
        t0 = time.perf_counter()
        running = await start_app(app, settings.server)
        load_s = time.perf_counter() - t0
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
                stub: tts_pb2_grpc.TtsServiceAsyncStub = tts_pb2_grpc.TtsServiceStub(channel)  # type: ignore[assignment]
                if cache_bytes == 0:
                    results["load_and_warm_s"] = round(load_s, 3)
                    present = set(app.registry.names())
                    skipped = [v for v, _ in voices if v not in present and not v.startswith("kokoro:")]
                    results["skipped_voices_not_present"] = skipped
                    results["voices"] = []
                    for voice, language in voices:
                        if voice in skipped:
                            continue
                        row = await bench_voice(stub, listener, voice, language, rounds)
                        print(_line(row), flush=True)
                        results["voices"].append(row)
                else:
                    results["cache"] = await bench_cache(stub, rounds)
        finally:
            await running.stop(0)
            await app.close()
    await listener.engine.close()
    if with_memory:
        results["memory"] = await asyncio.to_thread(memory, ["espeak-ng", "kokoro", "piper"], threads)
    if with_llm:
        from services.tts.config import DEFAULT_FRENCH_KOKORO

        results["threads_vs_llm"] = await asyncio.to_thread(contention, DEFAULT_FRENCH_KOKORO)
    return results


def _line(e: dict[str, Any]) -> str:
    return (
        f"{e['voice']:<38} WER {e['round_trip_wer'] * 100:5.1f} %  first audio p50 "
        f"{e['time_to_first_audio_s']['p50'] * 1000:5.0f} ms p95 {e['time_to_first_audio_s']['p95'] * 1000:5.0f} ms"
        f" (CPU {e['first_chunk_cpu_s']['p50'] * 1000:5.0f} ms)  RTF p50 {e['rtf']['p50']:.3f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.tts", description=__doc__)
    parser.add_argument("--rounds", type=int, default=1, help="passes over the answers per voice (WER: the first)")
    parser.add_argument(
        "--threads", type=int, default=None, help="onnxruntime threads of every voice (default: the service's settings)"
    )
    parser.add_argument("--voices", nargs="*", help="voices to run (default: every French candidate, joe, espeak)")
    parser.add_argument("--no-memory", action="store_true", help="skip the per-engine memory probes")
    parser.add_argument("--no-llm", action="store_true", help="skip Kokoro threads against the LLM")
    parser.add_argument("--out", type=Path, default=Path("reports/bench_tts.json"))
    args = parser.parse_args()
    voices = default_voices()
    if args.voices:
        known = dict(voices)
        voices = [(v, known.get(v, "en" if v.startswith("en") else "fr")) for v in args.voices]
    results = asyncio.run(run(args.rounds, args.threads, voices, not args.no_memory, not args.no_llm))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
    for m in results.get("memory", []):
        print(
            f"memory {m['engine']:<10} +{m['rss_added_after_speaking_mb']:.0f} MB (load +{m['rss_added_by_load_mb']:.0f})"
        )
    llm = results.get("threads_vs_llm")
    if llm:
        for k in llm["pairs"]:
            print(
                f"LLM {k['llm_threads']} thread(s) {k['llm_tokens_per_s_alone']} tok/s alone, "
                f"{k['llm_tokens_per_s_beside']} beside Kokoro {k['kokoro_threads']} thread(s), whose first chunk "
                f"takes {k['first_chunk_s_alone']['p50']:.2f} s alone, {k['first_chunk_s_beside_llm']['p50']:.2f} s beside"
            )
    c = results["cache"]
    print(f"cache: first {c['first_s'] * 1000:.0f} ms, repeated p50 {c['cached_s']['p50'] * 1000:.1f} ms")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
