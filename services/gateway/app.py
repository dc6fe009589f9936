"""The gateway as a runtime service: channels to the fleet, the HTTP/WebSocket server
(uvicorn) and the two Wyoming servers, started and stopped with the runtime's lifecycle.

The runtime's gRPC server carries only health (and reflection): the fleet launcher, container
health checks and Kubernetes probe the gateway exactly as they probe every other service, and
it reports SERVING once its own servers listen and the services behind it answered (or the
bounded wait for them ran out).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc
import uvicorn

from parole.llm.v1 import llm_pb2_grpc
from parole.stt.v1 import stt_pb2_grpc
from parole.tts.v1 import tts_pb2_grpc
from services.gateway.catalog import Catalog
from services.gateway.config import GatewaySettings
from services.gateway.web import build_web_app
from services.gateway.wyoming_api import WyomingServer, start_wyoming
from services.runtime import healthcheck
from services.runtime.channel import open_channel
from services.runtime.logging import get_logger

if TYPE_CHECKING:
    from services.gateway.realtime import RealtimeSession

log = get_logger(__name__)


class GatewayApp:
    """Everything the gateway runs; ``register``/``warm_up``/``close`` are the runtime's hooks."""

    name = "gateway"

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.started_at = time.time()
        self.channels = {
            name: open_channel(getattr(settings, name), settings.server)
            for name in ("stt", "llm", "tts", "orchestrator")
        }
        self.stt = stt_pb2_grpc.SttServiceStub(self.channels["stt"])
        self.llm = llm_pb2_grpc.LlmServiceStub(self.channels["llm"])
        self.tts = tts_pb2_grpc.TtsServiceStub(self.channels["tts"])
        self.catalog = Catalog(self.stt, self.llm, self.tts, settings.defaults)
        self.realtime_sessions: set[RealtimeSession] = set()
        self.ready = False
        self.http_port: int | None = None
        self.wyoming: list[WyomingServer] = []
        self._http: uvicorn.Server | None = None
        self._http_task: asyncio.Task[None] | None = None

    @property
    def asr_port(self) -> int | None:
        return self.wyoming[0].bound_port if self.wyoming else None

    @property
    def tts_port(self) -> int | None:
        return self.wyoming[1].bound_port if self.wyoming else None

    def register(self, server: grpc.aio.Server) -> Sequence[str]:
        return []  # health and reflection only: the gateway's APIs are HTTP and Wyoming

    async def warm_up(self) -> None:
        await self._start_http()
        if self.settings.wyoming.enabled:
            self.wyoming = await start_wyoming(self)
        await self._wait_dependencies()
        self.ready = True

    async def _start_http(self) -> None:
        s = self.settings
        tls = s.http.tls if s.http.tls.enabled else s.server.tls
        config = uvicorn.Config(
            build_web_app(self),
            host=s.http_host(),
            port=s.http.port,
            lifespan="off",
            log_config=None,  # the runtime's structlog handler formats uvicorn's records too
            access_log=False,
            proxy_headers=False,
            ws_max_size=2 * s.http.max_event_bytes,
            ws_ping_interval=s.server.keepalive_time_seconds,
            ws_ping_timeout=s.server.keepalive_timeout_seconds,
            timeout_graceful_shutdown=int(s.server.grace_seconds) or None,
            ssl_certfile=str(tls.cert_file) if tls.cert_file else None,
            ssl_keyfile=str(tls.key_file) if tls.key_file else None,
            ssl_ca_certs=str(tls.client_ca_file) if tls.client_ca_file else None,
            ssl_cert_reqs=ssl.CERT_REQUIRED if tls.client_ca_file else ssl.CERT_NONE,
        )
        config.load()
        server = uvicorn.Server(config)
        # Server.serve() would install its own signal handlers over the runtime's; its parts
        # are public, so the gateway runs them itself and the runtime keeps SIGTERM.
        server.lifespan = config.lifespan_class(config)
        try:
            await server.startup()
        except SystemExit as exc:  # uvicorn exits when it cannot bind
            raise OSError(f"gateway: cannot listen on {s.http_host()}:{s.http.port} (port in use?)") from exc
        self._http = server
        self.http_port = int(server.servers[0].sockets[0].getsockname()[1])
        self._http_task = asyncio.create_task(server.main_loop(), name="http-main-loop")
        log.info("http listening", port=self.http_port, tls=tls.enabled, auth=s.server.auth_token is not None)

    async def _wait_dependencies(self) -> None:
        deadline = time.monotonic() + self.settings.dependency_wait_seconds
        pending = dict(self.channels)
        while pending and time.monotonic() < deadline:
            for name, channel in list(pending.items()):
                with contextlib.suppress(grpc.aio.AioRpcError):
                    if await healthcheck.status(channel, deadline=2) == healthcheck.SERVING:
                        del pending[name]
                        log.info("dependency serving", dependency=name)
            if pending:
                await asyncio.sleep(0.5)
        if pending:
            log.warning("serving without these dependencies; their calls get 503", missing=sorted(pending))

    async def close(self) -> None:
        """After the runtime stopped the health server: end Realtime sessions with a reason,
        let HTTP requests and Wyoming connections finish within the grace period, close channels."""
        self.ready = False
        grace = self.settings.server.grace_seconds
        await asyncio.gather(
            *(s.shutdown("the gateway is shutting down") for s in list(self.realtime_sessions)),
            return_exceptions=True,
        )
        if self._http is not None:
            self._http.should_exit = True
            if self._http_task is not None:
                await self._http_task
            await self._http.shutdown()
            self._http = None
        await asyncio.gather(*(w.drain(grace) for w in self.wyoming), return_exceptions=True)
        self.wyoming = []
        for channel in self.channels.values():
            await channel.close()


def build(settings: GatewaySettings) -> GatewayApp:
    return GatewayApp(settings)
