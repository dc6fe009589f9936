"""Server interceptors: Prometheus metrics, bearer-token auth, readiness and error mapping.

grpc.aio interceptors can only swap a method's handler, so each one rebuilds the handler
around the original behaviour with ``wrap_handler``. Streaming behaviours come in two shapes
(async generators, or coroutines that call ``context.write`` like the health service's
Watch); both are kept.
"""

from __future__ import annotations

import asyncio
import hmac
import inspect
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import grpc
from prometheus_client import Counter, Histogram

from services.runtime.errors import ServiceError
from services.runtime.logging import get_logger

log = get_logger(__name__)

Behavior = Callable[..., Any]
Continuation = Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler | None]]

HEALTH_PREFIX = "/grpc.health.v1.Health/"
REFLECTION_PREFIXES = ("/grpc.reflection.v1alpha.ServerReflection/", "/grpc.reflection.v1.ServerReflection/")

# Names and labels follow go-grpc-prometheus, so stock dashboards and alerts work unchanged.
_LABELS = ["grpc_type", "grpc_service", "grpc_method"]
STARTED = Counter("grpc_server_started_total", "RPCs started on the server.", _LABELS)
HANDLED = Counter("grpc_server_handled_total", "RPCs completed on the server, by status code.", [*_LABELS, "grpc_code"])
HANDLING = Histogram(
    "grpc_server_handling_seconds",
    "Time from the start of an RPC to its end (whole stream for streaming RPCs).",
    _LABELS,
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900),
)
MSG_RECEIVED = Counter("grpc_server_msg_received_total", "Request messages received.", _LABELS)
MSG_SENT = Counter("grpc_server_msg_sent_total", "Response messages sent.", _LABELS)


def _split_method(full: str) -> tuple[str, str]:
    _, service, method = full.split("/", 2) if full.count("/") >= 2 else ("", "unknown", full)
    return service, method


def _rpc_type(handler: grpc.RpcMethodHandler) -> str:
    if handler.request_streaming and handler.response_streaming:
        return "bidi_stream"
    if handler.request_streaming:
        return "client_stream"
    if handler.response_streaming:
        return "server_stream"
    return "unary"


def wrap_handler(
    handler: grpc.RpcMethodHandler, wrap: Callable[[Behavior, grpc.RpcMethodHandler], Behavior]
) -> grpc.RpcMethodHandler:
    """A copy of ``handler`` whose behaviour is ``wrap(behaviour, handler)``."""
    kw = {
        "request_deserializer": handler.request_deserializer,
        "response_serializer": handler.response_serializer,
    }
    if handler.unary_unary:
        return grpc.unary_unary_rpc_method_handler(wrap(handler.unary_unary, handler), **kw)
    if handler.unary_stream:
        return grpc.unary_stream_rpc_method_handler(wrap(handler.unary_stream, handler), **kw)
    if handler.stream_unary:
        return grpc.stream_unary_rpc_method_handler(wrap(handler.stream_unary, handler), **kw)
    if handler.stream_stream:
        return grpc.stream_stream_rpc_method_handler(wrap(handler.stream_stream, handler), **kw)
    raise TypeError("RPC method handler has no behaviour")


