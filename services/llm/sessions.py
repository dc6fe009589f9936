"""Per-session conversation memory: a bounded window of exchanges, a TTL, explicit reset.

History is kept as whole exchanges (a user turn and its answer) so trimming never leaves an
answer without its question. The window is bounded both in exchanges and in tokens (counted
with the serving model's tokenizer when there is one), oldest dropped first; trimming is
silent, never an error. The system prompt is not part of the window: it always stays.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from cachetools import TTLCache

from services.llm.backends.base import ChatMessage
from services.llm.validation import SESSION_ID, check_session_id
from services.runtime.errors import NotFound

__all__ = ["SESSION_ID", "Exchange", "Session", "SessionStore", "check_session_id", "rough_tokens", "trim"]

TokenCounter = Callable[[str], int]


def rough_tokens(text: str) -> int:
    """About three characters per token: errs on the side of more tokens (French, digits)."""
    return max(1, len(text) // 3)


@dataclass
class Exchange:
    """A user turn and the answer to it."""

    user: str
    assistant: str
    tokens: int


@dataclass
class Session:
    """One conversation."""

    id: str
    language: str
    system_prompt: str | None = None
    """Set by the caller; None uses the language's default."""
    exchanges: list[Exchange] = field(default_factory=list)
    lock: asyncio.Lock = field(default_factory=asyncio.Lock, repr=False)
    """Held during a generation: turns of one session are answered in order."""

    def messages(self, system_prompt: str) -> list[ChatMessage]:
        out = [ChatMessage("system", system_prompt)]
        for ex in self.exchanges:
            out += [ChatMessage("user", ex.user), ChatMessage("assistant", ex.assistant)]
        return out


def trim(exchanges: list[Exchange], max_turns: int, max_tokens: int) -> int:
    """Drops the oldest exchanges beyond the window, in place; returns how many went."""
    dropped = 0
    while exchanges and (len(exchanges) > max_turns or sum(e.tokens for e in exchanges) > max_tokens):
        exchanges.pop(0)
        dropped += 1
    return dropped


class SessionStore:
    """Sessions by id, forgotten after ``ttl_seconds`` unused or beyond ``max_sessions`` (LRU)."""

    def __init__(
        self,
        *,
        max_turns: int,
        max_history_tokens: int,
        ttl_seconds: float,
        max_sessions: int,
        count_tokens: TokenCounter = rough_tokens,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.max_turns = max_turns
        self.max_history_tokens = max_history_tokens
        self.count_tokens = count_tokens
        self._sessions: TTLCache[str, Session] = TTLCache(maxsize=max_sessions, ttl=ttl_seconds, timer=clock)

    def __len__(self) -> int:
        return len(self._sessions)

    def get(self, session_id: str) -> Session:
        """An existing session (its TTL restarts), or NOT_FOUND."""
        check_session_id(session_id)
        session = self._sessions.get(session_id)
        if session is None:
            raise NotFound(f"no session '{session_id}' (never created, reset by TTL, or evicted)")
        self._sessions[session_id] = session  # re-inserting restarts its TTL
        return session

    def get_or_create(self, session_id: str, language: str) -> Session:
        check_session_id(session_id)
        session = self._sessions.get(session_id)
        if session is None:
            session = Session(session_id, language)
        self._sessions[session_id] = session
        return session

    def add_exchange(self, session: Session, user: str, assistant: str) -> int:
        """Appends an exchange and trims the window; returns how many old exchanges went."""
        tokens = self.count_tokens(user) + self.count_tokens(assistant)
        session.exchanges.append(Exchange(user, assistant, tokens))
        if session.id in self._sessions:
            self._sessions[session.id] = session
        return trim(session.exchanges, self.max_turns, self.max_history_tokens)

    def reset(self, session_id: str) -> int:
        """Forgets a session's history (keeps its language and system prompt); returns the
        number of messages removed. NOT_FOUND if there is no such session."""
        session = self.get(session_id)
        removed = 2 * len(session.exchanges)
        session.exchanges.clear()
        return removed
