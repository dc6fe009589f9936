"""A turn: one user utterance (spoken or typed) and its answer.

``TurnQueue`` holds the turns waiting to be answered. ``TurnOutput`` is the one door through
which a turn's answer reaches the client: its text, its audio (where the microphone gate
closes), its stage errors, its end and its latency record. Stages never write to the
session's outbox for a turn themselves, so a turn whose output must wait (one started on a
speculative transcript, before the final confirms it) can be held back or dropped in this
one place.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.tts.v1 import tts_pb2
from services.orchestrator.gate import Gatekeeper
from services.orchestrator.metrics import TURN_LATENCY, TURNS
from services.orchestrator.outbox import Outbox, pcm_format
from services.runtime.audio import SPEECH_RATE
from services.runtime.streams import Channel

POINTS = (
    "speculative_transcript",
    "end_of_turn",
    "final_transcript",
    "turn_started",
    "wait_notice",
    "answer_slot",
    "llm_request",
    "first_token",
    "first_tts_text",
    "first_tts_audio",
    "first_audio",
    "last_audio",
)
"""The points of a turn's way through the orchestrator, in order (``TurnLatency.marks``; the
proto's ``LatencyMark.point`` says what each means). They label
``parole_turn_latency_seconds{stage}`` too: a fixed, small set."""


@dataclass
class Turn:
    """A user utterance to answer, and the record of its answer."""

    turn_id: str
    text: str
    start: float
    """Wall time the user stopped speaking (or the typed text arrived)."""
    final_at: float
    """Wall time the final transcript arrived (= start for typed turns)."""
    degraded: set[pb.Stage.ValueType] = field(default_factory=set)
    timing: dict[str, float] = field(default_factory=dict)
    """Seconds from ``start`` to each point of the answer."""
    reply: list[str] = field(default_factory=list)
    audio_seconds: float = 0.0
    sequence: int = 0
    out_rate: int = 0
    speculative: bool = False
    """Started on a pause's speculative transcript, before the final: the LLM is asked not
    to remember the exchange, which is recorded once the turn is confirmed."""
    answered: bool = False
    """The language model finished its answer (not cut short, not a fallback)."""
    spoken: bool = False
    """Heard by the STT (not typed): the speaker may go on after it (a continuation)."""
    merged: bool = False
    """Cancelled unheard because the speaker went on: the next turn holds its words too."""

    def mark(self, point: str, now: float, *, first: bool = True) -> None:
        """Records when ``point`` was reached (the first time, unless ``first`` is False)."""
        if first:
            self.timing.setdefault(point, now - self.start)
        else:
            self.timing[point] = now - self.start


class TurnQueue:
    """Turns waiting to be answered, in order; ids are unique within the session."""

    def __init__(self, session_id: str) -> None:
        self.session_id = session_id
        # Unbounded: a turn is a line of text, and each comes from a person speaking or typing.
        self.channel: Channel[Turn] = Channel()
        self._count = 0

    def submit(
        self,
        text: str,
        *,
        start: float,
        final_at: float,
        end_of_turn_at: float | None = None,
        spoken: bool = False,
        reserved: Turn | None = None,
    ) -> Turn:
        """Queues a turn: ``start`` is when the user stopped speaking (or typed), ``final_at``
        when its final transcript arrived, ``end_of_turn_at`` when the STT said the turn ended.
        A ``reserved`` turn (one that already said "one moment") is the one queued, with these
        words; its start stays the one its notice was timed from."""
        if reserved is None:
            turn = Turn(self.next_id(), text, start, final_at, spoken=spoken)
        else:
            turn, turn.text, turn.final_at, turn.spoken = reserved, text, final_at, spoken
        if end_of_turn_at is not None:
            turn.mark("end_of_turn", end_of_turn_at)
        turn.mark("final_transcript", final_at)
        self.channel.send_nowait(turn)
        return turn

    def reserve(self, start: float) -> Turn:
        """A turn with its id, not queued yet: the person stopped speaking at ``start`` and
        the words are still being recognised (see ``submit``)."""
        return Turn(self.next_id(), "", start, start, spoken=True)

    def next_id(self) -> str:
        self._count += 1
        return f"{self.session_id}-{self._count}"

    @property
    def waiting(self) -> bool:
        """Turns are queued that nobody answers yet."""
        return self.channel.qsize() > 0

    def close(self) -> None:
        """No more turns will come: the answering stage ends once these are answered."""
        self.channel.close()


class TurnOutput:
    """Everything one turn sends the client, released in order through ``_release``."""

    def __init__(self, turn: Turn, outbox: Outbox, gate: Gatekeeper, *, held: bool = False) -> None:
        self.turn = turn
        self.outbox = outbox
        self.gate = gate
        # A speculative turn's events wait here until the final confirms it (``confirm``) or
        # the speaker goes on (``drop``): nothing of it reaches the client before.
        self.held: list[tuple[float | None, dict[str, Any]]] | None = [] if held else None
        self._finished: bool | None = None  # a held turn's end: its record is made on release
        self.noticed = False
        """The wait notice was said (at most once a turn)."""

    def confirm(self) -> None:
        """The turn stands: what it has said so far goes out now, in order, and the rest as
        it comes (the gate closes and the first audio is timed at this release; a turn that
        ended meanwhile gets its latency record now, with every point in it)."""
        held, self.held = self.held, None
        for audio_seconds, event in held or ():
            self._release(audio_seconds=audio_seconds, **event)
        if self._finished is not None:
            self.finish(interrupted=self._finished)

    def drop(self) -> None:
        """The turn is abandoned before anything of it was released."""
        self.held = []

    def hold(self) -> None:
        """What the turn says from now on waits (the speaker may be going on): ``confirm``
        releases it, ``discard`` drops it."""
        if self.held is None:
            self.held = []

    def discard(self) -> None:
        """The turn was interrupted or merged into the next while held: what was held (its
        end too) is dropped, unheard; what it says from now on goes out (its end record)."""
        self.held, self._finished = None, None

    def text(self, delta: str) -> None:
        """A piece of the answer text."""
        self.turn.reply.append(delta)
        self._release(reply_text=pb.ReplyText(delta=delta))

    def audio(self, chunk: tts_pb2.AudioChunk) -> None:
        """A piece of the answer audio, as the TTS produced it."""
        self.turn.out_rate = chunk.format.sample_rate_hz
        reply = pb.ReplyAudio(audio=chunk.audio, format=chunk.format, sequence=self.turn.sequence, text=chunk.text)
        self.turn.sequence += 1
        self._release(audio_seconds=chunk.duration_seconds, reply_audio=reply)

    def wait_notice(self, text: str, expected_wait: float, chunks: list[tts_pb2.AudioChunk]) -> None:
        """The turn waits for the language model: the client is told, and hears ``chunks``
        (the notice spoken) at once. Its audio closes the gate like the answer's, but it is
        timed as ``wait_notice``, not as the answer's first audio."""
        self._release(wait_notice=pb.WaitNotice(text=text, expected_wait_seconds=expected_wait))
        for chunk in chunks:
            reply = pb.ReplyAudio(
                audio=chunk.audio, format=chunk.format, sequence=self.turn.sequence, text=chunk.text, notice=True
            )
            self.turn.sequence += 1
            self._release(audio_seconds=chunk.duration_seconds, reply_audio=reply)

    def degraded(self, stage: pb.Stage.ValueType, message: str, *, code: str) -> None:
        """A stage failed and the turn goes on without it (canned reply, text only, another voice)."""
        self.turn.degraded.add(stage)
        self._release(error=self.outbox.record_error(stage, message, degraded=True, code=code))

    def end(self) -> None:
        """The answer is complete: the last (empty) audio message."""
        fmt = pcm_format(self.turn.out_rate or SPEECH_RATE)
        self._release(reply_audio=pb.ReplyAudio(sequence=self.turn.sequence, is_last=True, format=fmt))

    def finish(self, *, interrupted: bool) -> str:
        """The turn's latency record, to the client and to Prometheus; returns the outcome."""
        turn = self.turn
        outcome = "interrupted" if interrupted else ("degraded" if turn.degraded else "completed")
        if self.held is not None:
            self._finished = interrupted
            return outcome
        TURNS.labels(outcome).inc()
        self.gate.answer_done(turn.turn_id)  # an interrupted or failed answer is over too
        timing = turn.timing
        for stage, seconds in timing.items():
            TURN_LATENCY.labels(stage).observe(seconds)
        self._release(
            latency=pb.TurnLatency(
                final_transcript_seconds=timing.get("final_transcript", 0.0),
                first_token_seconds=timing.get("first_token", 0.0),
                first_audio_seconds=timing.get("first_audio", 0.0),
                last_audio_seconds=timing.get("last_audio", 0.0),
                audio_seconds=turn.audio_seconds,
                reply_text="".join(turn.reply),
                interrupted=interrupted,
                degraded_stages=sorted(turn.degraded),
                marks=[pb.LatencyMark(point=p, seconds=timing[p]) for p in sorted(timing, key=_point_order)],
            )
        )
        return outcome

    def _release(self, *, audio_seconds: float | None = None, **event: Any) -> None:
        """Sends one event of the turn to the client now. Answer audio is accounted for here,
        as it leaves: the gate closes on the turn's first chunk and the first/last audio
        times are taken, because this is when the client can start playing it."""
        if self.held is not None:
            self.held.append((audio_seconds, event))
            return
        if audio_seconds is None:
            self.outbox.emit(self.turn.turn_id, **event)
            if "reply_audio" in event and event["reply_audio"].is_last:
                self.gate.answer_done(self.turn.turn_id)
            return
        now = time.monotonic()
        notice = event["reply_audio"].notice
        self.turn.mark("wait_notice" if notice else "first_audio", now)
        self.gate.audio_released(self.turn.turn_id, audio_seconds, now)
        self.outbox.emit(self.turn.turn_id, **event)
        self.turn.audio_seconds += audio_seconds
        if not notice:
            self.turn.mark("last_audio", time.monotonic(), first=False)


def _point_order(point: str) -> int:
    """Pipeline order; a point not in ``POINTS`` goes last."""
    return POINTS.index(point) if point in POINTS else len(POINTS)
