"""Session memory: id rules, window in turns and tokens, TTL, LRU bound."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.llm.sessions import SESSION_ID, Exchange, SessionStore, check_session_id, trim
from services.runtime.errors import InvalidArgument, NotFound


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def store(clock: Clock | None = None, **kw: int) -> SessionStore:
    args = {"max_turns": 3, "max_history_tokens": 100, "ttl_seconds": 60, "max_sessions": 10, **kw}
    return SessionStore(count_tokens=len, clock=clock or Clock(), **args)  # type: ignore[arg-type]


@settings(deadline=None)  # the cores are shared: wall-clock limits would flake
@given(st.text(alphabet=st.characters(codec="ascii"), min_size=0, max_size=140))
def test_session_id_rule(candidate: str) -> None:
    ok = 1 <= len(candidate) <= 128 and all(c.isascii() and (c.isalnum() or c in "-_.") for c in candidate)
    if ok:
        assert check_session_id(candidate) == candidate
    else:
        with pytest.raises(InvalidArgument):
            check_session_id(candidate)
    assert bool(SESSION_ID.fullmatch(candidate)) == ok


def test_window_in_turns() -> None:
    s = store(max_turns=2, max_history_tokens=10_000)
    session = s.get_or_create("a", "fr")
    for i in range(5):
        s.add_exchange(session, f"q{i}", f"a{i}")
    assert [e.user for e in session.exchanges] == ["q3", "q4"]


def test_window_in_tokens_keeps_whole_exchanges() -> None:
    s = store(max_turns=100, max_history_tokens=25)  # tokens = characters here
    session = s.get_or_create("a", "fr")
    dropped = [s.add_exchange(session, "x" * 5, "y" * 5) for _ in range(4)]
    assert dropped == [0, 0, 1, 1]  # 10 tokens each: two fit in 25
    assert sum(e.tokens for e in session.exchanges) <= 25
    assert all(e.user and e.assistant for e in session.exchanges)
    messages = session.messages("system")
    assert [m.role for m in messages] == ["system", "user", "assistant", "user", "assistant"]


def test_a_single_oversized_exchange_is_dropped_not_an_error() -> None:
    exchanges = [Exchange("u", "a", 500)]
    assert trim(exchanges, 5, 100) == 1
    assert exchanges == []


def test_ttl_forgets_idle_sessions_and_use_refreshes_it() -> None:
    clock = Clock()
    s = store(clock)
    s.get_or_create("a", "en")
    clock.now = 50
    s.get("a")  # used: the TTL starts again
    clock.now = 100
    assert s.get("a").language == "en"
    clock.now = 161
    with pytest.raises(NotFound):
        s.get("a")


def test_least_recently_used_goes_beyond_max_sessions() -> None:
    s = store(max_sessions=2)
    s.get_or_create("a", "fr")
    s.get_or_create("b", "fr")
    s.get("a")
    s.get_or_create("c", "fr")
    assert len(s) == 2
    s.get("a")
    with pytest.raises(NotFound):
        s.get("b")


def test_reset_counts_messages_and_keeps_the_session() -> None:
    s = store()
    session = s.get_or_create("a", "fr")
    session.system_prompt = "custom"
    s.add_exchange(session, "q", "a")
    assert s.reset("a") == 2
    assert s.get("a").exchanges == []
    assert s.get("a").system_prompt == "custom"
    with pytest.raises(NotFound):
        s.reset("zzz")
