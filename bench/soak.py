"""Soak: hundreds of turns against the local fleet; memory and file descriptors must stay flat.

``python -m bench.soak [--turns 300] [--out reports/bench_soak.json]``

Turns come in rounds of sessions: one session alone, or ``--concurrent`` sessions at once,
each of ``--per-session`` turns, one spoken turn (a real recording at real-time pace) in
``--spoken-every`` and the rest typed; sessions alternate English and French. The client is
headless (playback reported finished as soon as the answer's audio has arrived).

After every round, with all its sessions closed, each service's resident memory (VmRSS) and
open file descriptors are sampled. The first round is a concurrent one and counts as warm-up:
its sample is the baseline (thread pools, model caches and allocator arenas have grown to their
working size by then). A service is **flat** when

- RSS: the least-squares slope over the second half of the run (samples at or after half the
  turns), times the turns of that half, is under ``--rss-tolerance-mb`` (default 25 MB: a leak
  of 170 kB a turn over 150 turns would exceed it), and
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

from bench.e2e import fleet as e2e_fleet
from bench.load import (
    SessionEnded,
    Talker,
    TurnResult,
    fleet_stats,
    spoken_questions,
    summarize,
    typed_questions,
    warm_up,
)
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from services.fleet import Fleet
from tests.reliability.ledger import record

REPO = Path(__file__).resolve().parent.parent


def slope(xs: Sequence[float], ys: Sequence[float]) -> float:
    """Least-squares slope of ys over xs (0 with fewer than two distinct xs)."""
    n = len(xs)
    if n < 2:
        return 0.0
    mx, my = sum(xs) / n, sum(ys) / n
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / var if var else 0.0


def analyse(
    samples: Sequence[dict[str, Any]], rss_tolerance_mb: float | Mapping[str, float], fd_tolerance: int
) -> dict[str, dict[str, Any]]:
    """Per service: start → end, the second half's fitted RSS growth and the FD verdict.
    ``samples``: {"turns": n, "services": {name: {"rss_mb", "fds"}}}, the first the baseline.
    ``rss_tolerance_mb``: one bound for every service, or one per service name."""
    base, last = samples[0], samples[-1]
    half = last["turns"] / 2
    second = [s for s in samples if s["turns"] >= half] or [last]
    out: dict[str, dict[str, Any]] = {}
    for name in base["services"]:
        xs = [float(s["turns"]) for s in second]
        rss = [float(s["services"][name]["rss_mb"]) for s in second]
        fds = [int(s["services"][name]["fds"]) for s in samples]
        growth = slope(xs, rss) * (xs[-1] - xs[0])
        base_fds = fds[0]
        tolerance = rss_tolerance_mb if isinstance(rss_tolerance_mb, int | float) else rss_tolerance_mb[name]
        rss_flat = growth < tolerance
        fd_flat = max(fds) <= base_fds + fd_tolerance and fds[-1] <= base_fds
        out[name] = {
            "rss_start_mb": round(base["services"][name]["rss_mb"], 1),
            "rss_end_mb": round(last["services"][name]["rss_mb"], 1),
            "rss_second_half_growth_mb": round(growth, 2),
            "rss_second_half_kb_per_turn": round(slope(xs, rss) * 1024, 2),
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
    stub: orchestrator_pb2_grpc.OrchestratorServiceStub, language: str, turns: int, spoken_every: int, start: int
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
    while len(done) < turns or len(samples) < 3:
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
            + "  ".join(f"{n} {s.rss_mb:.0f}MB/{s.fds}fd" for n, s in stats.items()),
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
            "rss_second_half_growth_mb": rss_tolerance_mb,
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
            n: {k: s[k] for k in ("rss_start_mb", "rss_end_mb", "rss_second_half_growth_mb", "fds_start", "fds_end")}
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
    with e2e_fleet() as running:  # main thread: the services die with this process
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
            f"{name:12} RSS {s['rss_start_mb']} -> {s['rss_end_mb']} MB "
            f"(second half {s['rss_second_half_growth_mb']:+} MB)  FDs {s['fds_start']} -> {s['fds_end']} "
            f"(max {s['fds_max']})  {'flat' if s['flat'] else 'NOT FLAT'}"
        )
    print(f"{report['turns']} turns, {report['lost']} lost, {report['errors']} errors; report: {args.out}")


if __name__ == "__main__":
    main()
