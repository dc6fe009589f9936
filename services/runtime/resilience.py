"""Circuit breakers per engine, fallback bookkeeping and a byte-budgeted result cache.

Breakers come from purgatory (asyncio-native: no lock is held while a call runs, so
concurrent decodes are not serialised). States are exported to Prometheus as
``parole_breaker_state`` (0 closed, 1 open, 2 half-open).
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable, Hashable
from typing import Any, Generic, TypeVar

from cachetools import LRUCache
from prometheus_client import Counter, Gauge
from purgatory import AsyncCircuitBreakerFactory
from purgatory.domain.model import OpenedState

from services.runtime.errors import (
    FailedPrecondition,
    InvalidArgument,
    NotFound,
    ResourceExhausted,
)

BREAKER_STATE = Gauge(
    "parole_breaker_state", "Circuit breaker state per engine: 0 closed, 1 open, 2 half-open.", ["service", "engine"]
)
FALLBACKS = Counter(
    "parole_fallbacks_total", "Calls that moved past an engine to the next one in the chain.", ["service", "engine"]
)
CACHE_REQUESTS = Counter("parole_cache_requests_total", "Result cache lookups.", ["service", "result"])
CACHE_BYTES = Gauge("parole_cache_bytes", "Bytes held by the result cache.", ["service"])

_STATE_VALUE = {"closed": 0, "opened": 1, "half-opened": 2}
_STATE_NAME = {"closed": "closed", "opened": "open", "half-opened": "half-open"}

# Errors that are the caller's fault or the caller's choice: they say nothing about an
# engine's health and must not open its breaker.
CLIENT_FAULTS: tuple[type[BaseException], ...] = (
    InvalidArgument,
    NotFound,
    FailedPrecondition,
    ResourceExhausted,
    asyncio.CancelledError,
    GeneratorExit,
)
BreakerOpen = OpenedState
"""Raised on entering a breaker that is open."""


class Breakers:
    """One circuit breaker per engine of a service."""

    def __init__(self, service: str, threshold: int = 3, ttl_seconds: float = 30.0) -> None:
        self.service = service
        self.threshold = threshold
        self.ttl = ttl_seconds
        self._factory = AsyncCircuitBreakerFactory(
            default_threshold=threshold, default_ttl=ttl_seconds, exclude=list(CLIENT_FAULTS)
        )
        self._factory.add_listener(self._on_event)
        self._names: set[str] = set()

    def _on_event(self, name: str, event_name: str, event: Any) -> None:
        if event_name == "state_changed":
            BREAKER_STATE.labels(self.service, name).set(_STATE_VALUE.get(event.state, 0))

    async def guard(self, engine: str) -> Any:
        """``async with await breakers.guard(name):`` runs a call under the engine's breaker;
        raises ``BreakerOpen`` at once while the breaker is open."""
        if engine not in self._names:
            self._names.add(engine)
            BREAKER_STATE.labels(self.service, engine).set(0)
        return await self._factory.get_breaker(engine)

    async def state(self, engine: str) -> str:
        """ "closed", "open" or "half-open" ("open" turns "half-open" when the next call probes)."""
        async with self._factory.uow as uow:
            ctx = await uow.contexts.get(engine)
        if ctx is None:
            return "closed"
        if ctx.state == "opened" and ctx.opened_at is not None and ctx.opened_at + self.ttl < _now():
            return "half-open"
        return _STATE_NAME.get(ctx.state, ctx.state)

    def record_fallback(self, engine: str) -> None:
        """Counts a call that gave up on ``engine`` and moved on."""
        FALLBACKS.labels(self.service, engine).inc()


def _now() -> float:
    import time

    return time.time()


V = TypeVar("V")


class ByteBudgetCache(Generic[V]):
    """LRU cache bounded by the bytes of its values (cachetools does the bookkeeping)."""

    def __init__(self, service: str, max_bytes: int, size_of: Callable[[V], int]) -> None:
        self.service = service
        self.max_bytes = max_bytes
        self._size_of = size_of
        self._cache: LRUCache[Hashable, V] = LRUCache(maxsize=max(1, max_bytes), getsizeof=size_of)

    def get(self, key: Hashable) -> V | None:
        value = self._cache.get(key)
        CACHE_REQUESTS.labels(self.service, "hit" if value is not None else "miss").inc()
        return value

    def put(self, key: Hashable, value: V) -> None:
        if self.max_bytes <= 0 or self._size_of(value) > self.max_bytes:
            return  # larger than the whole budget: not worth evicting everything for
        self._cache[key] = value
        CACHE_BYTES.labels(self.service).set(self._cache.currsize)

    @property
    def bytes_used(self) -> int:
        return int(self._cache.currsize)

    def __len__(self) -> int:
        return len(self._cache)


def digest(*parts: bytes | str) -> str:
    """A stable cache key over several parts (blake2b; not for security)."""
    h = hashlib.blake2b(digest_size=20)
    for p in parts:
        b = p.encode() if isinstance(p, str) else p
        h.update(len(b).to_bytes(8, "little"))
        h.update(b)
    return h.hexdigest()
