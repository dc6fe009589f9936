"""The ``openai`` SDK's Realtime client holds a spoken conversation through the gateway: a
real recording in, its transcript, the answer's text and audio deltas out; then a typed turn
cancelled mid-answer."""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from openai import AsyncOpenAI

from services.runtime.audio import read_wav, resample_pcm16, silence
from tests.gateway.harness import API_KEY, VOICE, GatewayFleet

DEMO = Path(__file__).resolve().parents[2] / "client" / "demo"
RATE = 24000


async def collect(conn: Any, until: Callable[[Any], bool], within: float) -> list[Any]:
    """Server events up to and including the first that ``until`` accepts, or fail at the deadline."""
    events: list[Any] = []
    deadline = time.monotonic() + within
    while True:
        left = deadline - time.monotonic()
        assert left > 0, f"no matching event within {within} s; got {[e.type for e in events]}"
        event = await asyncio.wait_for(conn.recv(), left)
        events.append(event)
        if until(event):
            return events


def b64_chunks(pcm: bytes, ms: int = 100) -> list[str]:
    size = RATE * ms // 1000 * 2
    return [base64.b64encode(pcm[i : i + size]).decode() for i in range(0, len(pcm), size)]


async def test_spoken_conversation_then_cancel(gw: GatewayFleet) -> None:
    client = AsyncOpenAI(base_url=gw.base_url, api_key=API_KEY, max_retries=0)
    async with client.realtime.connect(model="parole") as conn:
        created = await collect(conn, lambda e: e.type == "session.created", 10)
        assert created[-1].session.audio.input.format.rate == RATE
        await conn.session.update(
            session={
                "type": "realtime",
                "instructions": "You are a helpful assistant. Answer in one short sentence.",
                "audio": {
                    "input": {"transcription": {"language": "en"}, "turn_detection": {"type": "server_vad"}},
                    "output": {"voice": VOICE},
                },
            }
        )
        await collect(conn, lambda e: e.type == "session.updated", 10)

        question = read_wav(DEMO / "en-capital-france.wav")
        pcm = resample_pcm16(question.data, question.sample_rate, RATE) + silence(1.5, RATE)
        for chunk in b64_chunks(pcm):
            await conn.input_audio_buffer.append(audio=chunk)
        events = await collect(conn, lambda e: e.type == "response.done", 120)
        types = [e.type for e in events]
        order = ["input_audio_buffer.speech_started", "input_audio_buffer.speech_stopped", "input_audio_buffer.committed",
                 "conversation.item.input_audio_transcription.completed", "response.created", "response.output_audio.delta",
                 "response.output_audio.done", "response.done"]  # fmt: skip
        assert all(t in types for t in order), types
        assert [types.index(t) for t in order] == sorted(types.index(t) for t in order), types
        heard = next(e for e in events if e.type == "conversation.item.input_audio_transcription.completed")
        assert "capital" in heard.transcript.lower() and "france" in heard.transcript.lower()
        partial = [e for e in events if e.type == "conversation.item.input_audio_transcription.delta"]
        assert partial and all(e.item_id == heard.item_id for e in partial)
        text = "".join(e.delta for e in events if e.type == "response.output_audio_transcript.delta")
        assert text.strip()
        done_text = next(e for e in events if e.type == "response.output_audio_transcript.done").transcript
        assert done_text == text
        audio = b"".join(base64.b64decode(e.delta) for e in events if e.type == "response.output_audio.delta")
        assert len(audio) / 2 / RATE > 0.3  # seconds of spoken answer at 24 kHz
        done = events[-1].response
        assert done.status == "completed" and done.output and done.output[0].content[0].transcript == text
        # Parole's extension: the turn's timings (the web client's latency chart reads them).
        latency = done.model_extra["parole"]["latency"]
        points = [m["point"] for m in latency["marks"]]
        assert {"final_transcript", "first_token", "first_audio"} <= set(points), points
        assert latency["first_audio_seconds"] >= latency["first_token_seconds"] > 0 and not latency["interrupted"]

        # A typed turn, cancelled once its audio has started: the response ends "cancelled". An
        # answer can be complete (all of it sent) before the cancel reaches the gateway; then
        # it ended "completed" and the late cancel is an error event. That race is the
        # protocol's, so a completed answer is checked as such and the turn asked again, then
        # cancelled as soon as it is created (the small model sometimes answers this in one
        # sentence, whose audio comes whole).
        completed: list[str] = []
        for attempt in range(3):
            await conn.conversation.item.create(
                item={
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "Count slowly from one to forty, one number per sentence."}
                    ],
                }
            )
            await conn.response.create()
            first = "response.output_audio.delta" if attempt == 0 else "response.created"

            def begun(event: Any, first: str = first) -> bool:
                return bool(event.type == first)

            started = await collect(conn, begun, 120)
            response_id = next(e for e in started if e.type == "response.created").response.id
            await conn.response.cancel()
            rest = await collect(conn, lambda e: e.type == "response.done", 60)
            done = rest[-1].response
            assert done.id == response_id
            if done.status == "cancelled":
                assert done.status_details.reason == "client_cancelled"
                break
            assert done.status == "completed", done
            late = await collect(conn, lambda e: e.type == "error", 10)
            assert late[-1].error.code == "response_cancel_not_active"
            completed.append(done.output[0].content[0].transcript if done.output else "")
        else:
            raise AssertionError(f"no answer was still in progress when cancelled: {completed}")

        # The session goes on: a cancel with nothing in progress is an error event, not a close.
        await conn.response.cancel()
        error = await collect(conn, lambda e: e.type == "error", 10)
        assert error[-1].error.code == "response_cancel_not_active"

        # New instructions reopen the Converse session under the same id (the LLM keeps the
        # history); its turns are numbered from 1 again and still get their own response.
        await conn.session.update(session={"type": "realtime", "instructions": "Answer with one word."})
        await collect(conn, lambda e: e.type == "session.updated", 10)
        await conn.conversation.item.create(
            item={"type": "message", "role": "user", "content": [{"type": "input_text", "text": "Say hello."}]}
        )
        await conn.response.create()
        last = await collect(conn, lambda e: e.type == "response.done", 120)
        created = [e.response.id for e in last if e.type == "response.created"]
        assert len(created) == 1 and created[0] not in (done.id, response_id)
        assert last[-1].response.status == "completed" and any(e.type == "response.output_audio.delta" for e in last)
