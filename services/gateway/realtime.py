"""The OpenAI Realtime protocol (GA event names) over the orchestrator's ``Converse``.

One WebSocket is one ``Converse`` session, held by the shared client (``client.conversation``).
Client events become Converse requests (24 kHz PCM resampled to 16 kHz, typed turns,
interrupts); Converse events become server events (speech activity, transcripts, response
text and audio). Turn detection is the fleet's own: every final transcript is answered, so a
response starts by itself after the user stops speaking, and barge-in (speech during an
answer) cancels it. A bad client event gets an ``error`` event; the socket stays open.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import contextlib
import json
import time
import uuid
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import soxr
from starlette.websockets import WebSocket, WebSocketDisconnect, WebSocketState

from client.conversation import Conversation
from client.session import ConversationError, SessionOptions
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.gateway.errors import ApiError, bad_request
from services.gateway.metrics import REALTIME_ERRORS, REALTIME_EVENTS, REALTIME_RELAY_SECONDS, REALTIME_SESSIONS
from services.runtime.audio import PCM16_WIDTH, SPEECH_RATE, chunks, resample_pcm16
from services.runtime.channel import open_channel
from services.runtime.logging import get_logger
from services.runtime.streams import Channel

if TYPE_CHECKING:
    import grpc

    from services.gateway.app import GatewayApp

log = get_logger(__name__)

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


@dataclass
class SessionState:
    """The Realtime session configuration, as the client set it."""

    model: str
    instructions: str = ""
    voice: str = ""
    language: str = ""
    """Transcription language the client set; empty: derived from the voice, else the default."""
    transcription: dict[str, Any] | None = None
    turn_detection: dict[str, Any] | None = field(
        default_factory=lambda: {"type": "server_vad", "interrupt_response": True, "create_response": True}
    )
    output_modalities: list[str] = field(default_factory=lambda: ["audio"])
    max_output_tokens: int | str = "inf"

    @property
    def manual(self) -> bool:
        """Turn detection off: appended audio waits in the gateway until the client commits."""
        return self.turn_detection is None

    def silence_ms(self) -> int:
        if self.turn_detection is None:
            return 0
        return int(self.turn_detection.get("silence_duration_ms") or 0)

    def converse_key(self) -> tuple[Any, ...]:
        """What the Converse session depends on: a change restarts it."""
        barge_in = self.turn_detection is not None and bool(self.turn_detection.get("interrupt_response", True))
        return (
            self.instructions,
            self.voice,
            self.language,
            barge_in,
            self.silence_ms(),
            self.transcription is not None,
        )


@dataclass
class ResponseState:
    """One assistant response: a Converse turn."""

    id: str
    item_id: str
    turn_id: str
    text: list[str] = field(default_factory=list)
    audio_ms: float = 0.0
    parts_done: bool = False
    cancel_reason: str = ""
    done: bool = False


class _PlaybackClock:
    """The Converse client's audio sink. The Realtime client plays the answer itself, so this
    only takes as long as the audio lasts: the playback reports the orchestrator gets (and the
    microphone gate and barge-in window they drive) follow the client's likely playback."""

    async def play(self, turn_id: str, pcm: bytes, sample_rate: int) -> None:
        await asyncio.sleep(len(pcm) / PCM16_WIDTH / max(sample_rate, 1))

    async def finish(self, turn_id: str, stopped: bool) -> None:
        return None


