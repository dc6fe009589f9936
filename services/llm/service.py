"""The LLM service's domain: sessions, prompts and the engine, without gRPC types."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass

import structlog

from services.llm import metrics
from services.llm.backends.base import ChatMessage, Delta, GenerationParams
from services.llm.config import LlmSettings
from services.llm.engine import Engine, Summary
from services.llm.sessions import Exchange, SessionStore, trim
from services.runtime.logging import get_logger

log = get_logger(__name__)


@dataclass(frozen=True)
class GenerateCommand:
    """A validated Generate request."""

    text: str
    session_id: str | None = None
    messages: Sequence[ChatMessage] = ()
    max_tokens: int | None = None
    temperature: float | None = None
    system_prompt: str | None = None
    language: str | None = None
    backend: str | None = None
    speculative: bool = False
    """Answer without remembering the exchange (the caller adds it if the answer stands)."""


@dataclass(frozen=True)
class BackendInfo:
    backend: str
    model: str
    breaker_state: str


class LlmService:
    """Answers turns, keeping history per session."""

    def __init__(self, settings: LlmSettings, engine: Engine, sessions: SessionStore) -> None:
        self.settings = settings
        self.engine = engine
        self.sessions = sessions

    def default_prompt(self, language: str) -> str:
        return self.settings.system_prompts[language]

    async def generate(
        self, cmd: GenerateCommand, time_remaining: float | None = None
    ) -> AsyncIterator[Delta | Summary]:
        """Deltas, then the summary. A session's history gets the exchange only once the
        answer is complete (not for the canned reply, which is no answer to remember)."""
        metrics.WAITING.inc()
        try:
            if cmd.session_id is None:
                async for item in self._stateless(cmd, time_remaining):
                    yield item
                return
            language = cmd.language or self.settings.default_language
            session = self.sessions.get_or_create(cmd.session_id, language)
            structlog.contextvars.bind_contextvars(session_id=cmd.session_id)
            async with session.lock:
                if cmd.language:
                    session.language = cmd.language
                if cmd.system_prompt:
                    session.system_prompt = cmd.system_prompt
                prompt = session.system_prompt or self.default_prompt(session.language)
                messages = [*session.messages(prompt), ChatMessage("user", cmd.text)]
                summary: Summary | None = None
                async for item in self.engine.generate(
                    messages,
                    self._params(cmd, session.language, cmd.session_id),
                    first=cmd.backend,
                    time_remaining=time_remaining,
                ):
                    if isinstance(item, Summary):
                        summary = item
                    yield item
                if summary is not None and summary.finish_reason != "fallback" and not cmd.speculative:
                    dropped = self.sessions.add_exchange(session, cmd.text, summary.text)
                    if dropped:
                        log.info("history trimmed", exchanges_dropped=dropped)
        finally:
            metrics.WAITING.dec()
            structlog.contextvars.unbind_contextvars("session_id")

    async def _stateless(self, cmd: GenerateCommand, time_remaining: float | None) -> AsyncIterator[Delta | Summary]:
        language = cmd.language or self.settings.default_language
        msgs = list(cmd.messages)
        if cmd.text:
            msgs.append(ChatMessage("user", cmd.text))
        system = [m for m in msgs if m.role == "system"]
        if cmd.system_prompt:
            system = [ChatMessage("system", cmd.system_prompt)]
        elif not system:
            system = [ChatMessage("system", self.default_prompt(language))]
        rest = [m for m in msgs if m.role != "system"]
        # The caller's history gets the same window as a session's: pair messages from the
        # end (the last one is the user's new turn), trim, and rebuild.
        last, earlier = rest[-1], rest[:-1]
        exchanges: list[Exchange] = []
        pending: list[ChatMessage] = []
        for m in earlier:
            pending.append(m)
            if m.role == "assistant":
                user = " ".join(p.content for p in pending if p.role == "user")
                count = self.sessions.count_tokens
                exchanges.append(Exchange(user, m.content, count(user) + count(m.content)))
                pending = []
        trim(exchanges, self.settings.sessions.max_turns, self.settings.sessions.max_history_tokens)
        history: list[ChatMessage] = []
        for ex in exchanges:
            if ex.user:
                history.append(ChatMessage("user", ex.user))
            history.append(ChatMessage("assistant", ex.assistant))
        history += pending
        messages = [system[0], *history, last]
        async for item in self.engine.generate(
            messages, self._params(cmd, language, None), first=cmd.backend, time_remaining=time_remaining
        ):
            yield item

    def _params(self, cmd: GenerateCommand, language: str, conversation: str | None) -> GenerationParams:
        return GenerationParams(
            max_tokens=cmd.max_tokens or self.settings.max_tokens,
            temperature=self.settings.temperature if cmd.temperature is None else cmd.temperature,
            language=language,
            conversation=conversation,
        )

    async def add_exchange(self, session_id: str, user: str, assistant: str, language: str | None) -> int:
        """Remembers an exchange (a speculative answer that stood); returns how many older
        exchanges the history bounds dropped."""
        session = self.sessions.get_or_create(session_id, language or self.settings.default_language)
        async with session.lock:
            dropped = self.sessions.add_exchange(session, user, assistant)
        if dropped:
            log.info("history trimmed", session_id=session_id, exchanges_dropped=dropped)
        return dropped

    def reset(self, session_id: str) -> int:
        return self.sessions.reset(session_id)

    def history(self, session_id: str) -> tuple[list[ChatMessage], str]:
        session = self.sessions.get(session_id)
        prompt = session.system_prompt or self.default_prompt(session.language)
        return session.messages(prompt), session.language

    async def models(self) -> list[BackendInfo]:
        return [BackendInfo(b.name, b.model, await self.engine.breaker_state(b.name)) for b in self.engine.backends]
