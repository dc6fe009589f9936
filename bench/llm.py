"""LLM benchmark: time to first token and tokens/s of the offline models, cold and warm.

``python -m bench.llm`` → ``reports/bench_llm.json``. For each model and each question:

- cold first turn: an empty cache, system prompt and question read in full;
- warm second turn: the follow-up in the same conversation, reading only its new tokens;
- cold second turn: the very same follow-up prompt after emptying the cache (what the warm
  turn would cost without prefix reuse).

Parallel conversations (``--parallel 1 2 --conversations 2 4``): that many first turns asked at
once of a backend with one context, then with two (two answered at once over the same
weights): each turn's time to first token from its submission, the time until every answer
is done, and the tokens per second of all of them together, with the ratio to one context.

A question asked while another answer is being written (``--late-rounds 3``): a long answer
runs, and once it has written 20 tokens a question comes in on the other context; with the
first tokens first (``llamacpp.first_tokens``, the default) and without it, taking turns round
after round. For the newcomer, the time to its first token and to its sixth (about four words,
what the first spoken piece needs) and to its end; for the long answer, the time to its end.

A long conversation (``--long-turns 12 --long-window 8``): one session of that many turns whose
history keeps the last ``--long-window`` exchanges, as the service's ``sessions.max_turns``
does, asked twice: with the KV cache shifted when the oldest exchange falls out of the window
(``llamacpp.shift_history``, the default), and with the remaining history reread instead. Per
turn, the time to first token and the prompt tokens read; the figure is the turns after the
window filled.

Generation is greedy and capped, so runs compare; tokens/s is counted after the first token.
Each thread count asked for is measured separately: on a host whose cores are busy with other
work, llama.cpp's threads wait for each other at every step, and 2 threads can be many times
slower than 1 (the report records the load average next to the numbers).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.llm.backends.base import ChatMessage, Delta, Finish, GenerationParams
from services.llm.backends.llamacpp import LlamaCppBackend
from services.llm.config import DEFAULT_SYSTEM_PROMPTS, LlamaCppSettings
from services.models.store import ModelStore
from services.runtime.config import default_model_dir

MODELS = ["smollm2-135m-instruct-q4_1", "qwen2.5-coder-0.5b-instruct", "qwen2.5-coder-1.5b-instruct-q4_k_m"]
QUESTIONS = [
    ("en", "What is the capital of France?", "And how many people live there?"),
    ("fr", "Quelle est la capitale de l'Italie ?", "Et quel fleuve la traverse ?"),
    ("en", "Who wrote Romeo and Juliet?", "When did he live?"),
    ("fr", "Combien de jours y a-t-il dans une année ?", "Et dans une année bissextile ?"),
    ("en", "What is the boiling point of water?", "And at the top of Everest?"),
]


@dataclass
class Run:
    ttft: float
    tokens_per_second: float
    prompt_tokens: int
    prompt_tokens_evaluated: int
    text: str


async def generate(backend: LlamaCppBackend, messages: list[ChatMessage], language: str, max_tokens: int) -> Run:
    started = time.perf_counter()
    first: float | None = None
    parts: list[str] = []
    finish: Finish | None = None
    async for item in backend.stream(messages, GenerationParams(max_tokens, 0.0, language, "bench")):
        if isinstance(item, Delta):
            first = first or time.perf_counter()
            parts.append(item.text)
        else:
            finish = item
    end = time.perf_counter()
    assert first is not None and finish is not None
    tps = (finish.completion_tokens - 1) / (end - first) if finish.completion_tokens > 1 else 0.0
    return Run(first - started, tps, finish.prompt_tokens, finish.prompt_tokens_evaluated, "".join(parts))


def stats(runs: list[Run]) -> dict[str, Any]:
    ttfts = sorted(r.ttft for r in runs)
    p95 = statistics.quantiles(ttfts, n=20, method="inclusive")[18] if len(ttfts) > 1 else ttfts[0]
    return {
        "runs": len(runs),
        "ttft_p50_seconds": round(statistics.median(ttfts), 4),
        "ttft_p95_seconds": round(p95, 4),
        "tokens_per_second_p50": round(statistics.median(r.tokens_per_second for r in runs), 2),
        "prompt_tokens_p50": statistics.median(r.prompt_tokens for r in runs),
        "prompt_tokens_evaluated_p50": statistics.median(r.prompt_tokens_evaluated for r in runs),
    }


async def bench_model(store: ModelStore, name: str, runs: int, threads: int, max_tokens: int) -> dict[str, Any]:
    loaded_at = time.perf_counter()
    backend = LlamaCppBackend(store.gguf(name), name, n_ctx=2048, n_threads=threads)
    await backend.load()
    load_seconds = time.perf_counter() - loaded_at
    cold_first: list[Run] = []
    warm_second: list[Run] = []
    cold_second: list[Run] = []
    primed_first: list[Run] = []
    samples: list[str] = []
    try:
        # One untimed answer first: the first decode after loading pays for page faults and
        # buffer allocation that no later turn sees.
        await generate(backend, [ChatMessage("user", "Hello")], "en", 4)
        for i in range(runs):
            language, question, follow_up = QUESTIONS[i % len(QUESTIONS)]
            turn1 = [ChatMessage("system", DEFAULT_SYSTEM_PROMPTS[language]), ChatMessage("user", question)]
            await backend.reset_cache()
            one = await generate(backend, turn1, language, max_tokens)
            turn2 = [*turn1, ChatMessage("assistant", one.text), ChatMessage("user", follow_up)]
            two = await generate(backend, turn2, language, max_tokens)
            await backend.reset_cache()
            cold = await generate(backend, turn2, language, max_tokens)
            # As the service runs after start-up: every language's system prompt primed.
            await backend.reset_cache()
            await backend.prime(list(DEFAULT_SYSTEM_PROMPTS.values()))
            primed_first.append(await generate(backend, turn1, language, max_tokens))
            cold_first.append(one)
            warm_second.append(two)
            cold_second.append(cold)
            samples.append(f"{question} → {one.text.strip()}")
    finally:
        await backend.close()
    return {
        "load_seconds": round(load_seconds, 2),
        "cold_first_turn": stats(cold_first),
        "warm_second_turn": stats(warm_second),
        "cold_second_turn": stats(cold_second),
        "primed_first_turn": stats(primed_first),
        "sample_answers": samples[:2],
    }


LONG_QUESTIONS = [
    "What is the capital of France?",
    "And how many people live there?",
    "Which river runs through it?",
    "Name a famous museum there.",
    "What is the tallest building in the city?",
    "Which language do people speak there?",
    "What is a typical dish from that country?",
    "Which sea is to the south of the country?",
    "Name a big city on that coast.",
    "What is the weather like there in summer?",
    "Which mountains are on the border with Spain?",
    "What is the highest peak of those mountains?",
    "Which country is to the east of France?",
    "What is its capital?",
]


async def bench_sliding(
    store: ModelStore, name: str, turns: int, window: int, threads: int, max_tokens: int
) -> dict[str, Any]:
    """One long conversation, with the history window sliding, shifted then reread."""
    backend = LlamaCppBackend(store.gguf(name), name, n_ctx=4096, n_threads=threads)
    await backend.load()
    out: dict[str, Any] = {"model": name, "turns": turns, "window": window}
    try:
        await generate(backend, [ChatMessage("user", "Hello")], "en", 4)
        for shift in (True, False):
            backend.shift_history = shift
            await backend.reset_cache()
            await backend.prime([DEFAULT_SYSTEM_PROMPTS["en"]])
            history: list[tuple[str, str]] = []
            rows = []
            for i in range(turns):
                question = LONG_QUESTIONS[i % len(LONG_QUESTIONS)]
                messages = [ChatMessage("system", DEFAULT_SYSTEM_PROMPTS["en"])]
                for user, assistant in history[-window:]:
                    messages += [ChatMessage("user", user), ChatMessage("assistant", assistant)]
                run = await generate(backend, [*messages, ChatMessage("user", question)], "en", max_tokens)
                history.append((question, run.text))
                shifted = backend.last_run.shifted_tokens if backend.last_run else 0
                rows.append(
                    {
                        "turn": i + 1,
                        "ttft_seconds": round(run.ttft, 3),
                        "prompt_tokens": run.prompt_tokens,
                        "prompt_tokens_evaluated": run.prompt_tokens_evaluated,
                        "shifted_tokens": shifted,
                    }
                )
            slid = [r for r in rows if r["turn"] > window + 1]
            out["shifted" if shift else "reread"] = {
                "per_turn": rows,
                "after_window_ttft_p50_seconds": round(statistics.median(r["ttft_seconds"] for r in slid), 3),
                "after_window_ttft_max_seconds": max(r["ttft_seconds"] for r in slid),
                "after_window_prompt_tokens_evaluated_p50": statistics.median(
                    r["prompt_tokens_evaluated"] for r in slid
                ),
            }
    finally:
        backend.shift_history = True
        await backend.close()
    return out


async def first_turn(backend: LlamaCppBackend, i: int, began: float, key: str, max_tokens: int) -> tuple[float, int]:
    """Question ``i``'s first turn: seconds from ``began`` to its first token, and its tokens."""
    language, question, _ = QUESTIONS[i % len(QUESTIONS)]
    messages = [ChatMessage("system", DEFAULT_SYSTEM_PROMPTS[language]), ChatMessage("user", question)]
    first: float | None = None
    tokens = 0
    async for item in backend.stream(messages, GenerationParams(max_tokens, 0.0, language, key)):
        if isinstance(item, Delta):
            first = first or time.perf_counter() - began
        else:
            tokens = item.completion_tokens
    assert first is not None
    return first, tokens


