"""Load and soak, CI-sized: the real fleet (same commands as the containers) started once for
the module; two load levels and a short soak whose assertions fail when a turn is lost, a
session's descriptors are not given back, or a service's memory keeps growing.

The full forms are ``python -m bench.load`` and ``python -m bench.soak``; both record in the
reliability ledger, and so do these tests (names prefixed "ci:").
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from bench import load, soak
from services.fleet import Fleet

NAMES = ("stt", "llm", "tts", "orchestrator")


@pytest.fixture(scope="module")
def fleet() -> Iterator[Fleet]:
    """The production fleet as ``bench.e2e`` runs it (caches off, llama.cpp then canned),
    answers capped at 48 tokens to keep CI turns short. Started from this sync fixture, so in
    the main thread: the services die with the test process."""
    env = {
        "stt": {"STT_CACHE_MAX_BYTES": "0"},
        "llm": {"LLM_BACKENDS": '["llamacpp","canned"]', "LLM_MAX_TOKENS": "48"},
        "tts": {"TTS_CACHE_BYTES": "0"},
    }
    with Fleet(env=env, ports=dict.fromkeys(NAMES, 0), metrics_ports=dict.fromkeys(NAMES, 0)) as running:
        yield running


def _check_turns(summary: dict[str, Any]) -> None:
    lost = [t for t in summary.get("turn_log", []) if t["outcome"] == "lost"]
    assert summary["lost"] == 0, f"turns lost (no answer and no clear error): {lost}"
    assert summary["turns"] == summary["completed"] + summary["errors"] + summary["lost"]


async def test_load_levels_1_and_3(fleet: Fleet) -> None:
    """One, then three conversations at real-time pace: every turn is answered or ends with a
    clear error, none is lost; each level answers at least one turn per conversation; the
    sessions' descriptors are all given back when they close."""
    await load.warm_up(fleet)
    levels = {n: await load.run_level(fleet, n, 12.0, turn_timeout=75.0, ledger_name=f"ci: {n} x 12 s") for n in (1, 3)}
    for n, s in levels.items():
        _check_turns(s)
        assert s["completed"] >= n, f"level {n}: only {s['completed']} turns answered: {s['errors_by_kind']}"
        assert s["time_to_first_audio_p95_s"] is not None
        for name in NAMES:
            assert s["fds_after"][name] <= s["fds_before"][name], (
                f"level {n}: {name} kept descriptors open: {s['fds_opened'].get(name)}"
            )
    assert levels[1]["errors"] == 0, levels[1]["errors_by_kind"]  # one conversation must never fail


async def test_soak_stays_flat(fleet: Fleet) -> None:
    """18 turns (typed, one spoken in five) in sessions of three: two at once, one, one, two at
    once (the first round is the baseline). No turn lost, no error, descriptors back at the
    baseline after every round, private memory of the last round within 25 MB of the middle
    ones for every service. The TTS passes only because its voices are warmed with the
    longest clause at start-up: before that, ONNX Runtime's arena stepped up 29-39 MB in runs
    this short. The full ``bench.soak`` runs hundreds of turns with the same verdict."""
    report = await soak.run(fleet, 15, per_session=3, concurrent=2, spoken_every=5, ledger_name="ci: soak", warm=False)
    _check_turns(report)
    assert report["turns"] >= 15 and report["spoken_turns"] >= 2, (report["turns"], report["spoken_turns"])
    assert report["errors"] == 0, report["errors_by_kind"]
    for name, s in report["services"].items():
        assert s["fds_flat"], f"{name}: descriptors {s['fds_start']} -> max {s['fds_max']}, end {s['fds_end']}"
        assert s["rss_flat"], f"{name}: private memory grew {s['anon_last_third_growth_mb']} MB in the last third"
