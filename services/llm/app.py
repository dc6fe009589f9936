"""Builds the LLM service from its settings."""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from services.llm.backends.base import Backend
from services.llm.backends.canned import CannedBackend
from services.llm.backends.llamacpp import LlamaCppBackend
from services.llm.config import LlmSettings
from services.llm.engine import Engine
from services.llm.service import LlmService
from services.llm.servicer import LlmServicer
from services.llm.sessions import SessionStore, rough_tokens
from services.models.store import ModelStore
from services.runtime.device import resolve_placement
from services.runtime.resilience import Breakers

SERVICE_NAME = llm_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name


def build_backend(name: str, settings: LlmSettings) -> Backend:
    """One backend of the chain, configured but not loaded."""
    if name == "canned":
        return CannedBackend()
    if name == "ollama":
        from services.llm.backends.ollama import OllamaBackend

        o = settings.ollama
        return OllamaBackend(
            o.host, o.model, keep_alive=o.keep_alive, timeout_seconds=settings.timeout_for("ollama"), warm_up=o.warm_up
        )
    if name == "llamacpp":
        lc = settings.llamacpp
        placement = resolve_placement(settings.device)
        return LlamaCppBackend(
            ModelStore(settings.model_dir).gguf(lc.model),
            lc.model,
            n_ctx=lc.n_ctx,
            n_batch=lc.n_batch,
            n_threads=lc.threads or settings.device.threads or 2,
            # Every layer on the GPU when there is one: a 1.5B model fits any card.
            n_gpu_layers=-1 if placement.device == "cuda" else 0,
            parallel=lc.parallel,
            max_waiting=lc.max_waiting,
            session_snapshots=lc.session_snapshots,
            shift_history=lc.shift_history,
            sleeping_threads=lc.sleeping_threads,
            first_tokens=lc.first_tokens,
            first_tokens_max_pause=lc.first_tokens_max_pause,
            session_snapshot_bytes=lc.session_snapshot_mb * 2**20,
        )
    raise ValueError(f"unknown backend {name!r}")


class LlmApp:
    """The service as the runtime sees it."""

    name = "llm"

    def __init__(self, settings: LlmSettings, backends: Sequence[Backend] | None = None) -> None:
        self.settings = settings
        chain = list(backends) if backends is not None else [build_backend(n, settings) for n in settings.backends]
        self.engine = Engine(
            chain,
            Breakers("llm", threshold=settings.breaker_threshold, ttl_seconds=settings.breaker_ttl_seconds),
            {b.name: settings.timeout_for(b.name) for b in chain},
            default_timeout=settings.timeout_seconds,
        )
        s = settings.sessions
        self.sessions = SessionStore(
            max_turns=s.max_turns,
            max_history_tokens=s.max_history_tokens,
            ttl_seconds=s.ttl_seconds,
            max_sessions=s.max_sessions,
            # The embedded model's tokenizer counts exactly; without it, a cautious estimate.
            count_tokens=next((b.count_tokens for b in chain if hasattr(b, "count_tokens")), rough_tokens),
        )
        self.service = LlmService(settings, self.engine, self.sessions)

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        llm_pb2_grpc.add_LlmServiceServicer_to_server(LlmServicer(self.service), server)
        return [SERVICE_NAME]

    async def warm_up(self) -> None:
        await self.engine.load()
        # Every language's default prompt, the default language's last, so that one is live.
        prompts = sorted(self.settings.system_prompts.items(), key=lambda kv: kv[0] == self.settings.default_language)
        for backend in self.engine.backends:
            if isinstance(backend, LlamaCppBackend):
                await backend.prime([prompt for _, prompt in prompts])

    async def close(self) -> None:
        await self.engine.close()


def build(settings: LlmSettings) -> LlmApp:
    return LlmApp(settings)
