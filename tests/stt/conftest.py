"""STT fixtures: the real Whisper base engine loaded once, servers on loopback, spoken audio."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parole.audio.v1 import audio_pb2
from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from services.models.store import ModelStore
from services.runtime.audio import Pcm, chunks, silence
from services.runtime.device import Placement
from services.runtime.server import RunningServer, start_app
from services.stt.app import SttApp, build_engine
from services.stt.config import EngineSettings, SttSettings
from services.stt.engine import Engine, WhisperEngine
from services.stt.turn import SmartTurn, TurnDetector
from services.testkit.speech import piper_joe, slow_espeak
from services.testkit.stt import loopback_settings
from services.testkit.transcripts import normalise

JOE_TEXT = "Could you tell me how long it takes to drive to the airport?"
FRENCH_TEXT = "Bonjour, je voudrais savoir quel temps il fera demain à Paris."
FRENCH_KEY_WORDS = ("bonjour", "voudrais", "temps", "demain", "paris")


@pytest.fixture(scope="session")
def whisper_engine(model_store: ModelStore) -> WhisperEngine:
    """The real Whisper base engine on CPU int8, loaded once for the whole session."""
    settings = loopback_settings()
    return build_engine(EngineSettings(name="base"), settings, Placement("cpu", 0, "int8"), model_store)


@pytest.fixture(scope="session")
def smart_turn(model_store: ModelStore) -> Iterator[SmartTurn]:
    """The real Smart Turn v3.2 end-of-turn model, loaded once for the whole session."""
    turn = SmartTurn(model_store.turn_model())
    turn.load()
    yield turn
    turn.close()


@dataclass
class Served:
    app: SttApp
    running: RunningServer
    channel: grpc.aio.Channel
    stub: stt_pb2_grpc.SttServiceAsyncStub

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.running.port}"


async def serve(settings: SttSettings, engines: Sequence[Engine], turn: TurnDetector | None = None) -> Served:
    """The service on loopback; without ``turn`` it has no end-of-turn model (silence only)."""
    app = SttApp(settings, engines, turn=turn)
    running = await start_app(app, settings.server)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{running.port}")
    return Served(app, running, channel, stt_pb2_grpc.SttServiceStub(channel))


async def shutdown(served: Served) -> None:
    await served.channel.close()
    await served.running.stop(0)


@pytest.fixture(scope="session")
async def stt(whisper_engine: WhisperEngine, smart_turn: SmartTurn) -> AsyncIterator[Served]:
    """The service with the default settings, the real engine and end-of-turn model, on loopback."""
    served = await serve(loopback_settings(), [whisper_engine], smart_turn)
    yield served
    await shutdown(served)
    await whisper_engine.close()


@pytest.fixture(scope="session")
def joe_sentence(model_store: ModelStore) -> Pcm:
    return piper_joe(JOE_TEXT, model_store)


@pytest.fixture(scope="session")
def french_sentence() -> Pcm:
    if shutil.which("espeak-ng") is None:
        pytest.skip("espeak-ng is not installed: run make install")
    return slow_espeak(FRENCH_TEXT, "fr+m3", 120)


@pytest.fixture(scope="session")
def short_phrase(model_store: ModelStore) -> Pcm:
    # Piper's natural voice, not espeak: Whisper reads espeak's robot voice here with too
    # little confidence on some CPUs (AVX2), falls back to sampling, and hears "3 0 0 0 0".
    return piper_joe("Turn on the lights.", model_store)


def config(
    rate: int = 16000, encoding: int = audio_pb2.AUDIO_ENCODING_PCM_S16LE, **kw: object
) -> stt_pb2.RecognitionConfig:
    return stt_pb2.RecognitionConfig(
        audio_format=audio_pb2.AudioFormat(sample_rate_hz=rate, encoding=encoding),  # type: ignore[arg-type]
        **kw,  # type: ignore[arg-type]
    )


def stream_requests(
    cfg: stt_pb2.RecognitionConfig | None, pcm: bytes, rate: int = 16000
) -> list[stt_pb2.StreamingRecognizeRequest]:
    """Config, then ~100 ms chunks of ``pcm``."""
    out = [] if cfg is None else [stt_pb2.StreamingRecognizeRequest(config=cfg)]
    return out + [stt_pb2.StreamingRecognizeRequest(audio=c) for c in chunks(pcm, rate)]


async def collect(
    stub: stt_pb2_grpc.SttServiceAsyncStub, requests: list[stt_pb2.StreamingRecognizeRequest]
) -> list[stt_pb2.StreamingRecognizeResponse]:
    """Sends the requests and reads every response; a failed call raises its AioRpcError.

    Writes go through ``call.write``: when the server ends the call early (bad input), a
    later write fails, and reading then gives the server's real status. An iterator of
    requests would instead surface the client's failed send as INTERNAL.
    """
    call: Any = stub.StreamingRecognize()
    with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
        for r in requests:
            await call.write(r)
        await call.done_writing()
    return [r async for r in call]


async def assert_serving(served: Served, short_phrase: Pcm) -> None:
    """The service still answers: health SERVING and a real recognition succeeds."""
    health: Any = health_pb2_grpc.HealthStub(served.channel)
    reply = await health.Check(health_pb2.HealthCheckRequest(service="parole.stt.v1.SttService"))
    assert reply.status == health_pb2.HealthCheckResponse.SERVING
    result = await served.stub.Recognize(
        stt_pb2.RecognizeRequest(config=config(language="en"), audio=short_phrase.data)
    )
    assert "light" in " ".join(normalise(result.result.transcript))
    assert served.app.queue.pending == 0


def padded(pcm: Pcm, before: float = 0.3, after: float = 0.8) -> bytes:
    return silence(before, pcm.sample_rate) + pcm.data + silence(after, pcm.sample_rate)
