"""Load: N conversations at once against the local fleet, at real-time pace, level after level.

``python -m bench.load [--levels 1,2,4,8] [--seconds 60] [--out reports/bench_load.json]``

Each conversation is one ``Converse`` stream that behaves like a hands-free client
(``bench.talker.Talker``): it speaks a
question (a real recording streamed at real-time pace, then silence so the server hears the end
of speech), reports playback STARTED on the first answer audio and FINISHED once the answer has
played (its audio duration after the first chunk), waits for the microphone gate to reopen, and
asks the next question, until the level's time is up. From two conversations on, half speak
French and half English; a single conversation speaks each language in turn, the level's time
each, so every level has the same mix of voices. No turn starts after the deadline; the
turns in flight finish (or time out) before the level ends, so every turn is accounted for.

Every turn ends in exactly one way:

- **ok**: the answer was spoken (latency event and answer audio);
- **degraded**: it was answered, with a ``StageError(degraded=True)`` (canned reply, text only);
- **error**: it ended with a clear error (``StageError(degraded=False)`` or an RPC status);
- **lost**: none of these within the turn timeout, or the stream ended without a reason.

Per level: turns by outcome, errors by kind, client-side time to first audio (from the true end
of speech, as in ``bench.e2e``) p50/p95/p99 and the server's own figure, the time until each
turn was acknowledged (the first audio heard: on a full machine the orchestrator's spoken
"one moment", else the answer; the goal is every turn within 3 s), wait notices, turns
declined and sessions refused, and each service's
open file descriptors before and after the level (sessions closed), and each service's CPU
seconds over the level and per completed turn, and what that CPU did, from the services' own
counters (``work_per_turn``: the LLM's tokens read and written, speech decodes, speculative
answers withdrawn, synthesis time by voice). The knee is the first level
whose p95 is at least twice level 1's; each level's p95 ratio to level 1's comes with a 90 %
bootstrap interval (``p95_ratio_to_first_level``). Each level is recorded in the reliability ledger
(category "load"; passed = no turn lost).
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import random
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from bench.common import DEMO, REPO, percentile, questions
from bench.fleet import ProcStat, counter_deltas, fleet_counters, fleet_descriptors, fleet_stats
from bench.fleet import fleet as production_fleet
from bench.talker import SessionEnded, Talker, TurnResult
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from services.fleet import Fleet
from services.orchestrator.turn import POINTS
from services.runtime.audio import Pcm
from services.testkit.ledger import record

TYPED: dict[str, list[str]] = {
    "en": ["What is the capital of Italy?", "How many legs does a spider have?", "Name a primary colour."],
    "fr": ["Quelle est la capitale de l'Italie ?", "Combien de pattes a une araignée ?", "Cite une couleur primaire."],
}


def typed_questions() -> dict[str, list[str]]:
    """Typed questions by language: a few built-in ones plus the bundled questions' text."""
    out = {lang: list(texts) for lang, texts in TYPED.items()}
    with (DEMO / "questions.tsv").open() as f:
        for row in csv.DictReader(f, delimiter="\t"):
            out.setdefault(row["language"], []).append(row["text"])
    return out


def spoken_questions() -> dict[str, list[tuple[str, Pcm]]]:
    """Spoken questions (``bench.common.questions``) by language."""
    out: dict[str, list[tuple[str, Pcm]]] = {}
    for q in questions():
        out.setdefault(q.language, []).append((q.name, q.pcm))
    return out


# ---------------------------------------------------------------------------- a level
ACK_BUDGET_S = 3.0
"""Every turn must be acknowledged (answer or spoken wait notice) within this (issue 18)."""
WORK_COUNTERS = {
    "stt": ("parole_stt_decode_seconds", "parole_stt_speculative_decodes"),
    "llm": ("parole_llm_tokens", "parole_llm_generations"),
    "tts": ("parole_tts_synthesis_seconds", "parole_tts_characters"),
    "orchestrator": ("parole_speculative_turns", "parole_turns"),
}
"""The services' counters read before and after each level (``work``, ``work_per_turn``)."""


