"""gRPC ↔ domain for LlmService: validates requests, maps messages, nothing else."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator

import grpc

from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from services.llm.backends.base import ChatMessage, Delta, Role
from services.llm.config import LANGUAGES
from services.llm.engine import Summary
from services.llm.service import GenerateCommand, LlmService
from services.llm.sessions import check_session_id
from services.runtime.errors import InvalidArgument, NotFound

_ROLES: dict[llm_pb2.Role.ValueType, Role] = {
    llm_pb2.ROLE_SYSTEM: "system",
    llm_pb2.ROLE_USER: "user",
    llm_pb2.ROLE_ASSISTANT: "assistant",
}
_ROLE_PB = {v: k for k, v in _ROLES.items()}
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
        check_session_id(request.session_id)
        cap = self.service.settings.max_text_chars
        for name in ("user", "assistant"):
            value = getattr(request, name)
            if not value.strip():
                raise InvalidArgument(f"{name} is empty", fields={name: "must not be empty"})
            if len(value) > cap:
                raise InvalidArgument(
                    f"{name} is {len(value)} characters; at most {cap} are accepted",
                    fields={name: f"at most {cap} characters"},
                )
        if request.language and request.language not in LANGUAGES:
            raise InvalidArgument(
                f"language '{request.language}' is not supported", fields={"language": " or ".join(LANGUAGES)}
            )
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

    # ------------------------------------------------------------------ validation
    def _command(self, request: llm_pb2.GenerateRequest) -> GenerateCommand:
        settings = self.service.settings
        cap = settings.max_text_chars
        text = request.text.strip()
        if len(request.text) > cap:
            raise InvalidArgument(
                f"text is {len(request.text)} characters; at most {cap} are accepted",
                fields={"text": f"at most {cap} characters"},
            )
        if request.session_id and request.messages:
            raise InvalidArgument(
                "send either session_id (server-kept history) or messages (stateless), not both",
                fields={"messages": "must be empty when session_id is set"},
            )
        messages: list[ChatMessage] = []
        if request.speculative and not request.session_id:
            raise InvalidArgument(
                "speculative answers are for sessions: a stateless call (messages) remembers nothing anyway",
                fields={"speculative": "needs session_id"},
            )
        if request.session_id:
            check_session_id(request.session_id)
            if not text:
                raise InvalidArgument("text is empty", fields={"text": "the user's turn must not be empty"})
        else:
            if len(request.messages) > settings.max_messages:
                raise InvalidArgument(
                    f"{len(request.messages)} messages; at most {settings.max_messages} are accepted",
                    fields={"messages": f"at most {settings.max_messages} messages"},
                )
            for i, m in enumerate(request.messages):
                role = _ROLES.get(m.role)
                if role is None:
                    raise InvalidArgument(
                        f"messages[{i}] has no valid role", fields={f"messages[{i}].role": "system, user or assistant"}
                    )
                if len(m.content) > cap:
                    raise InvalidArgument(
                        f"messages[{i}] is {len(m.content)} characters; at most {cap} are accepted",
                        fields={f"messages[{i}].content": f"at most {cap} characters"},
                    )
                if not m.content.strip():
                    raise InvalidArgument(
                        f"messages[{i}] is empty", fields={f"messages[{i}].content": "must not be empty"}
                    )
                messages.append(ChatMessage(role, m.content))
            if not text and (not messages or messages[-1].role != "user"):
                raise InvalidArgument(
                    "nothing to answer: text is empty and the last message is not the user's",
                    fields={"text": "the user's turn must not be empty"},
                )
        opts = request.options
        if opts.max_tokens > settings.max_tokens_limit:
            raise InvalidArgument(
                f"max_tokens {opts.max_tokens} is over the limit of {settings.max_tokens_limit}",
                fields={"options.max_tokens": f"0 to {settings.max_tokens_limit}"},
            )
        temperature: float | None = None
        if opts.HasField("temperature"):
            temperature = opts.temperature
            if not (math.isfinite(temperature) and 0.0 <= temperature <= 2.0):
                raise InvalidArgument(
                    f"temperature {temperature} is outside 0..2", fields={"options.temperature": "0 to 2"}
                )
        if opts.language and opts.language not in LANGUAGES:
            raise InvalidArgument(
                f"language '{opts.language}' is not supported", fields={"options.language": " or ".join(LANGUAGES)}
            )
        if len(opts.system_prompt) > cap:
            raise InvalidArgument(
                f"system_prompt is {len(opts.system_prompt)} characters; at most {cap} are accepted",
                fields={"options.system_prompt": f"at most {cap} characters"},
            )
        if opts.backend and self.service.engine.backend(opts.backend) is None:
            names = ", ".join(b.name for b in self.service.engine.backends)
            raise NotFound(f"no backend '{opts.backend}'; this server has: {names}")
        return GenerateCommand(
            text=text,
            session_id=request.session_id or None,
            messages=messages,
            max_tokens=opts.max_tokens or None,
            temperature=temperature,
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
