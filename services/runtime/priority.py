"""A gate that admits a fixed number of jobs at once and, when they are all taken, serves the
waiting ones by priority (lowest first), then in arrival order.

The TTS gives each piece of speech the moment its listener would run out of audio (now for an
answer's first clause, later for a clause that follows audio still playing), so on a busy
machine the first clause of a new answer goes before the rest of one already being heard:
earliest deadline first. asyncio's own Semaphore serves in arrival order only.
"""

from __future__ import annotations

import asyncio
import heapq
import itertools
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class PriorityGate:
    """At most ``size`` holders; waiters served lowest ``priority`` first."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.running = 0
        self._waiters: list[tuple[float, int, asyncio.Future[None]]] = []
        self._seq = itertools.count()

    @property
    def waiting(self) -> int:
        return sum(1 for *_, f in self._waiters if not f.done())

    @asynccontextmanager
    async def slot(self, priority: float) -> AsyncIterator[None]:
        await self._acquire(priority)
        try:
            yield
        finally:
            self._release()

    async def _acquire(self, priority: float) -> None:
        if self.running < self.size and not self._waiters:
            self.running += 1
            return
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        heapq.heappush(self._waiters, (priority, next(self._seq), fut))
        try:
            await fut
        except asyncio.CancelledError:
            if fut.done() and not fut.cancelled():
                self._release()  # granted just as the caller left: hand it on
            else:
                self._waiters = [w for w in self._waiters if w[2] is not fut]
                heapq.heapify(self._waiters)
            raise

    def _release(self) -> None:
        self.running -= 1
        while self._waiters and self.running < self.size:
            _, _, fut = heapq.heappop(self._waiters)
            if not fut.done():
                self.running += 1
                fut.set_result(None)
