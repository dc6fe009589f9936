"""``POST /v1/chat/completions``: OpenAI chat messages answered by the LLM service, whole or
streamed as chunks, with the options the fleet can honour (the others are refused).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator
from typing import Any

import grpc
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse

from parole.llm.v1 import llm_pb2
from services.gateway.errors import ApiError, bad_request, from_grpc
from services.gateway.openai_api.common import (
    ApiBase,
    _bool,
    _first,
    _number,
    _str,
    _stream_errors,
    json_object,
    sse,
    sse_error,
)

CHAT_ROLES = {
    "system": llm_pb2.ROLE_SYSTEM,
    "developer": llm_pb2.ROLE_SYSTEM,
    "user": llm_pb2.ROLE_USER,
    "assistant": llm_pb2.ROLE_ASSISTANT,
}
FINISH = {llm_pb2.FINISH_REASON_STOP: "stop", llm_pb2.FINISH_REASON_LENGTH: "length"}
MAX_CHAT_TOKENS = 4096
# A neutral system prompt for chat completions that bring none: the LLM service's own default
# asks for short spoken answers in the session language, which is the voice assistant's
# persona, not what an API caller expects.
CHAT_SYSTEM_PROMPT = "You are a helpful assistant."
# Parts of a chat request the gateway cannot honour: refused, rather than silently ignored.
UNSUPPORTED_CHAT = ("tools", "functions", "tool_choice", "function_call", "audio", "logprobs", "response_format")


class ChatApi(ApiBase):
    """The chat completions endpoint."""

    async def chat_completions(self, request: Request) -> Response:
        body = await json_object(request, self.app.settings.http.max_json_bytes)
        model = _str(body, "model")
        for key in UNSUPPORTED_CHAT:
            if body.get(key) not in (None, False):
                raise bad_request(f"'{key}' is not supported by this server", param=key, code="unsupported_parameter")
        n = _number(body, "n", 1, 1, integer=True)
        del n  # only one choice: validated above
        max_tokens = _number(body, "max_completion_tokens", 1, MAX_CHAT_TOKENS, integer=True) or _number(
            body, "max_tokens", 1, MAX_CHAT_TOKENS, integer=True
        )
        temperature = _number(body, "temperature", 0.0, 2.0)
        stream = _bool(body, "stream")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise bad_request("'stream_options' must be an object", param="stream_options", code="invalid_type")
        include_usage = _bool(options, "include_usage")
        messages = chat_messages(body.get("messages"))
        gen = llm_pb2.GenerationOptions(
            max_tokens=int(max_tokens or 0),
            backend=await self.app.catalog.llm_backend(model),
            system_prompt="" if any(m.role == llm_pb2.ROLE_SYSTEM for m in messages) else CHAT_SYSTEM_PROMPT,
        )
        if temperature is not None:
            gen.temperature = temperature
        call = self.app.llm.Generate(llm_pb2.GenerateRequest(messages=messages, options=gen), timeout=self.timeout)
        stream_it = aiter(call)
        first = await _first(stream_it, "llm")
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if not stream:
            return await self._chat_whole(first, stream_it, completion_id, created, model)

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            return sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                    **extra,
                }
            )

        async def events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""})
            reply = first
            while reply is not None:
                if reply.WhichOneof("response") == "delta":
                    yield chunk({"content": reply.delta})
                elif reply.WhichOneof("response") == "summary":
                    s = reply.summary
                    if s.finish_reason == llm_pb2.FINISH_REASON_FALLBACK:
                        yield sse_error(_fallback_error(s))
                        return
                    yield chunk({}, FINISH.get(s.finish_reason, "stop"))
                    if include_usage:
                        yield sse(
                            {
                                "id": completion_id,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": _usage(s),
                            }
                        )
                reply = await anext(stream_it, None)
            yield sse("[DONE]")

        return StreamingResponse(_stream_errors(events(), "llm", sse_error, call), media_type="text/event-stream")

    async def _chat_whole(
        self, first: Any, rest: AsyncIterator[llm_pb2.GenerateResponse], completion_id: str, created: int, model: str
    ) -> Response:
        parts: list[str] = []
        summary: llm_pb2.GenerationSummary | None = None
        try:
            reply = first
            while reply is not None:
                if reply.WhichOneof("response") == "delta":
                    parts.append(reply.delta)
                else:
                    summary = reply.summary
                reply = await anext(rest, None)
        except grpc.aio.AioRpcError as err:
            raise from_grpc(err, "llm") from err
        if summary is None:
            raise ApiError(502, "the language model ended its answer without a summary", type="server_error")
        if summary.finish_reason == llm_pb2.FINISH_REASON_FALLBACK:
            raise _fallback_error(summary)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model or summary.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": summary.text or "".join(parts)},
                        "finish_reason": FINISH.get(summary.finish_reason, "stop"),
                        "logprobs": None,
                    }
                ],
                "usage": _usage(summary),
            }
        )


def _fallback_error(summary: llm_pb2.GenerationSummary) -> ApiError:
    reasons = "; ".join(summary.fallbacks) or "every backend failed"
    return ApiError(503, f"no language model could answer ({reasons})", type="server_error", code="llm_unavailable")


def _usage(s: llm_pb2.GenerationSummary) -> dict[str, int]:
    return {
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": s.prompt_tokens + s.completion_tokens,
    }


def chat_messages(raw: Any) -> list[llm_pb2.ChatMessage]:
    """OpenAI chat messages as the LLM service's, or a 400 naming the bad one."""
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty array", param="messages")
    out: list[llm_pb2.ChatMessage] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"{where} must be an object", param=where, code="invalid_type")
        role = m.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise bad_request(
                f"{where}.role must be system, developer, user or assistant; got {role!r}", param=f"{where}.role"
            )
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise bad_request(
                        f"{where}.content[{j}] must be a text part ({{'type': 'text', 'text': ...}}); other parts are not supported",
                        param=f"{where}.content",
                    )
                texts.append(part["text"])
            content = "\n".join(texts)
        if not isinstance(content, str):
            raise bad_request(f"{where}.content must be a string or an array of text parts", param=f"{where}.content")
        out.append(llm_pb2.ChatMessage(role=CHAT_ROLES[role], content=content))
    return out
