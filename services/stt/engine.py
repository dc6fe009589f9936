"""Recognition engines: the ``Engine`` interface and faster-whisper behind it.

This is the only module that imports faster_whisper (and through it CTranslate2 and the
Silero VAD model it ships), so the rest of the service can be tested with fake engines and
the heavy imports happen once, here.
"""

from __future__ import annotations

import asyncio
import math
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from services.runtime.audio import SPEECH_RATE, FloatAudio
from services.runtime.logging import get_logger

log = get_logger(__name__)

DecodeKind = Literal["final", "speculative", "interim", "unary"]


@dataclass(frozen=True)
class DecodeOptions:
    """How to decode one piece of audio."""

    language: str | None = None
    """ISO 639-1 code, or None to detect it."""
    word_timestamps: bool = False
    initial_prompt: str | None = None
    kind: DecodeKind = "final"
    """Interim decodes are greedy and skip timestamps: their result is soon replaced."""
    vad_filter: bool = False
    """Drop non-speech with Silero before decoding (unary files: streaming audio is already
    cut at speech by the endpointer)."""

    def cache_key_parts(self) -> tuple[str, ...]:
        return (self.language or "", str(self.word_timestamps), self.initial_prompt or "", str(self.vad_filter))


@dataclass(frozen=True)
class Word:
    """A word with its timing (seconds from the start of the decoded audio)."""

    word: str
    start: float
    end: float
    probability: float


@dataclass(frozen=True)
class Transcript:
    """What an engine heard in one piece of audio."""

    text: str
    language: str
    language_probability: float
    confidence: float
    """exp(average token log-probability), 0..1."""
    words: tuple[Word, ...] = ()
    engine: str = ""
    decode_seconds: float = 0.0

    def approx_bytes(self) -> int:
        """Rough memory held by this result, for the cache's byte budget: object overheads
        plus the text, and about 150 bytes per word object."""
        return 300 + len(self.text.encode()) + sum(150 + len(w.word.encode()) for w in self.words)


class Engine(Protocol):
    """A speech recogniser. ``transcribe`` must not block the event loop."""

    name: str
    model: str
    compute_type: str
    english_only: bool

    @property
    def device_label(self) -> str:
        """Where it runs: "cpu" or "cuda:N"."""
        ...

    async def load(self) -> None:
        """Loads and warms the model (may take seconds)."""
        ...

    async def transcribe(self, audio: FloatAudio, options: DecodeOptions) -> Transcript:
        """Recognizes 16 kHz mono float audio."""
        ...

    async def close(self) -> None:
        """Releases the model."""
        ...


