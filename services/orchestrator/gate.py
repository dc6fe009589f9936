"""The microphone gate (the assistant must not hear itself) and the audio clock (when did the
user stop talking).

The gate closes when the first answer audio of a turn is *released to the client* (see
``turn.TurnOutput``), not when the TTS produces it: audio that is synthesised but held back
(a turn not yet confirmed) is not playing, so it must not deafen the microphone. It opens
when the client reports the playback finished (or, if it never does, when the answer is
complete and its audio's duration plus some slack has passed), plus a tail for the room's
echo. While the answer is still being produced the gate stays closed even if the audio sent
so far has run out: on a loaded machine synthesis can fall behind playback, and the next
piece would start playing into an open microphone. With barge-in on, the
gate is still kept (it tells whether an answer is playing, so speech can cut it) but the
microphone is never ignored and the client is not told about it.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import time
from collections.abc import Callable

from parole.orchestrator.v1 import orchestrator_pb2 as pb


class MicGate:
    """When the microphone is ignored: from the first answer chunk until playback has ended
    (client report, else the audio's duration plus slack) and a tail after it."""

    def __init__(self, tail: float, slack: float) -> None:
        self.tail = tail
        self.slack = slack
        self.turn_id: str | None = None
        self._expected_end = 0.0
        self._finished_at: float | None = None
        self._producing = False  # the turn's last chunk has not been sent yet
        self.changed = asyncio.Event()

    def audio_sent(self, turn_id: str, seconds: float, now: float) -> bool:
        """Accounts for an answer chunk; True when it closes the gate (first of its turn)."""
        opened = self.turn_id != turn_id
        if opened:
            self.turn_id, self._expected_end, self._finished_at = turn_id, now, None
            self._producing = True
        # The client plays chunks back to back; a chunk that arrives after the previous one
        # ended starts playing when it arrives.
        self._expected_end = max(self._expected_end, now) + seconds
        self.changed.set()
        return opened

    def answer_done(self, turn_id: str) -> None:
        """The turn's answer is complete (its last chunk was sent, or it ended otherwise)."""
        if turn_id == self.turn_id and self._producing:
            self._producing = False
            self.changed.set()

    def playback_finished(self, turn_id: str, now: float) -> bool:
        if turn_id != self.turn_id or self._finished_at is not None:
            return False
        self._finished_at = now
        self.changed.set()
        return True

    def opens_at(self) -> float | None:
        """When the gate opens; None when it is open, or closed until the answer is complete."""
        if self.turn_id is None or (self._producing and self._finished_at is None):
            return None
        end = self._finished_at if self._finished_at is not None else self._expected_end + self.slack
        return end + self.tail

    def closed(self, now: float) -> bool:
        if self.turn_id is not None and self._producing and self._finished_at is None:
            return True
        at = self.opens_at()
        return at is not None and now < at

    def release(self) -> None:
        self.turn_id = None
        self.changed.set()


Announce = Callable[[str, pb.MicrophoneState], None]
"""Tells the client about the gate: (turn id, new state)."""


class Gatekeeper:
    """A session's gate and what the client hears of it; ``run`` is the stage that reopens
    the microphone when the answer has played."""

    def __init__(self, gate: MicGate, *, announce: Announce | None) -> None:
        self.gate = gate
        # None with barge-in: the microphone is never ignored, so there is nothing to tell.
        self._announce = announce

    @property
    def turn_id(self) -> str | None:
        """The turn whose answer holds the gate, if any."""
        return self.gate.turn_id

    def closed(self, now: float) -> bool:
        return self.gate.closed(now)

    def audio_released(self, turn_id: str, seconds: float, now: float) -> None:
        """An answer chunk went to the client: the first of its turn closes the gate."""
        if self.gate.audio_sent(turn_id, seconds, now) and self._announce is not None:
            self._announce(turn_id, pb.MicrophoneState(gated=True, reason="playback"))

    def answer_done(self, turn_id: str) -> None:
        """The turn's answer is complete: the gate can open once it has played."""
        self.gate.answer_done(turn_id)

    def playback_finished(self, turn_id: str, now: float) -> None:
        """The client played the turn's last chunk (or stopped): only the tail remains."""
        if self.gate.playback_finished(turn_id, now) and self._announce is not None:
            self._announce(turn_id, pb.MicrophoneState(gated=True, reason="tail"))

    def open(self) -> None:
        """Opens the gate now (playback over, or the answer was cut)."""
        was = self.gate.turn_id
        self.gate.release()
        if was is not None and self._announce is not None:
            self._announce(was, pb.MicrophoneState(gated=False, reason="open"))

    async def run(self) -> None:
        """For the whole session: opens the gate when playback (plus tail) is over, whichever
        way that is learnt (a client report, or the audio's duration running out)."""
        while True:
            self.gate.changed.clear()
            at = self.gate.opens_at()
            wait = None if at is None else at - time.monotonic()
            if wait is not None and wait <= 0:
                self.open()
                continue
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.gate.changed.wait(), timeout=wait)


class AudioClock:
    """Maps positions in the STT stream (seconds of audio sent) to when that audio arrived,
    so 'end of speech' is the moment the user stopped talking, not when STT noticed."""

    def __init__(self) -> None:
        self.sent = 0.0
        self._ends: list[float] = []
        self._walls: list[float] = []

    def add(self, seconds: float, wall: float) -> None:
        self.sent += seconds
        self._ends.append(self.sent)
        self._walls.append(wall)

    def wall_at(self, position: float) -> float | None:
        i = bisect.bisect_left(self._ends, position - 1e-6)
        if not self._ends:
            return None
        return self._walls[min(i, len(self._walls) - 1)]

    def reset(self) -> None:
        self.sent = 0.0
        self._ends.clear()
        self._walls.clear()
