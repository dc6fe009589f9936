"""The synthesis pipeline: check a request (``validation``), normalise and cut its text,
speak each piece through the voice chain (cache, breaker, fallback), resample, measure.

Engines block, so every call runs in this service's own thread pool: the event loop keeps
serving other calls, and the pool size bounds how many syntheses share the CPU.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import AsyncIterator, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from prometheus_client import Counter, Histogram

from services.runtime.audio import resample_pcm16
from services.runtime.errors import Unavailable
from services.runtime.logging import get_logger
from services.runtime.priority import PriorityGate
from services.runtime.resilience import CLIENT_FAULTS, BreakerOpen, Breakers, ByteBudgetCache, digest
from services.tts import text as textmod
from services.tts import validation
from services.tts.engines import Audio, SynthOptions
from services.tts.voices import Voice, VoiceRegistry

log = get_logger(__name__)

SERVICE = "tts"

_LATENCY_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2.5, 5, 10, 30)
TIME_TO_FIRST_AUDIO = Histogram(
    "parole_tts_time_to_first_audio_seconds",
    "From the request (or the first complete clause, incremental) to the first audio chunk.",
    ["method"],
    buckets=_LATENCY_BUCKETS,
)
SYNTH_SECONDS = Histogram(
    "parole_tts_synthesis_seconds", "Engine time per piece of text.", ["engine"], buckets=_LATENCY_BUCKETS
)
RTF = Histogram(
    "parole_tts_real_time_factor",
    "Synthesis time divided by audio duration, per piece (below 1 is faster than real time).",
    ["engine"],
    buckets=(0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1, 2, 5),
)
CHARACTERS = Counter("parole_tts_characters_total", "Characters synthesized by an engine (not cached).", ["engine"])
AUDIO_SECONDS = Counter("parole_tts_audio_seconds_total", "Seconds of audio sent, by engine.", ["engine"])


@dataclass(frozen=True)
class Plan:
    """A checked request: who speaks, in which language, how."""

    chain: list[Voice]
    language: str
    options: SynthOptions
    sample_rate: int
    """Output rate; 0: each voice's native rate."""


@dataclass(frozen=True)
class Spoken:
    """One piece of speech."""

    text: str
    audio: Audio
    voice: str
    engine: str
    cached: bool
    seconds: float
    """Time to produce it (engine or cache)."""


def join(spoken: list[Spoken]) -> Spoken:
    """Pieces joined into one (whole-text synthesis); mixed rates (a fallback voice with
    another native rate answered part of it) are brought to the highest."""
    rate = max(s.audio.sample_rate for s in spoken)
    pcm = b"".join(resample_pcm16(s.audio.pcm, s.audio.sample_rate, rate) for s in spoken)
    voices = list(dict.fromkeys(s.voice for s in spoken))
    engines = list(dict.fromkeys(s.engine for s in spoken))
    return Spoken(
        " ".join(s.text for s in spoken),
        Audio(pcm, rate),
        ",".join(voices),
        ",".join(engines),
        all(s.cached for s in spoken),
        sum(s.seconds for s in spoken),
    )


URGENT_WITHIN = 0.5
"""Seconds: a piece due sooner than this is urgent (its listener is about to hear silence)."""


