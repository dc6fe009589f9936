"""Reading a JSON object off the wire, shared by the OpenAI HTTP bodies and the Realtime client
events: one parser, so both accept and refuse the same texts (not JSON, nested too deep for
the decoder, JSON but not an object). Each caller words and shapes its own error from the
exception raised here, since a request body and an event are refused in different terms.

NaN and the infinities are parsed as Python's json accepts them: the typed field checks refuse
a non-finite number where one is read, naming the field.
"""

from __future__ import annotations

import json
from typing import Any


class NotJsonObject(ValueError):
    """The text is not a JSON object; see the two kinds below."""


class NotJson(NotJsonObject):
    """The text does not parse; the message is the decoder's reason."""


class NotAnObject(NotJsonObject):
    """The text is JSON, but an array, string, number, true, false or null."""


def parse_object(text: str | bytes) -> dict[str, Any]:
    """``text`` as a JSON object, or ``NotJson`` / ``NotAnObject``."""
    try:
        value = json.loads(text)
    except (ValueError, RecursionError) as exc:  # RecursionError: nested past the decoder's depth
        raise NotJson(str(exc)) from exc
    if not isinstance(value, dict):
        raise NotAnObject(f"a JSON {type(value).__name__}, not an object")
    return value
