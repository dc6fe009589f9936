"""One conversation held the way a hands-free client holds it, for the load and soak benches.

A ``Talker`` speaks a question (a recording at real-time pace, then silence so the server hears
the end of speech) or types one, reports playback STARTED on the first answer audio and
FINISHED once the answer has played, waits for the microphone gate to reopen, and accounts for
each turn in exactly one way (``TurnResult.outcome``: ok, degraded, error or lost). The stream
is the client's ``ConverseStream``.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Literal

from bench.common import speech_end
from client.converse import ConverseStream
from parole.audio.v1 import audio_pb2
from parole.orchestrator.v1 import orchestrator_pb2 as opb
from parole.orchestrator.v1 import orchestrator_pb2_grpc
from services.runtime.audio import Pcm, silence

PCM = audio_pb2.AUDIO_ENCODING_PCM_S16LE
TRAILING_SILENCE_S = 4.0
"""Silence streamed after each question, until the answer starts (a live microphone goes on):
the STT waits 2 s of silence after words its end-of-turn model judges unfinished."""

Outcome = Literal["ok", "degraded", "error", "lost"]


@dataclass
class TurnResult:
    kind: Literal["spoken", "typed"]
    question: str
    outcome: Outcome
    error: str = ""
    """Kind of error for error/lost/degraded turns ("stage:STT:UNAVAILABLE", "rpc:...", "timeout")."""
    time_to_first_audio_s: float | None = None
    """Client-side: end of speech (or text sent) to first answer audio received."""
    acknowledged_s: float | None = None
    """Client-side: end of speech to the first audio heard for the turn, the spoken wait notice
    ("one moment") on a full machine, else the answer."""
    wait_notice: bool = False
    """The machine was full: the turn heard the wait notice before its answer."""
    server_first_audio_s: float | None = None
    audio_s: float = 0.0
    reply: str = ""
    detail: str = ""
    """For a lost turn: the last events the client saw (and the microphone's state), to say
    where it stopped."""
    server_marks: dict[str, float] = field(default_factory=dict)
    """The server's latency marks for the turn (``TurnLatency.marks``): where the time went."""
    language: str = ""
    """The conversation's language ("" for a session-level record)."""


class SessionEnded(Exception):
    """The Converse stream ended; ``error`` says how ("rpc:CODE" or "closed")."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


@dataclass
class _TurnState:
    done: asyncio.Event = field(default_factory=asyncio.Event)
    turn_id: str = ""
    first_audio: float | None = None
    """First answer audio (not the wait notice)."""
    heard: float | None = None
    """First audio of any kind: the turn's acknowledgement."""
    notice_s: float = 0.0
    """Seconds of wait-notice audio."""
    latency: opb.TurnLatency | None = None
    degraded: str = ""
    error: str = ""


def _brief(msg: opb.ConverseResponse, kind: str | None, now: float) -> str:
    """One event in a few words, with the monotonic second it arrived."""
    what = str(kind)
    if kind == "microphone":
        what += f"({'gated' if msg.microphone.gated else 'open'}:{msg.microphone.reason})"
    elif kind == "transcript":
        what += f"({'final' if msg.transcript.is_final else 'partial'}:{msg.transcript.text[:30]!r})"
    elif kind == "speech":
        what += f"({'started' if msg.speech.started else 'stopped'})"
    return f"{now:.2f} {msg.turn_id[-3:]} {what}"


class Talker:
    """One conversation held like a client: speaks or types turns one at a time, reports
    playback, honours the microphone gate. ``playback``: "realtime" reports FINISHED once the
    answer's audio would have played; "instant" as soon as the turn's audio has all arrived
    (a headless client; soak uses it to fit hundreds of turns). The stream is the client's
    ``ConverseStream``."""

    def __init__(
        self,
        stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub,
        language: str,
        *,
        playback: Literal["realtime", "instant"] = "realtime",
        turn_timeout: float = 90.0,
        gate_timeout: float = 15.0,
    ) -> None:
        self.language = language
        self.playback = playback
        self.turn_timeout = turn_timeout
        self.gate_timeout = gate_timeout
        self.session_id = f"load-{uuid.uuid4().hex[:12]}"
        fmt = audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=PCM)
        config = opb.SessionConfig(language=language, input_format=fmt, session_id=self.session_id)
        self.stream = ConverseStream(stub, config, on_event=self._on, record=False)
        self._turn: _TurnState | None = None
        self._finished: set[str] = set()
        self._mic_open = asyncio.Event()
        self._mic_open.set()
        self._recent: deque[str] = deque(maxlen=12)

    @property
    def ended(self) -> str | None:
        """How the stream ended ("closed", "rpc:CODE", "cancelled"); None while it is open."""
        stream = self.stream
        if not stream.done.is_set():
            return None
        if stream.error is not None:
            return f"rpc:{stream.error.code().name}"
        if stream.failure is not None:
            return f"failure:{type(stream.failure).__name__}"
        return "cancelled" if stream.cancelled else "closed"

    async def open(self, timeout: float = 30.0) -> None:
        self.stream.open()
        if await self.stream.started(timeout) is None:
            raise SessionEnded(self.ended or "timeout:session_start")

    async def close(self, grace: float = 10.0) -> None:
        """Closes the request side and waits for the server to end the stream."""
        await self.stream.close(grace)

    async def _on(self, msg: opb.ConverseResponse, now: float) -> None:
        kind = msg.WhichOneof("event")
        self._recent.append(_brief(msg, kind, now))
        if kind == "microphone":
            (self._mic_open.clear if msg.microphone.gated else self._mic_open.set)()
            return
        turn = self._turn
        if kind == "session_started" or turn is None or (msg.turn_id and msg.turn_id in self._finished):
            return  # session-level news, or a late message of a turn already accounted for
        if msg.turn_id and not turn.turn_id:
            turn.turn_id = msg.turn_id
        if kind == "reply_audio" and msg.reply_audio.audio:
            audio = msg.reply_audio
            if turn.heard is None:
                turn.heard = now
                self.stream.playback(opb.PLAYBACK_EVENT_TYPE_STARTED, msg.turn_id)
            if audio.notice:
                turn.notice_s += len(audio.audio) / 2 / (audio.format.sample_rate_hz or 16000)
            elif turn.first_audio is None:
                turn.first_audio = now
        elif kind == "latency":
            turn.latency = msg.latency
            turn.done.set()
        elif kind == "error":
            e = msg.error
            label = f"{opb.Stage.Name(e.stage).removeprefix('STAGE_')}:{e.code or 'UNKNOWN'}"
            if e.degraded:
                turn.degraded = turn.degraded or f"degraded:{label}"
            else:
                turn.error = f"stage:{label}"
                turn.done.set()

    async def _await_turn(self, result: TurnResult, turn: _TurnState, started: float, ended: float) -> TurnResult:
        remaining = max(0.0, started + self.turn_timeout - time.monotonic())
        await self.stream.until(turn.done, remaining)  # the turn's end, the stream's, or the timeout
        self._turn = None
        if turn.turn_id:
            self._finished.add(turn.turn_id)
        if turn.first_audio is not None:
            result.time_to_first_audio_s = turn.first_audio - ended
        if turn.heard is not None:
            result.acknowledged_s = turn.heard - ended
        result.wait_notice = turn.notice_s > 0
        if turn.latency is not None:
            lat = turn.latency
            result.server_first_audio_s = lat.first_audio_seconds or None
            result.audio_s, result.reply = lat.audio_seconds, lat.reply_text
            result.server_marks = {m.point: round(m.seconds, 3) for m in lat.marks}
            if turn.degraded:
                result.outcome, result.error = "degraded", turn.degraded
            elif turn.first_audio is None:
                result.outcome, result.error = "lost", "no_audio"  # answered, silently
            else:
                result.outcome = "ok"
            await self._play(turn, lat)
        elif turn.error:
            result.outcome, result.error = "error", turn.error
        elif self.ended is not None:
            # The stream ended mid-turn: with a status that is a clear error, without one it is not.
            result.outcome = "error" if self.ended.startswith("rpc:") else "lost"
            result.error = self.ended
        else:
            result.outcome, result.error = "lost", "timeout"
        if result.outcome == "lost":
            result.detail = f"mic {'open' if self._mic_open.is_set() else 'gated'}; " + "; ".join(self._recent)
        return result

    async def _play(self, turn: _TurnState, lat: opb.TurnLatency) -> None:
        """Plays the answer (in time only) and reports it finished, then waits for the gate."""
        if turn.first_audio is None:
            return
        if self.playback == "realtime":
            # The notice plays as it comes; the answer starts when it arrives, or after the
            # notice if it came first, and lasts the rest of the turn's audio.
            assert turn.heard is not None
            answer_starts = max(turn.first_audio, turn.heard + turn.notice_s)
            await asyncio.sleep(max(0.0, answer_starts + lat.audio_seconds - turn.notice_s - time.monotonic()))
        self.stream.playback(opb.PLAYBACK_EVENT_TYPE_FINISHED, turn.turn_id)
        await self.wait_mic()

    async def wait_mic(self) -> None:
        """Waits for the microphone gate to open (or the stream to end); a gate stuck closed is
        a session error."""
        if not await self.stream.until(self._mic_open, self.gate_timeout) and not self.stream.ended:
            raise SessionEnded("gate_stuck")

    def _check_open(self) -> None:
        if self.ended is not None:
            raise SessionEnded(self.ended)

    async def speak(self, name: str, pcm: Pcm) -> TurnResult:
        """One spoken turn: the recording at real-time pace, then silence; waits for the answer."""
        self._check_open()
        await self.wait_mic()
        turn = self._turn = _TurnState()
        started = time.monotonic()
        spoken = speech_end(pcm)
        await self.stream.stream_audio(pcm.data, pcm.sample_rate)
        ended = started + spoken  # the last speech sample left at real-time pace

        def answered() -> bool:  # a client's microphone would be gated now anyway
            return turn.done.is_set() or turn.heard is not None

        await self.stream.stream_audio(silence(TRAILING_SILENCE_S), until=answered)
        return await self._await_turn(TurnResult("spoken", name, "lost", language=self.language), turn, started, ended)

    async def type(self, text: str) -> TurnResult:
        """One typed turn; the clock starts when the text is sent."""
        self._check_open()
        await self.wait_mic()
        turn = self._turn = _TurnState()
        started = time.monotonic()
        self.stream.send_text(text)
        return await self._await_turn(TurnResult("typed", text, "lost", language=self.language), turn, started, started)
