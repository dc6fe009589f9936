"""Spinning: model threads spinning or sleeping, alone and on a full machine.

``python -m bench.spinning [--reps 8] [--out reports/bench_spinning.json]``

The fleet's services share the host's cores. onnxruntime's intra-op threads spin between
operators by default, which is free on an idle machine and costs the others a core on a full
one. This bench loads the TTS voices twice (Kokoro's French blend and Piper joe, 2 threads
each), once spinning and once sleeping (the fleet's setting), and times the same first piece
of an answer, interleaved, first alone and then beside one busy process per core: wall time
(what the listener waits) and CPU time (what the others lose), medians.

The same for the LLM's llama.cpp, whose OpenMP threads meet a barrier after every operator
(``services.runtime.openmp``): libgomp reads its wait policy once, when it loads, so each
policy runs in its own process (libgomp's default, and PASSIVE, the fleet's setting), and
the row times the first 40 tokens of one answer (the default model, 2 threads).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import services.tts.engines as tts_engines
import services.tts.kokoro as tts_kokoro
from bench.common import REPO
from services.llm.config import LlamaCppSettings
from services.models.store import ModelStore
from services.runtime.config import default_model_dir
from services.runtime.device import Placement
from services.runtime.onnx import SPINNING
from services.runtime.openmp import VARIABLE, load_with_sleeping_threads
from services.tts.config import DEFAULT_FRENCH_KOKORO
from services.tts.engines import Engine, PiperEngine, SynthOptions
from services.tts.kokoro import KokoroEngine

PIECES = {"kokoro": (DEFAULT_FRENCH_KOKORO, "Bonjour, la capitale de la France"), "piper": ("en_US-joe-medium", "The capital of Italy is Rome")}  # fmt: skip


def _engines(spin: bool) -> dict[str, Engine]:
    """Both voices loaded with onnxruntime spinning (or not)."""
    fleet_options = tts_engines.session_options

    def options(threads: int) -> Any:
        o = fleet_options(threads)
        o.add_session_config_entry(SPINNING, "1" if spin else "0")
        return o

    store, cpu = ModelStore(default_model_dir()), Placement("cpu", 0, "int8")
    tts_engines.session_options = tts_kokoro.session_options = options  # type: ignore[assignment,attr-defined]
    try:
        out: dict[str, Engine] = {
            "kokoro": KokoroEngine(store, cpu, threads=2, blends=[DEFAULT_FRENCH_KOKORO]),
            "piper": PiperEngine(store, cpu, 2),
        }
        for name, engine in out.items():
            engine.load(PIECES[name][0])
    finally:
        tts_engines.session_options = tts_kokoro.session_options = fleet_options  # type: ignore[assignment,attr-defined]
    return out


LLM_PROMPT = "Tell me about the history of Paris in a few sentences."
LLM_TOKENS = 40


def _llm_worker(spin: bool, conn: Any) -> None:
    """A child process: loads the fleet's default model, with libgomp's default policy
    (``spin``) or as the fleet loads it, and, on each request, times the first
    ``LLM_TOKENS`` of the same answer."""
    if not spin and not load_with_sleeping_threads("llama_cpp"):
        raise RuntimeError(f"{VARIABLE} is set in the environment: unset it to compare the policies")
    import llama_cpp

    path = ModelStore(default_model_dir()).gguf(LlamaCppSettings().model)
    llm = llama_cpp.Llama(model_path=str(path), n_ctx=1024, n_threads=2, n_threads_batch=2, verbose=False)
    prompt = llm.tokenize(
        f"<|im_start|>user\n{LLM_PROMPT}<|im_end|>\n<|im_start|>assistant\n".encode(), add_bos=False, special=True
    )
    conn.send("ready")
    while conn.recv() == "go":
        llm.reset()  # type: ignore[no-untyped-call]
        c0, w0 = time.process_time(), time.perf_counter()
        for n, _ in enumerate(llm.generate(prompt, temp=0.0), start=1):
            if n >= LLM_TOKENS:
                break
        conn.send((time.perf_counter() - w0, time.process_time() - c0))


class _Llms:
    """One child process per wait policy, each holding the model (``_llm_worker``)."""

    def __init__(self) -> None:
        ctx = mp.get_context("spawn")  # a fresh interpreter: libgomp loads under the policy
        self.children = {}
        for spin in (True, False):
            here, there = ctx.Pipe()
            child = ctx.Process(target=_llm_worker, args=(spin, there), daemon=True)
            child.start()
            self.children[spin] = (child, here)
        for _, here in self.children.values():
            if here.recv() != "ready":
                raise RuntimeError("the llama.cpp child did not start")

    def answer(self, spin: bool) -> tuple[float, float]:
        here = self.children[spin][1]
        here.send("go")
        wall, cpu = here.recv()
        return float(wall), float(cpu)

    def close(self) -> None:
        for child, here in self.children.values():
            here.send("stop")
            child.join(timeout=10)


def _busy(stop: Any) -> None:
    while not stop.is_set():
        pass


def run(reps: int) -> dict[str, Any]:
    engines = {spin: _engines(spin) for spin in (True, False)}
    llms = _Llms()
    try:
        rows = [row for loaded in (False, True) for row in _level(engines, llms, loaded, reps)]
    finally:
        llms.close()
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "reps": reps,
        "rows": rows,
    }


def _level(engines: dict[bool, dict[str, Engine]], llms: _Llms, loaded: bool, reps: int) -> list[dict[str, Any]]:
    """Every model, spinning and sleeping, alone (``loaded`` False) or beside busy processes."""
    rows: list[dict[str, Any]] = []
    stop = mp.Event()
    hogs = [mp.Process(target=_busy, args=(stop,)) for _ in range(os.cpu_count() or 1)] if loaded else []
    for hog in hogs:
        hog.start()
    time.sleep(0.5 if loaded else 0.0)
    times: dict[tuple[str, bool], list[tuple[float, float]]] = {}
    try:
        for _ in range(reps):
            for spin in (True, False):  # interleaved: drifts of the host touch both alike
                for name, (voice, text) in PIECES.items():
                    c0, w0 = time.process_time(), time.perf_counter()
                    engines[spin][name].synthesize(voice, text, SynthOptions())
                    times.setdefault((name, spin), []).append((time.perf_counter() - w0, time.process_time() - c0))
                times.setdefault(("llama.cpp", spin), []).append(llms.answer(spin))
    finally:
        stop.set()
        for hog in hogs:
            hog.join()
    for (name, spin), xs in sorted(times.items()):
        rows.append(
            {
                "model": name,
                "spinning": spin,
                "machine_full": loaded,
                "wall_p50_s": round(statistics.median(w for w, _ in xs), 3),
                "cpu_p50_s": round(statistics.median(c for _, c in xs), 3),
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.spinning", description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=8)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_spinning.json")
    args = parser.parse_args()
    report = run(args.reps)
    for r in report["rows"]:
        print(
            f"{'full' if r['machine_full'] else 'idle'} {r['model']:9s} spinning={r['spinning']!s:5s} "
            f"wall p50 {r['wall_p50_s']:.3f} s, CPU p50 {r['cpu_p50_s']:.3f} s"
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