def around(
    behavior: Behavior,
    handler: grpc.RpcMethodHandler,
    *,
    before: Callable[[Any, grpc.aio.ServicerContext], Awaitable[Any]] | None = None,
    on_error: Callable[[BaseException, grpc.aio.ServicerContext], Awaitable[None]] | None = None,
    on_end: Callable[[BaseException | None, grpc.aio.ServicerContext], None] | None = None,
    on_message: Callable[[], None] | None = None,
) -> Behavior:
    """Runs ``before`` (may replace the request), the behaviour, then ``on_error``/``on_end``.

    ``on_error`` may raise (to abort with a mapped status); ``on_end`` always runs with the
    exception that ended the call, or None. ``on_message`` runs for each streamed response.
    """

    if handler.response_streaming and inspect.isasyncgenfunction(behavior):

        async def gen(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
            exc: BaseException | None = None
            try:
                if before is not None:
                    request = await before(request, context)
                async for item in behavior(request, context):
                    if on_message is not None:
                        on_message()
                    yield item
            except BaseException as e:
                exc = e
                if on_error is None:
                    raise
                await on_error(e, context)
                raise
            finally:
                if on_end is not None:
                    on_end(exc, context)

        return gen

    async def call(request: Any, context: grpc.aio.ServicerContext) -> Any:
        exc: BaseException | None = None
        try:
            if before is not None:
                request = await before(request, context)
            result = await behavior(request, context)
            if on_message is not None and not handler.response_streaming:
                on_message()
            return result
        except BaseException as e:
            exc = e
            if on_error is None:
                raise
            await on_error(e, context)
            raise
        finally:
            if on_end is not None:
                on_end(exc, context)

    return call


class MetricsInterceptor(grpc.aio.ServerInterceptor):
    """Counts and times every RPC with the standard ``grpc_server_*`` metrics."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        service, method = _split_method(handler_call_details.method)
        labels = (_rpc_type(handler), service, method)

        def wrap(behavior: Behavior, h: grpc.RpcMethodHandler) -> Behavior:
            started: dict[str, float] = {}

            async def before(request: Any, context: grpc.aio.ServicerContext) -> Any:
                started["t"] = time.perf_counter()
                STARTED.labels(*labels).inc()
                if h.request_streaming:
                    return _counting(request, MSG_RECEIVED.labels(*labels))
                MSG_RECEIVED.labels(*labels).inc()
                return request

            def on_end(exc: BaseException | None, context: grpc.aio.ServicerContext) -> None:
                code = _final_code(exc, context)
                HANDLED.labels(*labels, code.name).inc()
                HANDLING.labels(*labels).observe(time.perf_counter() - started.get("t", time.perf_counter()))

            return around(behavior, h, before=before, on_end=on_end, on_message=MSG_SENT.labels(*labels).inc)

        return wrap_handler(handler, wrap)


async def _counting(requests: AsyncIterator[Any], counter: Any) -> AsyncIterator[Any]:
    async for r in requests:
        counter.inc()
        yield r


def _final_code(exc: BaseException | None, context: grpc.aio.ServicerContext) -> grpc.StatusCode:
    if isinstance(exc, asyncio.CancelledError):
        return grpc.StatusCode.CANCELLED
    code = context.code()
    if isinstance(code, grpc.StatusCode):
        return code
    if exc is None:
        return grpc.StatusCode.OK
    return grpc.StatusCode.UNKNOWN


def _abort_handler(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, message: str) -> grpc.RpcMethodHandler:
    async def refuse(request: Any, context: grpc.aio.ServicerContext) -> Any:
        await context.abort(code, message)

    async def refuse_stream(request: Any, context: grpc.aio.ServicerContext) -> AsyncIterator[Any]:
        await context.abort(code, message)
        yield  # pragma: no cover - makes this an async generator

    return wrap_handler(handler, lambda _b, h: refuse_stream if h.response_streaming else refuse)


class AuthInterceptor(grpc.aio.ServerInterceptor):
    """Refuses calls without ``authorization: Bearer <token>`` (UNAUTHENTICATED)."""

    def __init__(self, token: str, exempt_prefixes: Sequence[str] = ()) -> None:
        self._expected = f"Bearer {token}".encode()
        self._exempt = tuple(exempt_prefixes)

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None or handler_call_details.method.startswith(self._exempt):
            return handler
        given = ""
        for key, value in handler_call_details.invocation_metadata or ():
            if key == "authorization":
                given = value if isinstance(value, str) else value.decode("latin-1")
        # Constant-time compare: the token must not leak through response timing.
        if given and hmac.compare_digest(given.encode(), self._expected):
            return handler
        why = "missing" if not given else "invalid"
        return _abort_handler(
            handler,
            grpc.StatusCode.UNAUTHENTICATED,
            f"{why} credentials: send metadata 'authorization: Bearer <token>' with this service's token",
        )


class ReadinessInterceptor(grpc.aio.ServerInterceptor):
    """Answers UNAVAILABLE while the service's models load; health and reflection pass."""

    def __init__(self, service: str) -> None:
        self.ready = False
        self._service = service

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        method = handler_call_details.method
        if handler is None or self.ready or method.startswith((HEALTH_PREFIX, *REFLECTION_PREFIXES)):
            return handler
        return _abort_handler(
            handler,
            grpc.StatusCode.UNAVAILABLE,
            f"{self._service} is still loading its models; retry when its health check says SERVING",
        )


class ErrorInterceptor(grpc.aio.ServerInterceptor):
    """Maps ``ServiceError`` to its status; anything unexpected to INTERNAL (and logs it)."""

    async def intercept_service(
        self, continuation: Continuation, handler_call_details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler | None:
        handler = await continuation(handler_call_details)
        if handler is None:
            return None
        method = handler_call_details.method

        async def on_error(exc: BaseException, context: grpc.aio.ServicerContext) -> None:
            if isinstance(exc, ServiceError):
                status = exc.to_status()
                await context.abort(status.code, status.details, status.trailing_metadata)
            if isinstance(exc, (asyncio.CancelledError, grpc.aio.AbortError, GeneratorExit)):
                return
            if isinstance(exc, Exception):
                log.exception("unhandled error in handler", method=method)
                await context.abort(
                    grpc.StatusCode.INTERNAL,
                    f"internal error in {method}: {type(exc).__name__}; this is a bug, see the service log",
                )

        return wrap_handler(handler, lambda b, h: around(b, h, on_error=on_error))