def work_line(per_turn: Mapping[str, float]) -> str:
    """The level's work per turn in a line: the LLM's tokens read and written, speech decodes,
    speculative answers, synthesis time by voice engine."""

    def total(service: str, family: str, **labels: str) -> float:
        return sum(
            v
            for k, v in per_turn.items()
            if k.startswith(f"{service} {family}{{")
            and all(f"{n}={x}" in k[k.index("{") + 1 : -1].split(",") for n, x in labels.items())
        )

    synth = ", ".join(
        f"{k.split('engine=')[1].split(',')[0].rstrip('}')} {v:.2f} s"
        for k, v in per_turn.items()
        if k.startswith("tts parole_tts_synthesis_seconds_sum")
    )
    return (
        f"LLM tokens read {total('llm', 'parole_llm_tokens_total', kind='prompt_evaluated'):.1f}"
        f" (of {total('llm', 'parole_llm_tokens_total', kind='prompt'):.0f} in the prompt),"
        f" written {total('llm', 'parole_llm_tokens_total', kind='completion'):.1f};"
        f" generations {total('llm', 'parole_llm_generations_total'):.2f};"
        f" speech decodes {total('stt', 'parole_stt_decode_seconds_count'):.2f}"
        f" ({total('stt', 'parole_stt_decode_seconds_sum'):.2f} s);"
        f" speculative answers withdrawn {total('orchestrator', 'parole_speculative_turns_total', outcome='withdrawn'):.2f};"
        f" synthesis {synth or 'none'}"
    )


def summarize(turns: Sequence[TurnResult]) -> dict[str, Any]:
    """Counts by outcome, errors by kind, and time-to-first-audio percentiles."""
    outcomes = Counter(t.outcome for t in turns)
    # Real answers only (outcome "ok"): the time to first audio of a spoken model answer.
    ttfa = [t.time_to_first_audio_s for t in turns if t.outcome == "ok" and t.time_to_first_audio_s is not None]
    server = [t.server_first_audio_s for t in turns if t.outcome == "ok" and t.server_first_audio_s is not None]
    out: dict[str, Any] = {
        "turns": len(turns),
        "completed": outcomes["ok"] + outcomes["degraded"],
        "ok": outcomes["ok"],
        "degraded": outcomes["degraded"],
        "errors": outcomes["error"],
        "lost": outcomes["lost"],
        "errors_by_kind": dict(Counter(t.error for t in turns if t.error)),
    }
    for q in (0.5, 0.95, 0.99):
        out[f"time_to_first_audio_p{round(q * 100)}_s"] = percentile(ttfa, q) if ttfa else None
    out["server_first_audio_p50_s"] = percentile(server, 0.5) if server else None
    # Per language: French answers are slower even alone (Kokoro), so each language's figures
    # are compared with the same language's at level 1 too.
    by_language: dict[str, list[float]] = {}
    for t in turns:
        if t.outcome == "ok" and t.time_to_first_audio_s is not None and t.language:
            by_language.setdefault(t.language, []).append(t.time_to_first_audio_s)
    out["time_to_first_audio_by_language"] = {
        lang: {"turns": len(xs), "p50_s": round(percentile(xs, 0.5), 3), "p95_s": round(percentile(xs, 0.95), 3)}
        for lang, xs in sorted(by_language.items())
    }
    # Degraded answers (the LLM's canned fallback when it is saturated) come fast and would
    # flatter the figures above; these include them.
    answered = [t.time_to_first_audio_s for t in turns if t.outcome in ("ok", "degraded") and t.time_to_first_audio_s]
    out["answered_time_to_first_audio_p50_s"] = percentile(answered, 0.5) if answered else None
    out["answered_time_to_first_audio_p95_s"] = percentile(answered, 0.95) if answered else None
    # Acknowledged: the first audio the person heard, the spoken wait notice on a full machine
    # or the answer itself. Every turn counts: one never acknowledged counts as forever.
    spoken = [t for t in turns if t.question != "(session)"]
    acked = [t.acknowledged_s if t.acknowledged_s is not None else float("inf") for t in spoken]
    out["acknowledged_p50_s"] = percentile(acked, 0.5) if acked else None
    out["acknowledged_p95_s"] = percentile(acked, 0.95) if acked else None
    out["acknowledged_within_3s"] = sum(a <= ACK_BUDGET_S for a in acked)
    out["wait_notices"] = sum(t.wait_notice for t in spoken)
    out["declined"] = sum("RESOURCE_EXHAUSTED" in t.error for t in spoken)
    out["sessions_refused"] = sum(t.error == "session:rpc:RESOURCE_EXHAUSTED" for t in turns)
    # Where the time went, by the server's own marks (medians over the answered turns).
    points = sorted({p for t in spoken for p in t.server_marks}, key=lambda p: (*POINTS, p).index(p))
    out["server_marks_p50_s"] = {
        p: round(percentile([t.server_marks[p] for t in spoken if p in t.server_marks], 0.5), 3) for p in points
    }
    return out


