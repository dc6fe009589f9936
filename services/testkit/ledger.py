"""The reliability ledger: every load level, fault, bad input and security check records
what it tried and what happened, and ``python -m bench.reliability`` turns the records into
docs/RELIABILITY.md. Records are JSON lines under reports/reliability/ (one file per part)."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any, Literal

REPO = Path(__file__).resolve().parents[2]
LEDGER_DIR = Path(os.environ.get("PAROLE_LEDGER_DIR", REPO / "reports" / "reliability"))

Category = Literal["load", "fault", "bad_input", "soak", "security"]


def record(category: Category, name: str, *, passed: bool, lost: int = 0, **details: Any) -> None:
    """Appends one outcome. ``lost``: turns, messages or sessions lost without a clear error
    (the table's 'data lost' column; anything above 0 is a failure to explain)."""
    LEDGER_DIR.mkdir(parents=True, exist_ok=True)
    row = {"category": category, "name": name, "passed": passed, "lost": lost, "at": time.time(), **details}
    with (LEDGER_DIR / f"{category}.jsonl").open("a") as f:
        f.write(json.dumps(row, default=str) + "\n")


def read_all() -> list[dict[str, Any]]:
    """Every record, oldest first."""
    rows: list[dict[str, Any]] = []
    if LEDGER_DIR.is_dir():
        for path in sorted(LEDGER_DIR.glob("*.jsonl")):
            rows += [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["at"])
