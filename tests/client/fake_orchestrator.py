"""A scripted OrchestratorService for client tests: it tests the client, not the pipeline.

It detects speech by energy, answers every turn with a few chunks of tone, gates the
microphone from the first answer chunk until the client reports FINISHED (plus a tail), and
records every request with its arrival time so tests can check what the client sent.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc
import numpy as np

from parole.audio.v1 import audio_pb2
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.orchestrator.v1 import orchestrator_pb2_grpc

SERVICE = pb.DESCRIPTOR.services_by_name["OrchestratorService"].full_name


def tone(seconds: float, rate: int, freq: float = 440.0, amplitude: float = 0.3) -> bytes:
    """A sine tone as PCM16: loud enough for the fake's energy detector."""
    t = np.arange(int(seconds * rate)) / rate
    return (np.sin(2 * math.pi * freq * t) * amplitude * 32767).astype("<i2").tobytes()


@dataclass
class Script:
    """How the fake answers."""

    reply: Sequence[str] = ("Paris is", " the capital.")
    chunks: int = 3
    chunk_seconds: float = 0.2
    native_rate: int = 22050
    tail_seconds: float = 0.1
    end_silence_chunks: int = 4
    """Silent 100 ms chunks after speech that end a spoken turn."""
    stop_after_first_chunk: bool = False
    """Send stop_playback (barge_in) after the first chunk, then one more (late) chunk."""
    stop_names_turn: bool = True
    """False: the stop_playback names no turn (the client must stop whatever plays)."""
    abort: grpc.StatusCode | None = None


@dataclass
class Recorded:
    """What the client sent, with monotonic arrival times."""

    requests: list[tuple[float, pb.ConverseRequest]] = field(default_factory=list)
    responses: list[tuple[float, pb.ConverseResponse]] = field(default_factory=list)
    ignored_audio: int = 0

    def of(self, kind: str) -> list[tuple[float, pb.ConverseRequest]]:
        return [(t, r) for t, r in self.requests if r.WhichOneof("request") == kind]

    def sent(self, kind: str) -> list[tuple[float, pb.ConverseResponse]]:
        return [(t, r) for t, r in self.responses if r.WhichOneof("event") == kind]


class FakeOrchestrator(orchestrator_pb2_grpc.OrchestratorServiceServicer):
    def __init__(self, script: Script | None = None) -> None:
        self.script = script or Script()
        self.sessions: list[Recorded] = []

    async def Converse(
        self, request_iterator: AsyncIterator[pb.ConverseRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[pb.ConverseResponse]:
        script = self.script
        rec = Recorded()
        self.sessions.append(rec)
        if script.abort is not None:
            await context.abort(script.abort, "fake: stage down")
        start = time.monotonic()
        out: asyncio.Queue[pb.ConverseResponse | None] = asyncio.Queue()
        finished: dict[str, asyncio.Event] = {}
        gated = False
        turns: list[asyncio.Task[None]] = []
        counter = 0

        def send(turn_id: str = "", **event: object) -> None:
            r = pb.ConverseResponse(turn_id=turn_id, session_seconds=time.monotonic() - start, **event)  # type: ignore[arg-type]
            rec.responses.append((time.monotonic(), r))
            out.put_nowait(r)

        first = await anext(aiter(request_iterator))
        rec.requests.append((time.monotonic(), first))
        if first.WhichOneof("request") != "config":
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, "config must come first")
        cfg = first.config
        rate = cfg.output_sample_rate_hz or script.native_rate
        send(
            session_started=pb.SessionStarted(
                session_id=cfg.session_id or "fake-session", language=cfg.language or "fr", voice=cfg.voice or "fake"
            )
        )

        async def answer(heard: str) -> None:
            nonlocal counter, gated
            counter += 1
            turn_id = f"turn-{counter}"
            finished[turn_id] = asyncio.Event()
            send(
                turn_id,
                transcript=pb.Transcript(text=heard, is_final=True, language=cfg.language or "fr", confidence=0.9),
            )
            for delta in script.reply:
                send(turn_id, reply_text=pb.ReplyText(delta=delta))
            fmt = audio_pb2.AudioFormat(sample_rate_hz=rate, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, channels=1)
            gated = True
            send(microphone=pb.MicrophoneState(gated=True, reason="playback"))
            interrupted = False
            for i in range(script.chunks):
                send(
                    turn_id,
                    reply_audio=pb.ReplyAudio(audio=tone(script.chunk_seconds, rate, 300), format=fmt, sequence=i),
                )
                if script.stop_after_first_chunk:
                    await asyncio.sleep(0.15)
                    named = turn_id if script.stop_names_turn else ""
                    send(named, stop_playback=pb.StopPlayback(turn_id=named, reason="barge_in"))
                    send(turn_id, reply_audio=pb.ReplyAudio(audio=tone(0.5, rate), format=fmt, sequence=i + 1))
                    interrupted = True
                    break
            if not interrupted:
                send(turn_id, reply_audio=pb.ReplyAudio(format=fmt, sequence=script.chunks, is_last=True))
            text = "".join(script.reply)
            send(
                turn_id,
                latency=pb.TurnLatency(
                    final_transcript_seconds=0.1,
                    first_token_seconds=0.2,
                    first_audio_seconds=0.3,
                    last_audio_seconds=0.4,
                    audio_seconds=script.chunks * script.chunk_seconds,
                    reply_text=text,
                    interrupted=interrupted,
                ),
            )
            # The gate stays shut until the client says the answer finished playing.
            await asyncio.wait_for(finished[turn_id].wait(), 10)
            await asyncio.sleep(script.tail_seconds)
            gated = False
            send(microphone=pb.MicrophoneState(gated=False, reason="open"))

        async def read() -> None:
            nonlocal gated
            speech = quiet = 0
            async for r in request_iterator:
                rec.requests.append((time.monotonic(), r))
                kind = r.WhichOneof("request")
                if kind == "audio":
                    if gated:
                        rec.ignored_audio += 1
                        continue
                    loud = np.abs(np.frombuffer(r.audio, dtype="<i2")).mean() > 500
                    if loud:
                        speech, quiet = speech + 1, 0
                    elif speech:
                        quiet += 1
                        if quiet >= script.end_silence_chunks:
                            turns.append(asyncio.create_task(answer(f"{speech} chunks of speech")))
                            speech = quiet = 0
                elif kind == "text":
                    turns.append(asyncio.create_task(answer(r.text)))
                elif kind == "playback" and r.playback.type == pb.PLAYBACK_EVENT_TYPE_FINISHED:
                    finished.setdefault(r.playback.turn_id, asyncio.Event()).set()
            if turns:
                await asyncio.gather(*turns, return_exceptions=True)

        reader = asyncio.create_task(read())
        reader.add_done_callback(lambda _: out.put_nowait(None))
        try:
            while (item := await out.get()) is not None:
                yield item
        finally:
            reader.cancel()


class FakeApp:
    """Wraps the fake for ``services.runtime.server.start_app``."""

    name = "fake-orchestrator"

    def __init__(self, servicer: FakeOrchestrator) -> None:
        self.servicer = servicer

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        orchestrator_pb2_grpc.add_OrchestratorServiceServicer_to_server(self.servicer, server)
        return [SERVICE]

    async def warm_up(self) -> None:
        return None

    async def close(self) -> None:
        return None
