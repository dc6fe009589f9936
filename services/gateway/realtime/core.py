"""The state every part of a Realtime session shares, and the sending of server events.

``SessionCore`` holds the session's fields (one place to read them all) and the three things
both halves of the session do: send an event, send an error event, and announce a user item.
The halves are subclasses: ``relay.ConverseRelay`` (Converse events to server events) and
``session.RealtimeSession`` (client events to Converse requests).
"""

from __future__ import annotations

import asyncio
import json
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from client.conversation import Conversation
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.gateway.errors import ApiError
from services.gateway.metrics import REALTIME_ERRORS, REALTIME_EVENTS
from services.gateway.realtime.audio import InputAudio
from services.gateway.realtime.protocol import _id
from services.gateway.realtime.state import ResponseState, SessionState
from services.runtime.streams import Channel

if TYPE_CHECKING:
    import grpc

    from services.gateway.app import GatewayApp


class SessionCore:
    """One Realtime WebSocket session's state and event sending."""

    def __init__(self, ws: WebSocket, app: GatewayApp, model: str) -> None:
        self.ws = ws
        self.app = app
        self.state = SessionState(model=model or "parole-realtime")
        self.session_id = _id("sess")
        self.conv: Conversation | None = None
        self._conv_key: tuple[Any, ...] | None = None
        self._channel: grpc.aio.Channel | None = None
        # Converse events, tagged with the Converse session they came from: a reopened session
        # (same session id, for the LLM history) numbers its turns from 1 again.
        self._events: Channel[tuple[int, float, pb.ConverseResponse]] = Channel()
        self._generation = 0
        self._translator: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._send_lock = asyncio.Lock()
        self._closed = False
        self._input = InputAudio()  # 24 kHz appends → 16 kHz
        self.audio_ms = 0.0  # input audio received, in ms since the session started
        self._uncommitted_ms = 0.0
        self._buffer = bytearray()  # manual mode: 16 kHz audio waiting for a commit
        self._pending_text: list[str] = []
        self._speech_item: str | None = None
        self._transcribing: list[str] = []  # user items whose final transcript is awaited
        self._partial: dict[str, str] = {}
        self._expect_turn = 0  # commits/typed turns sent whose response has not started
        self._last_item: str | None = None
        self.responses: dict[str, ResponseState] = {}

    async def send(self, event: dict[str, Any]) -> None:
        if self._closed or self.ws.application_state != WebSocketState.CONNECTED:
            return
        event = {"event_id": _id("event"), **event}
        REALTIME_EVENTS.labels("out", event["type"]).inc()
        async with self._send_lock:
            try:
                await self.ws.send_text(json.dumps(event, ensure_ascii=False))
            except (WebSocketDisconnect, RuntimeError, OSError):
                self._closed = True  # the client went away; the read loop ends the session

    async def error(self, err: ApiError, event_id: str | None = None) -> None:
        REALTIME_ERRORS.labels(err.code or err.type).inc()
        body = err.body()
        body["event_id"] = event_id
        await self.send({"type": "error", "error": body})

    async def _user_item_added(self, item: str, *, audio: bool, text: str = "") -> None:
        content = {"type": "input_audio", "transcript": None} if audio else {"type": "input_text", "text": text}
        obj = {
            "id": item,
            "object": "realtime.item",
            "type": "message",
            "role": "user",
            "status": "completed",
            "content": [content],
        }
        await self.send({"type": "conversation.item.added", "previous_item_id": self._last_item, "item": obj})
        if not audio:
            await self.send({"type": "conversation.item.done", "previous_item_id": self._last_item, "item": obj})
        self._last_item = item
