"""The fallback chain: tries each backend in turn under its circuit breaker.

A backend may be abandoned for the next one only before the first delta reached the
caller: text already sent (and perhaps already spoken) cannot be taken back. A failure after
that ends the call with UNAVAILABLE (the deltas already received stay the partial answer),
so a caller can tell a cut answer from a whole one; the session keeps no turn for it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass, field

from services.llm import metrics
from services.llm.backends.base import Backend, BackendError, ChatMessage, Delta, Finish, GenerationParams
from services.runtime.errors import DeadlineExceeded, ServiceError, Unavailable
from services.runtime.logging import get_logger
from services.runtime.resilience import BreakerOpen, Breakers

log = get_logger(__name__)

# Never guarded by a breaker: it cannot fail, and it is what answers when all else did.
UNGUARDED = frozenset({"canned"})


@dataclass
class Summary:
    """How one generation went (becomes the proto's GenerationSummary)."""

    text: str
    backend: str
    model: str
    finish_reason: str
    prompt_tokens: int = 0
    prompt_tokens_evaluated: int = 0
    completion_tokens: int = 0
    time_to_first_token_seconds: float = 0.0
    total_seconds: float = 0.0
    tokens_per_second: float = 0.0
    fallbacks: list[str] = field(default_factory=list)


class Engine:
    """Backends in fallback order, a breaker each, and each one's per-token timeout."""

    def __init__(
        self,
        backends: Sequence[Backend],
        breakers: Breakers,
        timeouts: Mapping[str, float] | None = None,
        *,
        default_timeout: float = 30.0,
    ) -> None:
        if not backends:
            raise ValueError("the engine needs at least one backend")
        self.backends = list(backends)
        self.breakers = breakers
        self.timeouts = dict(timeouts or {})
        self.default_timeout = default_timeout

    def backend(self, name: str) -> Backend | None:
        return next((b for b in self.backends if b.name == name), None)

    async def breaker_state(self, name: str) -> str:
        return "closed" if name in UNGUARDED else await self.breakers.state(name)

    async def load(self) -> None:
        for b in self.backends:
            await b.load()

    async def close(self) -> None:
        for b in self.backends:
            await b.close()

    def _order(self, first: str | None) -> list[Backend]:
        if not first:
            return list(self.backends)
        chosen = [b for b in self.backends if b.name == first]
        return chosen + [b for b in self.backends if b.name != first]

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        params: GenerationParams,
        *,
        first: str | None = None,
        time_remaining: float | None = None,
    ) -> AsyncIterator[Delta | Summary]:
        """Streams deltas from the first backend that answers, then one ``Summary``."""
        started = time.perf_counter()
        deadline = None if time_remaining is None else started + time_remaining
        fallbacks: list[str] = []
        for backend in self._order(first):
            attempt = _Attempt(backend, started)
            try:
                if backend.name in UNGUARDED:
                    async for delta in attempt.run(messages, params, self._timeout(backend.name, deadline)):
                        yield delta
                else:
                    async with await self.breakers.guard(backend.name):
                        async for delta in attempt.run(messages, params, self._timeout(backend.name, deadline)):
                            yield delta
            except BreakerOpen:
                reason = "breaker open"
            except ServiceError:
                raise  # the caller's fault (bad input, full queue): another backend would not help
            except (BackendError, TimeoutError, Exception) as exc:
                reason = _reason(exc)
                if attempt.chars_sent:
                    metrics.GENERATIONS.labels(backend.name, "error").inc()
                    log.warning("backend failed mid-answer", backend=backend.name, reason=reason)
                    raise Unavailable(
                        f"{backend.name} failed after {attempt.chars_sent} characters of the answer were sent "
                        f"({reason}); the answer is incomplete"
                    ) from exc
            else:
                assert attempt.finish is not None
                yield attempt.summary(fallbacks)
                return
            finally:
                if attempt.cancelled:
                    metrics.GENERATIONS.labels(backend.name, "cancelled").inc()
            fallbacks.append(f"{backend.name}: {reason}")
            metrics.FALLBACKS.labels(backend.name, _reason_kind(reason)).inc()
            self.breakers.record_fallback(backend.name)
            log.warning("backend skipped", backend=backend.name, reason=reason)
        raise Unavailable("every backend failed: " + "; ".join(fallbacks))

    def _timeout(self, backend: str, deadline: float | None) -> float:
        mine = self.timeouts.get(backend, self.default_timeout)
        if deadline is None:
            return mine
        left = deadline - time.perf_counter()
        if left <= 0:
            raise DeadlineExceeded("the call's deadline passed before any backend answered")
        return min(mine, left)


