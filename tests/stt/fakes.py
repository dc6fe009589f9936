"""Fault-injecting engines. The default tests run the real Whisper model; these exist only to
make an engine fail, hang or block on demand."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

from services.runtime.audio import FloatAudio
from services.stt.engine import DecodeOptions, Transcript


@dataclass
class FaultyEngine:
    """Fails while ``failing`` is set, else answers ``text``; counts its calls."""

    name: str = "faulty"
    model: str = "fake"
    compute_type: str = "none"
    english_only: bool = False
    failing: bool = True
    hang_seconds: float = 0.0
    text: str = "healed"
    calls: int = 0

    @property
    def device_label(self) -> str:
        return "cpu"

    async def load(self) -> None:
        return None

    async def transcribe(self, audio: FloatAudio, options: DecodeOptions) -> Transcript:
        self.calls += 1
        if self.hang_seconds:
            await asyncio.sleep(self.hang_seconds)
        if self.failing:
            raise RuntimeError("injected engine failure")
        return Transcript(self.text, options.language or "en", 1.0, 0.9, engine=self.name)

    async def close(self) -> None:
        return None


@dataclass
class GatedEngine:
    """Blocks every decode until ``gate`` is set (fills the decode queue on demand)."""

    name: str = "gated"
    model: str = "fake"
    compute_type: str = "none"
    english_only: bool = False
    gate: asyncio.Event = field(default_factory=asyncio.Event)
    started: int = 0

    @property
    def device_label(self) -> str:
        return "cpu"

    async def load(self) -> None:
        return None

    async def transcribe(self, audio: FloatAudio, options: DecodeOptions) -> Transcript:
        self.started += 1
        await self.gate.wait()
        return Transcript("released", "en", 1.0, 0.9, engine=self.name)

    async def close(self) -> None:
        return None
