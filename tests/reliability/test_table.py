"""docs/RELIABILITY.md is generated from ledger records: the generator itself (pure, no fleet)."""

from __future__ import annotations

from typing import Any

from bench.reliability import table


def _row(category: str, name: str, at: float, passed: bool = True, lost: int = 0, **details: Any) -> dict[str, Any]:
    return {"category": category, "name": name, "passed": passed, "lost": lost, "at": at, **details}


def test_latest_record_per_check_wins_and_failures_count() -> None:
    rows = [
        _row("fault", "kill -9 llm", 1.0, passed=False, lost=2, note="old"),
        _row("fault", "kill -9 llm", 2.0, note="new"),
        _row("bad_input", "audio bytes", 3.0, passed=False, lost=1, examples=200, codes="INVALID_ARGUMENT|OK"),
    ]
    doc = table(rows)
    assert "| Faults survived | 1 | 1 | 0 | 0 |" in doc
    assert "| Bad inputs tried | 1 | 0 | 1 | 1 |" in doc
    assert "note=new" in doc and "note=old" not in doc
    # A '|' inside a detail would split the cell.
    assert "| audio bytes | **FAIL** | 1 | examples=200; codes=INVALID_ARGUMENT/OK |" in doc
    assert "| Load held | 0 | 0 | 0 | 0 |" in doc  # every area is listed, even one with no records


def test_soak_row_shows_every_service_memory_and_fds() -> None:
    service = {
        "anon_start_mb": 894.3,
        "anon_end_mb": 960.0,
        "anon_last_third_growth_mb": 3.21,
        "fds_start": 18,
        "fds_end": 18,
    }
    services = {name: dict(service) for name in ("stt", "llm", "tts", "orchestrator")}
    doc = table([_row("soak", "1000 turns", 5.0, turns=1000, errors=0, flat=True, services=services)])
    soak_row = next(line for line in doc.splitlines() if line.startswith("| 1000 turns |"))
    for name in services:  # none cut off by the cell limit
        assert f"{name} 894→960 MB (last third +3.2), 18→18 fds" in soak_row
    assert "…" not in soak_row
