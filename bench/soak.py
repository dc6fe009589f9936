"""Soak: hundreds of turns against the local fleet; memory and file descriptors must stay flat.

``python -m bench.soak [--turns 300] [--out reports/bench_soak.json]``

Turns come in rounds of sessions: one session alone, or ``--concurrent`` sessions at once,
each of ``--per-session`` turns, one spoken turn (a real recording at real-time pace) in
``--spoken-every`` and the rest typed; sessions alternate English and French. The client is
headless (playback reported finished as soon as the answer's audio has arrived).

After every round, with all its sessions closed, each service's private resident memory
(RssAnon: heaps, arenas, weights read into memory, what a leak grows) and open file descriptors
are sampled; VmRSS is reported too. The first round is a concurrent one and counts as warm-up:
its sample is the baseline (thread pools, model caches and allocator arenas have grown to their
working size by then). A service is **flat** when

- memory: the median of the last third of the samples after the baseline exceeds the median of
  the middle third by less than ``--rss-tolerance-mb`` (default 25 MB). A leak grows every
  third by the same amount (a 250 kB/turn leak is 25 MB per 100 turns, so a 300-turn run catches
  it, a 1,000-turn run one of 75 kB/turn); a cache or arena that fills up to its bound levels
  off and leaves the last third where the middle one was. Medians, because allocator noise
  (the LLM's moves ±30 MB from round to round as session snapshots come and go) would make
  single samples or a fitted slope flag a plateau. The least-squares slope over the samples
  after the baseline is reported as kB/turn for reading, not judged.
- FDs: no sample after the baseline exceeds the baseline by more than ``--fd-tolerance``
  (default 0), and the last sample is back at (or below) the baseline.

The run is recorded in the reliability ledger (category "soak"; passed = no turn lost and every
service flat).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import grpc

from bench.common import REPO
from bench.fleet import fleet as production_fleet
from bench.fleet import fleet_stats
from bench.load import spoken_questions, summarize, typed_questions, warm_up
from bench.talker import SessionEnded, Talker, TurnResult
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from services.fleet import Fleet
from services.testkit.ledger import record


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def _median(values: Sequence[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2


def analyse(
    samples: Sequence[dict[str, Any]], rss_tolerance_mb: float | Mapping[str, float], fd_tolerance: int
) -> dict[str, dict[str, Any]]:
    """Per service: start → end, the plateau check and the FD verdict.
    ``samples``: {"turns": n, "services": {name: {"rss_mb", "anon_mb", "fds"}}}, the first the
    baseline. ``rss_tolerance_mb``: one bound for every service, or one per service name."""
    base, last = samples[0], samples[-1]
    after = list(samples[1:]) or [last]
    third = max(1, len(after) // 3)
    middle, final = after[third : len(after) - third] or after[:1], after[-third:]
    out: dict[str, dict[str, Any]] = {}
    for name in base["services"]:

        def anon(group: Sequence[dict[str, Any]], name: str = name) -> list[float]:
            return [float(s["services"][name]["anon_mb"]) for s in group]

        growth = _median(anon(final)) - _median(anon(middle))
        fds = [int(s["services"][name]["fds"]) for s in samples]
        base_fds = fds[0]
        tolerance = rss_tolerance_mb if isinstance(rss_tolerance_mb, int | float) else rss_tolerance_mb[name]
        rss_flat = growth < tolerance
        fd_flat = max(fds) <= base_fds + fd_tolerance and fds[-1] <= base_fds
        out[name] = {
            "rss_start_mb": round(base["services"][name]["rss_mb"], 1),
            "rss_end_mb": round(last["services"][name]["rss_mb"], 1),
            "anon_start_mb": round(base["services"][name]["anon_mb"], 1),
            "anon_max_mb": round(max(anon(samples)), 1),
            "anon_end_mb": round(last["services"][name]["anon_mb"], 1),
            "anon_last_third_growth_mb": round(growth, 2),
            "anon_kb_per_turn": round(slope([float(s["turns"]) for s in after], anon(after)) * 1024, 2),
            "rss_tolerance_mb": tolerance,
            "fds_start": base_fds,
            "fds_max": max(fds),
            "fds_end": fds[-1],
            "rss_flat": rss_flat,
            "fds_flat": fd_flat,
            "flat": rss_flat and fd_flat,
        }
    return out


async def _session(
    stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub, language: str, turns: int, spoken_every: int, start: int
) -> list[TurnResult]:
    spoken = spoken_questions()[language]
    typed = typed_questions()[language]
    talker = Talker(stub, language, playback="instant", turn_timeout=120.0)
    results: list[TurnResult] = []
    try:
        await talker.open()
        for i in range(start, start + turns):
            if spoken_every and i % spoken_every == 0:
                results.append(await talker.speak(*spoken[i // spoken_every % len(spoken)]))
            else:
                results.append(await talker.type(typed[i % len(typed)]))
    except SessionEnded as ended:
        results.append(TurnResult("typed", "(session)", "error", error=f"session:{ended.error}"))
    finally:
        await talker.close()
    return results


async def run(
    fleet: Fleet,
    turns: int,
    *,
    per_session: int = 10,
    concurrent: int = 3,
    spoken_every: int = 3,
    rss_tolerance_mb: float | Mapping[str, float] = 25.0,
    fd_tolerance: int = 0,
    settle_s: float = 1.0,
    ledger_name: str | None = None,
    warm: bool = True,
) -> dict[str, Any]:
    """Runs about ``turns`` turns (whole sessions: it may overshoot by a round) and decides
    whether each service's RSS and FDs stayed flat."""
    if warm:
        await warm_up(fleet)
    channel = grpc.aio.insecure_channel(fleet.target("orchestrator"))
    stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
    done: list[TurnResult] = []
    samples: list[dict[str, Any]] = []
    rounds = 0
    t0 = time.monotonic()
    while len(done) < turns or len(samples) < 4:  # the baseline and three after it
        # Concurrent rounds first (the warm-up baseline) and then every third round.
        width = concurrent if rounds % 3 == 0 else 1
        langs = ["en" if (rounds + k) % 2 == 0 else "fr" for k in range(width)]
        batches = await asyncio.gather(
            *(_session(stub, lang, per_session, spoken_every, len(done) + k) for k, lang in enumerate(langs))
        )
        for batch in batches:
            done.extend(batch)
        rounds += 1
        await asyncio.sleep(settle_s)  # sessions closed: let the services release their streams
        stats = fleet_stats(fleet)
        samples.append(
            {
                "turns": len(done),
                "round": rounds,
                "sessions": width,
                "elapsed_s": round(time.monotonic() - t0, 1),
                "services": {n: asdict(s) for n, s in stats.items()},
            }
        )
        print(
            f"round {rounds:3d} ({width} session{'s' if width > 1 else ''}): {len(done):4d} turns  "
            + "  ".join(f"{n} {s.anon_mb:.0f}MB/{s.fds}fd" for n, s in stats.items()),
            flush=True,
        )
    await channel.close()
    services = analyse(samples, rss_tolerance_mb, fd_tolerance)
    summary = summarize(done)
    flat = all(s["flat"] for s in services.values())
    report = {
        "generated_at": datetime.now(UTC).isoformat(),
        "machine": {"platform": platform.platform(), "cpus": os.cpu_count()},
        "elapsed_s": round(time.monotonic() - t0, 1),
        "rounds": rounds,
        "per_session": per_session,
        "concurrent": concurrent,
        "spoken_turns": sum(t.kind == "spoken" for t in done),
        "typed_turns": sum(t.kind == "typed" for t in done),
        "tolerance": {
            "anon_last_third_growth_mb": rss_tolerance_mb,
            "fds_above_baseline": fd_tolerance,
        },
        "flat": flat,
        **summary,
        "services": services,
        "samples": samples,
    }
    record(
        "soak",
        ledger_name or f"{len(done)} turns",
        passed=summary["lost"] == 0 and flat,
        lost=summary["lost"],
        turns=len(done),
        completed=summary["completed"],
        errors=summary["errors"],
        errors_by_kind=summary["errors_by_kind"],
        flat=flat,
        services={
            n: {k: s[k] for k in ("anon_start_mb", "anon_end_mb", "anon_last_third_growth_mb", "fds_start", "fds_end")}
            for n, s in services.items()
        },
    )
    return report


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--turns", type=int, default=300)
    parser.add_argument("--per-session", type=int, default=10, help="turns per session")
    parser.add_argument("--concurrent", type=int, default=3, help="sessions at once in concurrent rounds")
    parser.add_argument("--spoken-every", type=int, default=3, help="one spoken turn in N (0: typed only)")
    parser.add_argument("--rss-tolerance-mb", type=float, default=25.0)
    parser.add_argument("--fd-tolerance", type=int, default=0)
    parser.add_argument("--out", type=Path, default=REPO / "reports" / "bench_soak.json")
    args = parser.parse_args()
    if args.turns < 1 or args.per_session < 1 or args.concurrent < 1:
        parser.error("--turns, --per-session and --concurrent must be positive")
    with production_fleet([]) as running:  # main thread: the services die with this process
        report = asyncio.run(
            run(
                running,
                args.turns,
                per_session=args.per_session,
                concurrent=args.concurrent,
                spoken_every=args.spoken_every,
                rss_tolerance_mb=args.rss_tolerance_mb,
                fd_tolerance=args.fd_tolerance,
            )
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2))
    for name, s in report["services"].items():
        print(
            f"{name:12} RSS {s['rss_start_mb']} -> {s['rss_end_mb']} MB, private {s['anon_start_mb']} -> "
            f"{s['anon_end_mb']} MB (max {s['anon_max_mb']}; last third {s['anon_last_third_growth_mb']:+} MB, "
            f"{s['anon_kb_per_turn']:+} kB/turn)  FDs {s['fds_start']} -> {s['fds_end']} "
            f"(max {s['fds_max']})  {'flat' if s['flat'] else 'NOT FLAT'}"
        )
    print(f"{report['turns']} turns, {report['lost']} lost, {report['errors']} errors; report: {args.out}")


if __name__ == "__main__":
    main()
