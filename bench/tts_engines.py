"""TTS engines run in this process, for ``bench.tts``: what a voice costs beyond its speed.

- ``memory``: resident memory added by loading each engine and speaking, each in a child
  process of its own (``python -m bench.tts_engines ENGINE THREADS`` prints the probe's JSON);
- ``contention``: Kokoro and the LLM (llama.cpp) on the same cores, as in a turn, for each
  pair of thread counts.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from bench.common import summary
from bench.tts_answers import ENGLISH_ANSWERS, FRENCH_ANSWERS, first_chunk
from services.runtime.config import default_model_dir


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
            [sys.executable, "-m", "bench.tts_engines", engine, str(threads or 0)],
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


if __name__ == "__main__":
    print(json.dumps(probe_memory(sys.argv[1], int(sys.argv[2]))))
