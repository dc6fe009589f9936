"""Wires the STT service from its settings: device placement, the engine chain, breakers,
result cache, decode queue and the servicer."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import grpc

from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from services.models.store import ModelStore
from services.runtime.device import DeviceError, Placement, resolve_placement
from services.runtime.logging import get_logger
from services.runtime.resilience import Breakers, ByteBudgetCache
from services.stt.config import EngineSettings, SttSettings
from services.stt.endpointing import VadModel
from services.stt.engine import Engine, SileroVad, Transcript, WhisperEngine, supported_languages
from services.stt.recognizer import SERVICE, DecodeQueue, Recognizer
from services.stt.servicer import SttServicer
from services.stt.turn import TURN_MODEL_AVAILABLE, SmartTurn, TurnDetector, find_turn_model

log = get_logger(__name__)


def build_engine(spec: EngineSettings, settings: SttSettings, placement: Placement, store: ModelStore) -> WhisperEngine:
    """One Whisper engine, placed and with its model file checked (ModelError names the fix)."""
    if spec.device == "cuda" and placement.device != "cuda":
        raise DeviceError(
            f"engine {spec.name!r} is configured for CUDA but the service runs on {placement.describe()}; "
            "set device.device=cuda (and check the GPU) or give the engine device=cpu"
        )
    device = "cpu" if spec.device == "cpu" else placement.device
    if spec.compute_type != "auto":
        compute = spec.compute_type
    elif device == placement.device:
        compute = placement.compute_type
    else:
        compute = "int8"  # a CPU engine of a GPU service
    return WhisperEngine(
        name=spec.name,
        model_path=store.whisper(spec.model),
        model=spec.model,
        device=device,
        device_index=placement.device_index if device == "cuda" else 0,
        compute_type=compute,
        beam_size=spec.beam_size,
        cpu_threads=settings.device.threads,
        workers=settings.decode_workers,
        temperatures=settings.temperatures,
        english_only=spec.english_only,
        window_padding_seconds=spec.window_padding_seconds,
        window_min_seconds=spec.window_min_seconds,
        pad_with_silence=spec.window_silence_floor,
    )


class SttApp:
    """The STT service as the runtime runs it."""

    name = "stt"

    def __init__(
        self,
        settings: SttSettings,
        engines: Sequence[Engine],
        vad_factory: Callable[[], VadModel] = SileroVad,
        languages: frozenset[str] | None = None,
        turn: TurnDetector | None = None,
        owns_turn: bool = False,
    ) -> None:
        self.settings = settings
        self.engines = list(engines)
        self.turn = turn
        self._owns_turn = owns_turn
        self.breakers = Breakers(SERVICE, settings.breaker_threshold, settings.breaker_ttl_seconds)
        self.queue = DecodeQueue(settings.decode_workers, settings.max_pending_decodes)
        cache: ByteBudgetCache[Transcript] | None = (
            ByteBudgetCache(SERVICE, settings.cache_max_bytes, Transcript.approx_bytes)
            if settings.cache_max_bytes > 0
            else None
        )
        self.recognizer = Recognizer(
            self.engines,
            self.breakers,
            self.queue,
            cache,
            settings.decode_timeout_base_seconds,
            settings.decode_timeout_per_audio_second,
        )
        self.servicer = SttServicer(self.recognizer, settings, vad_factory, languages or supported_languages(), turn)

    @classmethod
    def from_settings(cls, settings: SttSettings) -> SttApp:
        """Resolves the device and every engine's model before anything loads, so a wrong GPU
        or a missing model stops the start at once with the fix."""
        placement = resolve_placement(settings.device)
        store = ModelStore(settings.model_dir)
        log.info("placement", device=placement.describe())
        engines = [build_engine(spec, settings, placement, store) for spec in settings.engines]
        # A missing end-of-turn model is not fatal: streams fall back to silence-only
        # endpointing, and the warning says which file is missing and how to get it.
        turn = settings.streaming.turn
        return cls(settings, engines, turn=find_turn_model(store, turn.model, turn.threads), owns_turn=True)

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        stt_pb2_grpc.add_SttServiceServicer_to_server(self.servicer, server)
        return [stt_pb2.DESCRIPTOR.services_by_name["SttService"].full_name]

    async def warm_up(self) -> None:
        # Every engine loads now: a fallback that cannot load would only fail later, when
        # it is needed most.
        for engine in self.engines:
            await engine.load()
        self.servicer.vad_factory()  # loads the Silero session once, before SERVING
        if isinstance(self.turn, SmartTurn):
            try:
                await asyncio.to_thread(self.turn.load)
            except Exception as exc:  # noqa: BLE001 - a broken model file degrades to silence-only endpointing
                TURN_MODEL_AVAILABLE.set(0)
                log.error(
                    "end-of-turn model failed to load: streams get silence-only endpointing",
                    file=str(self.turn.path),
                    error=f"{type(exc).__name__}: {exc}",
                    fix=f"delete it and run: python -m services.models assemble {self.settings.streaming.turn.model}",
                )
                self.turn = self.servicer.turn = None

    async def close(self) -> None:
        await self.recognizer.close()
        if self._owns_turn and isinstance(self.turn, SmartTurn):
            self.turn.close()
