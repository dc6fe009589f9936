"""The one JSON-object parser behind the OpenAI bodies and the Realtime events."""

from __future__ import annotations

import math

import pytest

from services.gateway.jsonbody import NotAnObject, NotJson, parse_object


def test_an_object_parses_from_text_or_bytes_and_non_finite_numbers_are_left_to_the_field_checks() -> None:
    assert parse_object('{"a": [1, {"b": null}]}') == {"a": [1, {"b": None}]}
    value = parse_object(b'{"input": NaN, "n": Infinity}')
    assert math.isnan(value["input"]) and value["n"] == math.inf


@pytest.mark.parametrize("text", ["{not json", "", b"\xff\xfe", "[" * 100_000 + "]" * 100_000])
def test_what_does_not_parse_is_not_json_with_the_decoders_reason(text: str | bytes) -> None:
    with pytest.raises(NotJson) as info:
        parse_object(text)
    assert str(info.value)  # the caller quotes it


@pytest.mark.parametrize("text", ["[1, 2]", '"text"', "3", "true", "null"])
def test_json_that_is_not_an_object_is_told_apart_from_text_that_is_not_json(text: str) -> None:
    with pytest.raises(NotAnObject):
        parse_object(text)
