"""The relay of Converse events to Realtime server events: speech activity, transcripts, and
each answer as a response (created, text or audio deltas, done, with its timings). Separate
from the handling of client events: this half only listens to the orchestrator and speaks to
the client.
"""

from __future__ import annotations

import base64
import time
from typing import Any

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.gateway.errors import ApiError
from services.gateway.metrics import REALTIME_RELAY_SECONDS
from services.gateway.realtime.audio import answer_pieces, duration_ms
from services.gateway.realtime.core import SessionCore
from services.gateway.realtime.protocol import RATE, _id, latency_object
from services.gateway.realtime.state import ResponseState
from services.runtime.logging import get_logger

# Named after the package, as when the session was one module: log lines keep their logger.
log = get_logger("services.gateway.realtime")


class ConverseRelay(SessionCore):
    """Converse → Realtime: the session's Converse events, translated in arrival order."""

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
            for i, piece in enumerate(answer_pieces(chunk)):
                resp.audio_ms += duration_ms(piece)
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
