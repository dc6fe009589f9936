"""Saying "one moment" before the words are recognised.

On a full machine the speech recogniser runs late too: at 8 conversations on two cores
(``bench.load``), finals came 2.2-2.9 s after the STT had said that the speech ended, so a turn
that waited for its final to say "one moment" said it past the 3 s a person should wait in
silence. ``EarlyNotice`` times the notice from the end of speech instead. When the STT says an
utterance ended, a timer runs to the notice budget. If by then its final has not come, the
person has not started speaking again, and other answers share the machine, a turn is reserved
(its id fixed) and says "one moment" at once. The final then gives that turn its words
(``claim``), and the answering stage answers it through the same output (``take``), so the
client hears the notice and the answer under one turn id. Alone on the machine a late final
just comes, as a slow answer does (a notice would only push it back).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from services.orchestrator.admission import Admission
from services.orchestrator.gate import Gatekeeper
from services.orchestrator.outbox import Outbox
from services.orchestrator.turn import Turn, TurnOutput, TurnQueue

Say = Callable[[TurnOutput, float], Awaitable[None]]
"""Says the wait notice for a turn (``out``, the expected wait in seconds)."""


class EarlyNotice:
    """One session's notices said before the final transcript (see the module docstring).

    Utterance ends are numbered from 1 in the order the STT sends them, and the STT sends one
    final per end, in the same order: final ``n`` is the words of end ``n``."""

    def __init__(self, *, turns: TurnQueue, outbox: Outbox, gate: Gatekeeper, admission: Admission, say: Say) -> None:
        self.turns = turns
        self.outbox = outbox
        self.gate = gate
        self.admission = admission
        self.say = say
        self._timer: asyncio.Task[None] | None = None
        self._end = 0
        """The end the timer runs for."""
        self._said: dict[int, TurnOutput] = {}
        """Reserved turns whose notice was said, by end, until their final claims them."""
        self._claimed: dict[str, TurnOutput] = {}
        """Reserved turns queued with their words, by turn id, until the answer stage takes them."""

    def expect(self, end: int, since: float) -> None:
        """The STT said utterance ``end`` ended; the voice stopped at ``since`` (monotonic)."""
        self._cancel()
        self._end = end
        self._timer = asyncio.create_task(self._wait(end, since), name="early-notice")

    def resumed(self) -> None:
        """Speech started again: the person is going on, so no notice over their words."""
        self._cancel()

    def claim(self, end: int) -> Turn | None:
        """The final of ``end`` came: the turn reserved for it if its notice was said (queue it
        with the final's words, or pass it to ``unused``), else None."""
        if end == self._end and end not in self._said:
            self._cancel()
        out = self._said.pop(end, None)
        if out is None:
            return None
        self._claimed[out.turn.turn_id] = out
        return out.turn

    def take(self, turn: Turn) -> TurnOutput | None:
        """The output of a queued turn that already said "one moment" (None for the others)."""
        return self._claimed.pop(turn.turn_id, None)

    def unused(self, turn: Turn) -> None:
        """A reserved turn that gets no words of its own (its final had none, or they joined
        another turn): it ends now, with its notice as all it said."""
        out = self._claimed.pop(turn.turn_id, None)
        if out is not None:
            _end(out)

    def forget(self) -> None:
        """No final will come for the ends seen so far (the STT stream ended or broke; a new
        one numbers its ends from 1 again): the turns that said "one moment" for them end."""
        if self._timer is not None:
            self._timer.cancel()  # even mid-notice: its turn ends here
        said, self._said = self._said, {}
        for out in said.values():
            _end(out)

    def close(self) -> None:
        """The session is over: no notice is said any more."""
        self._cancel()

    def _cancel(self) -> None:
        if self._timer is not None and not self._timer.done() and self._end not in self._said:
            self._timer.cancel()

    async def _wait(self, end: int, since: float) -> None:
        await asyncio.sleep(max(0.0, since + self.admission.notice_after - time.monotonic()))
        # This utterance is not a turn yet: another conversation, or any answer in progress
        # or waiting, shares the machine with it (``Admission.shared`` counts the turn itself).
        if not (self.admission.sessions > 1 or self.admission.answering or self.admission.waiting):
            return
        out = TurnOutput(self.turns.reserve(since), self.outbox, self.gate)
        self._said[end] = out  # from here on the final claims it, even while the notice is said
        await self.say(out, self.admission.expected_wait())


def _end(out: TurnOutput) -> None:
    """A reserved turn ends with its notice as all it said."""
    out.end()
    out.finish(interrupted=False)