async def _conversation(
    stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub,
    language: str,
    spoken: Sequence[tuple[str, Pcm]],
    deadline: float,
    offset: int,
    turns: list[TurnResult],
    turn_timeout: float,
) -> None:
    """Question after question until the deadline; a session that ends is reopened."""
    i = offset
    while time.monotonic() < deadline:
        talker = Talker(stub, language, turn_timeout=turn_timeout)
        try:
            await talker.open()
            while time.monotonic() < deadline:
                name, pcm = spoken[i % len(spoken)]
                i += 1
                turns.append(await talker.speak(name, pcm))
        except SessionEnded as ended:
            # A session refused or ended between turns: no turn was lost, but it is an error.
            turns.append(TurnResult("spoken", "(session)", "error", error=f"session:{ended.error}"))
            await asyncio.sleep(1.0)
        finally:
            await talker.close()


async def settled_stats(fleet: Fleet, fds_before: Mapping[str, int], timeout: float = 15.0) -> dict[str, ProcStat]:
    """The services' stats once each holds no more descriptors than before the level, or at
    ``timeout``. A service lets go of a finished session's resources once it reads the
    stream's end, which on a loaded machine can take more than a second; a descriptor still
    open at the timeout is kept, and shows in ``fds_after``."""
    deadline = time.monotonic() + timeout
    while True:
        stats = fleet_stats(fleet)
        if all(s.fds <= fds_before.get(n, s.fds) for n, s in stats.items()) or time.monotonic() >= deadline:
            return stats
        await asyncio.sleep(0.1)


