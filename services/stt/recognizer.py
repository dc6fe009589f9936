"""Decoding with robustness: a bounded priority queue, the engine fallback chain with a circuit
breaker per engine, a timeout that grows with the audio, a result cache, and the metrics.

Streaming sessions and unary calls both decode through one ``Recognizer``, so the queue
bound and the priorities hold across every call of the process.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass

from prometheus_client import Counter, Gauge, Histogram

from services.runtime.audio import SPEECH_RATE, FloatAudio
from services.runtime.errors import InvalidArgument, ResourceExhausted, Unavailable
from services.runtime.logging import get_logger
from services.runtime.priority import PriorityGate
from services.runtime.resilience import CLIENT_FAULTS, BreakerOpen, Breakers, ByteBudgetCache, digest
from services.stt.engine import DecodeKind, DecodeOptions, Engine, Transcript

log = get_logger(__name__)
SERVICE = "stt"

DECODE_SECONDS = Histogram(
    "parole_stt_decode_seconds",
    "Wall-clock time of one decode, by engine and kind (final, speculative, interim, unary).",
    ["engine", "kind"],
    buckets=(0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10, 30, 60),
)
REAL_TIME_FACTOR = Histogram(
    "parole_stt_real_time_factor",
    "Decode time divided by audio duration, by engine (below 1: faster than real time).",
    ["engine"],
    buckets=(0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 5),
)
AUDIO_SECONDS = Counter("parole_stt_audio_seconds_total", "Seconds of audio received, by RPC.", ["rpc"])
EOS_TO_FINAL = Histogram(
    "parole_stt_end_of_speech_to_final_seconds",
    "From detecting end of speech to sending the final transcript.",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 1.5, 2, 3, 5, 10),
)
QUEUE_DEPTH = Gauge("parole_stt_decode_queue_depth", "Decodes running or waiting for a worker.")
REJECTED = Counter("parole_stt_decodes_rejected_total", "Decodes refused because the queue was full.", ["kind"])
SPECULATIVE = Counter(
    "parole_stt_speculative_decodes_total",
    "Speculative decodes at a pause: used as the final, or discarded because speech resumed.",
    ["outcome"],
)
ENGINE_FAILURES = Counter(
    "parole_stt_engine_failures_total", "Decodes an engine failed, by reason.", ["engine", "reason"]
)

# Lower value is served first: a final (someone is waiting for the answer) beats the
# speculative decode of a pause. Interims never queue (see DecodeQueue).
PRIORITY: dict[DecodeKind, int] = {"final": 0, "unary": 0, "speculative": 1, "interim": 2}


class DecodeQueue:
    """Admits at most ``workers`` decodes at once, served by priority, with at most
    ``max_pending`` running or waiting; beyond that, RESOURCE_EXHAUSTED.

    Interims never wait: one starts only when a worker is free and nobody waits, and with
    two or more workers they may hold all but one, so a final always finds a worker that no
    interim holds (a running decode cannot be interrupted).

    Admission and waiting are the shared ``PriorityGate`` (the TTS serves its pieces through
    the same one): interims are its jobs that are not urgent, every other kind an urgent one.
    What is the STT's own stays here: the priority of each kind, the bound on pending decodes
    and that an interim is refused rather than made to wait.
    """

    def __init__(self, workers: int, max_pending: int) -> None:
        self.workers = workers
        self.max_pending = max_pending
        self._gate = PriorityGate(workers, on_change=self._update_depth)
        self.interim_cap = self._gate.relaxed_cap

    @property
    def pending(self) -> int:
        """Decodes running or waiting."""
        return self._gate.running + self._gate.waiting

    @property
    def interim_welcome(self) -> bool:
        """An interim could start now without taking a final's worker."""
        return self._gate.admits(urgent=False) and not self._gate.waiting

    def _update_depth(self) -> None:
        QUEUE_DEPTH.set(self.pending)

    @asynccontextmanager
    async def slot(self, kind: DecodeKind) -> AsyncIterator[None]:
        interim = kind == "interim"
        if interim:
            if not self.interim_welcome:
                raise ResourceExhausted("no idle decode worker for an interim result")
            # The gate admits it at once, without yielding: nothing can take the worker first.
        elif not self._gate.admits(urgent=True) and self.pending >= self.max_pending:
            REJECTED.labels(kind).inc()
            raise ResourceExhausted(
                f"speech-to-text is overloaded: {self.pending} decodes running or queued (limit "
                f"{self.max_pending}); retry with backoff"
            )
        async with self._gate.slot(PRIORITY[kind], urgent=not interim):
            yield


@dataclass(frozen=True)
class Recognition:
    """A transcript and whether it came from the cache."""

    transcript: Transcript
    cached: bool = False


