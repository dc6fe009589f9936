"""Voice discovery and chains, and the fallback path: a failing engine (the only fake here,
for fault injection) opens its breaker and espeak-ng answers instead."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import pytest
from prometheus_client import REGISTRY

from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.models.store import ModelStore
from services.runtime.device import Placement
from services.runtime.errors import NotFound
from services.runtime.server import start_app
from services.tts.app import TtsApp
from services.tts.engines import Audio, EngineError, EspeakEngine, PiperEngine, SynthOptions, VoiceSpec
from services.tts.voices import VoiceRegistry
from tests.tts.conftest import add_piper_voice, tts_settings

CPU = Placement("cpu", 0, "int8")
FRENCH = {"code": "fr_FR", "family": "fr", "region": "FR"}


class FailingEngine:
    """A neural engine whose every call fails (a corrupt model, a crashed runtime)."""

    name = "piper"

    def __init__(self, voice: str, language: str) -> None:
        self.spec = VoiceSpec(voice, language, language, 22050, "piper", "high", 1, f"piper:{voice}")
        self.calls = 0
        self.failing = True

    def voices(self) -> list[VoiceSpec]:
        return [self.spec]

    def load(self, voice: str) -> None:
        pass

    def synthesize(self, voice: str, text: str, options: SynthOptions) -> Audio:
        self.calls += 1
        if self.failing:
            raise EngineError("onnxruntime: simulated failure")
        return Audio(b"\x10\x00" * 22050, 22050)  # healed: one second of (quiet) audio


@pytest.fixture(scope="module")
def espeak() -> EspeakEngine:
    return EspeakEngine()


def test_french_chain_prefers_siwis_then_other_piper_voices_then_espeak(
    model_store: ModelStore, tmp_path: Path, espeak: EspeakEngine
) -> None:
    chains = {"fr": ["fr_FR-siwis-medium", "espeak-ng:fr"]}
    add_piper_voice(model_store, tmp_path, "fr_FR-other-low", FRENCH | {"family": "fr"})
    registry = VoiceRegistry([PiperEngine(ModelStore(tmp_path), CPU), espeak], chains)
    assert [v.name for v in registry.chain("fr")] == ["fr_FR-other-low", "espeak-ng:fr"]
    # the production voice's files arrive: it leads the chain, no code change
    add_piper_voice(model_store, tmp_path, "fr_FR-siwis-medium", FRENCH | {"family": "fr"})
    registry = VoiceRegistry([PiperEngine(ModelStore(tmp_path), CPU), espeak], chains)
    assert [v.name for v in registry.chain("fr")] == ["fr_FR-siwis-medium", "fr_FR-other-low", "espeak-ng:fr"]
    siwis = registry.get("fr_FR-siwis-medium").spec
    assert (siwis.language, siwis.locale, siwis.quality, siwis.engine) == ("fr", "fr_FR", "medium", "piper")


def test_without_piper_voices_french_is_espeak(tmp_path: Path, espeak: EspeakEngine) -> None:
    registry = VoiceRegistry([PiperEngine(ModelStore(tmp_path), CPU), espeak], {"fr": ["fr_FR-siwis-medium"]})
    assert [v.name for v in registry.chain("fr")] == ["espeak-ng:fr"]
    assert [v.name for v in registry.chain_for("", "")] == ["espeak-ng:fr"]  # default language
    assert [v.name for v in registry.chain_for("espeak-ng:de", "")] == ["espeak-ng:de"]


def test_voice_files_without_their_json_or_with_bad_names_are_ignored(model_store: ModelStore, tmp_path: Path) -> None:
    folder = tmp_path / "piper"
    folder.mkdir()
    (folder / "en_US-half-medium.onnx").write_bytes(b"no json beside it")
    (folder / "en_US-bad-medium.onnx").write_bytes(b"x")
    (folder / "en_US-bad-medium.onnx.json").write_text("{not json")
    engine = PiperEngine(ModelStore(tmp_path), CPU)
    assert engine.voices() == []
    registry = VoiceRegistry([engine], {})
    with pytest.raises(NotFound, match="unknown voice"):
        registry.chain_for("../piper/en_US-half-medium", "en")


@pytest.fixture
async def faulty(
    request: pytest.FixtureRequest,
) -> AsyncIterator[tuple[tts_pb2_grpc.TtsServiceAsyncStub, FailingEngine, TtsApp]]:
    broken = FailingEngine("en_US-broken-high", "en")
    ttl = getattr(request, "param", 60.0)
    settings = tts_settings(
        Path("/nonexistent"),
        chains={"en": ["en_US-broken-high", "espeak-ng:en-us"]},
        breaker_threshold=2,
        breaker_ttl_seconds=ttl,
    )
    app = TtsApp(settings, engines=[broken, EspeakEngine()])
    running = await start_app(app, settings.server)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
        stub: tts_pb2_grpc.TtsServiceAsyncStub = tts_pb2_grpc.TtsServiceStub(channel)  # type: ignore[assignment]
        yield stub, broken, app
    await running.stop(0)
    await app.close()


async def test_failing_engine_falls_back_then_its_breaker_opens(
    faulty: tuple[tts_pb2_grpc.TtsServiceAsyncStub, FailingEngine, TtsApp],
) -> None:
    stub, broken, _ = faulty
    config = tts_pb2.SynthesisConfig(language="en")
    labels = {"service": "tts", "engine": "piper:en_US-broken-high"}
    before = REGISTRY.get_sample_value("parole_fallbacks_total", labels) or 0.0
    for i in range(2):
        response = await stub.Synthesize(tts_pb2.SynthesizeRequest(text=f"Fallback number {i + 1}.", config=config))
        assert (response.audio.voice, response.audio.engine) == ("espeak-ng:en-us", "espeak-ng")
        assert response.audio.duration_seconds > 0.5
    assert broken.calls == 2
    # each piece passed on is counted once, with every service's fallbacks
    assert REGISTRY.get_sample_value("parole_fallbacks_total", labels) == before + 2
    assert REGISTRY.get_sample_value("parole_tts_fallbacks_total", {"voice": "en_US-broken-high"}) is None
    voices = await stub.ListVoices(tts_pb2.ListVoicesRequest(language="en"))
    states = {v.name: v.breaker_state for v in voices.voices}
    assert states["en_US-broken-high"] == "open"
    assert states["espeak-ng:en-us"] == "closed"
    # open: the broken engine is not even tried; espeak-ng answers at once
    response = await stub.Synthesize(tts_pb2.SynthesizeRequest(text="Fallback number three.", config=config))
    assert response.audio.voice == "espeak-ng:en-us"
    assert broken.calls == 2


async def test_every_voice_failing_is_unavailable(
    faulty: tuple[tts_pb2_grpc.TtsServiceAsyncStub, FailingEngine, TtsApp],
) -> None:
    stub, broken, _ = faulty
    # naming the broken voice with a language no other voice speaks leaves no fallback
    config = tts_pb2.SynthesisConfig(voice="en_US-broken-high", language="zz")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await stub.Synthesize(tts_pb2.SynthesizeRequest(text="Nobody can say this.", config=config))
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE
    assert "en_US-broken-high" in (info.value.details() or "")
    assert broken.calls == 1
    response = await stub.ListVoices(tts_pb2.ListVoicesRequest(language="en"))
    assert len(response.voices) > 1  # still serving


@pytest.mark.parametrize("faulty", [1.0], indirect=True)
async def test_breaker_probes_after_its_ttl_and_closes_when_the_engine_heals(
    faulty: tuple[tts_pb2_grpc.TtsServiceAsyncStub, FailingEngine, TtsApp],
) -> None:
    stub, broken, app = faulty
    config = tts_pb2.SynthesisConfig(language="en")
    for i in range(2):
        await stub.Synthesize(tts_pb2.SynthesizeRequest(text=f"Open it {i}.", config=config))
    assert await app.synth.breakers.state("piper:en_US-broken-high") == "open"
    broken.failing = False
    # Half-open once its 1 s TTL has passed: polled, as a loaded machine may take longer.
    deadline = time.monotonic() + 30
    while await app.synth.breakers.state("piper:en_US-broken-high") != "half-open":
        assert time.monotonic() < deadline, "the breaker never turned half-open"
        await asyncio.sleep(0.05)
    response = await stub.Synthesize(tts_pb2.SynthesizeRequest(text="Probe call.", config=config))
    assert response.audio.voice == "en_US-broken-high"  # the probe went through and worked
    assert await app.synth.breakers.state("piper:en_US-broken-high") == "closed"


async def test_whole_audio_larger_than_a_message_is_resource_exhausted() -> None:
    settings = tts_settings(Path("/nonexistent"))
    settings.server.max_send_message_bytes = 192 * 1024  # ~4.4 s at 22 kHz: one sentence fits, three do not
    app = TtsApp(settings, engines=[EspeakEngine()])
    running = await start_app(app, settings.server)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{running.port}") as channel:
            stub: tts_pb2_grpc.TtsServiceAsyncStub = tts_pb2_grpc.TtsServiceStub(channel)  # type: ignore[assignment]
            config = tts_pb2.SynthesisConfig(language="fr-FR")
            text = "Une phrase assez longue pour dépasser la limite. " * 3
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await stub.Synthesize(tts_pb2.SynthesizeRequest(text=text, config=config))
            assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
            assert "SynthesizeStream" in (info.value.details() or "")
            # the same text streamed comes in pieces that each fit
            pieces = [
                r.audio async for r in stub.SynthesizeStream(tts_pb2.SynthesizeStreamRequest(text=text, config=config))
            ]
            assert len(pieces) == 3 and all(p.voice == "espeak-ng:fr" for p in pieces)
    finally:
        await running.stop(0)
        await app.close()
