"""Client channels to Parole services: TLS/mTLS, bearer token, limits and keepalive."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import grpc
from pydantic import BaseModel, Field, SecretStr

from services.runtime.config import ServerSettings
from services.runtime.server import channel_options


class ChannelSettings(BaseModel):
    """How to reach one service."""

    model_config = {"extra": "forbid"}

    target: str
    """host:port of the service."""
    token: SecretStr | None = None
    """Bearer token sent with every call, if the service requires one."""
    ca_file: Path | None = None
    """PEM CA that signed the service's certificate; set it to use TLS."""
    cert_file: Path | None = None
    """PEM client certificate, for services that require mTLS."""
    key_file: Path | None = None
    """PEM key of the client certificate."""
    server_name: str | None = None
    """Name to expect in the server certificate, when it differs from the target's host."""
    load_balancing: str | None = None
    """gRPC load-balancing policy, e.g. "round_robin" with a target such as
    ``dns:///stt-headless:50051`` (a Kubernetes headless service): streams then spread over
    every replica instead of all riding the one connection. None: gRPC's default (pick_first)."""
    reconnect_initial_seconds: float = Field(default=0.25, gt=0, le=60)
    """First pause before the channel reconnects to a service that went away."""
    reconnect_max_seconds: float = Field(default=2.0, gt=0, le=300)
    """Longest pause between reconnection attempts. gRPC's own default grows to 120 s: after
    an outage of half a minute (a restart while models load) a session would stay deaf for
    up to a minute after the service is back. Attempts on loopback or a cluster network are
    cheap, so a short bound costs nothing."""
    connect_timeout_seconds: float = Field(default=5.0, gt=0, le=300)
    """A connection attempt that gets no HTTP/2 handshake within this is abandoned and
    retried. gRPC's default (20 s) keeps a session deaf that long after a dropped route heals,
    because the attempt made while it was dark waits for an answer that never comes."""


class _TokenMixin:
    """Adds the bearer token to every call (call credentials need TLS; this works on both)."""

    def __init__(self, token: str) -> None:
        self._header = ("authorization", f"Bearer {token}")

    async def _call(self, continuation: Callable[..., Any], details: grpc.aio.ClientCallDetails, request: Any) -> Any:
        metadata = [*(details.metadata or []), self._header]
        details = grpc.aio.ClientCallDetails(
            details.method, details.timeout, grpc.aio.Metadata(*metadata), details.credentials, details.wait_for_ready
        )
        return await continuation(details, request)


# grpc.aio files each interceptor under the first call type it matches (an if/elif chain), so
# one object implementing all four would only ever see unary-unary calls: one class per type.
class _UnaryUnaryToken(_TokenMixin, grpc.aio.UnaryUnaryClientInterceptor):
    intercept_unary_unary = _TokenMixin._call  # type: ignore[assignment]


class _UnaryStreamToken(_TokenMixin, grpc.aio.UnaryStreamClientInterceptor):
    intercept_unary_stream = _TokenMixin._call  # type: ignore[assignment]


class _StreamUnaryToken(_TokenMixin, grpc.aio.StreamUnaryClientInterceptor):
    intercept_stream_unary = _TokenMixin._call  # type: ignore[assignment]


class _StreamStreamToken(_TokenMixin, grpc.aio.StreamStreamClientInterceptor):
    intercept_stream_stream = _TokenMixin._call  # type: ignore[assignment]


def token_interceptors(token: str) -> list[grpc.aio.ClientInterceptor]:
    """Client interceptors that send ``authorization: Bearer <token>`` on every kind of call."""
    return [cls(token) for cls in (_UnaryUnaryToken, _UnaryStreamToken, _StreamUnaryToken, _StreamStreamToken)]


def open_channel(settings: ChannelSettings, limits: ServerSettings | None = None) -> grpc.aio.Channel:
    """An aio channel to a service, secured as its settings say."""
    options = channel_options(limits or ServerSettings())
    options += [
        ("grpc.initial_reconnect_backoff_ms", int(settings.reconnect_initial_seconds * 1000)),
        ("grpc.max_reconnect_backoff_ms", int(settings.reconnect_max_seconds * 1000)),
        # gRPC core reads this one as the minimum connect timeout of an attempt.
        ("grpc.min_reconnect_backoff_ms", int(settings.connect_timeout_seconds * 1000)),
    ]
    if settings.server_name:
        options.append(("grpc.ssl_target_name_override", settings.server_name))
    if settings.load_balancing:
        options.append(("grpc.lb_policy_name", settings.load_balancing))
    interceptors = token_interceptors(settings.token.get_secret_value()) if settings.token else None
    if settings.ca_file is None:
        return grpc.aio.insecure_channel(settings.target, options=options, interceptors=interceptors)
    creds = grpc.ssl_channel_credentials(
        root_certificates=settings.ca_file.read_bytes(),
        private_key=settings.key_file.read_bytes() if settings.key_file else None,
        certificate_chain=settings.cert_file.read_bytes() if settings.cert_file else None,
    )
    return grpc.aio.secure_channel(settings.target, creds, options=options, interceptors=interceptors)
