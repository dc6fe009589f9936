"""What a Converse session is made of, as the client sees it.

The options it asks for (``SessionOptions``, the ``SessionConfig`` sent first), the turns it
gets back (``Turn``: what was heard, the answer, its audio and timings), how it fails
(``ConversationError``) and the audio ports plugged into it from outside (``AudioSink``,
``AudioSource``). ``client.conversation.Conversation`` runs the session over them.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Protocol

from parole.audio.v1 import audio_pb2
from parole.orchestrator.v1 import orchestrator_pb2
from services.runtime.audio import SPEECH_RATE

CHUNK_MS = 100
"""Streaming unit: 100 ms of microphone audio per message (3,200 bytes at 16 kHz)."""


class ConversationError(RuntimeError):
    """The session failed (server unreachable, refused, or the stream broke)."""


class AudioSink(Protocol):
    """Where answer audio is played (a speaker, a WAV file, nowhere)."""

    async def play(self, turn_id: str, pcm: bytes, sample_rate: int) -> None:
        """Plays a chunk and returns once it has been heard (real-time pace for a speaker).

        Cancelling it must stop the sound promptly: that is how stop_playback is honoured.
        """
        ...

    async def finish(self, turn_id: str, stopped: bool) -> Path | None:
        """The turn's audio is over (played out, or ``stopped``); returns a file if it wrote one."""
        ...


class AudioSource(Protocol):
    """Live microphone audio: PCM16 mono at ``sample_rate``, about 100 ms per chunk."""

    sample_rate: int

    def frames(self) -> AsyncIterator[bytes]:
        """Chunks as the microphone delivers them (so already at real-time pace)."""
        ...


@dataclass(frozen=True)
class SessionOptions:
    """What the client asks of the session (SessionConfig); zero values: server defaults."""

    language: str = ""
    voice: str = ""
    persona: str = ""
    session_id: str = ""
    barge_in: bool = False
    output_sample_rate_hz: int = 0
    feedback_tail_ms: int | None = None
    end_of_speech_silence_ms: int = 0
    interim_results: bool = False

    def config(self, input_rate: int = SPEECH_RATE) -> orchestrator_pb2.SessionConfig:
        cfg = orchestrator_pb2.SessionConfig(
            session_id=self.session_id,
            language=self.language,
            voice=self.voice,
            persona=self.persona,
            input_format=audio_pb2.AudioFormat(
                sample_rate_hz=input_rate, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, channels=1
            ),
            output_sample_rate_hz=self.output_sample_rate_hz,
            barge_in=self.barge_in,
            end_of_speech_silence_ms=self.end_of_speech_silence_ms,
            interim_results=self.interim_results,
        )
        if self.feedback_tail_ms is not None:
            cfg.feedback_tail_ms = self.feedback_tail_ms
        return cfg


@dataclass
class Turn:
    """One exchange as the client saw it."""

    turn_id: str
    index: int
    started_at: datetime
    heard: str = ""
    heard_language: str = ""
    heard_confidence: float = 0.0
    reply: str = ""
    audio_chunks: int = 0
    audio_seconds: float = 0.0
    reply_rate: int = 0
    latency: orchestrator_pb2.TurnLatency | None = None
    errors: list[orchestrator_pb2.StageError] = field(default_factory=list)
    stopped: str = ""
    """Why playback was stopped by the server ("barge_in", "interrupt"); empty if not."""
    reply_wav: Path | None = None
    input: str = ""
    """What the client sent: a WAV path, the typed text, or "microphone"."""
    finished_at: datetime | None = None
    first_audio_received: float | None = None
    """Monotonic time the first answer audio reached the client."""
    input_sent: float | None = None
    """Monotonic time the client finished sending the question (last speech chunk or the text)."""
    playback_started: float | None = None
    playback_finished: float | None = None

    @property
    def failed(self) -> bool:
        """The turn was lost (a stage failed without a degraded fallback)."""
        return any(not e.degraded for e in self.errors)

    @property
    def client_first_audio_seconds(self) -> float | None:
        """Question fully sent → first answer audio received, measured at the client.

        For spoken turns it includes the server's end-of-speech silence wait, which the
        server's own TurnLatency (measured from detected end of speech) does not.
        """
        if self.first_audio_received is None or self.input_sent is None:
            return None
        return self.first_audio_received - self.input_sent
