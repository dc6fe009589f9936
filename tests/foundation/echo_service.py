"""A tiny real servicer for testing the shared runtime (not a model service).

It implements the LLM contract's Generate by echoing words slowly, which gives the runtime
tests an in-flight streaming call to drain, a unary call, and an error path.
"""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator, Sequence

import grpc
from pydantic_settings import SettingsConfigDict

from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from services.runtime.config import ServerSettings, ServiceSettings
from services.runtime.device import resolve_placement
from services.runtime.errors import InvalidArgument, NotFound

SERVICE = llm_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name


class EchoSettings(ServiceSettings):
    model_config = SettingsConfigDict(**{**ServiceSettings.model_config, "env_prefix": "ECHO_"})

    server: ServerSettings = ServerSettings(port=50099, metrics_port=None)
    delay_seconds: float = 0.0
    """Pause between echoed words."""
    warm_up_seconds: float = 0.0
    """Simulated model load time."""


class EchoServicer(llm_pb2_grpc.LlmServiceServicer):
    def __init__(self, delay: float) -> None:
        self.delay = delay

    async def Generate(
        self, request: llm_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        if not request.text.strip():
            raise InvalidArgument("text is empty", fields={"text": "must not be blank"})
        if request.text == "crash":
            raise RuntimeError("simulated bug")
        for word in request.text.split():
            await asyncio.sleep(self.delay)
            yield llm_pb2.GenerateResponse(delta=word)
        yield llm_pb2.GenerateResponse(summary=llm_pb2.GenerationSummary(text=request.text, backend="echo"))

    async def ResetSession(
        self, request: llm_pb2.ResetSessionRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ResetSessionResponse:
        raise NotFound(f"no session {request.session_id!r}: the echo service keeps none")

    async def GetSession(
        self, request: llm_pb2.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.GetSessionResponse:
        raise NotFound(f"no session {request.session_id!r}: the echo service keeps none")

    async def AddExchange(
        self, request: llm_pb2.AddExchangeRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.AddExchangeResponse:
        raise NotFound(f"no session {request.session_id!r}: the echo service keeps none")

    async def ListModels(
        self, request: llm_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ListModelsResponse:
        return llm_pb2.ListModelsResponse(models=[llm_pb2.ModelInfo(backend="echo", model="echo")])


class EchoApp:
    name = "echo"

    def __init__(self, settings: EchoSettings) -> None:
        self.settings = settings
        # Real services place their model the same way; here it exercises the start-up check.
        self.placement = resolve_placement(settings.device)

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        llm_pb2_grpc.add_LlmServiceServicer_to_server(EchoServicer(self.settings.delay_seconds), server)
        return [SERVICE]

    async def warm_up(self) -> None:
        await asyncio.sleep(self.settings.warm_up_seconds)

    async def close(self) -> None:
        return None


if __name__ == "__main__":
    from services.runtime.cli import service_main

    sys.exit(service_main("echo", EchoSettings, EchoApp))
