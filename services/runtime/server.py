"""Builds and runs a grpc.aio server the same way for every service.

Health (NOT_SERVING until models are loaded and warmed), reflection, metrics, auth, error
mapping, message limits, keepalive and TLS are set here once. A service supplies a
``register`` function that adds its servicers, and a ``warm_up`` coroutine.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection
from prometheus_client import start_http_server

from services.runtime.config import ServerSettings, ServiceSettings
from services.runtime.gpu_metrics import install_gpu_metrics
from services.runtime.interceptors import (
    HEALTH_PREFIX,
    AuthInterceptor,
    ErrorInterceptor,
    MetricsInterceptor,
    ReadinessInterceptor,
)
from services.runtime.logging import get_logger

log = get_logger(__name__)

Register = Callable[[grpc.aio.Server], Sequence[str]]
"""Adds servicers to the server and returns their full service names."""


def channel_options(settings: ServerSettings) -> list[tuple[str, Any]]:
    """Message limits and keepalive, shared by servers and the channels that call them."""
    return [
        ("grpc.max_receive_message_length", settings.max_receive_message_bytes),
        ("grpc.max_send_message_length", settings.max_send_message_bytes),
        ("grpc.keepalive_time_ms", int(settings.keepalive_time_seconds * 1000)),
        ("grpc.keepalive_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
        # gRPC >= 1.6x times keepalive pings out by this (default 1 min), not by the above: without
        # it a blackholed link (peer gone, connection not closed) hangs a stream far longer.
        ("grpc.http2.ping_timeout_ms", int(settings.keepalive_timeout_seconds * 1000)),
        # Clients ping idle streams (a silent microphone); let them, within reason.
        ("grpc.http2.min_ping_interval_without_data_ms", 5000),
        ("grpc.keepalive_permit_without_calls", 1),
    ]


def server_credentials(settings: ServerSettings) -> grpc.ServerCredentials | None:
    """TLS or mTLS credentials from the settings' PEM files, or None for plaintext."""
    tls = settings.tls
    if not tls.enabled:
        return None
    assert tls.cert_file is not None and tls.key_file is not None
    ca = tls.client_ca_file.read_bytes() if tls.client_ca_file else None
    return grpc.ssl_server_credentials(
        [(tls.key_file.read_bytes(), tls.cert_file.read_bytes())],
        root_certificates=ca,
        require_client_auth=ca is not None,
    )


@dataclass
class RunningServer:
    """A started server: its port, health and the means to stop it."""

    name: str
    server: grpc.aio.Server
    health: health.aio.HealthServicer
    readiness: ReadinessInterceptor
    port: int
    service_names: list[str]
    metrics_port: int | None = None
    _metrics_http: Any = field(default=None, repr=False)

    async def set_serving(self) -> None:
        """Models are loaded and warmed: accept calls and tell the probes."""
        self.readiness.ready = True
        for name in ["", *self.service_names]:
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)
        log.info("serving", port=self.port, metrics_port=self.metrics_port)

    async def set_status(self, name: str, serving: bool) -> None:
        """One service name's health: NOT_SERVING tells a load balancer's readiness probe to
        send new work elsewhere while the process stays alive ("" keeps saying SERVING)."""
        status = health_pb2.HealthCheckResponse.SERVING if serving else health_pb2.HealthCheckResponse.NOT_SERVING
        await self.health.set(name, status)

    async def stop(self, grace: float | None) -> None:
        """Graceful stop: health goes NOT_SERVING, new calls are refused, in-flight calls get
        ``grace`` seconds to finish."""
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self._metrics_http is not None:
            self._metrics_http.shutdown()
            self._metrics_http.server_close()
            self._metrics_http = None


async def start_server(name: str, settings: ServerSettings, register: Register) -> RunningServer:
    """Starts the server with every shared concern wired in, reporting NOT_SERVING."""
    readiness = ReadinessInterceptor(name)
    interceptors: list[grpc.aio.ServerInterceptor] = [MetricsInterceptor()]
    if settings.auth_token is not None:
        exempt = [HEALTH_PREFIX] if settings.auth_exempt_health else []
        interceptors.append(AuthInterceptor(settings.auth_token.get_secret_value(), exempt))
    interceptors += [readiness, ErrorInterceptor()]
    server = grpc.aio.server(
        interceptors=interceptors,
        options=channel_options(settings),
        maximum_concurrent_rpcs=settings.max_concurrent_rpcs,
    )
    service_names = list(register(server))
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    for svc in ["", *service_names]:
        await health_servicer.set(svc, health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        [*service_names, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
        server,
    )
    address = f"{settings.host}:{settings.port}"
    creds = server_credentials(settings)
    port = server.add_secure_port(address, creds) if creds else server.add_insecure_port(address)
    if port == 0:
        raise OSError(f"{name}: cannot listen on {address} (port in use or address not local?)")
    await server.start()
    running = RunningServer(name, server, health_servicer, readiness, port, service_names)
    if settings.metrics_port is not None:
        http, _thread = start_http_server(settings.metrics_port, addr=settings.metrics_host)
        running._metrics_http = http
        running.metrics_port = http.server_port
    log.info("listening", service=name, port=port, tls=creds is not None, auth=settings.auth_token is not None)
    return running


async def serve(
    name: str,
    settings: ServiceSettings,
    register: Register,
    warm_up: Callable[[], Awaitable[None]],
    on_stop: Callable[[], Awaitable[None]] | None = None,
    on_serving: Callable[[RunningServer], Awaitable[None]] | None = None,
) -> None:
    """Runs a service until SIGTERM/SIGINT: listen (NOT_SERVING), warm up, SERVING, drain."""
    if settings.server.metrics_port is not None and settings.device.device != "cpu":
        # GPU utilisation and memory beside the service's own metrics (no-op without a GPU).
        install_gpu_metrics()
    running = await start_server(name, settings.server, register)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    warm: asyncio.Future[Any] = asyncio.ensure_future(warm_up())
    stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
    done, _ = await asyncio.wait({warm, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if warm in done:
        warm.result()  # a failed load ends the process with its error
        await running.set_serving()
        if on_serving is not None:
            await on_serving(running)
        await stopped
    else:
        warm.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await warm
    log.info("stopping", grace_seconds=settings.server.grace_seconds)
    await running.stop(settings.server.grace_seconds)
    if on_stop is not None:
        await on_stop()
    log.info("stopped")


class ServiceApp(Protocol):
    """What a service hands the runtime: its servicers, its warm-up and its clean-up."""

    name: str

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        """Adds the servicers; returns their full service names."""
        ...

    async def warm_up(self) -> None:
        """Loads and warms the models (runs while health says NOT_SERVING)."""
        ...

    async def close(self) -> None:
        """Releases models and connections after the server stopped."""
        ...

    # Optional: ``async def on_serving(self, running: RunningServer) -> None``, called once the
    # server is SERVING (an app that reports more than up/down in its health, such as load).


async def start_app(app: ServiceApp, settings: ServerSettings) -> RunningServer:
    """Starts an app and waits until it is SERVING (tests and embedding)."""
    running = await start_server(app.name, settings, app.register)
    try:
        await app.warm_up()
    except BaseException:
        await running.stop(0)
        raise
    await running.set_serving()
    if (on_serving := getattr(app, "on_serving", None)) is not None:
        await on_serving(running)
    return running
