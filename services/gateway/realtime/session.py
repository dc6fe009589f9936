"""The Realtime session itself: its lifecycle on the WebSocket, the read loop that checks and
dispatches client events, and what each client event does to the ``Converse`` session it holds
(configure and reopen it, stream or hold audio, commit, type a turn, ask for or cancel a
response). What the client hears back from the orchestrator is the relay's part
(``relay.ConverseRelay``, its base class).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from typing import TYPE_CHECKING, Any

from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from client.conversation import Conversation
from client.session import ConversationError, SessionOptions
from services.gateway.errors import ApiError, bad_request
from services.gateway.metrics import REALTIME_SESSIONS
from services.gateway.realtime.audio import _PlaybackClock, duration_ms
from services.gateway.realtime.protocol import (
    COMMIT_MIN_MS,
    MAX_BUFFER_SECONDS,
    RATE,
    _id,
    append_audio,
    event_type,
    parse_event,
    user_message,
)
from services.gateway.realtime.relay import ConverseRelay
from services.gateway.realtime.state import ResponseState, session_object, updated_session
from services.runtime.audio import PCM16_WIDTH, SPEECH_RATE, chunks
from services.runtime.channel import open_channel
from services.runtime.logging import get_logger

if TYPE_CHECKING:
    from services.gateway.app import GatewayApp

# Named after the package, as when the session was one module: log lines keep their logger.
log = get_logger("services.gateway.realtime")


class RealtimeSession(ConverseRelay):
    """One Realtime WebSocket session."""

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        REALTIME_SESSIONS.inc()
        try:
            await self.send({"type": "session.created", "session": session_object(self.state, self.session_id)})
            await self._read_loop()
        finally:
            REALTIME_SESSIONS.dec()
            self._closed = True
            # Nobody is listening any more: the answer in progress is cancelled, not finished.
            await self._close_converse(grace=0.0)

    async def shutdown(self, reason: str) -> None:
        """The gateway is stopping: tell the client why, then close (1001 going away)."""
        await self.error(ApiError(503, reason, type="server_error", code="server_shutting_down"))
        self._closed = True
        with contextlib.suppress(Exception):
            await self.ws.close(1001, "server shutting down")

    async def _read_loop(self) -> None:
        limit = self.app.settings.http.max_event_bytes
        while not self._closed:
            try:
                message = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                return
            if message["type"] == "websocket.disconnect":
                return
            text = message.get("text")
            if text is None:
                await self.error(
                    bad_request("binary frames are not supported: send JSON text events", code="invalid_event")
                )
                continue
            if len(text) > limit:
                await self.error(
                    bad_request(f"event is {len(text)} bytes; the limit is {limit}", code="event_too_large")
                )
                continue
            event_id: str | None = None
            try:
                event = parse_event(text)
                raw_id = event.get("event_id")
                event_id = raw_id if isinstance(raw_id, str) else None
                kind = event_type(event)
                await self._dispatch(kind, event)
            except ApiError as err:
                await self.error(err, event_id)
            except Exception as exc:
                log.exception("realtime event failed", error=str(exc))
                await self.error(
                    ApiError(500, f"internal error handling the event: {exc}", type="server_error", code="internal"),
                    event_id,
                )

    async def _dispatch(self, kind: str, event: dict[str, Any]) -> None:
        if kind == "session.update":
            await self._session_update(event)
        elif kind == "input_audio_buffer.append":
            await self._append(event)
        elif kind == "input_audio_buffer.commit":
            await self._commit()
        elif kind == "input_audio_buffer.clear":
            self._buffer.clear()
            self._uncommitted_ms = 0.0
            await self.send({"type": "input_audio_buffer.cleared"})
        elif kind == "conversation.item.create":
            await self._item_create(event)
        elif kind == "response.create":
            await self._response_create(event)
        elif kind == "response.cancel":
            await self._response_cancel(event)

    # ------------------------------------------------------------------ session
    async def _session_update(self, event: dict[str, Any]) -> None:
        new = updated_session(self.state, event)
        if new.voice:
            await self.app.catalog.voice(new.voice)  # refuses an unknown voice now, not mid-answer
        self.state = new
        await self.send({"type": "session.updated", "session": session_object(self.state, self.session_id)})

    # ------------------------------------------------------------------ Converse
    async def _options(self) -> SessionOptions:
        s = self.state
        choice = await self.app.catalog.voice(s.voice, language=s.language) if s.voice else None
        language = s.language or (choice.language if choice else "") or self.app.settings.defaults.language
        if choice is not None and choice.voice and not s.language:
            voices = {v.name: v.language for v in await self.app.catalog.voices()}
            language = voices.get(choice.voice, language)
        barge_in = s.turn_detection is not None and bool(s.turn_detection.get("interrupt_response", True))
        return SessionOptions(
            language=language,
            voice=choice.voice if choice else "",
            persona=s.instructions,
            session_id=self.session_id,
            barge_in=barge_in,
            output_sample_rate_hz=RATE,
            end_of_speech_silence_ms=s.silence_ms(),
            interim_results=s.transcription is not None,
        )

    async def _converse(self) -> Conversation:
        """The Converse session, opened on first use and reopened when its settings changed
        (the LLM keeps the history under the same session id)."""
        key = self.state.converse_key()
        if self.conv is not None and not self.conv.ended and (key == self._conv_key or self._active() is not None):
            # New settings apply from the next turn: reopening now would cut the answer short.
            return self.conv
        await self._close_converse(grace=0.5)
        if self._channel is None:
            self._channel = open_channel(self.app.settings.orchestrator, self.app.settings.server)
        self._generation += 1
        generation = self._generation
        self.conv = Conversation(
            self._channel,
            await self._options(),
            _PlaybackClock(),
            input_rate=SPEECH_RATE,
            on_event=lambda r: self._event(generation, r),
            start_timeout=10.0,
        )
        self._conv_key = key
        if self._translator is None or self._translator.done():
            self._translator = asyncio.create_task(self._translate(), name="realtime-translate")
        conv = self.conv
        try:
            await conv.start()
        except ConversationError as exc:
            self.conv = None
            raise ApiError(
                503,
                f"the conversation service is unavailable: {exc}",
                type="server_error",
                code="orchestrator_unavailable",
            ) from exc
        self._watcher = asyncio.create_task(self._watch(conv), name="realtime-watch")
        return conv

    async def _watch(self, conv: Conversation) -> None:
        """Tells the client when the Converse session breaks under it (the next event the client
        sends opens a new one, with the same history)."""
        failure = await conv.wait_ended()
        if self.conv is conv and not self._closed:
            self.conv = None
            await self.error(
                ApiError(
                    503,
                    f"the conversation service ended the session ({failure or 'stream closed'}); "
                    "the next event opens a new one",
                    type="server_error",
                    code="orchestrator_unavailable",
                )
            )

    async def _close_converse(self, grace: float) -> None:
        conv, self.conv = self.conv, None
        if conv is not None:
            with contextlib.suppress(Exception):
                await conv.close(grace=grace)
        if self._closed:
            if self._translator is not None:
                self._events.close()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self._translator, 2.0)
            if self._channel is not None:
                await self._channel.close()

    async def _send_audio(self, pcm16k: bytes) -> None:
        conv = await self._converse()
        for piece in chunks(pcm16k, SPEECH_RATE, 100):
            conv.send_audio(piece)

    # ------------------------------------------------------------------ input audio
    async def _append(self, event: dict[str, Any]) -> None:
        raw = self._input.whole_samples(append_audio(event))
        if not raw:
            return
        ms = duration_ms(raw)
        self.audio_ms += ms
        self._uncommitted_ms += ms
        pcm = self._input.resample(raw)
        if self.state.manual:
            if len(self._buffer) + len(pcm) > MAX_BUFFER_SECONDS * SPEECH_RATE * PCM16_WIDTH:
                raise bad_request(
                    f"the input audio buffer holds {MAX_BUFFER_SECONDS:g} s already; commit or clear it",
                    code="input_audio_buffer_full",
                )
            self._buffer += pcm
            return
        await self._send_audio(pcm)

    async def _commit(self) -> None:
        if self._uncommitted_ms < COMMIT_MIN_MS:
            raise bad_request(
                f"buffer too small: at least {COMMIT_MIN_MS} ms of audio must be appended before a commit; "
                f"{self._uncommitted_ms:.0f} ms were",
                code="input_audio_buffer_commit_empty",
            )
        self._uncommitted_ms = 0.0
        # The commit is the user saying they have finished: the fleet ends the utterance now
        # (Control.end_of_turn), without waiting for its endpointing to judge a silence.
        if self.state.manual:
            item = _id("item")
            await self.send(
                {"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": self._last_item}
            )
            await self._user_item_added(item, audio=True)
            self._transcribing.append(item)
            audio, self._buffer = bytes(self._buffer), bytearray()
            await self._send_audio(audio)
        (await self._converse()).end_of_turn()
        self._expect_turn += 1

    # ------------------------------------------------------------------ items and responses
    async def _item_create(self, event: dict[str, Any]) -> None:
        item_id, text = user_message(event)
        self._pending_text.append(text)
        await self._user_item_added(item_id, audio=False, text=text)

    async def _response_create(self, event: dict[str, Any]) -> None:
        if self._pending_text:
            text, self._pending_text = "\n".join(self._pending_text), []
            conv = await self._converse()
            conv.send_text(text)
            self._expect_turn += 1
            return
        if self._expect_turn or self._transcribing or self._active():
            return  # the fleet answers the committed speech by itself
        raise bad_request(
            "nothing to answer: add a user message (conversation.item.create) or speak first; "
            "responses to speech start by themselves",
            code="conversation_empty",
        )

    def _active(self) -> ResponseState | None:
        for r in self.responses.values():
            if not r.done:
                return r
        return None

    async def _response_cancel(self, event: dict[str, Any]) -> None:
        active = self._active()
        wanted = event.get("response_id")
        if active is None or (isinstance(wanted, str) and wanted and wanted != active.id):
            raise bad_request("there is no response in progress to cancel", code="response_cancel_not_active")
        active.cancel_reason = active.cancel_reason or "client_cancelled"
        if self.conv is not None:
            self.conv.interrupt()


async def realtime_endpoint(ws: WebSocket, app: GatewayApp) -> None:
    """``WS /v1/realtime``: the session runs until either side closes."""
    offered = ws.scope.get("subprotocols") or []
    await ws.accept(subprotocol="realtime" if "realtime" in offered else None)
    session = RealtimeSession(ws, app, ws.query_params.get("model", ""))
    app.realtime_sessions.add(session)
    started = time.monotonic()
    try:
        await session.run()
    finally:
        app.realtime_sessions.discard(session)
        log.info("realtime session ended", seconds=round(time.monotonic() - started, 1))
        with contextlib.suppress(Exception):
            if ws.application_state == WebSocketState.CONNECTED:
                await ws.close()
