"""Declared limits: one declaration gives the check, the message and the field violation."""

from __future__ import annotations

import math

import pytest

from services.runtime.errors import InvalidArgument
from services.runtime.validation import Cap, Limit

SILENCE = Limit("config.silence_ms", 64, 5000, unit="ms", hint="0: the server default", zero_is_default=True)


@pytest.mark.parametrize("value", [0, 64, 300, 5000])
def test_a_limit_accepts_its_range_and_zero_when_zero_is_the_default(value: int) -> None:
    assert SILENCE.check(value) == value


@pytest.mark.parametrize("value", [1, 63, 5001, math.nan, math.inf])
def test_a_limit_refuses_outside_naming_the_field_and_the_range(value: float) -> None:
    with pytest.raises(InvalidArgument) as err:
        SILENCE.check(value)
    assert err.value.fields == {"config.silence_ms": "64 to 5000 ms"}
    assert err.value.message.startswith("silence_ms ") and "64..5000 (0: the server default)" in err.value.message


def test_zero_is_checked_like_any_value_unless_it_means_the_default() -> None:
    with pytest.raises(InvalidArgument):
        Limit("speed", 0.25, 4.0).check(0.0)


def test_a_cap_counts_and_says_what_to_do() -> None:
    cap = Cap("text", 10, "characters", hint="split it")
    cap.check(10)
    with pytest.raises(InvalidArgument) as err:
        cap.check(11, "messages[2]")
    assert err.value.message == "messages[2] has 11 characters, more than the 10 accepted; split it"
    assert err.value.fields == {"text": "at most 10 characters"}