class RealtimeSession:
    """One Realtime WebSocket session."""

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
        self._resampler = soxr.ResampleStream(RATE, SPEECH_RATE, 1, dtype="int16")
        self._carry = b""  # an odd byte held back between appends would split a sample
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

    # ------------------------------------------------------------------ lifecycle
    async def run(self) -> None:
        REALTIME_SESSIONS.inc()
        try:
            await self.send({"type": "session.created", "session": self._session_object()})
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
                try:
                    event = json.loads(text)
                except (ValueError, RecursionError) as exc:
                    raise bad_request(f"the event is not valid JSON: {exc}", code="invalid_json") from exc
                if not isinstance(event, dict):
                    raise bad_request("an event must be a JSON object", code="invalid_event")
                raw_id = event.get("event_id")
                event_id = raw_id if isinstance(raw_id, str) else None
                kind = event.get("type")
                if kind not in CLIENT_EVENTS:
                    REALTIME_EVENTS.labels("in", "unknown").inc()
                    raise bad_request(
                        f"unknown event type {kind!r}; supported: {', '.join(CLIENT_EVENTS)}",
                        param="type",
                        code="invalid_value",
                    )
                REALTIME_EVENTS.labels("in", kind).inc()
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
    def _session_object(self) -> dict[str, Any]:
        s = self.state
        pcm = {"type": "audio/pcm", "rate": RATE}
        turn = None
        if s.turn_detection is not None:
            turn = {
                "type": s.turn_detection.get("type", "server_vad"),
                "silence_duration_ms": s.silence_ms() or None,
                "interrupt_response": bool(s.turn_detection.get("interrupt_response", True)),
                "create_response": True,
            }
        return {
            "type": "realtime",
            "object": "realtime.session",
            "id": self.session_id,
            "model": s.model,
            "output_modalities": s.output_modalities,
            "instructions": s.instructions,
            "audio": {
                "input": {
                    "format": pcm,
                    "transcription": s.transcription,
                    "turn_detection": turn,
                    "noise_reduction": None,
                },
                "output": {"format": pcm, "voice": s.voice or None, "speed": 1.0},
            },
            "tools": [],
            "tool_choice": "auto",
            "max_output_tokens": s.max_output_tokens,
        }

    async def _session_update(self, event: dict[str, Any]) -> None:
        update = event.get("session")
        if not isinstance(update, dict):
            raise bad_request("session.update needs a 'session' object", param="session")
        s = self.state
        new = SessionState(**{k: getattr(s, k) for k in s.__dataclass_fields__})
        kind = update.get("type", "realtime")
        if kind != "realtime":
            raise bad_request("only 'realtime' sessions are served here", param="session.type")
        if "instructions" in update:
            value = update["instructions"]
            if not isinstance(value, str) or len(value) > MAX_INSTRUCTIONS:
                raise bad_request(
                    f"instructions must be a string of at most {MAX_INSTRUCTIONS} characters",
                    param="session.instructions",
                )
            new.instructions = value
        if "output_modalities" in update:
            mods = update["output_modalities"]
            if mods not in (["audio"], ["text"], ["audio", "text"], ["text", "audio"]):
                raise bad_request("output_modalities must be ['audio'] or ['text']", param="session.output_modalities")
            new.output_modalities = ["text"] if mods == ["text"] else ["audio"]
        if update.get("tools"):
            raise bad_request(
                "tools are not supported by this server", param="session.tools", code="unsupported_parameter"
            )
        if "max_output_tokens" in update:
            value = update["max_output_tokens"]
            if value != "inf" and not (isinstance(value, int) and not isinstance(value, bool) and value > 0):
                raise bad_request(
                    "max_output_tokens must be a positive integer or 'inf'", param="session.max_output_tokens"
                )
            new.max_output_tokens = value
        audio = update.get("audio", {})
        if not isinstance(audio, dict):
            raise bad_request("session.audio must be an object", param="session.audio")
        self._audio_update(new, audio)
        if new.voice:
            await self.app.catalog.voice(new.voice)  # refuses an unknown voice now, not mid-answer
        self.state = new
        await self.send({"type": "session.updated", "session": self._session_object()})

    @staticmethod
    def _audio_update(new: SessionState, audio: dict[str, Any]) -> None:
        for side in ("input", "output"):
            part = audio.get(side, {})
            if not isinstance(part, dict):
                raise bad_request(f"session.audio.{side} must be an object", param=f"session.audio.{side}")
            fmt = part.get("format")
            if fmt is not None and (
                not isinstance(fmt, dict) or fmt.get("type") != "audio/pcm" or fmt.get("rate", RATE) != RATE
            ):
                raise bad_request(
                    "only audio/pcm at 24000 Hz is supported",
                    param=f"session.audio.{side}.format",
                    code="unsupported_format",
                )
        inp, out = audio.get("input", {}), audio.get("output", {})
        if "transcription" in inp:
            t = inp["transcription"]
            if t is not None and not isinstance(t, dict):
                raise bad_request("transcription must be an object or null", param="session.audio.input.transcription")
            if t is not None:
                lang = t.get("language") or ""
                if not isinstance(lang, str) or (lang and not (len(lang) == 2 and lang.isalpha())):
                    raise bad_request(
                        "transcription.language must be an ISO 639-1 code such as 'en'",
                        param="session.audio.input.transcription.language",
                    )
                new.language = lang.lower()
            new.transcription = t
        if "turn_detection" in inp:
            td = inp["turn_detection"]
            if td is not None:
                if not isinstance(td, dict) or td.get("type") not in ("server_vad", "semantic_vad"):
                    raise bad_request(
                        "turn_detection.type must be server_vad or semantic_vad (or turn_detection null)",
                        param="session.audio.input.turn_detection.type",
                    )
                if td.get("create_response") is False:
                    raise bad_request(
                        "create_response false is not supported: the fleet answers every turn it detects",
                        param="session.audio.input.turn_detection.create_response",
                        code="unsupported_parameter",
                    )
                ms = td.get("silence_duration_ms")
                if ms is not None and (not isinstance(ms, int) or isinstance(ms, bool) or not 100 <= ms <= 5000):
                    raise bad_request(
                        "silence_duration_ms must be an integer from 100 to 5000",
                        param="session.audio.input.turn_detection.silence_duration_ms",
                    )
                interrupt = td.get("interrupt_response", True)
                if not isinstance(interrupt, bool):
                    raise bad_request(
                        "interrupt_response must be true or false",
                        param="session.audio.input.turn_detection.interrupt_response",
                    )
            new.turn_detection = td
        if "voice" in out:
            voice = out["voice"]
            if isinstance(voice, dict):
                voice = voice.get("id")
            if not isinstance(voice, str):
                raise bad_request("voice must be a string", param="session.audio.output.voice")
            new.voice = voice
        if out.get("speed", 1.0) != 1.0:
            raise bad_request(
                "speed is not supported in a conversation (use /v1/audio/speech for it)",
                param="session.audio.output.speed",
                code="unsupported_parameter",
            )

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
        data = event.get("audio")
        if not isinstance(data, str):
            raise bad_request("input_audio_buffer.append needs 'audio': base64 PCM16 at 24 kHz", param="audio")
        try:
            raw = base64.b64decode(data, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise bad_request(f"'audio' is not valid base64: {exc}", param="audio") from exc
        raw = self._carry + raw
        usable = len(raw) - len(raw) % PCM16_WIDTH
        raw, self._carry = raw[:usable], raw[usable:]
        if not raw:
            return
        ms = len(raw) / PCM16_WIDTH / RATE * 1000
        self.audio_ms += ms
        self._uncommitted_ms += ms
        pcm = self._resampler.resample_chunk(np.frombuffer(raw, dtype="<i2")).astype("<i2").tobytes()
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

    # ------------------------------------------------------------------ items and responses
    async def _item_create(self, event: dict[str, Any]) -> None:
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

    # ------------------------------------------------------------------ Converse → Realtime
    def _event(self, generation: int, r: pb.ConverseResponse) -> None:
        """Queues a Converse event for translation, with the time it arrived; dropped once the
        session is closing (nobody translates any more)."""
        if not self._events.closed:
            self._events.send_nowait((generation, time.perf_counter(), r))

    async def _translate(self) -> None:
        async for item in self._events:
            try:
                await self._on_converse(*item)
            except Exception as exc:
                log.exception("realtime translation failed", error=str(exc))

    def _user_item(self) -> str:
        if self._transcribing:
            return self._transcribing[0]
        if self._speech_item is None:
            self._speech_item = _id("item")
        return self._speech_item

    async def _on_converse(self, generation: int, arrived: float, r: pb.ConverseResponse) -> None:
        kind = r.WhichOneof("event")
        turn_id = f"{generation}/{r.turn_id}" if r.turn_id else ""
        if kind == "speech":
            await self._on_speech(r.speech.started)
        elif kind == "transcript":
            await self._on_transcript(r, turn_id)
        elif kind == "reply_text":
            resp = await self._response(turn_id)
            if resp is not None and not resp.done:
                resp.text.append(r.reply_text.delta)
                delta_type = (
                    "response.output_text.delta" if self._text_only() else "response.output_audio_transcript.delta"
                )
                await self.send({"type": delta_type, **self._where(resp), "delta": r.reply_text.delta})
        elif kind == "reply_audio":
            resp = await self._response(turn_id)
            if resp is not None and not resp.done:
                await self._on_audio(resp, r.reply_audio, arrived)
        elif kind == "stop_playback":
            stopped = r.stop_playback.turn_id or r.turn_id
            resp = self.responses.get(f"{generation}/{stopped}")
            if resp is not None and not resp.done and not resp.cancel_reason:
                resp.cancel_reason = "turn_detected" if r.stop_playback.reason == "barge_in" else "client_cancelled"
        elif kind == "latency":
            resp = await self._response(turn_id)
            if resp is not None and not resp.done:
                interrupted = r.latency.interrupted or bool(resp.cancel_reason)
                await self._finish(resp, "cancelled" if interrupted else "completed", latency=r.latency)
        elif kind == "error":
            await self._on_stage_error(r, turn_id)

    def _text_only(self) -> bool:
        return self.state.output_modalities == ["text"]

    async def _on_speech(self, started: bool) -> None:
        if self.state.manual:
            return  # OpenAI sends no VAD events with turn detection off
        if started:
            self._speech_item = _id("item")
            await self.send(
                {
                    "type": "input_audio_buffer.speech_started",
                    "audio_start_ms": int(self.audio_ms),
                    "item_id": self._speech_item,
                }
            )
            return
        item = self._speech_item or _id("item")
        self._speech_item = None
        self._uncommitted_ms = 0.0
        await self.send(
            {"type": "input_audio_buffer.speech_stopped", "audio_end_ms": int(self.audio_ms), "item_id": item}
        )
        await self.send({"type": "input_audio_buffer.committed", "item_id": item, "previous_item_id": self._last_item})
        await self._user_item_added(item, audio=True)
        self._transcribing.append(item)

    async def _on_transcript(self, r: pb.ConverseResponse, turn_id: str) -> None:
        t = r.transcript
        item = self._user_item()
        sent = self._partial.get(item, "")
        text = t.text.strip()
        if text.startswith(sent) and len(text) > len(sent):
            # Whisper revises interim text; only what extends what was sent can be a delta.
            delta = text[len(sent) :]
            self._partial[item] = text
            await self.send(
                {
                    "type": "conversation.item.input_audio_transcription.delta",
                    "item_id": item,
                    "content_index": 0,
                    "delta": delta,
                }
            )
        if not t.is_final:
            return
        self._partial.pop(item, None)
        if item in self._transcribing:
            self._transcribing.remove(item)
        if item == self._speech_item:
            self._speech_item = None
        await self.send(
            {
                "type": "conversation.item.input_audio_transcription.completed",
                "item_id": item,
                "content_index": 0,
                "transcript": text,
                "usage": {"type": "duration", "seconds": 0},
            }
        )
        done = {"id": item, "object": "realtime.item", "type": "message", "role": "user", "status": "completed",
                "content": [{"type": "input_audio", "transcript": text}]}  # fmt: skip
        await self.send({"type": "conversation.item.done", "item": done})
        if turn_id:
            await self._response(turn_id)
        elif self._expect_turn:
            self._expect_turn -= 1  # a commit that held no words: no answer will come

    def _where(self, resp: ResponseState) -> dict[str, Any]:
        return {"response_id": resp.id, "item_id": resp.item_id, "output_index": 0, "content_index": 0}

    async def _response(self, turn_id: str) -> ResponseState | None:
        """The response of a Converse turn, announced (response.created...) on first sight."""
        if not turn_id:
            return None
        resp = self.responses.get(turn_id)
        if resp is not None:
            return resp
        if self._expect_turn:
            self._expect_turn -= 1
        resp = ResponseState(id=_id("resp"), item_id=_id("item"), turn_id=turn_id)
        self.responses[turn_id] = resp
        # Finished responses are kept only while their turn's late messages may come.
        for old in [k for k, v in self.responses.items() if v.done][:-8]:
            del self.responses[old]
        await self.send({"type": "response.created", "response": self._response_object(resp, "in_progress")})
        item = self._item_object(resp, "in_progress")
        await self.send({"type": "response.output_item.added", "response_id": resp.id, "output_index": 0, "item": item})
        await self.send({"type": "conversation.item.added", "previous_item_id": self._last_item, "item": item})
        self._last_item = resp.item_id
        await self.send({"type": "response.content_part.added", **self._where(resp), "part": self._part(resp)})
        return resp

    def _part(self, resp: ResponseState) -> dict[str, Any]:
        text = "".join(resp.text)
        return {"type": "text", "text": text} if self._text_only() else {"type": "audio", "transcript": text}

    def _item_object(self, resp: ResponseState, status: str) -> dict[str, Any]:
        content = [self._part(resp)] if status != "in_progress" else []
        if content and not self._text_only():
            content[0] = {"type": "output_audio", "transcript": content[0]["transcript"]}
        elif content:
            content[0] = {"type": "output_text", "text": content[0]["text"]}
        return {
            "id": resp.item_id,
            "object": "realtime.item",
            "type": "message",
            "role": "assistant",
            "status": status,
            "content": content,
        }

    def _response_object(
        self,
        resp: ResponseState,
        status: str,
        details: dict[str, Any] | None = None,
        latency: pb.TurnLatency | None = None,
    ) -> dict[str, Any]:
        out = (
            [self._item_object(resp, "completed" if status == "completed" else "incomplete")]
            if status != "in_progress"
            else []
        )
        return {
            "id": resp.id,
            "object": "realtime.response",
            "status": status,
            "status_details": details,
            "output": out,
            "conversation_id": self.session_id,
            "output_modalities": self.state.output_modalities,
            "max_output_tokens": self.state.max_output_tokens,
            "audio": {"output": {"format": {"type": "audio/pcm", "rate": RATE}, "voice": self.state.voice or None}},
            "usage": {"total_tokens": 0, "input_tokens": 0, "output_tokens": 0} if status != "in_progress" else None,
            # Parole's extension (clients ignore fields they do not know): the turn's timings.
            **({"parole": {"latency": latency_object(latency)}} if latency is not None else {}),
        }

    async def _on_audio(self, resp: ResponseState, chunk: pb.ReplyAudio, arrived: float) -> None:
        if chunk.audio and not self._text_only():
            rate = chunk.format.sample_rate_hz or RATE
            pcm = chunk.audio if rate == RATE else resample_pcm16(chunk.audio, rate, RATE)
            for i, piece in enumerate(chunks(pcm, RATE, DELTA_MS)):
                resp.audio_ms += len(piece) / PCM16_WIDTH / RATE * 1000
                await self.send(
                    {
                        "type": "response.output_audio.delta",
                        **self._where(resp),
                        "delta": base64.b64encode(piece).decode(),
                    }
                )
                if i == 0:  # the client can start playing from here
                    REALTIME_RELAY_SECONDS.observe(time.perf_counter() - arrived)
        if chunk.is_last:
            await self._parts_done(resp)

    async def _parts_done(self, resp: ResponseState) -> None:
        if resp.parts_done:
            return
        resp.parts_done = True
        where = self._where(resp)
        text = "".join(resp.text)
        if self._text_only():
            await self.send({"type": "response.output_text.done", **where, "text": text})
        else:
            await self.send({"type": "response.output_audio.done", **where})
            await self.send({"type": "response.output_audio_transcript.done", **where, "transcript": text})
        await self.send({"type": "response.content_part.done", **where, "part": self._part(resp)})

    async def _finish(
        self,
        resp: ResponseState,
        status: str,
        error: dict[str, Any] | None = None,
        latency: pb.TurnLatency | None = None,
    ) -> None:
        await self._parts_done(resp)
        resp.done = True
        item_status = "completed" if status == "completed" else "incomplete"
        item = self._item_object(resp, item_status)
        await self.send({"type": "response.output_item.done", "response_id": resp.id, "output_index": 0, "item": item})
        await self.send({"type": "conversation.item.done", "item": item})
        details: dict[str, Any] | None = None
        if status == "cancelled":
            details = {"type": "cancelled", "reason": resp.cancel_reason or "turn_detected"}
        elif status == "failed":
            details = {"type": "failed", "error": error}
        await self.send({"type": "response.done", "response": self._response_object(resp, status, details, latency)})

    async def _on_stage_error(self, r: pb.ConverseResponse, turn_id: str) -> None:
        e = r.error
        stage = pb.Stage.Name(e.stage).removeprefix("STAGE_").lower()
        code = f"{stage}_degraded" if e.degraded else f"{stage}_failed"
        err = ApiError(503, f"{stage}: {e.message}", type="server_error", code=code)
        await self.error(err)
        if not e.degraded and turn_id:
            resp = await self._response(turn_id)
            if resp is not None and not resp.done:
                await self._finish(resp, "failed", {"type": "server_error", "code": e.code, "message": e.message})


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