async def warm(backends: Iterable[LlamaCppBackend]) -> None:
    """Loads each backend, runs it once untimed (page faults) and primes the system prompts,
    so the rounds that follow measure the same thing from the first."""
    for backend in backends:
        await backend.load()
        await generate(backend, [ChatMessage("user", "Hello")], "en", 4)
        await backend.prime(list(DEFAULT_SYSTEM_PROMPTS.values()))


async def bench_parallel(
    store: ModelStore,
    name: str,
    contexts: list[int],
    conversations: list[int],
    threads: int,
    max_tokens: int,
    rounds: int,
) -> dict[str, Any]:
    """Several conversations' first turns at once, for each number of contexts. Every backend
    is loaded and warmed first and the configurations take turns round after round (medians
    kept): the first minutes of a run are slower (clock ramp, page cache), which would
    otherwise favour whichever went last."""
    backends = {
        p: LlamaCppBackend(store.gguf(name), name, n_ctx=2048, n_threads=threads, parallel=p, max_waiting=64)
        for p in contexts
    }
    samples: dict[str, list[dict[str, float]]] = {}
    try:
        await warm(backends.values())
        for r in range(rounds):
            for n in conversations:
                for parallel, backend in backends.items():
                    began = time.perf_counter()
                    results = await asyncio.gather(
                        *(first_turn(backend, i, began, f"par-{r}-{n}-{i}", max_tokens) for i in range(n))
                    )
                    wall = time.perf_counter() - began
                    ttfts = sorted(t for t, _ in results)
                    samples.setdefault(f"contexts_{parallel}_conversations_{n}", []).append(
                        {
                            "ttft_p50_seconds": statistics.median(ttfts),
                            "ttft_max_seconds": ttfts[-1],
                            "all_done_seconds": wall,
                            "tokens_per_second_total": sum(k for _, k in results) / wall,
                        }
                    )
    finally:
        for backend in backends.values():
            await backend.close()
    out: dict[str, Any] = {
        key: {m: round(statistics.median(s[m] for s in runs), 3) for m in runs[0]} for key, runs in samples.items()
    }
    base = contexts[0]
    for n in conversations:
        one = out[f"contexts_{base}_conversations_{n}"]
        for parallel in contexts[1:]:
            m = out[f"contexts_{parallel}_conversations_{n}"]
            m[f"vs_contexts_{base}"] = {
                "ttft_max": round(m["ttft_max_seconds"] / one["ttft_max_seconds"], 2),
                "tokens_per_second_total": round(m["tokens_per_second_total"] / one["tokens_per_second_total"], 2),
            }
    return out


