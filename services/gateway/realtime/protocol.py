"""The Realtime protocol's fixed parts: its constants, ids, the latency object, and the parsing
and validation of client events that need no session state (JSON, event type, an append's
audio, a user message). Separate from the session so what the wire accepts reads in one place
and can be checked without a WebSocket.
"""

from __future__ import annotations

import base64
import binascii
import uuid
from typing import Any

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.gateway.errors import bad_request
from services.gateway.jsonbody import NotAnObject, NotJson, parse_object
from services.gateway.metrics import REALTIME_EVENTS

RATE = 24000
"""Realtime audio is PCM16 mono at 24 kHz, both ways."""
CLIENT_EVENTS = (
    "session.update",
    "input_audio_buffer.append",
    "input_audio_buffer.commit",
    "input_audio_buffer.clear",
    "conversation.item.create",
    "response.create",
    "response.cancel",
)
MAX_INSTRUCTIONS = 4000
MAX_BUFFER_SECONDS = 120.0
"""Audio held for a manual commit (turn detection off) before appends are refused."""
DELTA_MS = 200
"""Answer audio is sent in pieces of this length, so a client can start playing at once."""
COMMIT_MIN_MS = 100
"""OpenAI's rule: committing less audio than this is an error."""


def latency_object(lat: pb.TurnLatency) -> dict[str, Any]:
    """A turn's TurnLatency as JSON, for ``response.done``'s ``parole.latency``: seconds from
    the end of the user's speech (or the typed text's arrival) to each point the turn reached,
    in pipeline order (``marks``: end_of_turn, final_transcript, ..., first_token, ...,
    first_audio, last_audio), plus the summary fields of the proto."""
    return {
        "final_transcript_seconds": round(lat.final_transcript_seconds, 4),
        "first_token_seconds": round(lat.first_token_seconds, 4),
        "first_audio_seconds": round(lat.first_audio_seconds, 4),
        "last_audio_seconds": round(lat.last_audio_seconds, 4),
        "audio_seconds": round(lat.audio_seconds, 4),
        "interrupted": lat.interrupted,
        "degraded_stages": [pb.Stage.Name(s).removeprefix("STAGE_").lower() for s in lat.degraded_stages],
        "marks": [{"point": m.point, "seconds": round(m.seconds, 4)} for m in lat.marks],
    }


def _id(prefix: str) -> str:
    return f"{prefix}_{uuid.uuid4().hex[:20]}"


def parse_event(text: str) -> dict[str, Any]:
    """A client event's text as a JSON object, or a 400."""
    try:
        return parse_object(text)
    except NotJson as exc:
        raise bad_request(f"the event is not valid JSON: {exc}", code="invalid_json") from exc
    except NotAnObject as exc:
        raise bad_request("an event must be a JSON object", code="invalid_event") from exc


def event_type(event: dict[str, Any]) -> str:
    """The event's type, counted (an unknown one as ``unknown``), or a 400 naming the supported."""
    kind = event.get("type")
    if kind not in CLIENT_EVENTS:
        REALTIME_EVENTS.labels("in", "unknown").inc()
        raise bad_request(
            f"unknown event type {kind!r}; supported: {', '.join(CLIENT_EVENTS)}",
            param="type",
            code="invalid_value",
        )
    REALTIME_EVENTS.labels("in", kind).inc()
    return str(kind)


def append_audio(event: dict[str, Any]) -> bytes:
    """The audio of an ``input_audio_buffer.append``: its base64 decoded, or a 400."""
    data = event.get("audio")
    if not isinstance(data, str):
        raise bad_request("input_audio_buffer.append needs 'audio': base64 PCM16 at 24 kHz", param="audio")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise bad_request(f"'audio' is not valid base64: {exc}", param="audio") from exc


def user_message(event: dict[str, Any]) -> tuple[str, str]:
    """The item id (the client's, else a new one) and text of a ``conversation.item.create``,
    which may add user text messages only, or a 400."""
    item = event.get("item")
    if not isinstance(item, dict):
        raise bad_request("conversation.item.create needs an 'item' object", param="item")
    if item.get("type", "message") != "message" or item.get("role") != "user":
        raise bad_request(
            "only user messages can be added (type 'message', role 'user'); the fleet keeps the rest of the history",
            param="item.role",
            code="unsupported_parameter",
        )
    content = item.get("content")
    if not isinstance(content, list) or not content:
        raise bad_request("item.content must be a non-empty array", param="item.content")
    texts = []
    for part in content:
        if (
            not isinstance(part, dict)
            or part.get("type") not in ("input_text", "text")
            or not isinstance(part.get("text"), str)
        ):
            raise bad_request(
                "item.content parts must be {'type': 'input_text', 'text': ...}; send audio with input_audio_buffer.append",
                param="item.content",
                code="unsupported_parameter",
            )
        texts.append(part["text"])
    text = "\n".join(texts).strip()
    if not text:
        raise bad_request("the message is empty", param="item.content")
    given = item.get("id")
    item_id = given if isinstance(given, str) and given else _id("item")
    return item_id, text
