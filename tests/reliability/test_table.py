"""docs/RELIABILITY.md is generated from ledger records: the generator itself (pure, no fleet)."""

from __future__ import annotations

from typing import Any

import pytest

from bench.reliability import table
from tests.reliability.protofuzz import CI_EXAMPLES, EXHAUSTIBLE, fuzz_examples


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


def test_fuzzing_is_summed_per_contract_against_the_goal() -> None:
    rows = [
        _row("bad_input", "llm.Generate", 1.0, contract="llm", examples=6000, statuses={"OK": 10, "INVALID_ARGUMENT": 5990}, seconds=40.0),
        _row("bad_input", "llm.GetSession", 2.0, contract="llm", examples=4000, statuses={"NOT_FOUND": 4000}, seconds=2.0),
        _row("bad_input", "gateway speech", 3.0, passed=False, contract="gateway", examples=30, codes={"200": 26, "500": 1, "502": 1, "503": 1, "504": 1}),
        _row("bad_input", "memory (RSS growth over the fuzz run)", 4.0, rss_growth_mb=1.0),
    ]  # fmt: skip
    doc = table(rows)
    assert "| llm | 2 | 10,000 | met | 0 | 0 | 42 |" in doc
    # 500 (the gateway's own failure) and 502 (a service's INTERNAL passed on) are bugs; 503 and
    # 504 (a busy or late service, retried by the client) are not.
    assert "| gateway | 1 | 30 | CI size | 2 | 1 | 0 |" in doc
    # The memory check is not a contract: no row of the per-contract table counts it.
    section = doc.split("## Fuzzing per contract")[1].split("##")[0]
    rows_of_table = [line for line in section.splitlines() if line.startswith("| ")]
    assert len(rows_of_table) == 4  # header, rule, gateway, llm
    assert not any("memory" in line for line in rows_of_table)


def test_fuzz_budget_spreads_a_contract_over_its_targets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PAROLE_FUZZ_SCALE", raising=False)
    monkeypatch.delenv("PAROLE_FUZZ_PER_CONTRACT", raising=False)
    assert fuzz_examples("stt", "Recognize") == CI_EXAMPLES["stt"]["Recognize"]
    monkeypatch.setenv("PAROLE_FUZZ_PER_CONTRACT", "10000")
    for contract, targets in CI_EXAMPLES.items():
        scaled = [fuzz_examples(contract, t) for t in targets if (contract, t) not in EXHAUSTIBLE]
        assert sum(scaled) >= 10000, contract
        assert sum(scaled) < 10000 + len(scaled), contract  # ceilings only, no more
    assert fuzz_examples("stt", "ListEngines") == CI_EXAMPLES["stt"]["ListEngines"]
