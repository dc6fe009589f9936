"""One Converse session: the streaming logic of the client, with no audio device in it.

A ``Conversation`` sends the session config, then microphone audio (or typed turns), and
plays the answer through an ``AudioSink`` as it streams in, telling the server when playback
started and finished so it can gate the microphone. The audio devices (PyAudio), WAV files
and the terminal are plugged in from outside, so the whole client is testable against a fake
server without a sound card. The stream itself (requests, events, the session's end) is
``client.converse.ConverseStream``, the one Converse client; the options, turns and audio
ports are ``client.session``'s.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import time
from collections.abc import Callable
from datetime import UTC, datetime

import grpc

from client.converse import ConverseStream, Response
from client.session import CHUNK_MS, AudioSink, AudioSource, ConversationError, SessionOptions, Turn
from parole.orchestrator.v1 import orchestrator_pb2, orchestrator_pb2_grpc
from services.runtime.audio import SPEECH_RATE, Pcm, chunks, resample_pcm16, silence
from services.runtime.streams import Channel

__all__ = ["CHUNK_MS", "AudioSink", "AudioSource", "Conversation", "ConversationError", "SessionOptions", "Turn"]
"""The session's parts are defined in ``client.session``; importable from here too."""


def _now() -> datetime:
    return datetime.now(UTC)


class _Player:
    """Plays one turn's answer audio in order, reporting playback start and end."""

    def __init__(self, conversation: Conversation, turn: Turn) -> None:
        self.conversation = conversation
        self.turn = turn
        self.chunks: Channel[orchestrator_pb2.ReplyAudio] = Channel()
        self.started = False
        self.done = asyncio.Event()
        self.task = asyncio.create_task(self._run(), name=f"play-{turn.turn_id}")

    async def _run(self) -> None:
        conv, turn = self.conversation, self.turn
        stopped = True
        try:
            async for chunk in self.chunks:
                if not self.started:
                    # STARTED goes out as the first chunk begins to sound: the server gates the
                    # microphone from then on.
                    self.started = True
                    turn.playback_started = time.monotonic()
                    conv.playback(orchestrator_pb2.PLAYBACK_EVENT_TYPE_STARTED, turn.turn_id)
                if chunk.audio:
                    await conv.sink.play(turn.turn_id, chunk.audio, chunk.format.sample_rate_hz or turn.reply_rate)
                if chunk.is_last:
                    stopped = False
                    return
        finally:
            # Runs on normal end and on cancellation (stop_playback, session end) alike: the
            # server must hear FINISHED either way, or it keeps the microphone gated.
            turn.playback_finished = time.monotonic()
            if self.started:
                conv.playback(orchestrator_pb2.PLAYBACK_EVENT_TYPE_FINISHED, turn.turn_id)
            with contextlib.suppress(Exception):
                turn.reply_wav = await asyncio.shield(conv.sink.finish(turn.turn_id, stopped))
            self.done.set()

    async def stop(self) -> None:
        self.task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self.task