async def run_level(
    fleet: Fleet,
    conversations: int,
    seconds: float,
    *,
    turn_timeout: float = 90.0,
    ledger_name: str | None = None,
) -> dict[str, Any]:
    """Holds ``conversations`` at once for ``seconds``; returns the level's summary and records
    it in the ledger (``ledger_name``: the record's name; default from the level)."""
    spoken = spoken_questions()
    languages = sorted(spoken, key=lambda lang: lang != "en")  # English first: most questions
    counters_before = fleet_counters(fleet, WORK_COUNTERS)
    # The level's own connection is open in both counts of descriptors: the orchestrator
    # closes its end only once the client's channel is gone, which grpc may leave until the
    # channel object is freed, and a count without it before but with it after would read as
    # a descriptor leaked by the sessions.
    channel = grpc.aio.insecure_channel(fleet.target("orchestrator"))
    await asyncio.wait_for(channel.channel_ready(), timeout=30.0)
    stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    stats_before = fleet_stats(fleet)
    fds_before = {n: s.fds for n, s in stats_before.items()}
    descriptors_before = fleet_descriptors(fleet)
    load_before = os.getloadavg()[0]
    turns: list[TurnResult] = []
    t0 = time.monotonic()
    deadline = t0 + seconds
    if conversations == 1:
        # Alone, the conversation speaks each language in turn, ``seconds`` each: the levels
        # above speak both languages half and half, and French answers are slower even alone
        # (Kokoro), so a level compared with an English-only one would count the voice as load.
        for lang in languages:
            await _conversation(stub, lang, spoken[lang], time.monotonic() + seconds, 0, turns, turn_timeout)
    else:
        tasks = []
        for i in range(conversations):
            lang = languages[i % len(languages)]
            tasks.append(asyncio.create_task(_conversation(stub, lang, spoken[lang], deadline, i, turns, turn_timeout)))
            await asyncio.sleep(min(1.0, 3.0 / conversations))  # staggered, not in lockstep
        await asyncio.gather(*tasks)
    elapsed = time.monotonic() - t0
    stats_after = await settled_stats(fleet, fds_before)
    # Which descriptors a service holds now that it did not before the level (kept open, or
    # reopened under another number): what to look at when fds_after is above fds_before.
    descriptors_after = fleet_descriptors(fleet)
    opened = {
        n: sorted(f"{fd} {what}" for fd, what in fds.items() if descriptors_before.get(n, {}).get(fd) != what)
        for n, fds in descriptors_after.items()
    }
    await channel.close()
    work = counter_deltas(counters_before, fleet_counters(fleet, WORK_COUNTERS))
    summary = {
        "conversations": conversations,
        "seconds": seconds,
        "elapsed_s": round(elapsed, 1),
        **summarize(turns),
        "fds_before": fds_before,
        "fds_after": {n: s.fds for n, s in stats_after.items()},
        "fds_opened": {n: fds for n, fds in opened.items() if fds},
        "rss_after_mb": {n: round(s.rss_mb, 1) for n, s in stats_after.items()},
        # Where the cores went: each service's CPU seconds over the level. Per completed turn,
        # compared across levels, it shows work added by contention (threads spinning, caches
        # thrashed) as against more turns served.
        "cpu_s": {n: round(s.cpu_s - stats_before[n].cpu_s, 1) for n, s in stats_after.items()},
        # What that CPU did: the services' own counters over the level (tokens read and
        # written, decodes by kind, speculative answers kept or withdrawn, pieces synthesized),
        # in all and per completed turn.
        "work": {k: round(v, 2) for k, v in sorted(work.items())},
        # The machine's 1-minute load average: other work on shared cores inflates latencies.
        "loadavg_1m": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "turn_log": [asdict(t) for t in turns],
    }
    summary["turns_per_minute"] = round(summary["completed"] * 60 / elapsed, 1)
    summary["cpu_s_per_turn"] = {n: round(cpu / max(1, summary["completed"]), 2) for n, cpu in summary["cpu_s"].items()}
    summary["work_per_turn"] = {k: round(v / max(1, summary["completed"]), 2) for k, v in sorted(work.items())}
    summary["cpu_busy_share"] = round(sum(summary["cpu_s"].values()) / (elapsed * (os.cpu_count() or 1)), 2)
    record(
        "load",
        ledger_name or f"{conversations} conversations x {seconds:.0f} s",
        passed=summary["lost"] == 0 and summary["completed"] > 0,
        lost=summary["lost"],
        conversations=conversations,
        seconds=seconds,
        turns=summary["turns"],
        completed=summary["completed"],
        errors=summary["errors"],
        errors_by_kind=summary["errors_by_kind"],
        ttfa_p50_s=summary["time_to_first_audio_p50_s"],
        ttfa_p95_s=summary["time_to_first_audio_p95_s"],
        ttfa_p99_s=summary["time_to_first_audio_p99_s"],
        acknowledged_p95_s=summary["acknowledged_p95_s"],
        wait_notices=summary["wait_notices"],
        declined=summary["declined"],
        loadavg_1m=summary["loadavg_1m"],
    )
    return summary


def knee(levels: Mapping[int, Mapping[str, Any]]) -> int | None:
    """The first level whose p95 time to first audio is at least twice the lowest level's."""
    ordered = sorted(levels)
    base = levels[ordered[0]].get("time_to_first_audio_p95_s") if ordered else None
    if not base:
        return None
    for n in ordered[1:]:
        p95 = levels[n].get("time_to_first_audio_p95_s")
        if p95 is not None and p95 >= 2 * base:
            return n
    return None


