"""Drives one Converse stream the way a client would, with full control over timing."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable

import grpc

from parole.audio.v1 import audio_pb2
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from services.runtime.audio import chunks, silence

Predicate = Callable[[pb.ConverseResponse], bool]


class Session:
    """A conversation under test: send audio/text/events, wait for what comes back."""

    def __init__(self, stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub, config: pb.SessionConfig) -> None:
        self._out: asyncio.Queue[pb.ConverseRequest | None] = asyncio.Queue()
        self._out.put_nowait(pb.ConverseRequest(config=config))
        self.call = stub.Converse(self._requests())
        self.events: list[tuple[float, pb.ConverseResponse]] = []
        self._changed = asyncio.Event()
        self.error: grpc.aio.AioRpcError | None = None
        self.done = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _requests(self) -> AsyncIterator[pb.ConverseRequest]:
        while (req := await self._out.get()) is not None:
            yield req

    async def _read(self) -> None:
        try:
            async for msg in self.call:
                self.events.append((time.monotonic(), msg))
                self._changed.set()
        except grpc.aio.AioRpcError as err:
            self.error = err
        finally:
            self.done.set()
            self._changed.set()

    async def send_audio(self, pcm: bytes, rate: int = 16000, *, realtime: bool = True) -> float:
        """Streams PCM in 100 ms chunks (at real-time pace by default); returns when the last
        chunk left (monotonic time)."""
        for chunk in chunks(pcm, rate):
            self._out.put_nowait(pb.ConverseRequest(audio=chunk))
            if realtime:
                await asyncio.sleep(len(chunk) / 2 / rate)
        return time.monotonic()

    async def say(self, pcm: bytes, rate: int = 16000, trailing_silence: float = 2.5) -> float:
        """Speech followed by silence (so the end of speech is detected); returns the time the
        speech itself ended. The silence outlasts the longest pause the STT waits on a turn its
        end-of-turn model judges unfinished (2 s), as a live microphone's would."""
        end = await self.send_audio(pcm, rate)
        await self.send_audio(silence(trailing_silence, rate), rate)
        return end

    def send_text(self, text: str) -> None:
        self._out.put_nowait(pb.ConverseRequest(text=text))

    def playback(self, kind: int, turn_id: str) -> None:
        self._out.put_nowait(pb.ConverseRequest(playback=pb.PlaybackEvent(type=kind, turn_id=turn_id)))  # type: ignore[arg-type]

    def interrupt(self) -> None:
        self._out.put_nowait(pb.ConverseRequest(control=pb.Control(interrupt=True)))

    def end_of_turn(self) -> None:
        self._out.put_nowait(pb.ConverseRequest(control=pb.Control(end_of_turn=True)))

    async def wait_for(self, pred: Predicate, timeout: float = 60.0, start: int = 0) -> pb.ConverseResponse:
        """The first event (from index ``start``) matching ``pred``."""
        deadline = time.monotonic() + timeout
        while True:
            for _, msg in self.events[start:]:
                if pred(msg):
                    return msg
            if self.done.is_set():
                raise AssertionError(f"stream ended ({self.error}) without the awaited event; got {self.kinds()}")
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting; events so far: {self.kinds()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def of(self, kind: str) -> list[pb.ConverseResponse]:
        return [m for _, m in self.events if m.WhichOneof("event") == kind]

    def kinds(self) -> list[str]:
        return [str(m.WhichOneof("event")) for _, m in self.events]

    async def close(self, timeout: float = 120.0) -> None:
        """Half-close and wait for the server to end the stream."""
        self._out.put_nowait(None)
        await asyncio.wait_for(self.done.wait(), timeout)

    def cancel(self) -> None:
        self.call.cancel()
        self._reader.cancel()


def config(**kw: object) -> pb.SessionConfig:
    base: dict[str, object] = {
        "language": "en",
        "input_format": audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE),
    }
    base.update(kw)
    return pb.SessionConfig(**base)  # type: ignore[arg-type]


def is_kind(kind: str) -> Predicate:
    return lambda m: m.WhichOneof("event") == kind


def final_transcript(m: pb.ConverseResponse) -> bool:
    return m.WhichOneof("event") == "transcript" and m.transcript.is_final


def last_audio(m: pb.ConverseResponse) -> bool:
    return m.WhichOneof("event") == "reply_audio" and m.reply_audio.is_last