LATE_LONG = "Tell me a long story about a dragon who learns to sing."
LATE_FIRST_PIECE = 6
"""Tokens of the newcomer's first spoken piece (about four words)."""


async def bench_late_question(store: ModelStore, name: str, threads: int, rounds: int) -> dict[str, Any]:
    """A question arriving while another answer is being written, with and without the first
    tokens first (module docstring)."""
    settings = {"first_tokens_first": LlamaCppSettings().first_tokens, "off": 0}
    backends = {
        key: LlamaCppBackend(store.gguf(name), name, n_ctx=2048, n_threads=threads, parallel=2, first_tokens=ft)
        for key, ft in settings.items()
    }
    samples: dict[str, list[dict[str, float]]] = {}

    async def answer(
        backend: LlamaCppBackend,
        question: str,
        language: str,
        key: str,
        tokens: int,
        marks: dict[str, float],
        prefix: str,
        started: asyncio.Event | None,
    ) -> None:
        messages = [ChatMessage("system", DEFAULT_SYSTEM_PROMPTS[language]), ChatMessage("user", question)]
        began, count = time.perf_counter(), 0
        async for item in backend.stream(messages, GenerationParams(tokens, 0.0, language, key)):
            if isinstance(item, Delta):
                count += 1
                if count == 1:
                    marks[f"{prefix}_first_token_seconds"] = time.perf_counter() - began
                if count == LATE_FIRST_PIECE:
                    marks[f"{prefix}_first_piece_seconds"] = time.perf_counter() - began
                if started is not None and count == 20:
                    started.set()
        marks[f"{prefix}_done_seconds"] = time.perf_counter() - began

    try:
        await warm(backends.values())
        for r in range(rounds):
            for i, (language, question, _) in enumerate(QUESTIONS):
                for key, backend in backends.items():
                    marks: dict[str, float] = {}
                    going = asyncio.Event()
                    long = asyncio.create_task(
                        answer(backend, LATE_LONG, "en", f"long-{r}-{i}", 80, marks, "long", going)
                    )
                    await going.wait()
                    await answer(backend, question, language, f"late-{r}-{i}", 40, marks, "late", None)
                    await long
                    samples.setdefault(key, []).append(marks)
    finally:
        for backend in backends.values():
            await backend.close()
    out: dict[str, Any] = {
        key: {m: round(statistics.median(s[m] for s in runs if m in s), 3) for m in runs[0]}
        for key, runs in samples.items()
    }
    on, off = out["first_tokens_first"], out["off"]
    on["vs_off"] = {m: round(on[m] / off[m], 2) for m in off if off[m]}
    return out


