"""Recognition engines: the ``Engine`` interface and faster-whisper behind it.

This is the only module that imports faster_whisper (and through it CTranslate2 and the
Silero VAD model it ships), so the rest of the service can be tested with fake engines and
the heavy imports happen once, here.
"""

from __future__ import annotations

import asyncio
import math
import os
import re
import threading
import time
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np
from prometheus_client import Counter

from services.runtime.audio import SPEECH_RATE, FloatAudio
from services.runtime.logging import get_logger

log = get_logger(__name__)

WINDOW_FALLBACKS = Counter(
    "parole_stt_window_fallbacks_total",
    "Short-window decodes done again with Whisper's full 30 s window because their output looked degenerate.",
)

DecodeKind = Literal["final", "speculative", "interim", "unary"]

FULL_WINDOW_SECONDS = 30.0
"""Whisper's own input length: what every decode paid for before the short window."""
FRAMES_PER_SECOND = 100
DEGENERATE_COMPRESSION = 2.4
"""gzip ratio above which a transcript is a repetition loop (Whisper's own threshold)."""
MAX_WORDS_PER_SECOND = 6.0
"""Fast speech is 4-5 words a second; more words than this from the audio is a loop."""


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
    window_seconds: float = FULL_WINDOW_SECONDS
    """Encoder window the decode used."""
    window_fallback: bool = False
    """The short window's output looked degenerate and the full window decoded it again."""

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
    window_padding_seconds: float | None = 6.0
    """Encoder window = the audio plus this much padding (None: Whisper's fixed 30 s).
    See ``_install_window_hook``."""
    window_min_seconds: float = 10.0
    """...and never shorter than this."""
    pad_with_silence: bool = True
    """Pad the window with the silence floor instead of zeros (see ``_install_window_hook``)."""
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
        model = WhisperModel(
            str(self.model_path),
            device=self.device,
            device_index=self.device_index,
            compute_type=self.compute_type,
            cpu_threads=threads,
            num_workers=self.workers,
            local_files_only=True,
        )
        _install_window_hook()
        return model

    async def transcribe(self, audio: FloatAudio, options: DecodeOptions) -> Transcript:
        if self._model is None or self._executor is None:
            raise RuntimeError(f"engine {self.name} is not loaded")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, self._transcribe_sync, audio, options)

    def _transcribe_sync(self, audio: FloatAudio, options: DecodeOptions) -> Transcript:
        started = _now()
        seconds = audio.size / SPEECH_RATE
        window = self.window_seconds(seconds)
        segs, info, language = self._decode(audio, options, window)
        fell_back = False
        if window < FULL_WINDOW_SECONDS and _degenerate(segs, self._max_new_tokens(seconds), seconds):
            # A short window can tip Whisper into a repetition loop or a truncated answer
            # where the full one does not (measured: 1 s of padding doubled English WER): the
            # guard costs one full-window decode in those rare cases, never a wrong transcript.
            WINDOW_FALLBACKS.inc()
            fell_back = True
            segs, info, language = self._decode(audio, options, FULL_WINDOW_SECONDS)
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
            window_seconds=FULL_WINDOW_SECONDS if fell_back else window,
            window_fallback=fell_back,
        )

    def window_seconds(self, audio_seconds: float) -> float:
        """Encoder window for audio this long: the audio plus the padding, in whole seconds
        (a few distinct shapes keep CTranslate2's buffers reused), at most Whisper's 30 s."""
        if self.window_padding_seconds is None:
            return FULL_WINDOW_SECONDS
        window = max(self.window_min_seconds, math.ceil(audio_seconds + self.window_padding_seconds))
        return float(min(FULL_WINDOW_SECONDS, window))

    @staticmethod
    def _max_new_tokens(audio_seconds: float) -> int:
        # Nobody says more than ~6 tokens a second; a cap well above that stops a
        # hallucination loop (counting, repeated phrases) from decoding up to 448 tokens.
        return min(440, int(16 + 12 * min(FULL_WINDOW_SECONDS, audio_seconds)))

    def _decode(self, audio: FloatAudio, options: DecodeOptions, window: float) -> tuple[list[Any], Any, str | None]:
        """One faster-whisper decode with the encoder window set to ``window`` seconds."""
        interim = options.kind == "interim"
        language = options.language
        if self.english_only and language is None:
            language = "en"
        _WINDOW.frames = int(window * FRAMES_PER_SECOND)
        _WINDOW.silence_floor = self.pad_with_silence
        try:
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
                max_new_tokens=self._max_new_tokens(audio.size / SPEECH_RATE),
                vad_parameters={"min_silence_duration_ms": 500, "speech_pad_ms": 200} if options.vad_filter else None,
            )
            # The generator decodes lazily: consuming it here keeps the work on this thread
            # (and inside the window set above).
            return list(segments), info, language
        finally:
            _WINDOW.frames = None
            _WINDOW.silence_floor = False

    async def close(self) -> None:
        self._model = None
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None


