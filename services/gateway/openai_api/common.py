"""What every OpenAI HTTP endpoint shares: reading and checking the request (body size, JSON,
typed fields), server-sent events, the mapping of a gRPC stream's failures before and after its
first bytes, and ``ApiBase``, the gateway every handler class works over. Separate so each
endpoint family's module holds only its own translation.
"""

from __future__ import annotations

import json
import math
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import Response

from services.gateway.errors import ApiError, bad_request, from_grpc
from services.gateway.jsonbody import NotAnObject, NotJson, parse_object
from services.runtime.logging import get_logger

if TYPE_CHECKING:
    from services.gateway.app import GatewayApp

# Named after the package, as when the API was one module: log lines keep their logger.
log = get_logger("services.gateway.openai_api")


class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"request body is larger than {limit} bytes, the largest accepted", code="request_too_large"
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` (Content-Length or not)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit)
    return bytes(body)


async def json_object(request: Request, limit: int) -> dict[str, Any]:
    body = await read_body(request, limit)
    try:
        return parse_object(body)
    except NotJson as exc:
        raise bad_request(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
    except NotAnObject as exc:
        raise bad_request("the body must be a JSON object", code="invalid_json") from exc


def _str(body: dict[str, Any] | FormData, name: str, default: str | None = None, *, required: bool = False) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise bad_request(f"'{name}' is required", param=name, code="missing_required_parameter")
        return default or ""
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string", param=name, code="invalid_type")
    return value


def _number(body: dict[str, Any] | FormData, name: str, lo: float, hi: float, *, integer: bool = False) -> float | None:
    raw = body.get(name)
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):  # multipart fields are text
        try:
            raw = float(raw)
        except ValueError:
            raise bad_request(f"'{name}' must be a number", param=name, code="invalid_type") from None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise bad_request(f"'{name}' must be a number", param=name, code="invalid_type")
    if integer and raw != int(raw):
        raise bad_request(f"'{name}' must be an integer", param=name, code="invalid_type")
    if not lo <= raw <= hi:
        raise bad_request(f"'{name}' must be between {lo:g} and {hi:g}; got {raw:g}", param=name)
    return float(raw)


def _bool(body: dict[str, Any] | FormData, name: str) -> bool:
    raw = body.get(name)
    if raw is None:
        return False
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise bad_request(f"'{name}' must be true or false", param=name, code="invalid_type")


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


async def _first(stream: AsyncIterator[Any], service: str) -> Any:
    """The first message of a gRPC stream, failures mapped to ``ApiError`` while the HTTP
    status can still say so; None when the stream is empty."""
    try:
        return await anext(stream, None)
    except grpc.aio.AioRpcError as err:
        raise from_grpc(err, service) from err


async def _stream_errors(
    source: AsyncIterator[bytes], service: str, on_error: Callable[[ApiError], bytes] | None, call: Any
) -> AsyncIterator[bytes]:
    """Passes a response body through; a failure after the headers becomes an ``error`` event
    (SSE) or an early end (audio), logged either way. The gRPC call is cancelled when the body
    ends early (the client went away), so the service stops working for nobody."""
    try:
        async for item in source:
            yield item
    except grpc.aio.AioRpcError as err:
        api = from_grpc(err, service)
        log.warning("stream failed after its first bytes", service=service, error=api.message)
        if on_error is not None:
            yield on_error(api)
    except ApiError as api:
        log.warning("stream failed after its first bytes", service=service, error=api.message)
        if on_error is not None:
            yield on_error(api)
    finally:
        call.cancel()


def sse_error(api: ApiError) -> bytes:
    return sse({"error": api.body()})


@dataclass
class ApiBase:
    """The gateway (stubs, catalog, settings) under the ``/v1`` handlers; each endpoint family
    is a subclass, and ``OpenAiApi`` combines them."""

    app: GatewayApp

    @property
    def timeout(self) -> float:
        return self.app.settings.http.timeout_seconds


Handler = Callable[[Request], Awaitable[Response]]
