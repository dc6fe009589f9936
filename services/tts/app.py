"""Builds the TTS service from its settings."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.models.store import ModelError, ModelStore
from services.runtime.device import resolve_placement
from services.runtime.errors import NotFound
from services.runtime.logging import get_logger
from services.runtime.resilience import Breakers
from services.tts.config import TtsSettings
from services.tts.engines import Engine, EspeakEngine, PiperEngine
from services.tts.kokoro import KOKORO_PREFIX, KokoroEngine
from services.tts.synthesizer import SERVICE, Synthesizer
from services.tts.text import SplitPolicy
from services.tts.voices import VoiceRegistry

log = get_logger(__name__)


class TtsApp:
    """The TTS service: engines, voice registry, synthesizer and servicer."""

    name = SERVICE

    def __init__(self, settings: TtsSettings, engines: Sequence[Engine] | None = None) -> None:
        self.settings = settings
        if engines is None:
            placement = resolve_placement(settings.device)
            store = ModelStore(settings.model_dir)
            kokoro = settings.kokoro
            engines = [
                PiperEngine(
                    store,
                    placement,
                    settings.device.threads,
                    settings.piper_gain,
                    warm_chars=settings.split.max_chars,
                ),
                *(
                    [
                        KokoroEngine(
                            store,
                            placement,
                            threads=kokoro.threads or settings.device.threads,
                            blends=kokoro.blends,
                            espeak_voice=kokoro.espeak_voice,
                            gain=kokoro.gain,
                            pace=kokoro.pace,
                            warm_chars=settings.split.max_chars,
                            espeak_timeout_seconds=settings.espeak_timeout_seconds,
                        )
                    ]
                    if kokoro.enabled
                    else []
                ),
                EspeakEngine(timeout_seconds=settings.espeak_timeout_seconds),
            ]
        self._kokoro = next((e for e in engines if isinstance(e, KokoroEngine)), None)
        self.registry = VoiceRegistry(engines, settings.chains, settings.default_language)
        split = settings.split
        self.synth = Synthesizer(
            self.registry,
            policy=SplitPolicy(**split.model_dump()),
            workers=settings.workers,
            cache_bytes=settings.cache_bytes,
            breakers=Breakers(SERVICE, settings.breaker_threshold, settings.breaker_ttl_seconds),
            max_text_chars=settings.max_text_chars,
        )

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        from services.tts.servicer import TtsServicer

        tts_pb2_grpc.add_TtsServiceServicer_to_server(
            TtsServicer(self.synth, self.settings.server.max_send_message_bytes), server
        )
        return [tts_pb2.DESCRIPTOR.services_by_name["TtsService"].full_name]

    async def warm_up(self) -> None:
        self._warn_missing_voices()
        if self.settings.preload:
            await self.synth.load()
        log.info("voices ready", voices=len(self.registry.names()), languages=len(self.registry.languages()))

    def _warn_missing_voices(self) -> None:
        """A configured voice that is absent is skipped (its language falls back to the next
        voice, espeak-ng last): say which, where it was looked for and how to get it."""
        present = set(self.registry.names())
        store = ModelStore(self.settings.model_dir)
        for language, names in self.settings.chains.items():
            for name in names:
                if name in present or name.startswith("espeak-ng:"):
                    continue
                if name.startswith(KOKORO_PREFIX):
                    problem = self._kokoro_problem(name)
                    if problem:
                        log.warning(
                            "configured voice unavailable; its language falls back",
                            language=language,
                            voice=name,
                            error=problem,
                        )
                    continue
                try:
                    store.piper_voice(name)
                except ModelError as exc:
                    log.warning(
                        "configured voice unavailable; its language falls back", language=language, error=str(exc)
                    )

    def _kokoro_problem(self, name: str) -> str:
        """Why a configured Kokoro voice cannot speak ("" when it can)."""
        if self._kokoro is None:
            return "the Kokoro engine is off (TTS_KOKORO__ENABLED=false)"
        if self._kokoro.missing is not None:
            return str(self._kokoro.missing)
        try:
            self.registry.get(name)
        except NotFound as exc:
            return str(exc)
        return ""

    async def close(self) -> None:
        self.synth.close()


def build(settings: TtsSettings) -> TtsApp:
    """The app for ``python -m services.tts``."""
    return TtsApp(settings)
