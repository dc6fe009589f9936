"""Fixtures for the shared-runtime tests: an echo server and a channel to it."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc
import pytest

from services.runtime.config import ServerSettings
from services.runtime.server import RunningServer, start_app
from tests.foundation.echo_service import EchoApp, EchoSettings


def local(**kw: object) -> ServerSettings:
    """Server settings for a loopback test server on a free port."""
    base: dict[str, object] = {"host": "127.0.0.1", "port": 0, "metrics_port": None, "grace_seconds": 1.0}
    base.update(kw)
    return ServerSettings(**base)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
async def echo_server() -> AsyncIterator[RunningServer]:
    """An echo server with metrics, serving for the whole session."""
    running = await start_app(EchoApp(EchoSettings()), local(metrics_port=0))
    yield running
    await running.stop(0)


@pytest.fixture
async def echo_channel(echo_server: RunningServer) -> AsyncIterator[grpc.aio.Channel]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{echo_server.port}") as channel:
        yield channel
