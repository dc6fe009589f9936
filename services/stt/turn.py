"""Semantic end of turn: has the speaker finished, or only paused?

Smart Turn v3.2 (pipecat-ai, BSD-2-Clause; a Whisper-tiny encoder with a linear head, int8
ONNX) reads the last 8 s of a turn as a Whisper log-mel spectrogram and answers the
probability that the turn is complete. This module computes those features with numpy, runs
the model off the event loop, and is the only one that imports onnxruntime for it.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
from prometheus_client import Counter, Gauge, Histogram

from services.models.store import ModelError, ModelStore
from services.runtime.audio import SPEECH_RATE, FloatAudio
from services.runtime.logging import get_logger
from services.runtime.onnx import sleep_between_operators

log = get_logger(__name__)

N_FFT = 400
HOP = 160
N_MELS = 80
SECONDS = 8
SAMPLES = SECONDS * SPEECH_RATE
FRAMES = SAMPLES // HOP
"""800 frames: the model's fixed input length."""

TURN_DECISIONS = Counter(
    "parole_stt_turn_decisions_total",
    "How utterances of streaming recognition ended, by endpointing mode and reason: complete (the "
    "model judged the turn finished), max_silence (judged unfinished, but the speaker stayed silent), "
    "silence (silence-only endpointing, or no verdict), max_length, end_of_stream.",
    ["mode", "reason"],
)
TURN_PROBABILITY = Histogram(
    "parole_stt_turn_probability",
    "Probability that the turn is complete, as the end-of-turn model answered at each pause.",
    buckets=(0.05, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 1.0),
)
TURN_SILENCE = Histogram(
    "parole_stt_turn_silence_seconds",
    "Silence from the end of the voice to the end of the utterance, by reason.",
    ["reason"],
    buckets=(0.1, 0.15, 0.2, 0.25, 0.3, 0.4, 0.5, 0.75, 1, 1.5, 2, 3, 5),
)
TURN_MODEL_SECONDS = Histogram(
    "parole_stt_turn_model_seconds",
    "One end-of-turn decision (features and inference): CPU time of its thread, and wall time "
    "from asking to the answer (which includes waiting for a core).",
    ["clock"],
    buckets=(0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.5, 1, 2),
)
TURN_FALLBACKS = Counter(
    "parole_stt_turn_fallbacks_total",
    "Pauses judged by silence alone although semantic endpointing was asked: the model is missing "
    "(model_missing), failed (error) or answered too late (timeout).",
    ["reason"],
)
TURN_OVERRULED = Counter(
    "parole_stt_turn_overruled_total",
    "Pauses the end-of-turn model judged complete whose transcript broke off mid-sentence (a trailing "
    "comma or ellipsis, a dangling article or conjunction): the turn went on listening instead of ending.",
)
TURN_MODEL_AVAILABLE = Gauge(
    "parole_stt_turn_model_available",
    "1 when the end-of-turn model is loaded; 0 when semantic endpointing falls back to silence.",
)


# ----------------------------------------------------------------------------- features


