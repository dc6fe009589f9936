"""gRPC ↔ domain for LlmService: maps messages, nothing else (requests are checked by
``validation``)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc

from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from services.llm import validation
from services.llm.backends.base import Delta
from services.llm.engine import Summary
from services.llm.service import GenerateCommand, LlmService
from services.runtime.errors import NotFound

_ROLE_PB = {v: k for k, v in validation.ROLES.items()}
_FINISH = {
    "stop": llm_pb2.FINISH_REASON_STOP,
    "length": llm_pb2.FINISH_REASON_LENGTH,
    "fallback": llm_pb2.FINISH_REASON_FALLBACK,
}


class LlmServicer(llm_pb2_grpc.LlmServiceServicer):
    """The gRPC face of ``LlmService``."""

    def __init__(self, service: LlmService) -> None:
        self.service = service

    async def Generate(
        self, request: llm_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        cmd = self._command(request)
        async for item in self.service.generate(cmd, time_remaining=context.time_remaining()):
            if isinstance(item, Delta):
                yield llm_pb2.GenerateResponse(delta=item.text)
            elif isinstance(item, Summary):
                yield llm_pb2.GenerateResponse(summary=_summary_pb(item))

    async def ResetSession(
        self, request: llm_pb2.ResetSessionRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ResetSessionResponse:
        return llm_pb2.ResetSessionResponse(messages_removed=self.service.reset(request.session_id))

    async def GetSession(
        self, request: llm_pb2.GetSessionRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.GetSessionResponse:
        messages, language = self.service.history(request.session_id)
        return llm_pb2.GetSessionResponse(
            messages=[llm_pb2.ChatMessage(role=_ROLE_PB[m.role], content=m.content) for m in messages],
            language=language,
        )

    async def AddExchange(
        self, request: llm_pb2.AddExchangeRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.AddExchangeResponse:
        validation.check_add_exchange(request, self.service.settings)
        dropped = await self.service.add_exchange(
            request.session_id, request.user.strip(), request.assistant.strip(), request.language or None
        )
        return llm_pb2.AddExchangeResponse(exchanges_dropped=dropped)

    async def ListModels(
        self, request: llm_pb2.ListModelsRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.ListModelsResponse:
        return llm_pb2.ListModelsResponse(
            models=[
                llm_pb2.ModelInfo(backend=m.backend, model=m.model, breaker_state=m.breaker_state)
                for m in await self.service.models()
            ]
        )

    # ------------------------------------------------------------------ requests
    def _command(self, request: llm_pb2.GenerateRequest) -> GenerateCommand:
        checked = validation.check_generate(request, self.service.settings)
        opts = request.options
        if opts.backend and self.service.engine.backend(opts.backend) is None:
            names = ", ".join(b.name for b in self.service.engine.backends)
            raise NotFound(f"no backend '{opts.backend}'; this server has: {names}")
        return GenerateCommand(
            text=checked.text,
            session_id=request.session_id or None,
            messages=checked.messages,
            max_tokens=opts.max_tokens or None,
            temperature=checked.temperature,
            system_prompt=opts.system_prompt.strip() or None,
            language=opts.language or None,
            backend=opts.backend or None,
            speculative=request.speculative,
        )


def _summary_pb(s: Summary) -> llm_pb2.GenerationSummary:
    return llm_pb2.GenerationSummary(
        prompt_tokens=s.prompt_tokens,
        prompt_tokens_evaluated=s.prompt_tokens_evaluated,
        completion_tokens=s.completion_tokens,
        time_to_first_token_seconds=s.time_to_first_token_seconds,
        total_seconds=s.total_seconds,
        tokens_per_second=s.tokens_per_second,
        backend=s.backend,
        model=s.model,
        fallbacks=s.fallbacks,
        finish_reason=_FINISH[s.finish_reason],
        text=s.text,
    )
