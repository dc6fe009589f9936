"""What a session sends its client: one ordered stream of ``ConverseResponse`` that every
stage emits into and the Converse response stream drains."""

from __future__ import annotations

import time
from typing import Any

import structlog

from parole.audio.v1 import audio_pb2
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.orchestrator.metrics import STAGE_ERRORS
from services.runtime.streams import Channel

STAGE_NAMES = {pb.STAGE_STT: "stt", pb.STAGE_LLM: "llm", pb.STAGE_TTS: "tts", pb.STAGE_ORCHESTRATOR: "orchestrator"}


def pcm_format(rate: int) -> audio_pb2.AudioFormat:
    return audio_pb2.AudioFormat(sample_rate_hz=rate, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, channels=1)


class Outbox:
    """The session's messages to the client, stamped with the session's clock.

    Unbounded: its producers are synchronous callbacks (an STT event, a released audio
    chunk) that must not wait, what it holds is bounded by the answer in progress, and gRPC's
    own flow control stands between it and a slow client."""

    def __init__(self, log: structlog.stdlib.BoundLogger) -> None:
        self.channel: Channel[pb.ConverseResponse] = Channel()
        self.started = time.monotonic()
        self.log = log

    def emit(self, turn_id: str = "", **event: Any) -> None:
        """Sends one event (a ``ConverseResponse`` oneof field) to the client."""
        if self.channel.closed:
            return  # late news (a gate opening, a cancelled turn's record) after the stream ended
        self.channel.send_nowait(
            pb.ConverseResponse(turn_id=turn_id, session_seconds=time.monotonic() - self.started, **event)
        )

    def stage_error(self, stage: pb.Stage.ValueType, message: str, *, degraded: bool, code: str) -> None:
        """Tells the client that a stage failed or degraded outside any turn (speech
        recognition); a turn's own errors go through its ``TurnOutput``."""
        self.emit(error=self.record_error(stage, message, degraded=degraded, code=code))

    def record_error(self, stage: pb.Stage.ValueType, message: str, *, degraded: bool, code: str) -> pb.StageError:
        """Counts and logs a stage failure; returns the message that tells the client."""
        STAGE_ERRORS.labels(STAGE_NAMES[stage], str(degraded).lower()).inc()
        self.log.warning("stage degraded" if degraded else "stage failed", stage=STAGE_NAMES[stage], reason=message)
        return pb.StageError(stage=stage, message=message, degraded=degraded, code=code)

    def close(self) -> None:
        """The session's last message has been sent: the response stream ends."""
        self.channel.close()
