"""A real fleet with the gateway in front, in this process: STT (Whisper base), LLM (SmolLM2
135M, the small model: these tests check the translation, not the answers' wisdom), TTS (Piper
joe + espeak-ng), the orchestrator, and the gateway on free ports with an API key."""

from __future__ import annotations

import contextlib
import difflib
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from services.gateway.app import GatewayApp
from services.gateway.config import GatewaySettings, HttpSettings, WyomingSettings
from services.llm.app import build as build_llm
from services.llm.config import LlmSettings
from services.orchestrator.app import OrchestratorApp
from services.orchestrator.config import OrchestratorSettings
from services.runtime.channel import ChannelSettings
from services.runtime.config import ServerSettings
from services.runtime.server import RunningServer, start_app
from services.stt.app import SttApp
from services.stt.config import SttSettings
from services.tts.app import build as build_tts
from services.tts.config import TtsSettings

SMOLLM = "smollm2-135m-instruct-q4_1"
VOICE = "en_US-joe-medium"
API_KEY = "gateway-test-key"
SENTENCE = "Today the weather is warm and sunny, so we will walk to the park after lunch."
"""Spoken by the TTS and read back by the STT: plain words Whisper base hears well."""


def words(text: str) -> list[str]:
    return re.findall(r"[a-z0-9]+", text.lower())


def word_errors(heard: str, said: str) -> int:
    """Words substituted, dropped or added. Whisper base mishears a word or two of synthetic
    speech now and then ("France is" as "Francis", "in Paris" as "and pairs"): read-backs of a
    sentence of 10+ words allow two, which still fails on wrong audio (noise, another text, a
    cut stream)."""
    a, b = words(heard), words(said)
    matcher = difflib.SequenceMatcher(a=a, b=b)
    return max(len(a), len(b)) - sum(block.size for block in matcher.get_matching_blocks())


def local() -> ServerSettings:
    return ServerSettings(host="127.0.0.1", port=0, metrics_port=None, grace_seconds=1.0)


@dataclass
class GatewayFleet:
    servers: dict[str, RunningServer]
    gateway: GatewayApp
    gateway_server: RunningServer

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.gateway.http_port}/v1"

    @property
    def asr_port(self) -> int:
        assert self.gateway.asr_port is not None
        return self.gateway.asr_port

    @property
    def tts_port(self) -> int:
        assert self.gateway.tts_port is not None
        return self.gateway.tts_port

    def target(self, name: str) -> str:
        return f"127.0.0.1:{self.servers[name].port}"


def gateway_settings(targets: dict[str, str], **overrides: Any) -> GatewaySettings:
    """Gateway settings on free loopback ports, pointing at ``targets``."""
    server = local().model_dump() | {"auth_token": SecretStr(API_KEY)} | overrides.pop("server", {})
    return GatewaySettings(
        server=server,  # type: ignore[arg-type]
        http=HttpSettings(port=0, **overrides.pop("http", {})),
        wyoming=WyomingSettings(asr_port=0, tts_port=0, **overrides.pop("wyoming", {})),
        **{name: ChannelSettings(target=t) for name, t in targets.items()},  # type: ignore[arg-type]
        **({"dependency_wait_seconds": 30} | overrides),
    )


@contextlib.asynccontextmanager
async def gateway_fleet(**gateway_overrides: Any) -> AsyncIterator[GatewayFleet]:
    servers: dict[str, RunningServer] = {}
    try:
        servers["stt"] = await start_app(SttApp.from_settings(SttSettings(server=local().model_dump())), local())  # type: ignore[arg-type]
        servers["llm"] = await start_app(
            build_llm(
                LlmSettings(
                    server=local(),
                    backends=["llamacpp", "canned"],
                    llamacpp={"model": SMOLLM},  # type: ignore[arg-type]
                )
            ),
            local(),
        )
        tts = TtsSettings(server=local())
        if "kokoro" in TtsSettings.model_fields:
            # Kokoro (French neural voices) takes tens of seconds to load; these tests speak English.
            tts.kokoro.enabled = False  # type: ignore[attr-defined]
        servers["tts"] = await start_app(build_tts(tts), local())
        orch = OrchestratorSettings(
            server=local(),
            dependency_wait_seconds=30,
            **{n: ChannelSettings(target=f"127.0.0.1:{servers[n].port}") for n in ("stt", "llm", "tts")},  # type: ignore[arg-type]
        )
        servers["orchestrator"] = await start_app(OrchestratorApp(orch), local())
        settings = gateway_settings({n: f"127.0.0.1:{s.port}" for n, s in servers.items()}, **gateway_overrides)
        gateway = GatewayApp(settings)
        running = await start_app(gateway, settings.server)
        try:
            yield GatewayFleet(servers, gateway, running)
        finally:
            await running.stop(0)
            await gateway.close()
    finally:
        for name in ("orchestrator", "stt", "llm", "tts"):
            if name in servers:
                await servers[name].stop(0)
