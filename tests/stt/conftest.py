"""STT fixtures: the real Whisper base engine loaded once, servers on loopback, spoken audio."""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
import time
import unicodedata
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from parole.audio.v1 import audio_pb2
from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from services.models.store import ModelStore
from services.runtime.audio import Pcm, chunks, read_wav_bytes, resample_pcm16, silence
from services.runtime.device import Placement
from services.runtime.server import RunningServer, start_app
from services.stt.app import SttApp, build_engine
from services.stt.config import EngineSettings, SttServerSettings, SttSettings
from services.stt.engine import Engine, WhisperEngine
from services.stt.turn import SmartTurn, TurnDetector
from tests.speech import espeak, piper_joe

JOE_TEXT = "Could you tell me how long it takes to drive to the airport?"
FRENCH_TEXT = "Bonjour, je voudrais savoir quel temps il fera demain à Paris."
FRENCH_KEY_WORDS = ("bonjour", "voudrais", "temps", "demain", "paris")


def normalise(text: str) -> list[str]:
    """Lowercase words without accents or punctuation, for comparing transcripts."""
    text = unicodedata.normalize("NFKD", text.lower())
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9' ]+", " ", text).replace("'", "").split()


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


def word_error_rate(reference: str, hypothesis: str) -> float:
    ref, hyp = normalise(reference), normalise(hypothesis)
    row = list(range(len(hyp) + 1))
    for i, r in enumerate(ref, 1):
        prev, row[0] = row[0], i
        for j, h in enumerate(hyp, 1):
            prev, row[j] = row[j], min(row[j] + 1, row[j - 1] + 1, prev + (r != h))
    return row[-1] / max(1, len(ref))


def loopback_settings(**overrides: object) -> SttSettings:
    """Settings for loopback servers: a free port, no metrics endpoint."""
    base = {"server": SttServerSettings(host="127.0.0.1", port=0, metrics_port=None)}
    return SttSettings(**{**base, **overrides})  # type: ignore[arg-type]


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


def slow_espeak(text: str, voice: str, words_per_minute: int) -> Pcm:
    """espeak-ng at a chosen pace. tests.speech.espeak speaks at 150 wpm, where Whisper base
    garbles robotic French ("demain à Paris" → "de ma paille"); at 120 wpm with a male
    variant it hears every word, which is closer to how a person talks to an assistant."""
    exe = shutil.which("espeak-ng")
    if exe is None:
        pytest.skip("espeak-ng is not installed: run make install")
    wav = subprocess.run(
        [exe, "-v", voice, "-s", str(words_per_minute), "--stdout", text], capture_output=True, check=True
    ).stdout
    pcm = read_wav_bytes(wav)
    return Pcm(resample_pcm16(pcm.data, pcm.sample_rate, 16000), 16000)


@pytest.fixture(scope="session")
def french_sentence() -> Pcm:
    return slow_espeak(FRENCH_TEXT, "fr+m3", 120)


@pytest.fixture(scope="session")
def short_phrase() -> Pcm:
    return espeak("Turn on the lights.", "en")


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
