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
  per engine (Kokoro's styles and blends share one model, hence one figure).

Then the voice against the LLM on the same cores (a turn speaks its first pieces while the
LLM still writes): LLM decode speed alone and beside Kokoro, Kokoro's chunk time alone and
beside the LLM, for 1 or 2 threads each; and the phrase cache.

The CPU is shared: compare voices as ratios within one run, not across runs.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import grpc

from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.runtime.config import ServerSettings, default_model_dir

FRENCH_ANSWERS = [
    "Il fait beau aujourd'hui à Lyon, avec un maximum de 24 degrés.",
    "Votre rendez-vous chez le dentiste est demain à 9 heures.",
    "La capitale de l'Espagne est Madrid.",
    "J'ai ajouté du lait et des œufs à votre liste de courses.",
    "Le prochain train pour Marseille part à 18 h 45, voie 7.",
    "Il est actuellement 14 h 20.",
    "D'accord, je lance un minuteur de dix minutes.",
    "Je n'ai pas compris votre question. Pouvez-vous la reformuler ?",
    "Demain, il va pleuvoir toute la matinée, pensez à prendre un parapluie.",
    "La tour Eiffel mesure environ 330 mètres de haut.",
    "Votre colis sera livré jeudi entre 10 heures et midi.",
    "Bonne nuit, et à demain !",
    "Le restaurant le plus proche est à cinq minutes à pied.",
    "J'ai envoyé le message à Sophie.",
    "Le match commence à 20 heures sur la deuxième chaîne.",
    "Pour faire des crêpes, il faut de la farine, des œufs, du lait et une pincée de sel.",
    "La réunion d'équipe a été déplacée à vendredi matin.",
    "Il reste 15 % de batterie sur votre téléphone.",
    "Le musée du Louvre est fermé le mardi.",
    "N'oubliez pas d'appeler votre mère ce soir.",
    "La pharmacie de garde se trouve rue Victor Hugo.",
    "Il y a des bouchons sur l'autoroute, comptez vingt minutes de plus.",
    "Le film dure deux heures et quart.",
    "Votre vol pour Montréal décolle à 7 h 30 de l'aéroport Charles de Gaulle.",
    "Bien sûr, je lance votre musique préférée.",
    "L'eau est à 19 degrés, elle est encore un peu fraîche.",
    "Votre facture d'électricité s'élève à 62 euros ce mois-ci.",
    "Le marché est ouvert tous les samedis de 8 heures à 13 heures.",
    "Je ne trouve pas ce contact dans votre carnet d'adresses.",
    "Victor Hugo a écrit Les Misérables en 1862.",
    "Le soleil se couche ce soir à 20 h 15.",
    "Vous avez trois nouveaux messages, dont un de votre banque.",
    "Attention, la route est glissante ce matin à cause du verglas.",
    "La boulangerie ouvre à 7 heures et ferme à 19 h 30.",
    "Je peux réserver une table pour quatre personnes samedi soir.",
    "C'est noté : vous devez sortir les poubelles mercredi.",
]
ENGLISH_ANSWERS = [
    "It is sunny today in Lyon, with a high of 24 degrees.",
    "Your dentist appointment is tomorrow at 9 o'clock.",
    "The capital of Spain is Madrid.",
    "I added milk and eggs to your shopping list.",
    "The next train to Marseille leaves at 6:45 pm from platform 7.",
    "It is currently 2:20 pm.",
    "All right, I am starting a ten minute timer.",
    "I did not understand your question. Could you rephrase it?",
    "Tomorrow it will rain all morning, remember to take an umbrella.",
    "The Eiffel Tower is about 330 meters tall.",
    "Your parcel will be delivered on Thursday between 10 am and noon.",
    "Good night, and see you tomorrow!",
    "The nearest restaurant is a five minute walk away.",
    "I sent the message to Sophie.",
    "The match starts at 8 pm on channel two.",
    "To make pancakes, you need flour, eggs, milk and a pinch of salt.",
    "The team meeting has been moved to Friday morning.",
    "Your phone has 15% battery left.",
    "The Louvre museum is closed on Tuesdays.",
    "Do not forget to call your mother tonight.",
    "The pharmacy on duty is on Victor Hugo street.",
    "There is traffic on the highway, allow twenty more minutes.",
    "The film lasts two hours and a quarter.",
    "Your flight to Montreal takes off at 7:30 am from Charles de Gaulle airport.",
    "Of course, I am playing your favorite music.",
    "The water is 19 degrees, it is still a little cold.",
    "Your electricity bill comes to 62 euros this month.",
    "The market is open every Saturday from 8 am to 1 pm.",
    "I cannot find this contact in your address book.",
    "Victor Hugo wrote Les Misérables in 1862.",
    "The sun sets tonight at 8:15 pm.",
    "You have three new messages, one of them from your bank.",
    "Be careful, the road is slippery this morning because of black ice.",
    "The bakery opens at 7 am and closes at 7:30 pm.",
    "I can book a table for four people on Saturday evening.",
    "Noted: you need to take out the bins on Wednesday.",
]
ANSWERS = {"fr": FRENCH_ANSWERS, "en": ENGLISH_ANSWERS}
KOKORO_STYLES = ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
KOKORO_BLENDS = ["jf_nezumi*0.5+jm_kumo*0.5", "jf_gongitsune*0.5+jf_nezumi*0.5", "jf_nezumi*0.7+jm_kumo*0.3"]
"""Blends considered beside the named styles (the best styles of a first pass, mixed)."""
FIRST_CHUNK_WORDS = 4


def default_voices() -> list[tuple[str, str]]:
    voices = [("espeak-ng:fr", "fr"), ("fr_FR-siwis-medium", "fr")]
    voices += [(f"kokoro:{style}", "fr") for style in KOKORO_STYLES]
    voices += [(f"kokoro:{blend}", "fr") for blend in KOKORO_BLENDS]
    return [*voices, ("en_US-joe-medium", "en"), ("espeak-ng:en-us", "en")]


def first_chunk(text: str) -> str:
    """The first few words of an answer (to its first comma if sooner): what the pipeline
    sends first, so the voice starts while the rest is written."""
    head = text.split(",")[0].split()
    return " ".join(head[:FIRST_CHUNK_WORDS])


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


# ----------------------------------------------------------------------------- memory
def _status_kb(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def probe_memory(engine: str, threads: int) -> dict[str, Any]:
    """In this (child) process: resident memory added by loading one engine and speaking."""
    import onnxruntime  # noqa: F401 - imported before the baseline: shared by every engine
    from piper import PiperVoice  # noqa: F401

    from services.models.store import ModelStore
    from services.runtime.device import Placement
    from services.tts.engines import EspeakEngine, PiperEngine, SynthOptions
    from services.tts.kokoro import KokoroEngine

    store = ModelStore(default_model_dir())
    cpu = Placement("cpu", 0, "int8")
    texts = ENGLISH_ANSWERS if engine == "piper" else FRENCH_ANSWERS
    base = _status_kb("VmRSS")
    speaker: Any
    if engine == "kokoro":
        from services.tts.config import DEFAULT_FRENCH_KOKORO, KokoroSettings

        kokoro = KokoroSettings()
        speaker = KokoroEngine(store, cpu, threads=threads or kokoro.threads, pace=kokoro.pace)
        voice = DEFAULT_FRENCH_KOKORO
    elif engine == "piper":
        speaker, voice = PiperEngine(store, cpu, threads), "en_US-joe-medium"
    else:
        speaker, voice = EspeakEngine(), "espeak-ng:fr"
    speaker.load(voice)
    loaded = _status_kb("VmRSS")
    for text in texts:
        speaker.synthesize(voice, text, SynthOptions())
    return {
        "engine": engine,
        "rss_added_by_load_mb": round((loaded - base) / 1024, 1),
        "rss_added_after_speaking_mb": round((_status_kb("VmRSS") - base) / 1024, 1),
        "peak_rss_mb": round(_status_kb("VmHWM") / 1024, 1),
        "baseline_rss_mb": round(base / 1024, 1),
        # espeak-ng speaks in a short-lived process per call (Kokoro runs one for phonemes):
        # not counted here
    }


def memory(engines: list[str], threads: int | None) -> list[dict[str, Any]]:
    out = []
    for engine in engines:
        done = subprocess.run(
            [sys.executable, "-m", "bench.tts", "--probe-memory", engine, "--threads", str(threads or 0)],
            capture_output=True,
            text=True,
            check=True,
            timeout=600,
        )
        out.append(json.loads(done.stdout.strip().splitlines()[-1]))
    return out


# ----------------------------------------------------------------------------- threads vs the LLM
def _speak_until(stop: threading.Event, engine: Any, voice: str, texts: list[str], times: list[float]) -> None:
    """Speaks ``texts`` in a loop until ``stop`` is set, recording each one's time."""
    from services.tts.engines import SynthOptions

    i = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        engine.synthesize(voice, texts[i % len(texts)], SynthOptions())
        times.append(time.perf_counter() - t0)
        i += 1


def contention(
    voice: str, kokoro_threads: tuple[int, ...] = (1, 2), llm_threads: tuple[int, ...] = (2, 1), tokens: int = 48
) -> dict[str, Any]:
    """The voice and the LLM on the same cores, as in a turn (the first pieces are spoken
    while the LLM still writes): LLM decode speed (llama.cpp, the default model) alone and
    while Kokoro speaks short chunks back to back, and Kokoro's chunk time alone and beside
    the LLM, for each pair of thread counts. Interleaved in this process, one pair at a time."""
    from llama_cpp import Llama

    from services.models.store import ModelStore
    from services.runtime.device import Placement
    from services.tts.config import KokoroSettings
    from services.tts.engines import SynthOptions
    from services.tts.kokoro import KokoroEngine

    store = ModelStore(default_model_dir())
    chunks = [first_chunk(t) for t in FRENCH_ANSWERS]
    engines = {}
    alone: dict[int, dict[str, float]] = {}
    for threads in kokoro_threads:
        engine = KokoroEngine(store, Placement("cpu", 0, "int8"), threads=threads, pace=KokoroSettings().pace)
        engine.load(voice)
        times = []
        for text in chunks[:8]:
            t0 = time.perf_counter()
            engine.synthesize(voice, text, SynthOptions())
            times.append(time.perf_counter() - t0)
        engines[threads], alone[threads] = engine, summary(times)
    rows = []
    for n_llm in llm_threads:
        llm: Any = Llama(
            model_path=str(store.gguf("qwen2.5-coder-1.5b-instruct-q4_k_m")),
            n_threads=n_llm,
            n_threads_batch=n_llm,
            verbose=False,
        )
        prompt = llm.tokenize(b"Explique en quelques phrases pourquoi le ciel est bleu.")

        def decode_rate(llm: Any = llm, prompt: list[int] = prompt) -> float:
            llm.reset()
            started = None
            count = 0
            for _ in llm.generate(prompt, temp=0.0):
                count += 1
                if count == 1:
                    started = time.perf_counter()  # after the prompt: decode speed only
                if count > tokens:
                    break
            assert started is not None
            return (count - 1) / (time.perf_counter() - started)

        rate_alone = decode_rate()
        for threads, engine in engines.items():
            busy: list[float] = []
            stop = threading.Event()
            worker = threading.Thread(target=_speak_until, args=(stop, engine, voice, chunks, busy))
            worker.start()
            try:
                rate = decode_rate()
            finally:
                stop.set()
                worker.join()
            rows.append(
                {
                    "llm_threads": n_llm,
                    "kokoro_threads": threads,
                    # llama.cpp's threads wait on each other: other load on the cores slows it a lot
                    "load_average": [round(x, 2) for x in os.getloadavg()],
                    "llm_tokens_per_s_alone": round(rate_alone, 2),
                    "llm_tokens_per_s_beside": round(rate, 2),
                    "first_chunk_s_alone": alone[threads],
                    "first_chunk_s_beside_llm": summary(busy),
                }
            )
        del llm
    return {"voice": voice, "pairs": rows}


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
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            # the CPU is shared: a high load average means inflated latencies
            "load_average_at_start": [round(x, 2) for x in os.getloadavg()],
        },
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
    parser.add_argument("--probe-memory", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=Path("reports/bench_tts.json"))
    args = parser.parse_args()
    if args.probe_memory:
        print(json.dumps(probe_memory(args.probe_memory, args.threads)))
        return
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
