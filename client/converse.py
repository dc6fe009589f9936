"""The one client of the orchestrator's ``Converse`` stream.

``ConverseStream`` opens the bidirectional stream (the session config first) and sends what a
client sends: microphone audio (one chunk, or a whole recording in 100 ms chunks at real-time
pace or all at once), typed turns, playback reports and controls (interrupt, end of turn). A task
reads the server's events, keeps each with the monotonic time it arrived (``record``) and hands
it to ``on_event``; callers wait for an event matching a predicate within a deadline. Requests
flow through a ``services.runtime.streams.Channel``, handed to the stub as its request stream.

Built on it: ``client.conversation.Conversation`` (turns played through an audio sink: the
desktop client and the gateway's Realtime API), ``bench.talker.Talker`` (hands-free turns and
their outcomes), ``bench.e2e`` and ``bench.gateway`` (time to first audio) and the tests'
``tests.e2e.driver.Session``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from services.runtime.audio import SPEECH_RATE, chunks, silence
from services.runtime.streams import Channel

Response = pb.ConverseResponse
Request = pb.ConverseRequest
Predicate = Callable[[Response], bool]
Handler = Callable[[Response, float], Awaitable[None]]
"""Called with each event and the monotonic time it arrived, in order, before the next is read."""


class EventNotSeen(AssertionError):
    """The awaited event did not come: the stream ended first, or the deadline passed. An
    ``AssertionError``: to a test, an event that never came is a failed expectation."""


class ConverseStream:
    """One ``Converse`` stream: ``open()`` it, send requests, read or wait for its events.

    ``error`` is the RPC's failure status (CANCELLED included), ``failure`` anything else that
    broke the stream (an ``on_event`` handler raising); ``done`` is set once the stream is over.
    ``record=False`` keeps no event list (a long session: the desktop client, the gateway).
    """

    def __init__(
        self,
        stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub,
        config: pb.SessionConfig,
        *,
        on_event: Handler | None = None,
        record: bool = True,
    ) -> None:
        self.stub = stub
        self.config = config
        self.on_event = on_event
        self.record = record
        self.events: list[tuple[float, Response]] = []
        self.session: pb.SessionStarted | None = None
        self.error: grpc.aio.AioRpcError | None = None
        self.failure: BaseException | None = None
        self.cancelled = False
        """The call was cancelled under the reader (``cancel()``, or a close past its grace)."""
        self.done = asyncio.Event()
        self.call: Any = None
        self._requests: Channel[Request] = Channel()
        self._requests.send_nowait(Request(config=config))
        self._changed = asyncio.Event()
        self._started = asyncio.Event()
        self._reader: asyncio.Task[None] | None = None

    # -- the stream ---------------------------------------------------------------------------

    def open(self, timeout: float | None = None) -> None:
        """Starts the call (``timeout``: its deadline) and the task that reads its events."""
        if self.call is None:
            self.call = self.stub.Converse(self._requests, timeout=timeout)
            self._reader = asyncio.create_task(self._read(), name=f"converse-{self.config.session_id or 'read'}")

    async def started(self, timeout: float) -> pb.SessionStarted | None:
        """Waits for SESSION_STARTED; None if the stream ended, or ``timeout`` passed, first."""
        await self._first(self._started, timeout)
        return self.session

    async def close(self, grace: float = 10.0) -> bool:
        """Ends the request stream and waits up to ``grace`` for the server to end the session;
        past it the call is cancelled. Returns whether the server ended it in time."""
        self._requests.close()
        if self._reader is None:
            return True
        try:
            await asyncio.wait_for(asyncio.shield(self._reader), grace)
            return True
        except TimeoutError:
            self.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
            return False

    def cancel(self) -> None:
        """Drops the session at once (the server sees the call cancelled)."""
        self._requests.close()
        if self.call is not None:
            self.call.cancel()
        if self._reader is not None:
            self._reader.cancel()

    @property
    def ended(self) -> bool:
        """True once the session is over: the server closed the stream, or it broke."""
        return self.done.is_set()

    async def wait_ended(self) -> str:
        """Waits until the session is over; returns why it failed ("" when it ended cleanly)."""
        await self.done.wait()
        return self.failure_text()

    def failure_text(self) -> str:
        """Why the stream failed ("CODE: details"), or "" (a cancelled call is no failure)."""
        if self.error is not None and self.error.code() != grpc.StatusCode.CANCELLED:
            return f"{self.error.code().name}: {self.error.details()}"
        return repr(self.failure) if self.failure is not None else ""

    async def _read(self) -> None:
        try:
            async for response in self.call:
                at = time.monotonic()
                if self.record:
                    self.events.append((at, response))
                if response.WhichOneof("event") == "session_started":
                    self.session = response.session_started
                    self._started.set()
                if self.on_event is not None:
                    await self.on_event(response, at)
                self._changed.set()
        except grpc.aio.AioRpcError as err:
            self.error = err
        except asyncio.CancelledError:
            self.cancelled = True
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise  # this task was cancelled, not only the call under it
        except Exception as exc:  # noqa: BLE001 - any failure ends the session; callers see it
            self.failure = exc
        finally:
            self.done.set()
            self._changed.set()

    # -- sending ------------------------------------------------------------------------------

    def send(self, request: Request) -> None:
        """Queues one request; dropped once the session is over or the request side closed."""
        if not self.done.is_set() and not self._requests.closed:
            self._requests.send_nowait(request)

    def send_audio(self, pcm: bytes) -> None:
        """Queues one chunk of microphone audio (the caller paces it)."""
        self.send(Request(audio=pcm))

    async def stream_audio(
        self,
        pcm: bytes,
        rate: int = SPEECH_RATE,
        *,
        realtime: bool = True,
        until: Callable[[], bool] | None = None,
        mark: tuple[float, Callable[[float], None]] | None = None,
    ) -> float:
        """Sends ``pcm`` in 100 ms chunks, each followed by its own duration when ``realtime``
        (a microphone's pace), stopping early once ``until()`` holds; returns the monotonic time
        the last chunk was done. ``mark=(second, call)``: ``call`` gets the moment that second
        of the audio was spoken, as soon as the chunk holding it left: its send time less the
        part of the chunk after that second (a microphone delivers a chunk once it is recorded;
        the real send time keeps timer drift out of a measurement)."""
        position = 0.0
        for chunk in chunks(pcm, rate):
            if until is not None and until():
                break
            self.send_audio(chunk)
            position += len(chunk) / 2 / rate
            if mark is not None and position >= mark[0]:
                mark[1](time.monotonic() - (position - mark[0]))
                mark = None
            if realtime:
                await asyncio.sleep(len(chunk) / 2 / rate)
        return time.monotonic()

    async def say(self, pcm: bytes, rate: int = SPEECH_RATE, trailing_silence: float = 2.5) -> float:
        """Speech followed by silence (so the end of speech is detected), at real-time pace;
        returns the time the speech itself ended. The default silence outlasts the longest pause
        the STT waits on a turn its end-of-turn model judges unfinished (2 s), as a live
        microphone's would."""
        end = await self.stream_audio(pcm, rate)
        await self.stream_audio(silence(trailing_silence, rate), rate)
        return end

    def send_text(self, text: str) -> None:
        """A typed turn."""
        self.send(Request(text=text))

    def playback(self, kind: pb.PlaybackEventType.ValueType, turn_id: str) -> None:
        """Reports the answer's playback (STARTED, FINISHED) so the server can gate the microphone."""
        self.send(Request(playback=pb.PlaybackEvent(type=kind, turn_id=turn_id)))

    def interrupt(self) -> None:
        """Asks the server to stop the current answer (push-to-talk, barge-in by hand)."""
        self.send(Request(control=pb.Control(interrupt=True)))

    def end_of_turn(self) -> None:
        """Tells the server the user has finished speaking (push-to-talk released): the
        utterance in progress ends now instead of after the server's silence."""
        self.send(Request(control=pb.Control(end_of_turn=True)))

    # -- events -------------------------------------------------------------------------------

    async def wait_for(self, pred: Predicate, timeout: float | None = 60.0, start: int = 0) -> Response:
        """The first recorded event (from index ``start``) matching ``pred``, waiting up to
        ``timeout`` seconds (None: no deadline) for it; raises ``EventNotSeen``."""
        if not self.record:
            raise RuntimeError("wait_for needs the events recorded (record=True)")
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            for _, msg in self.events[start:]:
                if pred(msg):
                    return msg
            if self.done.is_set():
                raise EventNotSeen(f"stream ended ({self.error}) without the awaited event; got {self.kinds()}")
            left = None if deadline is None else deadline - time.monotonic()
            if left is not None and left <= 0:
                raise EventNotSeen(f"timed out waiting; events so far: {self.kinds()}")
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), left)

    def of(self, kind: str) -> list[Response]:
        """The recorded events of one kind (``"reply_audio"``...), in order."""
        return [m for _, m in self.events if m.WhichOneof("event") == kind]

    def kinds(self) -> list[str]:
        """The kinds of the recorded events, in order."""
        return [str(m.WhichOneof("event")) for _, m in self.events]

    async def until(self, event: asyncio.Event, timeout: float | None = None) -> bool:
        """Waits for ``event``, the end of the session or ``timeout``; returns whether ``event``
        is set."""
        await self._first(event, timeout)
        return event.is_set()

    async def _first(self, event: asyncio.Event, timeout: float | None) -> None:
        if event.is_set() or self.done.is_set():
            return
        waiters = {asyncio.create_task(event.wait()), asyncio.create_task(self.done.wait())}
        try:
            await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()


def is_kind(kind: str) -> Predicate:
    """Matches events of one kind (``"latency"``, ``"session_started"``...)."""
    return lambda m: m.WhichOneof("event") == kind


def final_transcript(m: Response) -> bool:
    return m.WhichOneof("event") == "transcript" and m.transcript.is_final


def last_audio(m: Response) -> bool:
    return m.WhichOneof("event") == "reply_audio" and m.reply_audio.is_last


def answer_audio(m: Response) -> bool:
    """An answer audio message that carries audio (not the spoken wait notice before it)."""
    return m.WhichOneof("event") == "reply_audio" and bool(m.reply_audio.audio) and not m.reply_audio.notice


def heard_audio(m: Response) -> bool:
    """Audio the user hears for the turn, the wait notice or the answer: the turn's
    acknowledgement."""
    return m.WhichOneof("event") == "reply_audio" and bool(m.reply_audio.audio)
