"""One way to pump a stream between asyncio tasks: a ``Channel`` and the producers that feed it.

Every streaming hop in Parole has the same shape: something produces items (a gRPC request
stream, a decode loop, a model thread, the stages of a conversation) while something else
consumes them at its own pace. ``Channel[T]`` is the pipe between them:

- ``await send(item)`` waits while a bounded channel is full (back-pressure);
  ``send_nowait`` raises ``ChannelFull`` instead (for callers that must not wait: a
  microphone chunk that cannot be buffered is an error, not a reason to stall the reader);
  ``send_threadsafe`` is for a worker thread (a model generating tokens);
- ``close()`` ends the stream after the items already sent; ``close(error)`` ends it with an
  error the consumer raises once it has taken those items, so a failure arrives in order;
- ``async for item in channel`` (or ``receive()``) consumes; the channel is itself an async
  iterator, so it can be handed to a gRPC stub as a request stream;
- ``abandon()`` is the consumer leaving: buffered items are dropped and every later (or
  waiting) send raises ``ChannelClosed``, which is how a producer, even one in a thread,
  learns to stop.

``producing(channel, *producers)`` runs producers as tasks for the length of an ``async
with`` block: when they have all returned the channel is closed; when one fails the channel
is closed with its error and the others are cancelled; when the block is left (done,
failed or cancelled) the channel is abandoned and every producer is cancelled and awaited,
so no producer outlives its consumer. ``pump(source)`` is the common case of one producer
forwarding an async iterable.

Written here rather than taken from anyio's memory object streams: those need a task group
(whose failures come back as ``ExceptionGroup``), have no way to deliver an error in order
after the items before it, and no send from a plain thread without a blocking portal.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections import deque
from collections.abc import AsyncIterable, AsyncIterator, Awaitable
from typing import Generic, TypeVar

T = TypeVar("T")


class ChannelClosed(Exception):
    """Sending on a channel that was closed, or whose consumer has left."""


class ChannelFull(Exception):
    """``send_nowait`` on a bounded channel that holds ``maxsize`` items."""


class EndOfStream(Exception):
    """``receive()`` on a channel closed without error, once its items are taken."""


class Channel(Generic[T]):
    """A FIFO from any number of producers to one consumer, bounded when ``maxsize > 0``."""

    def __init__(self, maxsize: int = 0) -> None:
        self.maxsize = maxsize
        self._items: deque[T] = deque()
        self._closed = False
        self._abandoned = False
        self._error: BaseException | None = None
        self._receivers: deque[asyncio.Future[None]] = deque()
        self._senders: deque[asyncio.Future[None]] = deque()
        self._loop: asyncio.AbstractEventLoop | None = None
        with contextlib.suppress(RuntimeError):  # made outside a loop: bound on first await
            self._loop = asyncio.get_running_loop()
        # Items a thread has handed to the loop that it has not appended yet: counted so a
        # fast thread cannot overrun a bounded channel by reading a stale length.
        self._in_flight = 0
        self._in_flight_lock = threading.Lock()

    # ------------------------------------------------------------------ state
    @property
    def closed(self) -> bool:
        """True once the stream has ended (closed by a producer, or abandoned)."""
        return self._closed

    @property
    def abandoned(self) -> bool:
        """True once the consumer has left."""
        return self._abandoned

    def qsize(self) -> int:
        return len(self._items)

    def full(self) -> bool:
        return 0 < self.maxsize <= len(self._items) + self._in_flight

    # ------------------------------------------------------------------ producers
    def send_nowait(self, item: T) -> None:
        """Appends ``item``; raises ``ChannelFull`` when bounded and full, ``ChannelClosed``
        once the stream has ended."""
        if self._closed:
            raise ChannelClosed("the channel is closed")
        if self.full():
            raise ChannelFull(f"the channel holds {self.maxsize} items")
        self._append(item)

    async def send(self, item: T) -> None:
        """Appends ``item``, waiting while the channel is full; raises ``ChannelClosed`` once
        the stream has ended (also when it ends while waiting)."""
        while True:
            if self._closed:
                raise ChannelClosed("the channel is closed")
            if not self.full():
                break
            await self._wait(self._senders)
        self._append(item)

    def send_threadsafe(self, item: T) -> None:
        """``send`` from a thread that is not the loop's: returns at once while there is room,
        blocks the thread while the channel is full. Raises ``ChannelClosed`` once the stream
        has ended or the loop is gone."""
        loop = self._loop
        if loop is None:
            raise RuntimeError("the channel has not been used on an event loop yet")
        if self._closed:
            raise ChannelClosed("the channel is closed")
        with self._in_flight_lock:
            room = not self.full()
            if room:
                self._in_flight += 1
        if room:
            try:
                loop.call_soon_threadsafe(self._append_from_thread, item)
            except RuntimeError:  # the loop closed under us: nobody is listening
                with self._in_flight_lock:
                    self._in_flight -= 1
                raise ChannelClosed("the event loop is closed") from None
            return
        sending = self.send(item)
        try:
            future = asyncio.run_coroutine_threadsafe(sending, loop)
        except RuntimeError:
            sending.close()
            raise ChannelClosed("the event loop is closed") from None
        future.result()

    def close(self, error: BaseException | None = None) -> bool:
        """Ends the stream after the items already sent, with ``error`` raised to the
        consumer after them. The first close wins; returns whether this one did."""
        if self._closed:
            return False
        self._closed = True
        self._error = error
        self._wake_all()
        return True

    # ------------------------------------------------------------------ consumer
    async def receive(self) -> T:
        """The next item; raises the close error, or ``EndOfStream``, once none is left."""
        while not self._items:
            if self._closed:
                if self._error is not None:
                    raise self._error
                raise EndOfStream
            await self._wait(self._receivers)
        item = self._items.popleft()
        self._wake_one(self._senders)
        return item

    def __aiter__(self) -> AsyncIterator[T]:
        return self

    async def __anext__(self) -> T:
        try:
            return await self.receive()
        except EndOfStream:
            raise StopAsyncIteration from None

    def clear(self) -> int:
        """Drops the buffered items (stale ones, e.g. audio for a stream that broke); returns
        how many. The channel stays open."""
        dropped = len(self._items)
        self._items.clear()
        self._wake_all_senders()
        return dropped

    def abandon(self) -> None:
        """The consumer leaves: buffered items are dropped, and every send from now on (or
        waiting now) raises ``ChannelClosed``."""
        self._abandoned = True
        self._items.clear()
        if not self._closed:
            self._closed = True
        self._wake_all()

    # ------------------------------------------------------------------ internals
    def _append(self, item: T) -> None:
        self._items.append(item)
        self._wake_one(self._receivers)

    def _append_from_thread(self, item: T) -> None:
        with self._in_flight_lock:
            self._in_flight -= 1
        if not self._closed:  # else dropped: the thread learns on its next send
            self._append(item)

    async def _wait(self, waiters: deque[asyncio.Future[None]]) -> None:
        loop = asyncio.get_running_loop()
        self._loop = self._loop or loop
        waiter: asyncio.Future[None] = loop.create_future()
        waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            with contextlib.suppress(ValueError):
                waiters.remove(waiter)
            # Woken and cancelled at once: pass the wake-up on, or another waiter sleeps on
            # an item (or a free slot) nobody will claim.
            if waiter.done() and not waiter.cancelled():
                self._wake_one(waiters)
            raise

    @staticmethod
    def _wake_one(waiters: deque[asyncio.Future[None]]) -> None:
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    def _wake_all_senders(self) -> None:
        while self._senders:
            self._wake_one(self._senders)

    def _wake_all(self) -> None:
        self._wake_all_senders()
        while self._receivers:
            self._wake_one(self._receivers)


class _Producers(Generic[T]):
    """The producer tasks of one ``producing`` block and what their endings do to the channel."""

    def __init__(self, channel: Channel[T], producers: tuple[Awaitable[object], ...]) -> None:
        self.channel = channel
        self.tasks = [asyncio.ensure_future(p) for p in producers]
        self.running = len(self.tasks)
        for task in self.tasks:
            task.add_done_callback(self._ended)
        if not self.tasks:
            channel.close()

    def _ended(self, task: asyncio.Future[object]) -> None:
        self.running -= 1
        if task.cancelled():
            return
        error = task.exception()
        if error is None:
            if self.running == 0:
                self.channel.close()
        elif not isinstance(error, ChannelClosed):  # ChannelClosed: the stream is over anyway
            self.channel.close(error)
            for other in self.tasks:
                other.cancel()

    async def stop(self) -> None:
        self.channel.abandon()
        for task in self.tasks:
            task.cancel()
        # Their errors were handed to the consumer through the channel already.
        await asyncio.gather(*self.tasks, return_exceptions=True)


@contextlib.asynccontextmanager
async def producing(channel: Channel[T], *producers: Awaitable[object]) -> AsyncIterator[Channel[T]]:
    """Runs ``producers`` (coroutines or futures) as tasks feeding ``channel`` while the block
    consumes it. All returned: the channel is closed. One raised: the channel is closed with
    its error (``ChannelClosed`` excepted: the stream had ended) and the others are cancelled.
    The block left: the channel is abandoned, the producers cancelled and awaited."""
    running = _Producers(channel, producers)
    try:
        yield channel
    finally:
        await running.stop()


def pump(source: AsyncIterable[T], maxsize: int = 0) -> contextlib.AbstractAsyncContextManager[Channel[T]]:
    """``async with pump(source, maxsize) as channel:`` reads ``source`` in a task, at most
    ``maxsize`` items ahead of the consumer (0: unbounded), with its end and its error."""
    channel: Channel[T] = Channel(maxsize)
    return producing(channel, _forward(source, channel))


async def _forward(source: AsyncIterable[T], channel: Channel[T]) -> None:
    iterator = aiter(source)
    try:
        async for item in iterator:
            await channel.send(item)
    finally:
        close = getattr(iterator, "aclose", None)
        if close is not None:  # an async generator's own finally blocks run now, not at GC
            await close()