class Conversation(ConverseStream):
    """A Converse session against the orchestrator, as turns played through an audio sink.

    ``async with Conversation(channel, options, sink) as conv:`` opens the stream and waits for
    SESSION_STARTED; then ``speak``/``ask`` run one turn each, or ``live`` streams a microphone.
    Sending (audio chunks, typed turns, controls) and the session's end come from
    ``ConverseStream``.
    """

    def __init__(
        self,
        channel: grpc.aio.Channel,
        options: SessionOptions,
        sink: AudioSink,
        *,
        input_rate: int = SPEECH_RATE,
        on_event: Callable[[Response], None] | None = None,
        on_turn: Callable[[Turn], None] | None = None,
        start_timeout: float = 30.0,
    ) -> None:
        stub = orchestrator_pb2_grpc.OrchestratorServiceStub(channel)
        super().__init__(stub, options.config(input_rate), on_event=self._handle, record=False)
        self.options = options
        self.sink = sink
        self.input_rate = input_rate
        self.listener = on_event
        self.on_turn = on_turn
        self.start_timeout = start_timeout
        self.turns: list[Turn] = []
        self.microphone_gated = False
        self.mic_open = asyncio.Event()
        self.mic_open.set()
        self._by_id: dict[str, Turn] = {}
        self._players: dict[str, _Player] = {}
        self._completed: Channel[Turn] = Channel()
        self._pending_input_sent: float | None = None
        self._pending_input: str = ""
        self._speech: collections.deque[bytes] = collections.deque()
        self._speech_sent = asyncio.Event()
        self._pump: asyncio.Task[None] | None = None

    # -- session ------------------------------------------------------------------------------

    async def __aenter__(self) -> Conversation:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def start(self) -> orchestrator_pb2.SessionStarted:
        """Opens the stream (config first) and waits for the server's SESSION_STARTED."""
        self.open()
        session = await self.started(self.start_timeout)
        if session is None:
            await self.close()
            raise ConversationError(self.failure_text() or f"no session started within {self.start_timeout:.0f} s")
        return session

    async def close(self, grace: float = 10.0) -> bool:
        """Ends the request stream, lets the server finish, and stops playback."""
        ended = await super().close(grace)
        for task in [self._pump, *(p.task for p in self._players.values())]:
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        return ended

    # -- responses ----------------------------------------------------------------------------

    def _turn(self, turn_id: str) -> Turn:
        turn = self._by_id.get(turn_id)
        if turn is None:
            turn = Turn(turn_id=turn_id, index=len(self.turns) + 1, started_at=_now())
            self._by_id[turn_id] = turn
            self.turns.append(turn)
        return turn

    async def _handle(self, r: Response, at: float) -> None:
        kind = r.WhichOneof("event")
        if self.listener is not None:
            self.listener(r)
        if kind == "session_started":
            return  # ConverseStream keeps it (self.session)
        if kind == "microphone":
            self.microphone_gated = r.microphone.gated
            if r.microphone.gated:
                self.mic_open.clear()
            else:
                self.mic_open.set()
            return
        if kind == "stop_playback":
            await self._stop_playback(r.stop_playback.turn_id or r.turn_id, r.stop_playback.reason or "stopped")
            return
        if not r.turn_id:
            if kind == "error":
                # A session-level error (e.g. STT down): no turn will complete; let a waiting
                # speak()/ask() return instead of waiting for its timeout.
                orphan = Turn(turn_id="", index=len(self.turns) + 1, started_at=_now(), errors=[r.error])
                orphan.input, orphan.finished_at = self._pending_input, _now()
                self.turns.append(orphan)
                if self.on_turn is not None:
                    self.on_turn(orphan)
                self._completed.send_nowait(orphan)
            return
        turn = self._turn(r.turn_id)
        if kind == "transcript":
            if r.transcript.is_final:
                turn.heard = r.transcript.text
                turn.heard_language = r.transcript.language
                turn.heard_confidence = r.transcript.confidence
        elif kind == "reply_text":
            turn.reply += r.reply_text.delta
        elif kind == "reply_audio":
            self._on_audio(turn, r.reply_audio)
        elif kind == "latency":
            turn.latency = r.latency
            if r.latency.reply_text:
                turn.reply = r.latency.reply_text
            asyncio.create_task(self._complete(turn))  # noqa: RUF006 - held by the player/queue
        elif kind == "error":
            turn.errors.append(r.error)
            if not r.error.degraded and turn.latency is None:
                # A lost turn may never get its latency message; do not let the caller hang.
                asyncio.create_task(self._complete(turn, grace=2.0))  # noqa: RUF006

    async def _stop_playback(self, turn_id: str, reason: str) -> None:
        """Silences the named turn's answer, or every answer playing when no turn is named."""
        if turn_id:
            self._turn(turn_id).stopped = reason
        for player in list(self._players.values()):
            if (not turn_id or player.turn.turn_id == turn_id) and not player.done.is_set():
                player.turn.stopped = reason
                await player.stop()

    def _on_audio(self, turn: Turn, chunk: orchestrator_pb2.ReplyAudio) -> None:
        if turn.stopped:
            return  # chunks already in flight when the server said stop
        if turn.first_audio_received is None:
            turn.first_audio_received = time.monotonic()
        turn.audio_chunks += 1
        turn.reply_rate = chunk.format.sample_rate_hz or turn.reply_rate
        if turn.reply_rate:
            turn.audio_seconds += len(chunk.audio) / 2 / turn.reply_rate
        player = self._players.get(turn.turn_id)
        if player is None:
            player = self._players[turn.turn_id] = _Player(self, turn)
        player.chunks.send_nowait(chunk)

    async def _complete(self, turn: Turn, grace: float = 0.0) -> None:
        """Hands a turn to the caller once its latency arrived and its audio finished playing."""
        if grace:
            await asyncio.sleep(grace)
            if turn.latency is not None:
                return  # the latency message came after all and completes it
        if turn.finished_at is not None:
            return
        if not turn.input:
            # What the client had sent when the turn ended: the question this turn answered.
            turn.input, turn.input_sent = self._pending_input, self._pending_input_sent
        player = self._players.get(turn.turn_id)
        if player is not None:
            await player.done.wait()
        turn.finished_at = _now()
        if self.on_turn is not None:
            self.on_turn(turn)
        self._completed.send_nowait(turn)

    # -- turns --------------------------------------------------------------------------------

    def _raise_if_ended(self) -> None:
        if self.done.is_set():
            raise ConversationError(f"the session ended: {self.failure_text() or 'server closed the stream'}")

    async def next_turn(self, within: float) -> Turn | None:
        """The next completed turn (audio played out), or None after ``within`` seconds."""
        getter = asyncio.create_task(self._completed.receive())
        ended = asyncio.create_task(self.done.wait())
        done, _ = await asyncio.wait({getter, ended}, timeout=within, return_when=asyncio.FIRST_COMPLETED)
        ended.cancel()
        if getter in done:
            return getter.result()
        getter.cancel()
        self._raise_if_ended()
        return None

    async def _wait_mic_open(self, within: float) -> None:
        # The server ignores audio while the microphone is gated (playback + echo tail), so a
        # question sent then would be lost. Waiting is bounded in case the gate never reopens.
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.mic_open.wait(), within)

    def _drain_completed(self) -> None:
        # Turns nobody waited for (a stray noise, a late error) must not answer the next question.
        self._completed.clear()

    async def _until(self, event: asyncio.Event) -> None:
        """Waits for ``event``, or raises if the session ends first."""
        if not await self.until(event):
            self._raise_if_ended()

    def _ensure_pump(self) -> None:
        if self._pump is None:
            self._pump = asyncio.create_task(self._pump_audio(), name="converse-audio")

    async def _pump_audio(self) -> None:
        """The virtual microphone: queued speech, else silence, one chunk per 100 ms.

        Silence keeps flowing between questions as it would from a microphone in a quiet
        room, so the server's endpointing and stream clock behave as they do live.
        """
        quiet = silence(CHUNK_MS / 1000, self.input_rate)
        pacer = _Pacer(CHUNK_MS / 1000)
        while not self.done.is_set():
            await pacer.tick()
            if self._speech:
                self.send_audio(self._speech.popleft())
                if not self._speech:
                    self._speech_sent.set()
            else:
                self.send_audio(quiet)

    async def speak(
        self,
        pcm: Pcm,
        *,
        label: str = "",
        turn_timeout: float = 120.0,
        gate_timeout: float = 15.0,
    ) -> Turn | None:
        """Says ``pcm`` as a microphone would, in real time, and returns the turn it caused.

        Audio is resampled to the session's input rate and sent in 100 ms chunks at real-time
        pace, followed by silence (so the server's endpointing sees the speech end). Returns
        once the answer has been played and the microphone reopened; None if no turn came.
        """
        self._raise_if_ended()
        self._drain_completed()
        await self._wait_mic_open(gate_timeout)
        self._ensure_pump()
        data = resample_pcm16(pcm.data, pcm.sample_rate, self.input_rate)
        self._pending_input, self._pending_input_sent = label, None
        self._speech_sent.clear()
        self._speech.extend(chunks(data, self.input_rate, CHUNK_MS))
        await self._until(self._speech_sent)
        self._pending_input_sent = time.monotonic()
        turn = await self.next_turn(turn_timeout)
        if turn is not None:
            await self._wait_mic_open(gate_timeout)
        return turn

    async def ask(self, text: str, *, turn_timeout: float = 120.0) -> Turn | None:
        """A typed turn: sends ``text`` and returns the turn once its answer has been played."""
        self._raise_if_ended()
        self._drain_completed()
        self._pending_input, self._pending_input_sent = text, time.monotonic()
        self.send_text(text)
        return await self.next_turn(turn_timeout)

    async def live(self, source: AudioSource, muted: asyncio.Event | None = None) -> None:
        """Streams a live microphone until the source ends or the session does.

        While ``muted`` is set, silence is sent instead of the microphone (e.g. while the user
        types a rating), so the server's stream keeps its real-time clock.
        """
        self._pending_input, self._pending_input_sent = "microphone", None
        async for frame in source.frames():
            if self.done.is_set():
                break
            self.send_audio(bytes(len(frame)) if muted is not None and muted.is_set() else frame)
        self._raise_if_ended()


class _Pacer:
    """Ticks every ``period`` seconds against a fixed schedule, so pacing errors do not add up."""

    def __init__(self, period: float) -> None:
        self.period = period
        self.next: float | None = None

    async def tick(self) -> None:
        now = time.monotonic()
        if self.next is None:
            self.next = now
        else:
            self.next = max(self.next + self.period, now - self.period)
        await asyncio.sleep(max(0.0, self.next - now))