def _now() -> float:
    return time.perf_counter()


def _degenerate(segments: list[Any], max_new_tokens: int, audio_seconds: float) -> bool:
    """A transcript that looks like a short-window failure: a repetition loop (a phrase said
    twice in a row, more words than anyone speaks in that time, or text that compresses like
    a loop), a decode that ran into its length bound, or nothing from a second of speech."""
    text = " ".join(s.text.strip() for s in segments if s.text.strip())
    if not text:
        return audio_seconds >= 1.0
    if any(len(s.tokens) >= max_new_tokens - 1 for s in segments):
        return True
    data = text.encode()
    if len(data) > 40 and len(data) / len(zlib.compress(data)) > DEGENERATE_COMPRESSION:
        return True
    words = [w for w in (re.sub(r"[^\w']+", "", w.lower()) for w in text.split()) if w]
    if len(words) > 3 + MAX_WORDS_PER_SECOND * audio_seconds:
        return True
    n = len(words)
    return any(
        words[i : i + size] == words[i + size : i + 2 * size]
        for size in range(3, n // 2 + 1)
        for i in range(n - 2 * size + 1)
    )


class _Window(threading.local):
    frames: int | None = None
    silence_floor: bool = False


_WINDOW = _Window()
"""Encoder window of the decode running on this thread (None: Whisper's 3000 frames)."""


def _install_window_hook() -> None:
    """Lets a decode encode fewer than 3000 mel frames.

    On CPU Whisper's encoder cost grows with its input, and faster-whisper always pads the
    mel to 30 s (``pad_or_trim`` in its decode loop), so a 2 s question paid for 30 s of
    encoding. CTranslate2's encoder accepts a shorter input (the positional embedding is
    cut to fit), so the pad length is made per decode: each worker thread sets ``_WINDOW``
    around its own call. Installed once; a thread that sets nothing gets the stock 3000."""
    from faster_whisper import transcribe as fw

    stock = fw.pad_or_trim
    if getattr(stock, "parole_window", False):
        return

    def pad_or_trim(array: Any, length: int = 3000, *, axis: int = -1) -> Any:
        frames = _WINDOW.frames
        target = frames if frames is not None and length == 3000 else length
        if _WINDOW.silence_floor and 0 < array.shape[axis] < target:
            # What Whisper was trained on: audio padded with silence, whose log-mel is the
            # clip's floor (its maximum minus 8 decades, i.e. max - 2 once normalised), not
            # faster-whisper's 0.0, which reads as faint noise.
            widths = [(0, 0)] * array.ndim
            widths[axis] = (0, target - array.shape[axis])
            return np.pad(array, widths, constant_values=float(array.max()) - 2.0)
        return stock(array, target, axis=axis)

    pad_or_trim.parole_window = True  # type: ignore[attr-defined]
    fw.pad_or_trim = pad_or_trim


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
