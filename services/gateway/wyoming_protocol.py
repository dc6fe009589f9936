"""The Wyoming protocol as both of the gateway's Wyoming servers speak it: events read with
bounds (``read_event``), and a connection handler (``Handler``) that turns every failure into an
``error`` event and keeps serving, unless the byte stream itself is broken. The ASR and TTS
handlers (``wyoming_asr``, ``wyoming_tts``) build on it; ``wyoming_api`` starts the servers.
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING

import grpc
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import Attribution
from wyoming.server import AsyncEventHandler

from services.gateway.errors import ApiError, from_grpc
from services.gateway.jsonbody import NotAnObject, NotJson, parse_object
from services.gateway.metrics import WYOMING_CONNECTIONS, WYOMING_REQUESTS
from services.runtime.logging import get_logger

if TYPE_CHECKING:
    from services.gateway.app import GatewayApp

log = get_logger(__name__)

ATTRIBUTION = Attribution(name="Parole", url="https://github.com/")
VERSION = "0.1.0"
LANGUAGES = ["fr", "en"]
"""What the fleet is built and tested for (Whisper knows more, the LLM prompts and voices not)."""


class ProtocolError(Exception):
    """The byte stream is not Wyoming: the connection cannot continue."""


async def read_event(reader: asyncio.StreamReader, limit: int) -> Event | None:
    """``wyoming.event.async_read_event`` with bounds: its lengths come from the client, and
    unchecked they would let one connection allocate any amount of memory."""
    try:
        line = await reader.readline()
    except (ValueError, asyncio.LimitOverrunError) as exc:  # a header line past the reader's limit
        raise ProtocolError("event header line too long") from exc
    if not line:
        return None
    try:
        header = parse_object(line)
    except NotJson as exc:
        raise ProtocolError(f"event header is not JSON: {exc}") from exc
    except NotAnObject as exc:
        raise ProtocolError("event header must be a JSON object with a 'type'") from exc
    if not isinstance(header.get("type"), str):
        raise ProtocolError("event header must be a JSON object with a 'type'")
    data = header.get("data") or {}
    if not isinstance(data, dict):
        raise ProtocolError("event 'data' must be an object")
    lengths = []
    for key in ("data_length", "payload_length"):
        n = header.get(key) or 0
        if not isinstance(n, int) or isinstance(n, bool) or n < 0 or n > limit:
            raise ProtocolError(f"{key} must be an integer from 0 to {limit}; got {n!r}")
        lengths.append(n)
    try:
        if lengths[0]:
            data.update(parse_object(await reader.readexactly(lengths[0])))
        payload = await reader.readexactly(lengths[1]) if lengths[1] else None
    except asyncio.IncompleteReadError:
        return None  # the client went away mid-event
    except NotJson as exc:
        raise ProtocolError(f"event data is not JSON: {exc}") from exc
    except NotAnObject as exc:
        raise ProtocolError("event data must be a JSON object") from exc
    return Event(type=header["type"], data=data, payload=payload)


class BadRequest(Exception):
    """A request this server refuses; the client gets an ``error`` event."""

    def __init__(self, text: str, code: str = "invalid_request") -> None:
        super().__init__(text)
        self.text, self.code = text, code


class Handler(AsyncEventHandler):
    """One connection: bounded reads, and an ``error`` event for every failure."""

    server_name = ""

    def __init__(self, app: GatewayApp, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(reader, writer)
        self.app = app
        self.settings = app.settings.wyoming

    async def run(self) -> None:
        WYOMING_CONNECTIONS.labels(self.server_name).inc()
        self._is_running = True
        try:
            while self._is_running:
                try:
                    event = await read_event(self.reader, self.settings.max_payload_bytes)
                except ProtocolError as exc:
                    log.warning(
                        "wyoming: malformed event, closing the connection", server=self.server_name, error=str(exc)
                    )
                    await self._error(f"malformed event: {exc}", "protocol_error")
                    break
                if event is None:
                    break
                try:
                    if not await self.handle_event(event):
                        break
                except BadRequest as exc:
                    await self._fail(exc.text, exc.code)
                except ApiError as exc:
                    await self._fail(exc.message, exc.code or exc.type)
                except grpc.aio.AioRpcError as exc:
                    api = from_grpc(exc, "stt" if self.server_name == "asr" else "tts")
                    await self._fail(api.message, api.code or api.type)
                except (KeyError, TypeError, ValueError, AttributeError) as exc:
                    # Wrong types inside an event's data (the wyoming classes do not check them).
                    await self._fail(f"bad {event.type} event: {exc.__class__.__name__}: {exc}", "invalid_request")
                except Exception as exc:
                    # A bug must cost this request an error event, not the connection.
                    log.exception("wyoming request failed unexpectedly", server=self.server_name)
                    await self._fail(f"internal error handling {event.type}: {exc}", "internal")
        except (ConnectionError, OSError):
            pass  # the client went away
        finally:
            WYOMING_CONNECTIONS.labels(self.server_name).dec()
            await self.disconnect()
            with contextlib.suppress(Exception):
                self.writer.close()

    async def _fail(self, text: str, code: str) -> None:
        WYOMING_REQUESTS.labels(self.server_name, "error").inc()
        log.warning("wyoming request failed", server=self.server_name, error=text)
        await self.reset()
        await self._error(text, code)

    async def _error(self, text: str, code: str) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            await self.write_event(Error(text=text, code=code).event())

    async def reset(self) -> None:
        """Forgets the request in progress after a failure."""

    async def handle_event(self, event: Event) -> bool:
        raise NotImplementedError
