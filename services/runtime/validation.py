"""Declared request limits: each accepted range is one declaration, checked and explained
from that declaration alone.

Every service keeps the limits of its contract in its own ``validation`` module, as
module-level ``Limit`` (a numeric range) and ``Cap`` (at most so many of something) values,
with one check function per request type. A service that passes a field on to another one
(the orchestrator's end-of-speech silence goes to the STT as is) checks it with that
service's declaration instead of writing its own: two copies of one limit drift apart, and
the caller then accepts what the callee refuses (or refuses what it would accept).

A limit that depends on the server's settings (the LLM's text cap) is built from them at
check time; the message and the field violation still come from this one place.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TypeVar

from services.runtime.errors import InvalidArgument

N = TypeVar("N", int, float)


def _label(field: str) -> str:
    """What a message calls a field: its last part ("config.speed" → "speed")."""
    return field.rsplit(".", 1)[-1]


@dataclass(frozen=True)
class Limit:
    """A numeric field's accepted range, ``low`` to ``high`` inclusive."""

    field: str
    """The field as the client names it in a request (the field violation's name)."""
    low: float
    high: float
    unit: str = ""
    """Unit said after the range in the field violation ("ms", "Hz")."""
    hint: str = ""
    """Said after the range in the message: what 0 or the normal value means."""
    zero_is_default: bool = False
    """0 means "the server's default" and is always accepted (proto3 cannot tell unset from 0)."""

    def describe(self) -> str:
        """The range as a person reads it: "64 to 5000 ms"."""
        unit = f" {self.unit}" if self.unit else ""
        return f"{self.low:g} to {self.high:g}{unit}"

    def check(self, value: N) -> N:
        """The value itself, or INVALID_ARGUMENT naming the field and the range."""
        if self.zero_is_default and value == 0:
            return value
        if not (math.isfinite(value) and self.low <= value <= self.high):
            hint = f" ({self.hint})" if self.hint else ""
            raise InvalidArgument(
                f"{_label(self.field)} {value:g} is outside {self.low:g}..{self.high:g}{hint}",
                fields={self.field: self.describe()},
            )
        return value


@dataclass(frozen=True)
class Cap:
    """At most ``most`` of something in a field: characters of a text, channels, messages."""

    field: str
    most: int
    unit: str
    """What is counted, plural ("characters")."""
    hint: str = ""
    """Said after the message: what to do instead (split the text, stream it)."""

    def check(self, count: int, label: str | None = None) -> None:
        """INVALID_ARGUMENT when ``count`` is over the cap. ``label`` names the field in the
        message when its last part alone would not (``messages[3]`` for its content)."""
        if count > self.most:
            hint = f"; {self.hint}" if self.hint else ""
            raise InvalidArgument(
                f"{label or _label(self.field)} has {count} {self.unit}, more than the {self.most} accepted{hint}",
                fields={self.field: f"at most {self.most} {self.unit}"},
            )