@dataclass
class WhisperEngine:
    """faster-whisper (CTranslate2) on CPU or CUDA."""

    name: str
    model_path: Path
    model: str
    device: str
    device_index: int
    compute_type: str
    beam_size: int = 5
    cpu_threads: int = 0
    workers: int = 1
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4)
    english_only: bool = False
    _model: Any = field(default=None, repr=False)
    _executor: ThreadPoolExecutor | None = field(default=None, repr=False)

    @property
    def device_label(self) -> str:
        return f"cuda:{self.device_index}" if self.device == "cuda" else "cpu"

    async def load(self) -> None:
        if self._model is not None:
            return  # already loaded: apps sharing an engine each warm it up
        # One thread per CTranslate2 worker: calls beyond that would only queue inside CT2
        # while holding a thread, so the executor is sized to match.
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix=f"stt-{self.name}")
        loop = asyncio.get_running_loop()
        self._model = await loop.run_in_executor(self._executor, self._load_sync)
        # Warm-up: the first call allocates buffers and, on CUDA, picks kernels; a short
        # tone keeps it quick while touching encoder and decoder both.
        t = np.arange(SPEECH_RATE, dtype=np.float32) / SPEECH_RATE
        await self.transcribe((0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32), DecodeOptions(language="en"))
        log.info(
            "engine ready", engine=self.name, model=self.model, device=self.device_label, compute=self.compute_type
        )

    def _load_sync(self) -> Any:
        from faster_whisper import WhisperModel

        # Threads per worker: every core. Splitting them between workers (cores/workers) left
        # a lone decode on a fraction of the machine (the trade is measured in bench.stt; see
        # SttSettings.decode_workers).
        threads = self.cpu_threads or os.cpu_count() or 1
        return WhisperModel(
            str(self.model_path),
            device=self.device,
            device_index=self.device_index,
            compute_type=self.compute_type,
            cpu_threads=threads,
            num_workers=self.workers,
            local_files_only=True,
        )

    async def transcribe(self, audio: FloatAudio, options: DecodeOptions) -> Transcript:
        if self._model is None or self._executor is None:
            raise RuntimeError(f"engine {self.name} is not loaded")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transcribe_sync, audio, options)

    def _transcribe_sync(self, audio: FloatAudio, options: DecodeOptions) -> Transcript:
        interim = options.kind == "interim"
        language = options.language
        if self.english_only and language is None:
            language = "en"
        started = _now()
        segments, info = self._model.transcribe(
            audio,
            language=language,
            beam_size=1 if interim else self.beam_size,
            temperature=0.0 if interim else list(self.temperatures),
            # Utterances are independent: conditioning on earlier text spreads errors.
            condition_on_previous_text=False,
            initial_prompt=options.initial_prompt or None,
            without_timestamps=interim and not options.word_timestamps,
            word_timestamps=options.word_timestamps and not interim,
            vad_filter=options.vad_filter,
            # Nobody says more than ~6 tokens a second; a cap well above that stops a
            # hallucination loop (counting, repeated phrases) from decoding up to 448 tokens.
            max_new_tokens=min(440, int(16 + 12 * min(30.0, audio.size / SPEECH_RATE))),
            vad_parameters={"min_silence_duration_ms": 500, "speech_pad_ms": 200} if options.vad_filter else None,
        )
        # The generator decodes lazily: consuming it here keeps the work on this thread.
        segs = list(segments)
        text = " ".join(s.text.strip() for s in segs if s.text.strip())
        tokens = sum(max(1, len(s.tokens)) for s in segs)
        logprob = sum(s.avg_logprob * max(1, len(s.tokens)) for s in segs) / tokens if segs else 0.0
        words = tuple(
            Word(w.word.strip(), float(w.start), float(w.end), float(w.probability))
            for s in segs
            for w in (s.words or ())
            if w.word.strip()
        )
        return Transcript(
            text=text,
            language=str(info.language),
            language_probability=1.0 if language else float(info.language_probability),
            confidence=float(min(1.0, max(0.0, math.exp(logprob)))) if segs else 0.0,
            words=words,
            engine=self.name,
            decode_seconds=_now() - started,
        )

    async def close(self) -> None:
        self._model = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _now() -> float:
    return time.perf_counter()


def supported_languages() -> frozenset[str]:
    """Language codes Whisper knows; anything else is refused before it reaches a decoder
    (where it would raise and count against the engine's breaker)."""
    from faster_whisper.tokenizer import _LANGUAGE_CODES

    return frozenset(_LANGUAGE_CODES)


class SileroVad:
    """Streaming Silero VAD (the model faster-whisper ships): one probability per 512-sample
    window at 16 kHz, keeping the recurrent state and 64 samples of context between calls,
    which gives exactly the probabilities of the library's whole-file pass."""

    WINDOW = 512
    CONTEXT = 64

    def __init__(self) -> None:
        from faster_whisper.vad import get_vad_model

        # One ONNX session for the process (cached by faster-whisper); the state lives here.
        self._session = get_vad_model().session
        self.reset()

    def reset(self) -> None:
        self._h = np.zeros((1, 1, 128), dtype=np.float32)
        self._c = np.zeros((1, 1, 128), dtype=np.float32)
        self._context = np.zeros(self.CONTEXT, dtype=np.float32)

    def __call__(self, window: FloatAudio) -> float:
        """Speech probability of the next 512-sample window."""
        x = np.concatenate([self._context, window])[None, :]
        prob, self._h, self._c = self._session.run(None, {"input": x, "h": self._h, "c": self._c})
        self._context = window[-self.CONTEXT :]
        return float(np.asarray(prob).reshape(-1)[0])
