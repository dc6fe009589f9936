"""What the fleet offers (STT engines, LLM backends, TTS voices), asked of the services and
kept for a short while, and the translation of OpenAI's model and voice names into ours."""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.gateway.config import Defaults
from services.gateway.errors import bad_request, from_grpc

LANGUAGE = re.compile(r"^[a-z]{2}$")


@dataclass
class _Cached:
    value: Any = None
    at: float = -1e9
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


@dataclass(frozen=True)
class VoiceChoice:
    """A voice request in the TTS service's terms: a voice name, or a language (its default)."""

    voice: str
    language: str


class Catalog:
    """Engines, backends and voices of the fleet, refreshed at most every ``ttl`` seconds:
    model and voice names are checked on every call, and asking the services each time would
    add a round trip to every request."""

    def __init__(
        self,
        stt: stt_pb2_grpc.SttServiceAsyncStub,
        llm: llm_pb2_grpc.LlmServiceAsyncStub,
        tts: tts_pb2_grpc.TtsServiceAsyncStub,
        defaults: Defaults,
        *,
        ttl: float = 30.0,
        timeout: float = 5.0,
    ) -> None:
        self.stt, self.llm, self.tts = stt, llm, tts
        self.defaults = defaults
        self.ttl = ttl
        self.timeout = timeout
        self._engines, self._models, self._voices = _Cached(), _Cached(), _Cached()

    async def _get(self, slot: _Cached, fetch: Callable[[], Awaitable[Any]], service: str) -> Any:
        if time.monotonic() - slot.at < self.ttl:
            return slot.value
        async with slot.lock:
            if time.monotonic() - slot.at < self.ttl:
                return slot.value
            try:
                slot.value = await fetch()
            except grpc.aio.AioRpcError as err:
                if slot.value is not None:
                    return slot.value  # stale beats nothing while the service restarts
                raise from_grpc(err, service) from err
            slot.at = time.monotonic()
            return slot.value

    async def engines(self) -> list[stt_pb2.EngineInfo]:
        async def fetch() -> list[stt_pb2.EngineInfo]:
            reply = await self.stt.ListEngines(stt_pb2.ListEnginesRequest(), timeout=self.timeout)
            return list(reply.engines)

        return await self._get(self._engines, fetch, "stt")  # type: ignore[no-any-return]

    async def models(self) -> list[llm_pb2.ModelInfo]:
        async def fetch() -> list[llm_pb2.ModelInfo]:
            reply = await self.llm.ListModels(llm_pb2.ListModelsRequest(), timeout=self.timeout)
            return list(reply.models)

        return await self._get(self._models, fetch, "llm")  # type: ignore[no-any-return]

    async def voices(self) -> list[tts_pb2.VoiceInfo]:
        async def fetch() -> list[tts_pb2.VoiceInfo]:
            reply = await self.tts.ListVoices(tts_pb2.ListVoicesRequest(), timeout=self.timeout)
            return list(reply.voices)

        return await self._get(self._voices, fetch, "tts")  # type: ignore[no-any-return]

    # ------------------------------------------------------------------ name translation
    async def stt_hint(self, model: str) -> str:
        """The STT engine a ``model`` names (engine name or its model, e.g. "whisper-base"), or
        "" for the service's own chain: OpenAI names such as whisper-1 mean "your best"."""
        if not model:
            return ""
        for engine in await self.engines():
            if model in (engine.name, engine.model):
                return engine.name
        return ""

    async def llm_backend(self, model: str) -> str:
        """The LLM backend a ``model`` names (backend or model name), or "" for the chain."""
        if not model:
            return ""
        for info in await self.models():
            if model in (info.backend, info.model):
                return info.backend
        return ""

    async def voice(self, name: str, *, language: str = "") -> VoiceChoice:
        """A voice request: one of our voices, an alias (OpenAI's names), or a language code."""
        names = {v.name for v in await self.voices()}
        if name in names:
            return VoiceChoice(name, "")
        target = self.defaults.voice_aliases.get(name, name) if name else ""
        if target in names:
            return VoiceChoice(target, "")
        if not target:
            return VoiceChoice("", language or self.defaults.speech_language)
        if LANGUAGE.match(target):
            return VoiceChoice("", target)
        raise bad_request(
            f"unknown voice {name!r}; use one of {', '.join(sorted(names))}, a language code such as 'en', "
            "or an OpenAI voice name (GET /v1/models lists the voices)",
            param="voice",
            code="unknown_voice",
        )
