"""Answer audio without a sound card: kept in memory, written to WAV, played at real-time pace."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from services.runtime.audio import PCM16_WIDTH, resample_pcm16, write_wav


class VirtualSink:
    """A speaker nobody hears: each turn's answer is collected (and written to a WAV file).

    With ``paced`` it takes as long to "play" as the audio lasts, so the playback events the
    client sends, and the microphone gating they drive, behave as with a real speaker. A
    playback stopped midway keeps only what had been "heard".
    """

    def __init__(self, out_dir: Path | None = None, *, paced: bool = True, prefix: str = "reply") -> None:
        self.out_dir = out_dir
        self.paced = paced
        self.prefix = prefix
        self.played: dict[str, bytearray] = {}
        self.rates: dict[str, int] = {}
        self.files = 0

    async def play(self, turn_id: str, pcm: bytes, sample_rate: int) -> None:
        rate = self.rates.setdefault(turn_id, sample_rate)
        if sample_rate != rate:
            pcm = resample_pcm16(pcm, sample_rate, rate)
        heard = self.played.setdefault(turn_id, bytearray())
        if not self.paced:
            heard += pcm
            return
        start = time.monotonic()
        try:
            await asyncio.sleep(len(pcm) / PCM16_WIDTH / rate)
        except asyncio.CancelledError:
            samples = int((time.monotonic() - start) * rate)
            heard += pcm[: samples * PCM16_WIDTH]
            raise
        heard += pcm

    async def finish(self, turn_id: str, stopped: bool) -> Path | None:
        audio = self.played.get(turn_id)
        if self.out_dir is None or not audio:
            return None
        self.files += 1
        self.out_dir.mkdir(parents=True, exist_ok=True)
        path = self.out_dir / f"{self.prefix}-{self.files:02d}.wav"
        write_wav(path, bytes(audio), self.rates[turn_id])
        return path