async def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m bench.llm", description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--threads", type=int, nargs="+", default=[2])
    parser.add_argument("--max-tokens", type=int, default=32)
    parser.add_argument("--out", type=Path, default=Path("reports/bench_llm.json"))
    parser.add_argument("--parallel", type=int, nargs="*", default=[1, 2], help="contexts to compare ([] to skip)")
    parser.add_argument("--conversations", type=int, nargs="+", default=[2, 4])
    parser.add_argument("--parallel-rounds", type=int, default=3)
    parser.add_argument("--parallel-model", default="qwen2.5-coder-1.5b-instruct-q4_k_m")
    parser.add_argument("--skip-single", action="store_true", help="only the parallel comparison")
    parser.add_argument("--late-rounds", type=int, default=3, help="rounds of the late question (0 to skip)")
    parser.add_argument("--long-turns", type=int, default=12, help="turns of the long conversation (0 to skip)")
    parser.add_argument("--long-window", type=int, default=8, help="exchanges its history keeps")
    args = parser.parse_args(argv)
    store = ModelStore(default_model_dir())
    report: dict[str, Any] = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "host": {
            "cpus": os.cpu_count(),
            "machine": platform.machine(),
            "python": platform.python_version(),
            # The cores are shared with other work: the load says how quiet the host was.
            "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        },
        "settings": {"threads": args.threads, "max_tokens": args.max_tokens, "temperature": 0.0, "runs": args.runs},
        "models": {},
    }
    for name in [] if args.skip_single else args.models:
        report["models"][name] = {}
        for threads in args.threads:
            print(f"benchmarking {name}, {threads} thread(s), {args.runs} runs…", flush=True)
            load = round(os.getloadavg()[0], 2)
            m = await bench_model(store, name, args.runs, threads, args.max_tokens)
            m["load_average_1m_before"] = load
            report["models"][name][f"threads_{threads}"] = m
            print(
                f"  ttft p50 cold first {m['cold_first_turn']['ttft_p50_seconds']} s, primed first "
                f"{m['primed_first_turn']['ttft_p50_seconds']} s, warm second "
                f"{m['warm_second_turn']['ttft_p50_seconds']} s, cold second {m['cold_second_turn']['ttft_p50_seconds']} s; "
                f"{m['warm_second_turn']['tokens_per_second_p50']} tok/s",
                flush=True,
            )
    if args.parallel:
        print(f"parallel conversations on {args.parallel_model}: contexts {args.parallel}…", flush=True)
        report["parallel"] = {
            "model": args.parallel_model,
            "rounds": args.parallel_rounds,
            "threads_per_context": args.threads[0],
            **await bench_parallel(
                store,
                args.parallel_model,
                args.parallel,
                args.conversations,
                args.threads[0],
                args.max_tokens,
                args.parallel_rounds,
            ),
        }
        for key, m in report["parallel"].items():
            if isinstance(m, dict):
                print(f"  {key}: {m}", flush=True)
    if args.late_rounds:
        print(f"a question while another answer is written, on {args.parallel_model}…", flush=True)
        late = await bench_late_question(store, args.parallel_model, args.threads[0], args.late_rounds)
        report["late_question"] = {"model": args.parallel_model, "rounds": args.late_rounds, **late}
        for key, m in late.items():
            print(f"  {key}: {m}", flush=True)
    if args.long_turns > args.long_window + 1:
        print(f"long conversation on {args.parallel_model}: {args.long_turns} turns, window {args.long_window}…")
        long = await bench_sliding(
            store, args.parallel_model, args.long_turns, args.long_window, args.threads[0], args.max_tokens
        )
        report["long_conversation"] = long
        for key in ("shifted", "reread"):
            m = long[key]
            print(
                f"  {key}: after the window filled, ttft p50 {m['after_window_ttft_p50_seconds']} s, "
                f"max {m['after_window_ttft_max_seconds']} s, prompt tokens read p50 "
                f"{m['after_window_prompt_tokens_evaluated_p50']}",
                flush=True,
            )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    asyncio.run(main())
