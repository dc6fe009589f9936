"""A gate that admits a fixed number of jobs at once and, when they are all taken, serves the
waiting ones by priority (lowest first), then in arrival order.

The TTS gives each piece of speech the moment its listener would run out of audio (now for an
answer's first clause, later for a clause that follows audio still playing), so on a busy
machine the first clause of a new answer goes before the rest of one already being heard:
earliest deadline first. The STT's decode queue admits through it too: a final before the
speculative decode of a pause, interims only where they leave a worker free. asyncio's own
Semaphore serves in arrival order only.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class PriorityGate:
    """At most ``size`` holders; waiters served lowest ``priority`` first. Jobs that are not
    urgent may hold at most ``size - 1`` places (when ``size`` > 1), so an urgent one never
    waits for a long job that could have waited: a running job cannot be interrupted.

    ``on_change`` is called whenever ``running`` or ``waiting`` changes, so an owner can keep
    a gauge exact without knowing when a job queues, is admitted, leaves or is cancelled."""

    def __init__(self, size: int, on_change: Callable[[], None] | None = None) -> None:
        self.size = size
        self._on_change = on_change
        self.running = 0
        self.relaxed = 0
        """Holders that were not urgent."""
        self.relaxed_cap = max(1, size - 1)
        self._waiters: list[tuple[float, int, bool, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for *_, f in self._waiters if not f.done())

    @asynccontextmanager
    async def slot(self, priority: float, *, urgent: bool = True) -> AsyncIterator[None]:
        await self._acquire(priority, urgent)
        try:
            yield
        finally:
            self._release(urgent)

    def admits(self, urgent: bool = True) -> bool:
        """A job of this urgency would take a place at once. ``slot`` then takes it without
        yielding to the event loop, so an owner may check this first and act on the answer
        (refuse rather than wait, say) with nothing slipping in between."""
        return self.running < self.size and (urgent or self.relaxed < self.relaxed_cap)

    def _changed(self) -> None:
        if self._on_change is not None:
            self._on_change()

    def _take(self, urgent: bool) -> None:
        self.running += 1
        self.relaxed += not urgent

    async def _acquire(self, priority: float, urgent: bool) -> None:
        # Whoever waits could not take a place when it came (each release admits every waiter
        # that can): a job that can take one now goes ahead of them.
        if self.admits(urgent):
            self._take(urgent)
            self._changed()
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), urgent, fut))
        self._changed()
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release(urgent)  # granted just as the caller left: hand it on
            else:
                self._waiters = [w for w in self._waiters if w[3] is not fut]
                heapq.heapify(self._waiters)
                self._changed()
            raise

    def _release(self, urgent: bool) -> None:
        self.running -= 1
        self.relaxed -= not urgent
        self._waiters = [w for w in self._waiters if not w[3].done()]
        while self._waiters:
            # The first waiter, in priority order, that may take a place now.
            admitted = next((w for w in sorted(self._waiters) if self.admits(w[2])), None)
            if admitted is None:
                break
            self._waiters.remove(admitted)
            self._take(admitted[2])
            admitted[3].set_result(None)
        heapq.heapify(self._waiters)
        self._changed()
