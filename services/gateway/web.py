"""The HTTP and WebSocket application (Starlette): routes, the API key check, metrics and the
OpenAI error shape for every failure, including the framework's own (404, 405, bad multipart)."""

from __future__ import annotations

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Match, Mount, Route, WebSocketRoute
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from starlette.websockets import WebSocket

from services.gateway.errors import ApiError
from services.gateway.metrics import REQUEST_SECONDS, REQUESTS
from services.gateway.openai_api import OpenAiApi
from services.gateway.realtime import realtime_endpoint
from services.runtime.logging import get_logger

if TYPE_CHECKING:
    from services.gateway.app import GatewayApp

log = get_logger(__name__)

# Endpoint labels for metrics: fixed names, so a scan of random paths adds no series.
ENDPOINTS = {
    "/v1/audio/transcriptions": "transcriptions",
    "/v1/audio/speech": "speech",
    "/v1/chat/completions": "chat_completions",
    "/v1/models": "models",
    "/v1/realtime": "realtime",
    "/health": "health",
}
OPEN_PATHS = ("/health",)
"""Paths that need no API key: probes must not need the secret."""
INSECURE_KEY_PROTOCOL = "openai-insecure-api-key."
"""Browsers cannot set headers on a WebSocket; OpenAI's clients pass the key as a subprotocol."""


class PageMount(Mount):
    """The static folder at ``/``, for HTTP outside ``/v1`` only. A mount at ``/`` matches every
    path fully, and Starlette takes a full match over a method mismatch: ``GET`` on a POST-only
    endpoint would get the folder's 404 instead of 405, and a WebSocket to an unknown path would
    reach a static-file handler that serves HTTP alone."""

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        path = scope.get("path", "")
        if scope["type"] != "http" or path == "/v1" or path.startswith("/v1/"):
            return Match.NONE, {}
        return super().matches(scope)


def error_response(err: ApiError) -> JSONResponse:
    headers = {"WWW-Authenticate": "Bearer"} if err.status == 401 else None
    return JSONResponse({"error": err.body()}, status_code=err.status, headers=headers)


class Guard:
    """Pure ASGI middleware: the API key on every ``/v1`` call (HTTP and WebSocket), and
    per-endpoint request counts and latency. Pure ASGI rather than BaseHTTPMiddleware so that
    streamed responses are not buffered and WebSockets pass through."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token.encode() if token else None

    def _authorized(self, scope: Scope) -> bool:
        if self.token is None or scope["path"] in OPEN_PATHS or not scope["path"].startswith("/v1"):
            return True
        headers = dict(scope.get("headers") or [])
        auth = headers.get(b"authorization", b"")
        scheme, _, key = auth.partition(b" ")
        if scheme.lower() == b"bearer" and hmac.compare_digest(key.strip(), self.token):
            return True
        if scope["type"] == "websocket":
            for proto in scope.get("subprotocols") or []:
                if proto.startswith(INSECURE_KEY_PROTOCOL) and hmac.compare_digest(
                    proto[len(INSECURE_KEY_PROTOCOL) :].encode(), self.token
                ):
                    return True
        return False

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        endpoint = ENDPOINTS.get(
            scope["path"].rstrip("/"), "models" if scope["path"].startswith("/v1/models/") else "other"
        )
        unauthorized = ApiError(
            401,
            "missing or wrong API key: send 'Authorization: Bearer <key>' (the fleet's token)",
            code="invalid_api_key",
        )
        if scope["type"] == "websocket":
            if self._authorized(scope):
                await self.app(scope, receive, send)
            else:
                await _refuse_websocket(scope, receive, send, unauthorized)
            REQUESTS.labels(endpoint, "101" if self._authorized(scope) else "401").inc()
            return
        started = time.perf_counter()
        status = {"code": 500}

        async def observed(message: Message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
                REQUEST_SECONDS.labels(endpoint).observe(time.perf_counter() - started)
            await send(message)

        try:
            if self._authorized(scope):
                await self.app(scope, receive, observed)
            else:
                await error_response(unauthorized)(scope, receive, observed)
        finally:
            REQUESTS.labels(endpoint, str(status["code"])).inc()


async def _refuse_websocket(scope: Scope, receive: Receive, send: Send, err: ApiError) -> None:
    """Accepts, says why in a Realtime ``error`` event, and closes (1008 policy violation):
    a bare handshake refusal would leave the client with a status code and no reason."""
    ws = WebSocket(scope, receive, send)
    await ws.accept()
    await ws.send_json({"type": "error", "event_id": "event_auth", "error": err.body() | {"event_id": None}})
    await ws.close(1008, "invalid API key")


def build_web_app(app: GatewayApp) -> ASGIApp:
    """The ASGI application of the gateway."""
    api = OpenAiApi(app)

    async def health(request: Request) -> Response:
        if app.ready:
            return JSONResponse({"status": "ok"})
        return JSONResponse({"status": "starting"}, status_code=503)

    async def realtime(ws: WebSocket) -> None:
        await realtime_endpoint(ws, app)

    def guarded(handler: Callable[[Request], Awaitable[Response]]) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except ApiError as err:
                return error_response(err)

        return run

    routes: list[BaseRoute] = [
        Route("/health", health, methods=["GET"]),
        Route("/v1/models", guarded(api.list_models), methods=["GET"]),
        Route("/v1/models/{model_id:path}", guarded(api.get_model), methods=["GET"]),
        Route("/v1/audio/transcriptions", guarded(api.transcriptions), methods=["POST"]),
        Route("/v1/audio/speech", guarded(api.speech), methods=["POST"]),
        Route("/v1/chat/completions", guarded(api.chat_completions), methods=["POST"]),
        WebSocketRoute("/v1/realtime", realtime),
    ]
    static = app.settings.http.static_dir
    if static is not None:
        # Last, so the API routes win: the browser client (services/gateway/web) by default.
        routes.append(PageMount("/", StaticFiles(directory=static, html=True), name="static"))

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        kinds = {404: "not_found", 405: "method_not_allowed", 400: "invalid_request"}
        message = {
            404: f"no such endpoint: {request.method} {request.url.path}",
            405: f"{request.method} is not allowed on {request.url.path}",
        }
        return error_response(
            ApiError(exc.status_code, message.get(exc.status_code, str(exc.detail)), code=kinds.get(exc.status_code))
        )

    async def crash(request: Request, exc: Exception) -> Response:
        log.exception("request failed", path=request.url.path, error=str(exc))
        return error_response(ApiError(500, f"internal error: {exc}", type="server_error", code="internal"))

    web = Starlette(
        routes=routes,
        exception_handlers={HTTPException: http_error, Exception: crash},
    )
    token = app.settings.server.auth_token
    return Guard(web, token.get_secret_value() if token else None)


__all__: list[Any] = ["build_web_app"]
