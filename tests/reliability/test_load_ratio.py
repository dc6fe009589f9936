"""bench.load's p95 ratio between levels and its bootstrap interval."""

from __future__ import annotations

from typing import Any

from bench.load import p95_ratios


def _level(times: list[float], lost: int = 0, language: str = "en") -> dict[str, Any]:
    turns = [{"outcome": "ok", "time_to_first_audio_s": t, "language": language} for t in times]
    return {"turn_log": turns + [{"outcome": "lost", "time_to_first_audio_s": None}] * lost}


def _mixed(en: list[float], fr: list[float]) -> dict[str, Any]:
    return {"turn_log": _level(en)["turn_log"] + _level(fr, language="fr")["turn_log"]}


def test_steady_levels_give_an_exact_ratio() -> None:
    ratios = p95_ratios({1: _level([1.0] * 10), 4: _level([2.5] * 30, lost=2)})
    assert ratios == {
        4: {"ratio": 2.5, "interval_90": [2.5, 2.5], "by_language": {"en": {"ratio": 2.5, "interval_90": [2.5, 2.5]}}}
    }


def test_each_language_is_compared_with_itself() -> None:
    """French answers are slower even alone: the overall ratio mixes voices, the per-language
    ratios show the load alone."""
    single = _mixed([1.0] * 10, [2.0] * 10)
    four = _mixed([2.0] * 20, [3.0] * 20)
    ratios = p95_ratios({1: single, 4: four})[4]
    assert ratios["ratio"] == 1.5  # 3.0 s over 2.0 s: both p95s are French turns
    assert ratios["by_language"]["en"]["ratio"] == 2.0
    assert ratios["by_language"]["fr"]["ratio"] == 1.5
    # a language the single conversation never spoke has nothing to be compared with
    assert p95_ratios({1: _level([1.0] * 5), 4: four})[4]["by_language"].keys() == {"en"}


def test_the_interval_holds_the_ratio_and_shows_how_high_it_could_be() -> None:
    single = [1.0, 1.1, 1.2, 1.3, 1.4, 1.5, 1.6, 1.7, 1.8, 3.0]  # one slow turn
    four = [2.0 + 0.1 * i for i in range(30)]
    ratio = p95_ratios({1: _level(single), 4: _level(four)})[4]
    low, high = ratio["interval_90"]
    assert ratio["ratio"] == 1.6  # 4.8 s (the 29th of 30) over 3.0 s (the slowest of 10)
    assert low <= ratio["ratio"] < high
    # without its slowest turn the single conversation's p95 is 1.8 s: the ratio reaches ~2.7
    assert high >= 2.5


def test_levels_without_answers_have_no_ratio() -> None:
    assert p95_ratios({1: _level([]), 4: _level([2.0])}) == {}
    assert p95_ratios({1: _level([1.0])}) == {}
