"""First tokens first: the order of parallel generations (pure threading, no model)."""

from __future__ import annotations

import threading
import time

import pytest

from services.llm.backends.scheduling import FirstTokensFirst, Run


def step_aside_in_thread(order: FirstTokensFirst, run: Run, tokens: int) -> threading.Thread:
    """Calls ``after_token`` for a run in its own thread (as a context's worker would)."""
    thread = threading.Thread(target=order.after_token, args=(run, tokens), daemon=True)
    thread.start()
    return thread


def test_a_lone_answer_never_waits_and_takes_every_thread() -> None:
    order = FirstTokensFirst(head_tokens=3, max_pause=5.0)
    run = order.begin()
    assert order.threads(run, 2) == 2
    started = time.monotonic()
    for tokens in range(1, 20):
        order.after_token(run, tokens)
    assert time.monotonic() - started < 0.5 and run.pauses == 0 and not run.head
    order.end(run)
    assert order.active == 0


def test_a_tail_steps_aside_until_the_other_answers_first_tokens_are_written() -> None:
    order = FirstTokensFirst(head_tokens=3, max_pause=30.0)
    tail = order.begin()
    order.after_token(tail, 3)  # past its own first tokens
    assert not tail.head and order.threads(tail, 2) == 2
    head = order.begin()
    # The newcomer shares with heads only; the tail, still computing, with both.
    assert order.threads(head, 2) == 2 and order.threads(tail, 2) == 1
    waiting = step_aside_in_thread(order, tail, 4)
    deadline = time.monotonic() + 10
    while order.computing != 1:
        assert time.monotonic() < deadline, "the tail did not step aside"
        time.sleep(0.005)
    assert waiting.is_alive() and order.active == 2
    order.after_token(head, 1)
    order.after_token(head, 2)
    assert waiting.is_alive(), "the tail went on before the head's first tokens were written"
    order.after_token(head, 3)  # the head's first tokens are out: the tail goes on
    waiting.join(timeout=10)
    assert not waiting.is_alive()
    assert tail.pauses == 1 and 0 < tail.paused_seconds < 10
    # Both are tails now: equal shares, nobody waits.
    assert order.threads(head, 2) == order.threads(tail, 2) == 1
    order.after_token(tail, 5)
    assert tail.pauses == 1


def test_an_answer_ending_within_its_first_tokens_lets_the_tails_go() -> None:
    order = FirstTokensFirst(head_tokens=12, max_pause=30.0)
    tail = order.begin()
    order.after_token(tail, 12)
    head = order.begin()
    waiting = step_aside_in_thread(order, tail, 13)
    time.sleep(0.05)
    order.end(head)  # a two-word answer: done before its twelfth token
    waiting.join(timeout=10)
    assert not waiting.is_alive() and order.active == 1


def test_the_time_an_answer_steps_aside_is_bounded() -> None:
    order = FirstTokensFirst(head_tokens=2, max_pause=0.2)
    tail = order.begin()
    order.after_token(tail, 2)
    order.begin()  # a head that never gets past its prompt
    started = time.monotonic()
    order.after_token(tail, 3)
    order.after_token(tail, 4)  # its allowance is spent: no second wait
    waited = time.monotonic() - started
    assert 0.15 <= waited < 2.0
    assert tail.pauses == 1 and tail.paused_seconds == pytest.approx(waited, abs=0.05)


def test_off_every_answer_shares_equally_and_nobody_waits() -> None:
    order = FirstTokensFirst(head_tokens=0)
    a, b = order.begin(), order.begin()
    assert not a.head and not b.head
    started = time.monotonic()
    order.after_token(a, 50)
    assert time.monotonic() - started < 0.5 and a.pauses == 0
    assert order.threads(a, 2) == order.threads(b, 2) == 1
    order.end(b)
    assert order.threads(a, 2) == 2


def test_negative_settings_are_refused() -> None:
    with pytest.raises(ValueError):
        FirstTokensFirst(head_tokens=-1)
    with pytest.raises(ValueError):
        FirstTokensFirst(max_pause=-0.1)
