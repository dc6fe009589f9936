"""The reliability suite: load, faults, bad input, soak and security, as one command and one table.

``python -m bench.reliability``            the CI-sized suite (tests/reliability), then the table
``python -m bench.reliability --full``     also the full load levels and the long soak (bench.load, bench.soak;
                                          ``--soak-turns 1000`` for a longer soak than its 300), and
                                          10,000 generated calls per service contract in the fuzzing
``python -m bench.reliability --fuzz-only --fuzz-per-contract 10000``  only the fuzzing, at that size
                                          (the other records are kept)
``python -m bench.reliability --table-only``  rebuild docs/RELIABILITY.md from the last records

Every check writes its outcome to the ledger (services/testkit/ledger.py, JSON lines under
reports/reliability/); the table is generated from those records, never written by hand.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
from collections import defaultdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from services.testkit.ledger import LEDGER_DIR, read_all

REPO = Path(__file__).resolve().parent.parent
DOC = REPO / "docs" / "RELIABILITY.md"
TITLES = {
    "load": "Load held",
    "fault": "Faults survived",
    "bad_input": "Bad inputs tried",
    "soak": "Soak",
    "security": "Security",
}
FIXED = ("category", "name", "passed", "lost", "at")
FUZZ_GOAL = 10_000
"""Generated calls per service contract that the long run must reach (issue 18)."""
BUG_STATUSES = ("INTERNAL", "UNKNOWN", "500", "502")
"""Statuses that are bugs: gRPC INTERNAL/UNKNOWN, and over HTTP the gateway's own failure (500)
or a service's INTERNAL/UNKNOWN passed on (502). 503 and 504 say a service was unavailable or
late (a busy model under the fuzzing's load), which a client is told to retry."""
FUZZ_MODULES = ("tests/reliability/test_fuzz.py", "tests/reliability/test_gateway_fuzz.py")
KEYS = ("examples", "turns", "errors", "p50_s", "p95_s", "p99_s", "recovery_s", "codes", "rss_growth_mb", "fd_growth")


def _detail(row: dict[str, Any], limit: int = 400) -> str:
    """The record's own details: the usual keys first, then whatever else the check recorded."""
    rest = [k for k in row if k not in (*KEYS, *FIXED)]
    parts = [f"{k}={_short(row[k])}" for k in (*[k for k in KEYS if k in row], *rest)]
    text = "; ".join(parts)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any) -> str:
    if isinstance(value, dict) and value and all(isinstance(v, dict) and "anon_end_mb" in v for v in value.values()):
        return ", ".join(f"{name} {_memory(v)}" for name, v in value.items())
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _memory(s: dict[str, Any]) -> str:
    """One service of a soak record, short enough that every service fits in the row: private
    memory start→end, the growth the verdict judged, and file descriptors start→end."""
    return (
        f"{s['anon_start_mb']:.0f}→{s['anon_end_mb']:.0f} MB "
        f"(last third {s['anon_last_third_growth_mb']:+.1f}), {s['fds_start']}→{s['fds_end']} fds"
    )