def p95_ratios(
    levels: Mapping[int, Mapping[str, Any]], resamples: int = 2000, seed: int = 0
) -> dict[int, dict[str, Any]]:
    """Each level's p95 time to first audio over the lowest level's, with a 90 % bootstrap
    interval: both levels' answered turns resampled with replacement, ``resamples`` times.
    A single conversation holds 9-20 turns, so its p95 is one of its slowest turns and the
    ratio moves between runs; the interval says by how much. With 20 turns or fewer the
    nearest-rank p95 is the slowest turn, which a resample can only match or miss, so the
    interval leans above the measured ratio: read it as how high the ratio could be."""

    def times(level: Mapping[str, Any], language: str | None = None) -> list[float]:
        return [
            t["time_to_first_audio_s"]
            for t in level.get("turn_log", [])
            if t["outcome"] == "ok"
            and t["time_to_first_audio_s"] is not None
            and (language is None or t.get("language") == language)
        ]

    def ratio(level: list[float], base: list[float]) -> dict[str, Any]:
        ratios = sorted(
            percentile(rng.choices(level, k=len(level)), 0.95) / percentile(rng.choices(base, k=len(base)), 0.95)
            for _ in range(resamples)
        )
        return {
            "ratio": round(percentile(level, 0.95) / percentile(base, 0.95), 2),
            "interval_90": [round(percentile(ratios, 0.05), 2), round(percentile(ratios, 0.95), 2)],
        }

    ordered = sorted(levels)
    first = levels[ordered[0]] if ordered else {}
    languages = sorted({t.get("language") for t in first.get("turn_log", []) if t.get("language")})
    rng = random.Random(seed)
    out: dict[int, dict[str, Any]] = {}
    for n in ordered[1:]:
        level, base = times(levels[n]), times(first)
        if not base or not level:
            continue
        out[n] = ratio(level, base)
        by_language = {}
        for lang in languages:
            level, base = times(levels[n], lang), times(first, lang)
            if level and base:
                by_language[lang] = ratio(level, base)
        out[n]["by_language"] = by_language
    return out


async def warm_up(fleet: Fleet) -> None:
    """One spoken turn through every stage, not measured (first-call costs)."""
    async with grpc.aio.insecure_channel(fleet.target("orchestrator")) as channel:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        spoken = spoken_questions()["en"]
        talker = Talker(stub, "en", playback="instant")
        await talker.open()
        await talker.speak(*spoken[0])
        await talker.close()


async def run(fleet: Fleet, levels: Sequence[int], seconds: float) -> dict[str, Any]:
    await warm_up(fleet)
    results: dict[int, dict[str, Any]] = {}
    for n in levels:
        results[n] = await run_level(fleet, n, seconds)
        s = results[n]
        print(
            f"{n:3d} conversations: {s['completed']:4d} turns ({s['turns_per_minute']}/min, "
            f"{s['degraded']} degraded), "
            f"{s['errors']} errors, {s['lost']} lost, time to first audio "
            f"p50 {s['time_to_first_audio_p50_s']} p95 {s['time_to_first_audio_p95_s']} "
            f"p99 {s['time_to_first_audio_p99_s']}; acknowledged p95 {s['acknowledged_p95_s']} "
            f"({s['acknowledged_within_3s']}/{s['turns']} within 3 s, {s['wait_notices']} wait notices, "
            f"{s['declined']} declined, {s['sessions_refused']} sessions refused); "
            f"CPU per turn {s['cpu_s_per_turn']} s, cores busy {s['cpu_busy_share']:.0%}",
            flush=True,
        )
        print(f"      work per turn: {work_line(s['work_per_turn'])}", flush=True)
    k = knee(results)
    ratios = p95_ratios(results)
    for n, r in ratios.items():
        results[n]["p95_ratio_to_first_level"] = r
        langs = ", ".join(f"{lang} {x['ratio']} {x['interval_90']}" for lang, x in r["by_language"].items())
        print(f"p95 at {n} / p95 at {min(levels)}: {r['ratio']} (90 % bootstrap interval {r['interval_90']}; {langs})")
    return {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "seconds_per_level": seconds,
        "knee": k,
        "knee_note": (
            f"p95 time to first audio at {k} conversations is at least twice that at {min(levels)}"
            if k is not None
            else f"p95 did not double up to {max(levels)} conversations"
        ),
        "levels": {str(n): r for n, r in results.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.load", description=__doc__.splitlines()[0])
    parser.add_argument("--levels", default="1,2,4,8", help="concurrent conversations per level, comma-separated")
    parser.add_argument("--seconds", type=float, default=60.0, help="how long each level lasts")
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_load.json")
    args = parser.parse_args()
    levels = sorted({int(x) for x in args.levels.split(",") if x.strip()})
    if not levels or levels[0] < 1:
        parser.error("--levels: positive integers")
    with production_fleet([]) as running:  # main thread: the services die with this process
        report = asyncio.run(run(running, levels, args.seconds))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    print(f"knee: {report['knee_note']}")
    print(f"report: {args.out}")


if __name__ == "__main__":
    main()
