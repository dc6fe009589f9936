"""First tokens first: the order in which parallel generations get the cores.

A person hears an answer once its first few words have been written and spoken; the words
after them have the time those take to play. With several contexts generating at once on a
few cores, an answer writing its twentieth token slows an answer that has not written its
first one yet, and that delay is silence someone waits through. So a generation past its
first ``head_tokens`` steps aside (stops between two tokens) while another is still reading
its prompt or writing its first tokens, for at most ``max_pause`` seconds per answer in all,
so that its own later words cannot fall behind their speech for long. A generation that
steps aside does not count as running, so the others take its threads (``threads``).

Pure threading: the worker threads of the contexts call it between tokens; no model here.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass


@dataclass
class Run:
    """One generation as the scheduler sees it."""

    head: bool = True
    """Still reading its prompt or writing its first tokens."""
    paused_seconds: float = 0.0
    """Time it has stepped aside so far."""
    pauses: int = 0


class FirstTokensFirst:
    """Orders parallel generations: heads (the first tokens of an answer) before tails."""

    def __init__(self, head_tokens: int = 12, max_pause: float = 1.0) -> None:
        if head_tokens < 0 or max_pause < 0:
            raise ValueError("head_tokens and max_pause must not be negative")
        self.head_tokens = head_tokens
        """Tokens of an answer that go first; 0 turns the ordering off."""
        self.max_pause = max_pause
        self._cond = threading.Condition()
        self._heads = 0
        self._active = 0
        self._paused = 0

    @property
    def active(self) -> int:
        """Generations begun and not ended, paused ones included."""
        return self._active

    @property
    def computing(self) -> int:
        """Generations using the cores now (active, not stepped aside)."""
        return self._active - self._paused

    def threads(self, run: Run, n_threads: int) -> int:
        """The run's share of ``n_threads``: a head shares them with the other heads only (the
        tails step aside at their next token), a tail with every run using the cores."""
        with self._cond:
            sharing = self._heads if run.head else self.computing
            return max(1, n_threads // max(1, sharing))

    def begin(self) -> Run:
        with self._cond:
            self._active += 1
            run = Run(head=self.head_tokens > 0)
            if run.head:
                self._heads += 1
            return run

    def end(self, run: Run) -> None:
        with self._cond:
            self._active -= 1
            self._end_head(run)

    def after_token(self, run: Run, tokens: int) -> None:
        """Called between two tokens, ``tokens`` written so far: ends the run's head once it
        has written ``head_tokens``, and, past it, waits while another run is in its head
        (within what is left of ``max_pause``)."""
        with self._cond:
            if run.head:
                if tokens < self.head_tokens:
                    return
                self._end_head(run)
            left = self.max_pause - run.paused_seconds
            if self._heads == 0 or left <= 0:
                return
            self._paused += 1
            run.pauses += 1
            started = time.monotonic()
            try:
                self._cond.wait_for(lambda: self._heads == 0, timeout=left)
            finally:
                self._paused -= 1
                run.paused_seconds += time.monotonic() - started

    def _end_head(self, run: Run) -> None:
        if run.head:
            run.head = False
            self._heads -= 1
            self._cond.notify_all()
