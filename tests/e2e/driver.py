"""Drives one Converse stream the way a client would, with full control over timing: the
client's own ``ConverseStream``, opened at once and every event recorded."""

from __future__ import annotations

from client.converse import ConverseStream, Predicate, final_transcript, is_kind, last_audio
from parole.audio.v1 import audio_pb2
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from parole.orchestrator.v1 import orchestrator_pb2_grpc

__all__ = ["Predicate", "Session", "config", "final_transcript", "is_kind", "last_audio"]


class Session(ConverseStream):
    """A conversation under test: send audio/text/events, wait for what comes back."""

    def __init__(self, stub: orchestrator_pb2_grpc.OrchestratorServiceAsyncStub, config: pb.SessionConfig) -> None:
        super().__init__(stub, config)
        self.open()

    async def close(self, timeout: float = 120.0) -> bool:
        """Half-close and wait for the server to end the stream; it must within ``timeout``."""
        if not await super().close(timeout):
            raise TimeoutError(f"the server did not end the stream within {timeout:.0f} s")
        return True


def config(**kw: object) -> pb.SessionConfig:
    base: dict[str, object] = {
        "language": "en",
        "input_format": audio_pb2.AudioFormat(sample_rate_hz=16000, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE),
    }
    base.update(kw)
    return pb.SessionConfig(**base)  # type: ignore[arg-type]