def _contracts(rows: list[dict[str, Any]]) -> list[str]:
    """One line per service contract: the generated calls of all its targets, their outcomes,
    and the statuses that are bugs (INTERNAL/UNKNOWN, client or server side, and 5xx)."""
    by: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        if r["category"] == "bad_input" and r.get("contract"):
            by[r["contract"]].append(r)
    if not by:
        return []
    out = [
        "",
        "## Fuzzing per contract",
        "",
        f"Goal of the long run (`make reliability FULL=1`): {FUZZ_GOAL:,} generated calls per contract, none",
        "answered INTERNAL or UNKNOWN (or HTTP 500/502), the service serving and answering a real call after each target,",
        "and memory bounded: the services run in the test's process, and the check `memory (RSS growth over the fuzz run)`",
        "(under Bad inputs) requires that memory not held by the caches levels off (its growth over the second halves of",
        "the long targets, summed) and stays within its bound over the whole run.",
        "",
        "| contract | targets | generated calls | goal | bugs (INTERNAL/UNKNOWN/500/502) | failed targets | seconds |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for contract, rs in sorted(by.items()):
        calls = sum(int(r.get("examples") or 0) for r in rs)
        bugs = 0
        for r in rs:
            codes = r.get("statuses") or r.get("codes") or {}
            if isinstance(codes, dict):
                bugs += sum(int(n) for c, n in codes.items() if c in BUG_STATUSES)
            bugs += int(r.get("server_internal_or_unknown") or 0)
        failed = sum(1 for r in rs if not r["passed"])
        seconds = sum(float(r.get("seconds") or 0) for r in rs)
        goal = "met" if calls >= FUZZ_GOAL else "CI size"
        out.append(f"| {contract} | {len(rs)} | {calls:,} | {goal} | {bugs} | {failed} | {seconds:.0f} |")
    return out


def table(rows: list[dict[str, Any]]) -> str:
    """docs/RELIABILITY.md from the ledger records (the latest record per check wins)."""
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    for r in rows:
        latest[(r["category"], r["name"])] = r
    by_cat: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (cat, _), r in sorted(latest.items()):
        by_cat[cat].append(r)
    when = datetime.fromtimestamp(max((r["at"] for r in rows), default=0), UTC).isoformat(timespec="seconds")
    out = [
        "# Reliability",
        "",
        f"Generated by `python -m bench.reliability` from {len(latest)} checks (last record {when}).",
        "Do not edit by hand: run the suite again.",
        "",
        "| area | checks | passed | failed | data lost |",
        "| --- | --- | --- | --- | --- |",
    ]
    for cat in TITLES:
        rs = by_cat.get(cat, [])
        passed = sum(1 for r in rs if r["passed"])
        out.append(f"| {TITLES[cat]} | {len(rs)} | {passed} | {len(rs) - passed} | {sum(int(r['lost']) for r in rs)} |")
    out += _contracts(list(latest.values()))
    for cat in TITLES:
        rs = by_cat.get(cat, [])
        if not rs:
            continue
        out += ["", f"## {TITLES[cat]}", "", "| check | result | data lost | details |", "| --- | --- | --- | --- |"]
        for r in rs:
            result = "pass" if r["passed"] else "**FAIL**"
            out.append(f"| {r['name']} | {result} | {r['lost']} | {_detail(r).replace('|', '/')} |")
    return "\n".join(out) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--full", action="store_true", help="also run bench.load and bench.soak at full size")
    parser.add_argument("--soak-turns", type=int, default=300, help="turns of the full soak (with --full)")
    parser.add_argument("--table-only", action="store_true", help="only rebuild the table from the ledger")
    parser.add_argument("--fuzz-only", action="store_true", help="only the fuzzing (keeps the other records)")
    parser.add_argument(
        "--fuzz-per-contract",
        type=int,
        default=None,
        help=f"generated calls per service contract (default: the CI size; {FUZZ_GOAL} with --full)",
    )
    args = parser.parse_args()
    per_contract = args.fuzz_per_contract if args.fuzz_per_contract is not None else (FUZZ_GOAL if args.full else 0)
    env = {**os.environ, "PAROLE_FUZZ_PER_CONTRACT": str(per_contract)} if per_contract else None
    # One target of the long run takes up to ~15 min (10,000 Converse calls): past the suite's
    # 600 s per test, which sizes CI's tests.
    timeout = [f"--timeout={max(600, per_contract // 4)}"] if per_contract else []
    rc = 0
    if args.fuzz_only:
        (LEDGER_DIR / "bad_input.jsonl").unlink(missing_ok=True)
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", *timeout, *FUZZ_MODULES], cwd=REPO, env=env)
    elif not args.table_only:
        shutil.rmtree(LEDGER_DIR, ignore_errors=True)  # this run's records only
        rc = subprocess.call([sys.executable, "-m", "pytest", "-q", *timeout, "tests/reliability"], cwd=REPO, env=env)
        if args.full:
            for command in (["bench.load"], ["bench.soak", "--turns", str(args.soak_turns)]):
                rc = subprocess.call([sys.executable, "-m", *command], cwd=REPO) or rc
    rows = read_all()
    if not rows:
        print(f"no records under {LEDGER_DIR}: run the suite first", file=sys.stderr)
        return 1
    DOC.parent.mkdir(parents=True, exist_ok=True)
    DOC.write_text(table(rows))
    print(DOC.read_text())
    return rc


if __name__ == "__main__":
    sys.exit(main())
