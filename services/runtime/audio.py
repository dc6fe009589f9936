"""Audio helpers shared by the services and the client: PCM16, WAV and resampling."""

from __future__ import annotations

import io
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import soxr

from services.runtime.errors import InvalidArgument

PCM16_WIDTH = 2
SPEECH_RATE = 16000
"""Sample rate the speech models work at."""
INPUT_RATES = (8000, 16000, 22050, 44100, 48000)
"""Input sample rates accepted (and resampled to SPEECH_RATE)."""

FloatAudio = npt.NDArray[np.float32]


@dataclass(frozen=True)
class Pcm:
    """Mono PCM16 audio and its rate."""

    data: bytes
    sample_rate: int

    @property
    def duration(self) -> float:
        return len(self.data) / PCM16_WIDTH / self.sample_rate


def pcm16_to_float(data: bytes) -> FloatAudio:
    """PCM16 little-endian bytes to float32 in [-1, 1)."""
    if len(data) % PCM16_WIDTH:
        raise InvalidArgument(
            f"PCM16 audio must have an even number of bytes (whole 16-bit samples); got {len(data)}",
            fields={"audio": "odd byte count"},
        )
    return np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0


def float_to_pcm16(audio: FloatAudio) -> bytes:
    """float32 in [-1, 1] to PCM16 little-endian bytes (clipped)."""
    return (np.clip(audio, -1.0, 32767 / 32768) * 32768.0).astype("<i2").tobytes()


def resample(audio: FloatAudio, from_rate: int, to_rate: int) -> FloatAudio:
    """High-quality resampling (soxr); a no-op when the rates match."""
    if from_rate == to_rate or audio.size == 0:
        return audio
    return np.asarray(soxr.resample(audio, from_rate, to_rate), dtype=np.float32)


def resample_pcm16(data: bytes, from_rate: int, to_rate: int) -> bytes:
    """Resamples PCM16 bytes."""
    if from_rate == to_rate:
        return data
    return float_to_pcm16(resample(pcm16_to_float(data), from_rate, to_rate))


def check_input_rate(rate: int, field: str = "audio_format.sample_rate_hz") -> int:
    """The rate itself if speech input can use it (0 means 16 kHz), else INVALID_ARGUMENT."""
    rate = rate or SPEECH_RATE
    if rate not in INPUT_RATES:
        raise InvalidArgument(
            f"sample rate {rate} Hz is not supported; use one of {', '.join(map(str, INPUT_RATES))} Hz",
            fields={field: f"unsupported sample rate {rate}"},
        )
    return rate


def read_wav_bytes(blob: bytes) -> Pcm:
    """Parses a PCM16 WAV file (mono, or stereo mixed down)."""
    try:
        with wave.open(io.BytesIO(blob), "rb") as w:
            width, channels, rate = w.getsampwidth(), w.getnchannels(), w.getframerate()
            frames = w.readframes(w.getnframes())
    except (wave.Error, EOFError) as exc:
        raise InvalidArgument(f"audio is not a readable WAV file: {exc}", fields={"audio": "bad WAV"}) from exc
    if width != PCM16_WIDTH:
        raise InvalidArgument(f"WAV must be 16-bit PCM; got {8 * width}-bit", fields={"audio": "sample width"})
    if channels > 1:
        samples = np.frombuffer(frames, dtype="<i2").reshape(-1, channels).mean(axis=1)
        frames = samples.astype("<i2").tobytes()
    return Pcm(frames, rate)


def read_wav(path: Path | str) -> Pcm:
    """Reads a PCM16 WAV file."""
    return read_wav_bytes(Path(path).read_bytes())


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """Wraps mono PCM16 in a WAV container."""
    buf = io.BytesIO()
    with wave.open(buf, "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(PCM16_WIDTH)
        w.setframerate(sample_rate)
        w.writeframes(pcm)
    return buf.getvalue()


def write_wav(path: Path | str, pcm: bytes, sample_rate: int) -> None:
    """Writes mono PCM16 to a WAV file."""
    Path(path).write_bytes(wav_bytes(pcm, sample_rate))


def chunks(pcm: bytes, sample_rate: int, chunk_ms: int = 100) -> list[bytes]:
    """Splits PCM16 into chunks of ``chunk_ms`` (the streaming unit: 3,200 bytes at 16 kHz)."""
    size = max(PCM16_WIDTH, sample_rate * chunk_ms // 1000 * PCM16_WIDTH)
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


def silence(seconds: float, sample_rate: int = SPEECH_RATE) -> bytes:
    """PCM16 digital silence."""
    return b"\x00\x00" * int(seconds * sample_rate)
