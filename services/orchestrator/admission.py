"""Admission: how many turns the language model answers at once, the order the others wait in,
and how long they should expect to wait.

The LLM is the stage a full machine queues on (a couple of answers at a time on a CPU host
with the embedded model). Without admission, every session's turn went straight to it: the LLM service
queued a few and refused the rest (the turn got the canned reply after a long silence), and
the person heard nothing for up to 40 s at 8 conversations. Here the orchestrator holds the
turns itself, in arrival order, up to ``slots`` at once; a turn expected to wait past the
notice budget (counted from the end of the person's speech) says "one moment" at once
(``WaitNotice``; the answering stage says it too when a turn on a shared machine has no audio
by the end of that budget), one that cannot start within the give-up budget is declined
politely, and new conversations are refused while the expected
wait is past that budget. The expected wait comes from the queue ahead and the recent time a
turn held its slot (an exponential moving average)."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

from services.orchestrator.metrics import ADMISSION_WAIT, EXPECTED_WAIT, SATURATED, SLOTS_BUSY, TURNS_WAITING

INITIAL_SERVICE_SECONDS = 3.0
"""Slot time assumed before any turn was measured: an answer of a sentence or two from the
1.5B model on two cores (first token ~0.5 s, ~9 tokens/s)."""
SMOOTHING = 0.3
"""Weight of the newest slot time in the moving average: recent enough to follow a machine
getting busier, smooth enough that one long answer does not swing it."""


NOTICE = {"fr": "Un instant, s'il vous plaît.", "en": "One moment, please."}
"""Said at once when a turn must wait for the language model."""
DECLINED = {
    "fr": "Désolé, je suis très sollicité en ce moment. Pouvez-vous reposer votre question dans une minute ?",
    "en": "Sorry, I'm very busy right now. Please ask me again in a minute.",
}
"""Said when the wait passed the give-up budget."""


def notice_text(language: str) -> str:
    return NOTICE.get(language, NOTICE["en"])


def declined_text(language: str) -> str:
    return DECLINED.get(language, DECLINED["en"])


class Declined(Exception):
    """The turn waited its whole give-up budget without a slot."""

    def __init__(self, waited: float) -> None:
        super().__init__(f"no answer slot within {waited:.1f} s")
        self.waited = waited


class Busy(Exception):
    """A turn that may not wait (one answered ahead of its final) found no free slot."""


class Admission:
    """Answer slots shared by every session of an orchestrator, taken in arrival order."""

    def __init__(self, slots: int, *, notice_after: float, give_up_after: float) -> None:
        self.slots = slots
        self.notice_after = notice_after
        self.give_up_after = give_up_after
        self.busy = 0
        self.waiting = 0
        self.answering = 0
        """Answers in progress, from the turn's start to its last audio (slots cover only the
        language model's part)."""
        self.sessions = 0
        """Conversations open: each one's listening (speech recognition) takes cores too."""
        self.service_seconds = INITIAL_SERVICE_SECONDS
        self.on_saturation: Callable[[bool], None] | None = None
        """Called when ``saturated`` changes (the orchestrator's health follows it)."""
        self._saturated = False
        # asyncio.Semaphore wakes its waiters in FIFO order: a turn never overtakes an
        # earlier one of another session.
        self._free = asyncio.Semaphore(slots)
        self.report()

    @property
    def idle(self) -> bool:
        """Nothing is being answered or waits: a guess (an answer ahead of its final) may run
        without taking cores from anyone's real answer."""
        return self.busy == 0 and not self.waiting

    @property
    def free(self) -> bool:
        """A turn arriving now starts at once."""
        return self.busy < self.slots and not self.waiting

    def expected_wait(self, ahead: int | None = None) -> float:
        """Seconds a turn arriving now (behind ``ahead`` waiting turns, default all of them)
        should expect before its slot: the rounds of ``slots`` turns in front of it, each
        lasting the recent slot time."""
        ahead = self.waiting if ahead is None else ahead
        in_front = self.busy + ahead - self.slots + 1
        if in_front <= 0:
            return 0.0
        return math.ceil(in_front / self.slots) * self.service_seconds

    @property
    def saturated(self) -> bool:
        """A new conversation's first turn would be declined: refuse the conversation instead."""
        return self.expected_wait() > self.give_up_after

    @property
    def shared(self) -> bool:
        """Another conversation is open, or more than one answer is in progress (thinking or
        still being spoken) or waits: the cores are shared and answers come later than alone
        (a turn slower than the notice budget then says "one moment"). Open conversations
        count even between answers: at 4 conversations on two cores, their speech
        recognition alone made a French answer's synthesis take 5 s with no other answer in
        progress (bench.load)."""
        return self.sessions > 1 or self.answering + self.waiting > 1

    @asynccontextmanager
    async def slot(
        self,
        notify: Callable[[float], Awaitable[None]] | None = None,
        *,
        wait: bool = True,
        since: float | None = None,
    ) -> AsyncIterator[float]:
        """Holds an answer slot for the block; yields the seconds waited for it (0.0 when one
        was free).

        ``since`` is when the person stopped speaking (monotonic; default now): the budgets
        count from there. A turn that must wait longer than the notice budget by the expected
        wait has ``notify(expected_wait)`` awaited at once (the caller's own timer says "one
        moment" to shorter waits that run late). Past the give-up budget raises ``Declined``;
        ``wait=False`` raises ``Busy`` instead of waiting at all."""
        arrived = time.monotonic()
        since = arrived if since is None else since
        waited = 0.0
        if not self.free:
            if not wait:
                raise Busy
            await self._wait(since, notify)
            waited = time.monotonic() - arrived
        else:
            await self._free.acquire()  # free: returns at once
        ADMISSION_WAIT.observe(waited)
        self.busy += 1
        self.report()
        started = time.monotonic()
        try:
            yield waited
        finally:
            self.busy -= 1
            held = time.monotonic() - started
            self.service_seconds += SMOOTHING * (held - self.service_seconds)
            self._free.release()
            self.report()

    async def _wait(self, since: float, notify: Callable[[float], Awaitable[None]] | None) -> None:
        expected = self.expected_wait()
        self.waiting += 1
        self.report()
        acquire = asyncio.ensure_future(self._free.acquire())
        try:
            if notify is not None and time.monotonic() - since + expected > self.notice_after:
                await notify(expected)
            timeout = max(0.0, since + self.give_up_after - time.monotonic())
            done, _ = await asyncio.wait({acquire}, timeout=timeout)
            if not done:
                raise Declined(time.monotonic() - since)
            acquire.result()
        except BaseException:
            if acquire.done() and not acquire.cancelled() and acquire.exception() is None:
                self._free.release()  # granted as we gave up: hand it on
            else:
                acquire.cancel()
            raise
        finally:
            self.waiting -= 1
            self.report()

    def report(self) -> None:
        """Publishes the state: the metrics, and the saturation callback when it changed."""
        SLOTS_BUSY.set(self.busy)
        TURNS_WAITING.set(self.waiting)
        EXPECTED_WAIT.set(self.expected_wait())
        if self.saturated != self._saturated:
            self._saturated = self.saturated
            SATURATED.set(int(self._saturated))
            if self.on_saturation is not None:
                self.on_saturation(self._saturated)
