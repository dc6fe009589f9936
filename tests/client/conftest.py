"""A fake orchestrator on loopback, one per test, and helpers to reach it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import pytest

from services.runtime.config import ServerSettings
from services.runtime.server import RunningServer, start_app
from tests.client.fake_orchestrator import FakeApp, FakeOrchestrator, Script


class FakeServer:
    """Starts fakes with a given script; stops them at the end of the test."""

    def __init__(self) -> None:
        self.running: list[RunningServer] = []

    async def start(self, script: Script | None = None) -> tuple[FakeOrchestrator, str]:
        fake = FakeOrchestrator(script)
        settings = ServerSettings(host="127.0.0.1", port=0, metrics_port=None, grace_seconds=0.5)
        running = await start_app(FakeApp(fake), settings)
        self.running.append(running)
        return fake, f"127.0.0.1:{running.port}"


@pytest.fixture
async def fake_server() -> AsyncIterator[FakeServer]:
    servers = FakeServer()
    yield servers
    for running in servers.running:
        await running.stop(0)


@pytest.fixture
async def open_channels() -> AsyncIterator[Callable[[str], grpc.aio.Channel]]:
    channels: list[grpc.aio.Channel] = []

    def make(target: str) -> grpc.aio.Channel:
        channel = grpc.aio.insecure_channel(target)
        channels.append(channel)
        return channel

    yield make
    for channel in channels:
        await channel.close()
