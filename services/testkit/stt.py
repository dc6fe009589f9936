"""Driving the STT service from a test or a bench: a request stream paced as a microphone's,
and settings for a server on loopback."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

from parole.stt.v1 import stt_pb2
from services.runtime.audio import chunks
from services.stt.config import SttServerSettings, SttSettings


async def paced_requests(
    cfg: stt_pb2.RecognitionConfig, audio: bytes, speech_end: float, marks: dict[str, float]
) -> AsyncIterator[stt_pb2.StreamingRecognizeRequest]:
    """Config, then 16 kHz audio at real-time pace: chunk i is sent once its 100 ms have "been
    spoken". Records in ``marks["speech_end"]`` when the chunk holding ``speech_end`` left,
    and in ``marks["start"]`` when the first chunk did: stream second x is then sent by
    ``start + x``, as a microphone without buffering would."""
    yield stt_pb2.StreamingRecognizeRequest(config=cfg)
    start = marks["start"] = time.perf_counter()
    for i, chunk in enumerate(chunks(audio, 16000)):
        await asyncio.sleep(max(0.0, start + i * 0.1 - time.perf_counter()))
        if "speech_end" not in marks and (i + 1) * 0.1 >= speech_end:
            marks["speech_end"] = time.perf_counter()
        yield stt_pb2.StreamingRecognizeRequest(audio=chunk)


def loopback_settings(**overrides: object) -> SttSettings:
    """Settings for loopback servers: a free port, no metrics endpoint."""
    base = {"server": SttServerSettings(host="127.0.0.1", port=0, metrics_port=None)}
    return SttSettings(**{**base, **overrides})  # type: ignore[arg-type]
