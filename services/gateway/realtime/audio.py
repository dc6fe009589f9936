"""Audio conversion between the Realtime client (PCM16 at 24 kHz, base64 in JSON events) and
the fleet (16 kHz in, the TTS's rate out), and the Converse client's stand-in audio sink.
Separate from the session so the sample arithmetic (rates, odd bytes, pieces) is in one place.
"""

from __future__ import annotations

import asyncio

import numpy as np
import soxr

from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.gateway.realtime.protocol import DELTA_MS, RATE
from services.runtime.audio import PCM16_WIDTH, SPEECH_RATE, chunks, resample_pcm16


def duration_ms(pcm: bytes) -> float:
    """How long 24 kHz PCM16 lasts, in ms."""
    return len(pcm) / PCM16_WIDTH / RATE * 1000


class InputAudio:
    """The client's appended audio, resampled from 24 kHz to the fleet's 16 kHz as it comes."""

    def __init__(self) -> None:
        self._resampler = soxr.ResampleStream(RATE, SPEECH_RATE, 1, dtype="int16")
        self._carry = b""  # an odd byte held back between appends would split a sample

    def whole_samples(self, raw: bytes) -> bytes:
        """``raw`` after the byte the last append held back, cut to whole samples: an odd byte
        left over waits for the next append."""
        raw = self._carry + raw
        usable = len(raw) - len(raw) % PCM16_WIDTH
        raw, self._carry = raw[:usable], raw[usable:]
        return raw

    def resample(self, raw: bytes) -> bytes:
        """Whole 24 kHz samples as 16 kHz PCM16 (the resampler keeps its state across calls)."""
        pcm: bytes = self._resampler.resample_chunk(np.frombuffer(raw, dtype="<i2")).astype("<i2").tobytes()
        return pcm


def answer_pieces(chunk: pb.ReplyAudio) -> list[bytes]:
    """An answer's audio chunk at 24 kHz, in pieces of ``DELTA_MS`` for the delta events."""
    rate = chunk.format.sample_rate_hz or RATE
    pcm = chunk.audio if rate == RATE else resample_pcm16(chunk.audio, rate, RATE)
    return chunks(pcm, RATE, DELTA_MS)


class _PlaybackClock:
    """The Converse client's audio sink. The Realtime client plays the answer itself, so this
    only takes as long as the audio lasts: the playback reports the orchestrator gets (and the
    microphone gate and barge-in window they drive) follow the client's likely playback."""

    async def play(self, turn_id: str, pcm: bytes, sample_rate: int) -> None:
        await asyncio.sleep(len(pcm) / PCM16_WIDTH / max(sample_rate, 1))

    async def finish(self, turn_id: str, stopped: bool) -> None:
        return None
