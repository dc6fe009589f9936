"""A small HTTP/1.1 server that speaks Ollama's chat API, for fault injection.

It answers ``POST /api/chat`` with streaming NDJSON the way Ollama does (chunked transfer
encoding, one JSON object per line, a final ``done: true`` object with usage), plus
``/api/version`` and ``/api/tags``, so the real ``ollama.AsyncClient`` talks to it over real
TCP. ``mode`` picks the behaviour of the next calls:

- ``ok``: streams ``words`` then a done object;
- ``slow``: sends the headers, then waits ``delay`` seconds before the first line;
- ``garbage``: a 200 with a body that is not JSON;
- ``drop``: half a JSON line, then the connection is cut (no terminating chunk);
- ``drop_after_delta``: two content lines, then the connection is cut;
- ``error``: HTTP 500 with an Ollama error object.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from dataclasses import dataclass, field
from typing import Any


@dataclass
class FakeOllama:
    mode: str = "ok"
    words: list[str] = field(default_factory=lambda: ["Bonjour", " depuis", " Ollama", "."])
    delay: float = 5.0
    requests: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    port: int = 0
    _server: asyncio.Server | None = None
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> FakeOllama:
        self._server = await asyncio.start_server(self._on_client, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            for t in list(self._tasks):
                t.cancel()
            await self._server.wait_closed()

    def chats(self) -> list[dict[str, Any]]:
        """Chat requests with a conversation (not the warm-up's empty one)."""
        return [body for _m, path, body in self.requests if path == "/api/chat" and body.get("messages")]

    def warm_ups(self) -> list[dict[str, Any]]:
        """Empty chats: Ollama's way to load a model."""
        return [body for _m, path, body in self.requests if path == "/api/chat" and not body.get("messages")]

    async def _on_client(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)  # type: ignore[arg-type]
        try:
            await self._handle(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError, asyncio.CancelledError):
            pass
        finally:
            self._tasks.discard(task)  # type: ignore[arg-type]
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        method, path, _ = lines[0].split(" ", 2)
        headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
        payload = json.loads(body) if body else {}
        self.requests.append((method, path, payload))
        if path == "/api/version":
            await self._json(writer, 200, {"version": "0.12.0-fake"})
        elif path == "/api/tags":
            await self._json(writer, 200, {"models": [{"name": "nous-hermes-2-mistral-7b-dpo:latest", "model": "x"}]})
        elif path == "/api/chat":
            await self._chat(writer, payload)
        else:
            await self._json(writer, 404, {"error": f"no route {path}"})

    async def _json(self, writer: asyncio.StreamWriter, status: int, obj: dict[str, Any]) -> None:
        data = json.dumps(obj).encode()
        writer.write(
            f"HTTP/1.1 {status} X\r\nContent-Type: application/json\r\nContent-Length: {len(data)}\r\n"
            f"Connection: close\r\n\r\n".encode()
            + data
        )
        await writer.drain()

    async def _chunk(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        await writer.drain()

    def _line(self, payload: dict[str, Any], content: str, done: bool, **extra: Any) -> bytes:
        obj = {
            "model": payload.get("model", ""),
            "created_at": "2026-11-23T00:00:00Z",
            "message": {"role": "assistant", "content": content},
            "done": done,
            **extra,
        }
        return json.dumps(obj).encode() + b"\n"

    async def _chat(self, writer: asyncio.StreamWriter, payload: dict[str, Any]) -> None:
        if self.mode == "error":
            await self._json(writer, 500, {"error": "model is broken"})
            return
        if not payload.get("messages"):  # the warm-up call: load the model, answer done
            await self._json(writer, 200, json.loads(self._line(payload, "", True, done_reason="load")))
            return
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/x-ndjson\r\nTransfer-Encoding: chunked\r\n"
            b"Connection: close\r\n\r\n"
        )
        await writer.drain()
        if self.mode == "slow":
            await asyncio.sleep(self.delay)
        if self.mode == "garbage":
            await self._chunk(writer, b"<html>this is not json</html>\n")
        elif self.mode == "drop":
            await self._chunk(writer, self._line(payload, "Bonj", False)[:20])
            writer.transport.abort()
            return
        elif self.mode == "drop_after_delta":
            for w in self.words[:2]:
                await self._chunk(writer, self._line(payload, w, False))
            await asyncio.sleep(0.05)
            writer.transport.abort()
            return
        else:
            for w in self.words:
                await self._chunk(writer, self._line(payload, w, False))
            await self._chunk(
                writer,
                self._line(payload, "", True, done_reason="stop", prompt_eval_count=42, eval_count=len(self.words)),
            )
        writer.write(b"0\r\n\r\n")
        await writer.drain()
