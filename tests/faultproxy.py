"""A fault-injecting TCP proxy for tests: put it between two services, then kill, delay or
reset the connections to see how the caller copes (real sockets, real gRPC traffic)."""

from __future__ import annotations

import asyncio
import contextlib
import socket


class FaultProxy:
    """Forwards 127.0.0.1:<port> to ``upstream``; ``kill()`` drops every connection and stops
    accepting (the service 'died'); ``revive()`` accepts again; ``delay`` adds latency per chunk;
    ``reset_after_bytes`` resets a connection once that much has flowed downstream;
    ``drop`` blackholes traffic (bytes are read and discarded, connections stay open, as on a
    dead route); ``bytes_per_second`` limits each direction's bandwidth."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self.delay = 0.0
        self.reset_after_bytes: int | None = None
        self.drop = False
        self.bytes_per_second: float | None = None
        self.port = 0
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()

    @property
    def target(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def start(self) -> FaultProxy:
        if self.port == 0:
            with socket.socket() as s:
                s.bind(("127.0.0.1", 0))
                self.port = s.getsockname()[1]
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        return self

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self._conns |= {writer, up_writer}
        await asyncio.gather(
            self._pipe(reader, up_writer, count=False),
            self._pipe(up_reader, writer, count=True),
            return_exceptions=True,
        )
        self._conns -= {writer, up_writer}

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, count: bool) -> None:
        sent = 0
        try:
            while data := await reader.read(65536):
                if self.drop:
                    continue  # blackhole: nothing arrives, nothing is closed
                if self.delay:
                    await asyncio.sleep(self.delay)
                if self.bytes_per_second:
                    await asyncio.sleep(len(data) / self.bytes_per_second)
                writer.write(data)
                await writer.drain()
                sent += len(data)
                if count and self.reset_after_bytes is not None and sent >= self.reset_after_bytes:
                    _abort(writer)
                    return
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def kill(self) -> None:
        """Stop listening and cut every open connection, as if the process died."""
        server, self._server = self._server, None
        if server is not None:
            server.close()
        for w in list(self._conns):
            _abort(w)
        self._conns.clear()
        if server is not None:
            await server.wait_closed()

    async def revive(self) -> None:
        await self.start()


def _abort(writer: asyncio.StreamWriter) -> None:
    transport = writer.transport
    with contextlib.suppress(Exception):
        transport.abort()  # RST, not a clean close
