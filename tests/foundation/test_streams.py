"""The stream helper on its own: end of stream, errors in order, back-pressure, and
cancellation from either side (tasks and a plain thread)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable

import pytest

from services.runtime.streams import Channel, ChannelClosed, ChannelFull, EndOfStream, producing, pump

DEADLINE = 5.0


async def until(condition: Callable[[], bool], timeout: float = DEADLINE) -> None:
    """Lets the loop run until ``condition`` holds (a deadline, not a fixed sleep). Polls:
    what it waits for (a task parked inside ``send`` or ``receive``) signals no event."""
    async with asyncio.timeout(timeout):
        while not condition():  # noqa: ASYNC110
            await asyncio.sleep(0)


async def test_items_then_end_of_stream() -> None:
    async def produce(ch: Channel[int]) -> None:
        for i in range(3):
            await ch.send(i)

    channel: Channel[int] = Channel()
    async with producing(channel, produce(channel)) as items:
        assert [i async for i in items] == [0, 1, 2]
    with pytest.raises(EndOfStream):
        await channel.receive()


async def test_an_error_arrives_after_the_items_sent_before_it() -> None:
    boom = ValueError("decoder fell over")

    async def produce(ch: Channel[str]) -> None:
        ch.send_nowait("a")
        ch.send_nowait("b")
        raise boom

    got: list[str] = []
    channel: Channel[str] = Channel()
    with pytest.raises(ValueError) as err:
        async with producing(channel, produce(channel)) as items:
            async for item in items:
                got.append(item)
    assert err.value is boom and got == ["a", "b"]


async def test_first_close_wins_and_later_sends_fail() -> None:
    channel: Channel[int] = Channel()
    channel.send_nowait(1)
    assert channel.close(RuntimeError("first"))
    assert not channel.close()
    with pytest.raises(ChannelClosed):
        channel.send_nowait(2)
    with pytest.raises(ChannelClosed):
        await channel.send(2)
    assert await channel.receive() == 1
    with pytest.raises(RuntimeError, match="first"):
        await channel.receive()


async def test_a_bounded_channel_holds_the_producer_back() -> None:
    attempted, sent = 0, 0

    async def produce(ch: Channel[int]) -> None:
        nonlocal attempted, sent
        for i in range(5):
            attempted += 1
            await ch.send(i)
            sent += 1

    channel: Channel[int] = Channel(maxsize=2)
    async with producing(channel, produce(channel)) as items:
        await until(lambda: attempted == 3)
        # Two items buffered, the third waits for room: nothing is read ahead of the consumer.
        assert sent == 2 and items.qsize() == 2 and items.full()
        with pytest.raises(ChannelFull):
            items.send_nowait(99)
        assert await items.receive() == 0
        await until(lambda: sent == 3)
        assert items.qsize() == 2
        assert [i async for i in items] == [1, 2, 3, 4]


async def test_the_consumer_leaving_cancels_the_producer() -> None:
    cleaned_up = asyncio.Event()

    async def endless() -> AsyncIterator[int]:
        try:
            i = 0
            while True:
                yield i
                i += 1
        finally:
            cleaned_up.set()

    async with pump(endless(), maxsize=1) as items:
        assert await items.receive() == 0
    # The source's own cleanup ran when the block was left, not at garbage collection.
    assert cleaned_up.is_set()
    assert items.abandoned
    with pytest.raises(ChannelClosed):
        items.send_nowait(1)


async def test_cancelling_the_consumer_cancels_the_producers() -> None:
    producer_cancelled = asyncio.Event()
    consuming = asyncio.Event()

    async def produce(ch: Channel[int]) -> None:
        try:
            await asyncio.Event().wait()  # never sends: the consumer waits on an empty channel
        except asyncio.CancelledError:
            producer_cancelled.set()
            raise

    async def consume() -> None:
        channel: Channel[int] = Channel()
        async with producing(channel, produce(channel)) as items:
            consuming.set()
            await items.receive()

    task = asyncio.create_task(consume())
    async with asyncio.timeout(DEADLINE):
        await consuming.wait()
        await until(lambda: True)  # let the consumer reach its receive
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    assert producer_cancelled.is_set()


async def test_a_failing_producer_cancels_its_siblings() -> None:
    sibling_cancelled = asyncio.Event()

    async def waits_forever() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            sibling_cancelled.set()
            raise

    async def fails() -> None:
        raise KeyError("lost")

    channel: Channel[int] = Channel()
    with pytest.raises(KeyError):
        async with producing(channel, waits_forever(), fails()) as items:
            async with asyncio.timeout(DEADLINE):
                await items.receive()
    assert sibling_cancelled.is_set()


async def test_the_stream_ends_when_every_producer_has_returned() -> None:
    release = asyncio.Event()

    async def quick(ch: Channel[str]) -> None:
        ch.send_nowait("quick")

    async def slow(ch: Channel[str]) -> None:
        await release.wait()
        ch.send_nowait("slow")

    channel: Channel[str] = Channel()
    async with producing(channel, quick(channel), slow(channel)) as items:
        assert await items.receive() == "quick"
        assert not items.closed  # one producer is still running
        release.set()
        async with asyncio.timeout(DEADLINE):
            assert [i async for i in items] == ["slow"]


async def test_a_producer_sending_after_the_end_stops_quietly() -> None:
    async def late(ch: Channel[int]) -> None:
        await ch.send(1)  # the channel was closed by then: ChannelClosed, not an error

    channel: Channel[int] = Channel()
    channel.close()
    async with producing(channel, late(channel)) as items:
        assert [i async for i in items] == []


async def test_a_thread_feeds_a_bounded_channel_and_stops_when_the_consumer_leaves() -> None:
    channel: Channel[int] = Channel(maxsize=4)
    stopped = threading.Event()
    sent: list[int] = []

    def generate() -> None:
        try:
            for i in range(1_000_000):
                channel.send_threadsafe(i)
                sent.append(i)
        except ChannelClosed:
            stopped.set()

    thread = threading.Thread(target=generate)
    thread.start()
    try:
        got = [await channel.receive() for _ in range(50)]
        assert got == list(range(50))
        # Back-pressure reaches the thread: it is never far ahead of the consumer.
        assert len(sent) <= 50 + 4 + 1
        channel.abandon()
        assert await asyncio.to_thread(stopped.wait, DEADLINE)
    finally:
        channel.abandon()
        await asyncio.to_thread(thread.join, DEADLINE)
    assert not thread.is_alive()


async def test_a_cancelled_receiver_passes_its_wake_up_on() -> None:
    channel: Channel[str] = Channel()
    first = asyncio.create_task(channel.receive())
    second = asyncio.create_task(channel.receive())
    await until(lambda: len(channel._receivers) == 2)
    channel.send_nowait("only")  # wakes the first receiver...
    first.cancel()  # ...which leaves before taking it
    async with asyncio.timeout(DEADLINE):
        assert await second == "only"
    assert first.cancelled()


async def test_clear_drops_stale_items_and_frees_room() -> None:
    channel: Channel[bytes] = Channel(maxsize=2)
    channel.send_nowait(b"old")
    channel.send_nowait(b"old")
    waiting = asyncio.create_task(channel.send(b"new"))
    await until(lambda: len(channel._senders) == 1)
    assert channel.clear() == 2
    async with asyncio.timeout(DEADLINE):
        await waiting
    assert await channel.receive() == b"new" and not channel.closed
