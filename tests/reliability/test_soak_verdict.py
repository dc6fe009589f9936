"""The soak's verdict (bench.soak.analyse) on synthetic series: a leak must fail it, a cache or
arena that fills up and levels off must not, and neither must allocator noise around a plateau."""

from __future__ import annotations

import math
from typing import Any

from bench.soak import analyse


def _samples(anon: list[float], fds: list[int] | None = None, per_round: int = 10) -> list[dict[str, Any]]:
    fds = fds or [20] * len(anon)
    return [
        {"turns": (i + 1) * per_round, "services": {"svc": {"rss_mb": a + 50.0, "anon_mb": a, "fds": f}}}
        for i, (a, f) in enumerate(zip(anon, fds, strict=True))
    ]


def test_a_steady_leak_is_not_flat() -> None:
    # 300 kB a turn over 30 rounds of 10 turns: 30 MB per third of the run.
    series = [1000.0 + 0.3 * 10 * i for i in range(31)]
    verdict = analyse(_samples(series), 25.0, 0)["svc"]
    assert not verdict["rss_flat"] and not verdict["flat"]
    assert verdict["anon_last_third_growth_mb"] > 25
    assert 290 < verdict["anon_kb_per_turn"] < 320


def test_a_slow_leak_is_caught_by_a_longer_run() -> None:
    leak = [1000.0 + 0.1 * 10 * i for i in range(31)]  # 100 kB/turn, 300 turns: 10 MB a third
    assert analyse(_samples(leak), 25.0, 0)["svc"]["rss_flat"]
    longer = [1000.0 + 0.1 * 10 * i for i in range(101)]  # the same leak over 1,000 turns
    assert not analyse(_samples(longer), 25.0, 0)["svc"]["rss_flat"]


def test_a_plateau_with_noise_is_flat() -> None:
    # Fills 80 MB over the first rounds, then moves ±30 MB from round to round (the LLM's
    # snapshots coming and going): no sample-wise rule would pass this, the medians do.
    series = [1000.0 + min(80.0, 20.0 * i) + 30.0 * math.sin(i * 2.1) for i in range(31)]
    verdict = analyse(_samples(series), 25.0, 0)["svc"]
    assert verdict["rss_flat"], verdict
    assert verdict["anon_max_mb"] > verdict["anon_start_mb"] + 80  # it did grow, then held


def test_descriptors_must_come_back() -> None:
    flat = [1000.0] * 7
    assert analyse(_samples(flat, [20, 20, 21, 20, 20, 20, 20]), 25.0, 0)["svc"]["fds_flat"] is False
    assert analyse(_samples(flat, [20, 20, 21, 20, 20, 20, 20]), 25.0, 1)["svc"]["fds_flat"] is True
    assert analyse(_samples(flat, [20, 19, 20, 20, 20, 20, 21]), 25.0, 1)["svc"]["fds_flat"] is False  # end above


def test_tolerance_per_service() -> None:
    samples = [
        {
            "turns": t,
            "services": {"a": {"rss_mb": 1, "anon_mb": 10.0 * t, "fds": 3}, "b": {"rss_mb": 1, "anon_mb": 1, "fds": 3}},
        }
        for t in range(1, 8)
    ]
    verdict = analyse(samples, {"a": 100.0, "b": 1.0}, 0)
    assert verdict["a"]["rss_flat"] and verdict["a"]["rss_tolerance_mb"] == 100.0
    assert verdict["b"]["rss_flat"] and verdict["b"]["anon_last_third_growth_mb"] == 0