class Synthesizer:
    """Speaks text with the voice chains of a registry, a phrase cache and engine breakers."""

    def __init__(
        self,
        registry: VoiceRegistry,
        *,
        policy: textmod.SplitPolicy,
        workers: int = 2,
        cache_bytes: int = 64 * 1024 * 1024,
        breakers: Breakers | None = None,
        max_text_chars: int = 10_000,
    ) -> None:
        self.registry = registry
        self.policy = policy
        self.max_text_chars = max_text_chars
        self.breakers = breakers or Breakers(SERVICE)
        self.cache: ByteBudgetCache[Audio] = ByteBudgetCache(SERVICE, cache_bytes, lambda a: len(a.pcm) + 64)
        self._workers = workers
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="tts-synth")
        # Pieces reach the pool through this gate, earliest deadline first (see ``speak``).
        self._gate = PriorityGate(workers)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    async def idle(self) -> None:
        """Returns once every piece handed to the engines before the call has finished: one
        task per worker, each waiting for all the others, can only run together once the
        pool holds nothing else (the pool is first in, first out)."""
        barrier = threading.Barrier(self._workers)
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self._pool, barrier.wait) for _ in range(self._workers)))

    # ------------------------------------------------------------------ requests
    def plan(self, voice: str, language: str, speed: float, speaker_id: int | None, sample_rate: int) -> Plan:
        """Checks the options (``validation``) and resolves the voice chain (NOT_FOUND)."""
        speed = validation.check_options(speed, sample_rate)
        # "fr-FR" or "fr_FR" mean French: the chains are per ISO 639-1 language
        language = language.lower().replace("_", "-").split("-")[0]
        chain = self.registry.chain_for(voice, language)
        first = chain[0].spec
        validation.check_speaker(speaker_id, first.name, first.num_speakers)
        return Plan(chain, language or first.language, SynthOptions(speed, speaker_id), sample_rate)

    def prepare(self, text: str, plan: Plan, *, first: bool = True) -> list[str]:
        """Normalised pieces of ``text`` (may be empty when nothing in it is speakable)."""
        cleaned = textmod.normalize(text, plan.language)
        return textmod.segments(cleaned.text, plan.language, self.policy, first=first)

    def prepare_all(self, text: str, plan: Plan) -> list[str]:
        """Like ``prepare`` for a whole request: INVALID_ARGUMENT when nothing is speakable."""
        validation.check_text(text, self.max_text_chars)
        cleaned = textmod.normalize(text, plan.language)
        pieces = textmod.segments(cleaned.text, plan.language, self.policy)
        return validation.check_speakable(pieces, cleaned.why_empty())

    # ------------------------------------------------------------------ speaking
    async def speak(self, piece: str, plan: Plan, due: float | None = None) -> Spoken:
        """Speaks one piece with the first voice of the chain that can (cache first).

        ``due`` (monotonic, default now) is when its listener runs out of audio without it:
        with every worker busy, the piece due first is synthesised first, so an answer's
        first clause (due now) goes before the next clause of an answer still playing."""
        due = time.monotonic() if due is None else due
        errors: list[str] = []
        for index, voice in enumerate(plan.chain):
            options = plan.options if index == 0 else SynthOptions(plan.options.speed, None)
            key = digest(voice.name, piece, f"{options.speed:.4f}", str(options.speaker_id), str(plan.sample_rate))
            started = time.perf_counter()
            hit = self.cache.get(key)
            if hit is not None:
                return Spoken(piece, hit, voice.name, voice.spec.engine, True, time.perf_counter() - started)
            try:
                audio = await self._engine_call(voice, piece, options, due)
            except BreakerOpen:
                errors.append(f"{voice.name}: breaker open")
            except CLIENT_FAULTS:
                raise
            except Exception as exc:  # noqa: BLE001 - any engine failure means: try the next voice
                log.warning("voice failed, trying the next", voice=voice.name, error=str(exc))
                errors.append(f"{voice.name}: {exc}")
            else:
                seconds = time.perf_counter() - started
                if plan.sample_rate and plan.sample_rate != audio.sample_rate:
                    audio = Audio(resample_pcm16(audio.pcm, audio.sample_rate, plan.sample_rate), plan.sample_rate)
                self.cache.put(key, audio)
                engine = voice.spec.engine
                CHARACTERS.labels(engine).inc(len(piece))
                SYNTH_SECONDS.labels(engine).observe(seconds)
                if audio.duration > 0:
                    RTF.labels(engine).observe(seconds / audio.duration)
                return Spoken(piece, audio, voice.name, engine, False, seconds)
            # Counted once, with every service's fallbacks: parole_fallbacks_total{service="tts",
            # engine=<the voice's breaker>}.
            self.breakers.record_fallback(voice.spec.breaker)
        raise Unavailable(f"no voice could speak this text: {'; '.join(errors)}")

    async def _engine_call(self, voice: Voice, piece: str, options: SynthOptions, due: float) -> Audio:
        loop = asyncio.get_running_loop()
        # Due now (a first clause, or a late one): urgent, it may take the worker that pieces
        # due later leave free.
        urgent = due <= time.monotonic() + URGENT_WITHIN
        async with self._gate.slot(due, urgent=urgent), await self.breakers.guard(voice.spec.breaker):
            # If the caller is cancelled, the running piece finishes in its thread but no
            # further piece is started: cancellation stops synthesis at the next boundary.
            return await loop.run_in_executor(self._pool, voice.engine.synthesize, voice.name, piece, options)

    async def speak_all(self, pieces: Iterable[str], plan: Plan) -> AsyncIterator[Spoken]:
        """Speaks pieces in order, one at a time, each due when the audio before it ends."""
        playing = AudioClock()
        for piece in pieces:
            speech = await self.speak(piece, plan, playing.due())
            playing.add(speech.audio.duration)
            yield speech

    async def load(self) -> None:
        """Loads and warms the neural voices of every chain (in the pool: loading blocks)."""
        loop = asyncio.get_running_loop()
        seen: set[str] = set()
        for lang in self.registry.languages():
            for voice in self.registry.chain(lang):
                if voice.spec.engine != "espeak-ng" and voice.name not in seen:
                    seen.add(voice.name)
                    await loop.run_in_executor(self._pool, voice.engine.load, voice.name)


class AudioClock:
    """When a listener of one stream runs out of audio: the first piece is due at once, each
    next one when the audio sent before it has played (from the first piece's arrival)."""

    def __init__(self) -> None:
        self.until: float | None = None

    def due(self) -> float:
        now = time.monotonic()
        return now if self.until is None else max(now, self.until)

    def add(self, seconds: float) -> None:
        now = time.monotonic()
        self.until = (now if self.until is None else max(now, self.until)) + seconds
