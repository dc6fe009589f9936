"""The priority gate: a fixed number of holders, waiters served lowest priority first."""

from __future__ import annotations

import asyncio

import pytest

from services.runtime.priority import PriorityGate


async def test_waiters_are_served_by_priority_then_arrival_and_a_cancelled_one_leaves_no_hole() -> None:
    gate = PriorityGate(1)  # one place: urgency plays no part
    order: list[str] = []
    release = asyncio.Event()

    async def holder() -> None:
        async with gate.slot(0):
            await release.wait()

    async def job(name: str, priority: float) -> None:
        async with gate.slot(priority):
            order.append(name)

    first = asyncio.create_task(holder())
    await asyncio.sleep(0)
    jobs = [asyncio.create_task(job(n, p)) for n, p in (("late", 3.0), ("due", 1.0), ("next", 2.0), ("due-2", 1.0))]
    gone = asyncio.create_task(job("cancelled", 0.5))
    await asyncio.sleep(0)
    assert gate.waiting == 5
    gone.cancel()
    with pytest.raises(asyncio.CancelledError):
        await gone
    release.set()
    await asyncio.gather(first, *jobs)
    assert order == ["due", "due-2", "next", "late"]
    assert gate.running == 0 and gate.waiting == 0
    async with gate.slot(9):  # free again at once
        assert gate.running == 1


async def test_jobs_that_can_wait_leave_one_place_to_urgent_ones() -> None:
    gate = PriorityGate(2)
    release = asyncio.Event()
    started: list[str] = []

    async def job(name: str, priority: float, urgent: bool) -> None:
        async with gate.slot(priority, urgent=urgent):
            started.append(name)
            await release.wait()

    relaxed = [asyncio.create_task(job(f"later-{i}", float(i), False)) for i in range(2)]
    await asyncio.sleep(0)
    assert started == ["later-0"] and gate.waiting == 1  # the second place is kept
    urgent = asyncio.create_task(job("now", 5.0, True))
    await asyncio.sleep(0)
    assert started == ["later-0", "now"]
    release.set()
    await asyncio.gather(*relaxed, urgent)
    assert started == ["later-0", "now", "later-1"] and gate.running == gate.relaxed == 0


async def test_admits_says_who_would_take_a_place_at_once_and_on_change_follows_every_move() -> None:
    seen: list[tuple[int, int]] = []
    gate = PriorityGate(2, on_change=lambda: seen.append((gate.running, gate.waiting)))
    assert gate.admits() and gate.admits(urgent=False)
    release = asyncio.Event()

    async def job(urgent: bool) -> None:
        async with gate.slot(0, urgent=urgent):
            await release.wait()

    relaxed = asyncio.create_task(job(False))
    await asyncio.sleep(0)
    # One place left, kept for urgent jobs: an owner can refuse a relaxed one instead of queueing it.
    assert gate.admits() and not gate.admits(urgent=False)
    urgent = asyncio.create_task(job(True))
    waiter = asyncio.create_task(job(True))
    await asyncio.sleep(0)
    assert not gate.admits() and gate.waiting == 1
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    release.set()
    await asyncio.gather(relaxed, urgent)
    assert seen == [(1, 0), (2, 0), (2, 1), (2, 0), (1, 0), (0, 0)]