class Recognizer:
    """Decodes audio through the engine chain under the queue, breakers, timeout and cache."""

    def __init__(
        self,
        engines: Sequence[Engine],
        breakers: Breakers,
        queue: DecodeQueue,
        cache: ByteBudgetCache[Transcript] | None,
        timeout_base_seconds: float,
        timeout_per_audio_second: float,
    ) -> None:
        if not engines:
            raise ValueError("at least one engine is needed")
        self.engines = list(engines)
        self.breakers = breakers
        self.queue = queue
        self.cache = cache
        self.timeout_base = timeout_base_seconds
        self.timeout_per_second = timeout_per_audio_second

    def engine_names(self) -> list[str]:
        return [e.name for e in self.engines]

    def timeout_for(self, seconds: float) -> float:
        """Longer audio takes longer to decode, so it is allowed longer."""
        return self.timeout_base + self.timeout_per_second * seconds

    def chain(self, hint: str, language: str | None) -> list[Engine]:
        """Engines in the order to try: the hinted one first, English-only ones only for English."""
        engines = self.engines
        if hint:
            first = [e for e in engines if e.name == hint]
            if not first:
                raise InvalidArgument(
                    f"unknown engine {hint!r} in model_hint; known: {', '.join(self.engine_names())}",
                    fields={"config.model_hint": "unknown engine"},
                )
            engines = first + [e for e in engines if e.name != hint]
        usable = [e for e in engines if not (e.english_only and language not in (None, "en"))]
        if not usable:
            raise InvalidArgument(
                f"no configured engine can recognize language {language!r} (only English-only models)",
                fields={"config.language": "no engine for this language"},
            )
        return usable

    async def recognize(
        self,
        audio: FloatAudio,
        options: DecodeOptions,
        *,
        hint: str = "",
        deadline: float | None = None,
    ) -> Recognition:
        """Decodes ``audio`` (16 kHz float). ``deadline``: seconds the caller still waits."""
        seconds = audio.size / SPEECH_RATE
        key = None
        if self.cache is not None and options.kind in ("final", "unary"):
            key = digest(audio.tobytes(), hint, *options.cache_key_parts())
            hit = self.cache.get(key)
            if hit is not None:
                return Recognition(hit, cached=True)
        chain = self.chain(hint, options.language)
        async with self.queue.slot(options.kind):
            transcript = await self._through_chain(chain, audio, options, seconds, deadline)
        if key is not None and self.cache is not None:
            self.cache.put(key, transcript)
        return Recognition(transcript)

    async def _through_chain(
        self, chain: list[Engine], audio: FloatAudio, options: DecodeOptions, seconds: float, deadline: float | None
    ) -> Transcript:
        timeout = self.timeout_for(seconds)
        if deadline is not None:
            timeout = min(timeout, max(0.0, deadline))
        failures: list[str] = []
        for engine in chain:
            try:
                async with await self.breakers.guard(engine.name):
                    started = time.perf_counter()
                    try:
                        result = await asyncio.wait_for(engine.transcribe(audio, options), timeout)
                    except TimeoutError:
                        ENGINE_FAILURES.labels(engine.name, "timeout").inc()
                        # Raised inside the breaker so a hung engine counts as failing.
                        raise EngineTimeout(f"{engine.name} took over {timeout:.1f} s") from None
            except BreakerOpen:
                failures.append(f"{engine.name}: circuit open")
                self.breakers.record_fallback(engine.name)
                continue
            except CLIENT_FAULTS:
                raise
            except Exception as exc:  # noqa: BLE001 - any engine failure moves on to the next engine
                if not isinstance(exc, EngineTimeout):
                    ENGINE_FAILURES.labels(engine.name, "error").inc()
                log.warning("engine failed", engine=engine.name, error=f"{type(exc).__name__}: {exc}")
                failures.append(f"{engine.name}: {type(exc).__name__}: {exc}")
                self.breakers.record_fallback(engine.name)
                continue
            elapsed = time.perf_counter() - started
            DECODE_SECONDS.labels(engine.name, options.kind).observe(elapsed)
            if seconds > 0:
                REAL_TIME_FACTOR.labels(engine.name).observe(elapsed / seconds)
            return Transcript(
                text=result.text,
                language=result.language,
                language_probability=result.language_probability,
                confidence=result.confidence,
                words=result.words,
                engine=engine.name,
                decode_seconds=elapsed,
            )
        raise Unavailable(f"every speech-to-text engine failed ({'; '.join(failures)}); retry later")

    async def close(self) -> None:
        for engine in self.engines:
            await engine.close()


class EngineTimeout(Exception):
    """An engine did not answer within the timeout for the audio's length."""