def _hz_to_mel(hz: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Slaney's mel scale: linear below 1 kHz, logarithmic above."""
    mel = 3.0 * hz / 200.0
    log_region = hz >= 1000.0
    mel[log_region] = 15.0 + np.log(hz[log_region] / 1000.0) * 27.0 / np.log(6.4)
    return mel


def _mel_to_hz(mel: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    hz = 200.0 * mel / 3.0
    log_region = mel >= 15.0
    hz[log_region] = 1000.0 * np.exp(np.log(6.4) / 27.0 * (mel[log_region] - 15.0))
    return hz


@cache
def mel_filters() -> npt.NDArray[np.float64]:
    """[80, 201] triangular Slaney filters from 0 Hz to 8 kHz, area-normalised (each
    filter's weights scaled by 2 / its bandwidth), as Whisper's feature extractor builds them."""
    edges = _mel_to_hz(
        np.linspace(_hz_to_mel(np.array([0.0]))[0], _hz_to_mel(np.array([SPEECH_RATE / 2]))[0], N_MELS + 2)
    )
    bins = np.linspace(0, SPEECH_RATE // 2, N_FFT // 2 + 1)
    rising = (bins[None, :] - edges[:-2, None]) / np.diff(edges)[:-1, None]
    falling = (edges[2:, None] - bins[None, :]) / np.diff(edges)[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


@cache
def _hann32() -> npt.NDArray[np.float32]:
    """Periodic Hann window (torch.hann_window's default): the symmetric one of n + 1 points
    without its last."""
    return np.hanning(N_FFT + 1)[:-1].astype(np.float32)


@cache
def _mel_filters32() -> npt.NDArray[np.float32]:
    return mel_filters().astype(np.float32)


def features(audio: FloatAudio) -> npt.NDArray[np.float32]:
    """The model's input for a turn: [80, 800] log-mel of its last 8 s.

    What the model was trained on (pipecat's smart-turn inference and transformers'
    WhisperFeatureExtractor(chunk_length=8) with do_normalize): the audio is cut to its last
    8 s or zero-padded on the left to 8 s; that whole buffer, padding included, is normalised
    to zero mean and unit variance (the waveform, not the spectrogram); then a centred STFT
    (reflect padding, n_fft 400, hop 160, periodic Hann) gives 801 power frames, the last is
    dropped, 80 Slaney mel filters, log10 floored at 1e-10, clamped to 8 below the maximum,
    and scaled by (x + 4) / 4.

    The STFT runs in float32 (as faster-whisper's extractor does): half the time of the
    reference's float64, and within 1e-5 of its values.
    """
    x = np.asarray(audio, dtype=np.float32)[-SAMPLES:]
    if x.size < SAMPLES:
        x = np.concatenate([np.zeros(SAMPLES - x.size, dtype=np.float32), x])
    x = (x - x.mean()) / np.sqrt(x.var() + np.float32(1e-7))
    padded = np.pad(x, N_FFT // 2, mode="reflect")
    frames = np.lib.stride_tricks.sliding_window_view(padded, N_FFT)[::HOP]
    spectrum = np.fft.rfft(frames * _hann32(), axis=-1)  # [801, 201]
    power = spectrum.real**2 + spectrum.imag**2
    mel = _mel_filters32() @ power[:-1].T  # [80, 800]
    log_mel = np.log10(np.maximum(mel, np.float32(1e-10)))
    log_mel = np.maximum(log_mel, log_mel.max() - 8.0)
    out: npt.NDArray[np.float32] = ((log_mel + 4.0) / 4.0).astype(np.float32)
    return out


# ----------------------------------------------------------------------------- model


@dataclass(frozen=True)
class TurnVerdict:
    """The model's answer for one pause."""

    probability: float
    """Probability that the turn is complete, 0..1."""
    cpu_seconds: float
    """CPU time of the deciding thread (features and inference)."""
    wall_seconds: float
    """From asking to the answer, queueing for a core included."""


class TurnDetector(Protocol):
    """Judges whether a turn is complete. ``decide`` must not block the event loop."""

    name: str

    async def decide(self, audio: FloatAudio) -> TurnVerdict:
        """Probability that the speaker has finished, for 16 kHz audio ending now."""
        ...


class SmartTurn:
    """Smart Turn v3.2 on onnxruntime, shared by every stream of the process.

    Decisions run on their own threads, never on the decode workers: a decision is ~0.1 s of
    CPU and someone is waiting on it, so it must not queue behind a Whisper decode. One
    ONNX session serves them all (``InferenceSession.run`` is thread-safe).
    """

    def __init__(self, path: Path, threads: int = 1, workers: int = 2) -> None:
        self.path = path
        self.name = path.stem
        self.threads = threads
        self.workers = workers
        self._session: Any = None
        self._executor: ThreadPoolExecutor | None = None

    def load(self) -> None:
        """Opens the ONNX session and warms it (the first run allocates and plans)."""
        if self._session is not None:
            return
        import onnxruntime as ort

        options = ort.SessionOptions()
        options.intra_op_num_threads = self.threads
        options.inter_op_num_threads = 1
        sleep_between_operators(options)  # the STT's decodes and the other services share the cores
        options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        self._session = ort.InferenceSession(str(self.path), sess_options=options, providers=["CPUExecutionProvider"])
        self._executor = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="stt-turn")
        t = np.arange(SPEECH_RATE, dtype=np.float32) / SPEECH_RATE
        self.probability((0.1 * np.sin(2 * np.pi * 220 * t)).astype(np.float32))

    def probability(self, audio: FloatAudio) -> float:
        """Synchronous: the model's probability that ``audio`` ends a complete turn."""
        if self._session is None:
            raise RuntimeError(f"end-of-turn model {self.name} is not loaded")
        (out,) = self._session.run(["logits"], {"input_features": features(audio)[None]})
        # The exported graph ends in a sigmoid: its "logits" are already a probability.
        return float(np.asarray(out).reshape(-1)[0])

    def _timed(self, audio: FloatAudio) -> tuple[float, float]:
        started = time.thread_time()
        p = self.probability(audio)
        return p, time.thread_time() - started

    async def decide(self, audio: FloatAudio) -> TurnVerdict:
        if self._executor is None:
            raise RuntimeError(f"end-of-turn model {self.name} is not loaded")
        started = time.perf_counter()
        loop = asyncio.get_running_loop()
        p, cpu = await loop.run_in_executor(self._executor, self._timed, audio)
        wall = time.perf_counter() - started
        TURN_MODEL_SECONDS.labels("cpu").observe(cpu)
        TURN_MODEL_SECONDS.labels("wall").observe(wall)
        TURN_PROBABILITY.observe(p)
        return TurnVerdict(p, cpu, wall)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
        self._session = None


def find_turn_model(store: ModelStore, model: str, threads: int = 1) -> SmartTurn | None:
    """The end-of-turn model (not loaded yet), or None when its file is missing: then a warning
    names the file and the command that provides it, the availability gauge reads 0, and
    semantic endpointing falls back to silence alone."""
    try:
        path = store.turn_model(model)
    except ModelError as exc:
        TURN_MODEL_AVAILABLE.set(0)
        log.warning(
            "end-of-turn model missing: streams asking for semantic endpointing get silence-only endpointing",
            file=str(exc.path) if exc.path is not None else model,
            fix=str(exc),
        )
        return None
    TURN_MODEL_AVAILABLE.set(1)
    return SmartTurn(path, threads)
