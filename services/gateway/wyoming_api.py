"""Home Assistant's Wyoming protocol: an ASR server (tcp 10300) over the STT service's
streaming recognition and a TTS server (tcp 10200) over the TTS service, both with the
``wyoming`` package's server and event classes.

ASR: ``transcribe`` (language), ``audio-start``, ``audio-chunk``..., ``audio-stop`` →
``transcript-start``, a ``transcript-chunk`` per utterance as soon as it is recognised,
``transcript-stop``, then the whole ``transcript`` (what clients without streaming read).
TTS: ``synthesize`` → ``audio-start``/``audio-chunk``.../``audio-stop``; and streaming,
``synthesize-start``/``synthesize-chunk``.../``synthesize-stop`` → audio as each clause is
ready, then ``synthesize-stopped``. A bad request gets an ``error`` event and the connection
keeps serving; a malformed event (the stream cannot be resynchronised) ends that connection.

This module starts the two servers; the handlers are ``wyoming_asr`` and ``wyoming_tts``, over
``wyoming_protocol`` (bounded event reads, the error-per-request connection loop).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

from wyoming.server import AsyncTcpServer

from services.gateway.wyoming_asr import AsrHandler
from services.gateway.wyoming_tts import TtsHandler
from services.runtime.logging import get_logger

if TYPE_CHECKING:
    from services.gateway.app import GatewayApp

log = get_logger(__name__)


class WyomingServer(AsyncTcpServer):
    """``wyoming``'s TCP server, with the bound port (0 picks one) and a graceful stop."""

    @property
    def bound_port(self) -> int:
        server = self._server
        assert isinstance(server, asyncio.Server) and server.sockets
        return int(server.sockets[0].getsockname()[1])

    async def drain(self, grace: float) -> None:
        """Stops accepting, gives connections in progress ``grace`` seconds, then closes them."""
        if self._server is not None:
            self._server.close()
        tasks = list(self._handlers)
        if tasks:
            await asyncio.wait(tasks, timeout=grace)
        await self.stop()


async def start_wyoming(app: GatewayApp) -> list[WyomingServer]:
    settings = app.settings
    host = settings.wyoming_host()
    asr = WyomingServer(host, settings.wyoming.asr_port)
    tts = WyomingServer(host, settings.wyoming.tts_port)
    await asr.start(lambda r, w: AsrHandler(app, r, w))
    await tts.start(lambda r, w: TtsHandler(app, r, w))
    log.info("wyoming listening", asr_port=asr.bound_port, tts_port=tts.bound_port)
    if settings.server.auth_token is not None:
        log.warning(
            "wyoming has no authentication: the API key does not protect its ports; keep them on a trusted "
            "network or set GATEWAY_WYOMING__ENABLED=false"
        )
    return [asr, tts]