class _Attempt:
    """One backend's try: forwards deltas, bounds each wait, keeps the numbers."""

    def __init__(self, backend: Backend, started: float) -> None:
        self.backend = backend
        self.started = started
        self.chars_sent = 0
        self.parts: list[str] = []
        self.first_at: float | None = None
        self.finish: Finish | None = None
        self.cancelled = False

    async def run(
        self, messages: Sequence[ChatMessage], params: GenerationParams, first_timeout: float
    ) -> AsyncIterator[Delta]:
        stream = self.backend.stream(messages, params)
        # The same bound for the first token and for each later one: a backend that stalls
        # mid-answer is as broken as one that never starts.
        timeout = first_timeout
        try:
            while True:
                try:
                    async with asyncio.timeout(timeout):
                        item = await anext(stream)
                except StopAsyncIteration:
                    raise BackendError(f"{self.backend.name} ended without finishing its answer") from None
                except TimeoutError:
                    what = "first token" if self.first_at is None else "next token"
                    raise TimeoutError(f"no {what} within {timeout:g} s") from None
                if isinstance(item, Finish):
                    if not self.chars_sent:
                        raise BackendError(f"{self.backend.name} gave an empty answer")
                    self.finish = item
                    return
                if not item.text:
                    continue
                if self.first_at is None:
                    self.first_at = time.perf_counter()
                    metrics.TTFT.labels(self.backend.name).observe(self.first_at - self.started)
                self.parts.append(item.text)
                self.chars_sent += len(item.text)
                yield item
        except (asyncio.CancelledError, GeneratorExit):
            self.cancelled = True
            raise
        finally:
            await stream.aclose()

    def summary(self, fallbacks: list[str]) -> Summary:
        assert self.finish is not None and self.first_at is not None
        end = time.perf_counter()
        f = self.finish
        gen_seconds = end - self.first_at
        tps = (f.completion_tokens - 1) / gen_seconds if f.completion_tokens > 1 and gen_seconds > 0 else 0.0
        name = self.backend.name
        metrics.GENERATIONS.labels(name, f.reason).inc()
        metrics.TOKENS.labels(name, "prompt").inc(f.prompt_tokens)
        metrics.TOKENS.labels(name, "prompt_evaluated").inc(f.prompt_tokens_evaluated)
        metrics.TOKENS.labels(name, "completion").inc(f.completion_tokens)
        if tps > 0:
            metrics.TOKENS_PER_SECOND.labels(name).observe(tps)
        return Summary(
            text="".join(self.parts),
            backend=name,
            model=self.backend.model,
            finish_reason=f.reason,
            prompt_tokens=f.prompt_tokens,
            prompt_tokens_evaluated=f.prompt_tokens_evaluated,
            completion_tokens=f.completion_tokens,
            time_to_first_token_seconds=self.first_at - self.started,
            total_seconds=end - self.started,
            tokens_per_second=tps,
            fallbacks=list(fallbacks),
        )


def _reason(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:300] + "…"


def _reason_kind(reason: str) -> str:
    """A low-cardinality label for the metrics."""
    lowered = reason.lower()
    for kind, needles in (
        ("breaker_open", ("breaker open",)),
        ("timeout", ("within", "timeout", "timed out")),
        ("connection", ("connect", "refused", "unreachable")),
        ("dropped", ("ended", "incomplete", "closed", "remoteprotocol")),
        ("empty", ("empty answer",)),
    ):
        if any(n in lowered for n in needles):
            return kind
    return "error"
