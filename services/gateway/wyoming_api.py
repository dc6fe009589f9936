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
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import grpc
from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.error import Error
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Attribution, Describe, Info, TtsProgram, TtsVoice
from wyoming.server import AsyncEventHandler, AsyncTcpServer
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from parole.audio.v1 import audio_pb2
from parole.stt.v1 import stt_pb2
from parole.tts.v1 import tts_pb2
from services.gateway.catalog import VoiceChoice
from services.gateway.errors import ApiError, from_grpc
from services.gateway.metrics import WYOMING_CONNECTIONS, WYOMING_REQUESTS
from services.runtime.audio import INPUT_RATES, PCM16_WIDTH, SPEECH_RATE
from services.runtime.logging import get_logger
from services.runtime.streams import Channel

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
        header = json.loads(line)
    except ValueError as exc:
        raise ProtocolError(f"event header is not JSON: {exc}") from exc
    if not isinstance(header, dict) or not isinstance(header.get("type"), str):
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
            extra = json.loads(await reader.readexactly(lengths[0]))
            if not isinstance(extra, dict):
                raise ProtocolError("event data must be a JSON object")
            data.update(extra)
        payload = await reader.readexactly(lengths[1]) if lengths[1] else None
    except asyncio.IncompleteReadError:
        return None  # the client went away mid-event
    except ValueError as exc:
        raise ProtocolError(f"event data is not JSON: {exc}") from exc
    return Event(type=header["type"], data=data, payload=payload)


class BadRequest(Exception):
    """A request this server refuses; the client gets an ``error`` event."""

    def __init__(self, text: str, code: str = "invalid_request") -> None:
        super().__init__(text)
        self.text, self.code = text, code


class _Handler(AsyncEventHandler):
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


# ---------------------------------------------------------------------------------- ASR
class AsrHandler(_Handler):
    """Speech-to-text over StreamingRecognize: each utterance is sent back as it is recognised."""

    server_name = "asr"

    def __init__(self, app: GatewayApp, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(app, reader, writer)
        self.language = ""
        self.model = ""
        self._audio: Channel[stt_pb2.StreamingRecognizeRequest] | None = None
        """The open transcription's request stream (config first, then audio), or None."""
        self._results: asyncio.Task[list[str]] | None = None
        self._converter: AudioChunkConverter | None = None
        self._rate = SPEECH_RATE
        self._seconds = 0.0

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event((await asr_info(self.app)).event())
        elif Transcribe.is_type(event.type):
            t = Transcribe.from_event(event)
            if t.language is not None and not isinstance(t.language, str):
                raise BadRequest("transcribe.language must be a string")
            self.language = (t.language or "").split("-")[0].split("_")[0].lower()
            self.model = t.name or ""
        elif AudioStart.is_type(event.type):
            await self._start(AudioStart.from_event(event))
        elif AudioChunk.is_type(event.type):
            await self._chunk(AudioChunk.from_event(event))
        elif AudioStop.is_type(event.type):
            await self._stop()
        return True

    async def _start(self, fmt: AudioStart | AudioChunk) -> None:
        await self.reset()
        if fmt.width not in (1, 2, 4) or not 1 <= fmt.channels <= 8 or not 1 <= fmt.rate <= 192000:
            raise BadRequest(
                f"unsupported audio format: {fmt.rate} Hz, {fmt.width} bytes, {fmt.channels} channels",
                "bad_audio_format",
            )
        # The STT takes 16-bit mono at a few rates; anything else is converted here.
        self._rate = fmt.rate if fmt.rate in INPUT_RATES else SPEECH_RATE
        self._converter = AudioChunkConverter(rate=self._rate, width=PCM16_WIDTH, channels=1)
        self._seconds = 0.0
        hint = await self.app.catalog.stt_hint(self.model)
        config = stt_pb2.RecognitionConfig(
            language=self.language,
            audio_format=audio_pb2.AudioFormat(
                sample_rate_hz=self._rate, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, channels=1
            ),
            model_hint=hint,
        )
        requests: Channel[stt_pb2.StreamingRecognizeRequest] = Channel()
        requests.send_nowait(stt_pb2.StreamingRecognizeRequest(config=config))
        self._audio = requests
        call = self.app.stt.StreamingRecognize(requests, timeout=self.app.settings.http.timeout_seconds)
        self._results = asyncio.create_task(self._read_results(call))
        await self.write_event(TranscriptStart(language=self.language or None).event())

    async def _read_results(self, call: Any) -> list[str]:
        parts: list[str] = []
        try:
            async for response in call:
                r = response.result
                if response.HasField("result") and r.is_final and r.transcript.strip():
                    if not self.language and r.language:
                        self.language = r.language
                    text = r.transcript.strip()
                    await self.write_event(TranscriptChunk(text=(" " if parts else "") + text).event())
                    parts.append(text)
        except asyncio.CancelledError:
            call.cancel()
            raise
        return parts

    async def _chunk(self, chunk: AudioChunk) -> None:
        if self._audio is None:
            await self._start(chunk)  # audio-start is optional: a chunk says its format too
        assert self._audio is not None and self._converter is not None
        if self._results is not None and self._results.done():
            self._results.result()  # the stream failed: raise its error now
        data = self._converter.convert(chunk).audio
        self._seconds += len(data) / PCM16_WIDTH / self._rate
        if self._seconds > self.settings.max_audio_seconds:
            raise BadRequest(
                f"more than {self.settings.max_audio_seconds:g} s of audio in one transcription", "audio_too_long"
            )
        if data:
            self._audio.send_nowait(stt_pb2.StreamingRecognizeRequest(audio=data))

    async def _stop(self) -> None:
        if self._audio is None or self._results is None:
            # audio-stop with no audio: nothing was said (what wyoming-faster-whisper answers too).
            await self.write_event(TranscriptStop().event())
            await self.write_event(Transcript(text="", language=self.language or None).event())
            WYOMING_REQUESTS.labels("asr", "empty").inc()
            return
        self._audio.close()
        results, self._results, self._audio = self._results, None, None
        parts = await results
        await self.write_event(TranscriptStop().event())
        await self.write_event(Transcript(text=" ".join(parts), language=self.language or None).event())
        WYOMING_REQUESTS.labels("asr", "ok").inc()

    async def reset(self) -> None:
        if self._results is not None:
            self._results.cancel()
            with contextlib.suppress(BaseException):
                await self._results
        self._results, self._audio = None, None

    async def disconnect(self) -> None:
        await self.reset()


async def asr_info(app: GatewayApp) -> Info:
    try:
        engines = await app.catalog.engines()
    except ApiError as exc:
        log.warning("wyoming describe: the STT service did not answer", error=exc.message)
        engines = []
    models = [
        AsrModel(
            name=e.name,
            description=f"{e.model} on {e.device}",
            attribution=ATTRIBUTION,
            installed=True,
            version=VERSION,
            languages=["en"] if e.model.endswith(".en") else LANGUAGES,
        )
        for e in engines
    ] or [
        AsrModel(
            name="parole",
            description="Parole STT (service unreachable now)",
            attribution=ATTRIBUTION,
            installed=True,
            version=VERSION,
            languages=LANGUAGES,
        )
    ]
    program = AsrProgram(
        name="parole-stt",
        description="Parole speech-to-text (faster-whisper) through the Parole gateway",
        attribution=ATTRIBUTION,
        installed=True,
        version=VERSION,
        models=models,
        supports_transcript_streaming=True,
    )
    return Info(asr=[program])


# ---------------------------------------------------------------------------------- TTS
class TtsHandler(_Handler):
    """Text-to-speech: whole texts over SynthesizeStream, text streams over StreamingSynthesize."""

    server_name = "tts"

    def __init__(self, app: GatewayApp, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        super().__init__(app, reader, writer)
        self._text: Channel[tts_pb2.StreamingSynthesizeRequest] | None = None
        """The open text stream's requests (config first, then text), or None."""
        self._audio: asyncio.Task[None] | None = None

    async def handle_event(self, event: Event) -> bool:
        if Describe.is_type(event.type):
            await self.write_event((await tts_info(self.app)).event())
        elif Synthesize.is_type(event.type):
            if self._text is not None:
                return True  # sent beside a stream for older servers; the stream speaks it
            s = Synthesize.from_event(event)
            await self._synthesize(s.text, s.voice)
        elif SynthesizeStart.is_type(event.type):
            await self._stream_start(SynthesizeStart.from_event(event).voice)
        elif SynthesizeChunk.is_type(event.type):
            if self._text is None:
                raise BadRequest("synthesize-chunk outside a stream: send synthesize-start first", "no_stream")
            text = SynthesizeChunk.from_event(event).text
            if not isinstance(text, str):
                raise BadRequest("synthesize-chunk.text must be a string")
            self._text.send_nowait(tts_pb2.StreamingSynthesizeRequest(text=text))
        elif SynthesizeStop.is_type(event.type):
            await self._stream_stop()
        return True

    async def _config(self, voice: SynthesizeVoice | None) -> tts_pb2.SynthesisConfig:
        choice = VoiceChoice("", self.app.settings.defaults.speech_language)
        if voice is not None and voice.name:
            choice = await self.app.catalog.voice(voice.name)
        elif voice is not None and voice.language:
            choice = VoiceChoice("", voice.language.split("-")[0].split("_")[0].lower())
        config = tts_pb2.SynthesisConfig(voice=choice.voice, language=choice.language)
        if voice is not None and voice.speaker is not None and str(voice.speaker).isdigit():
            config.speaker_id = int(voice.speaker)
        return config

    async def _send_audio(self, chunks: AsyncIterator[tts_pb2.AudioChunk], *, start_sent: bool = False) -> bool:
        """Writes the audio of a synthesis as Wyoming chunks; True once audio-start was sent."""
        rate = 0
        step = self.settings.samples_per_chunk * PCM16_WIDTH
        async for chunk in chunks:
            if not start_sent:
                rate = chunk.format.sample_rate_hz
                await self.write_event(AudioStart(rate=rate, width=PCM16_WIDTH, channels=1).event())
                start_sent = True
            rate = chunk.format.sample_rate_hz or rate
            for i in range(0, len(chunk.audio), step):
                piece = chunk.audio[i : i + step]
                await self.write_event(AudioChunk(rate=rate, width=PCM16_WIDTH, channels=1, audio=piece).event())
        return start_sent

    async def _synthesize(self, text: str, voice: SynthesizeVoice | None) -> None:
        if not isinstance(text, str) or not text.strip():
            raise BadRequest("synthesize.text is empty: there is nothing to speak", "empty_text")
        config = await self._config(voice)
        call = self.app.tts.SynthesizeStream(
            tts_pb2.SynthesizeStreamRequest(text=text, config=config), timeout=self.app.settings.http.timeout_seconds
        )
        if await self._send_audio(_audio(call)):
            await self.write_event(AudioStop().event())
        WYOMING_REQUESTS.labels("tts", "ok").inc()

    async def _stream_start(self, voice: SynthesizeVoice | None) -> None:
        await self.reset()
        config = await self._config(voice)
        requests: Channel[tts_pb2.StreamingSynthesizeRequest] = Channel()
        requests.send_nowait(tts_pb2.StreamingSynthesizeRequest(config=config))
        self._text = requests
        call = self.app.tts.StreamingSynthesize(requests, timeout=self.app.settings.http.timeout_seconds)

        async def speak() -> None:
            try:
                if await self._send_audio(_audio(call)):
                    await self.write_event(AudioStop().event())
            except asyncio.CancelledError:
                call.cancel()
                raise

        self._audio = asyncio.create_task(speak())

    async def _stream_stop(self) -> None:
        if self._text is None or self._audio is None:
            raise BadRequest("synthesize-stop outside a stream: send synthesize-start first", "no_stream")
        self._text.close()
        audio, self._audio, self._text = self._audio, None, None
        await audio
        await self.write_event(SynthesizeStopped().event())
        WYOMING_REQUESTS.labels("tts", "ok").inc()

    async def reset(self) -> None:
        if self._audio is not None:
            self._audio.cancel()
            with contextlib.suppress(BaseException):
                await self._audio
        self._audio, self._text = None, None

    async def disconnect(self) -> None:
        await self.reset()


async def _audio(call: Any) -> AsyncIterator[tts_pb2.AudioChunk]:
    async for response in call:
        yield response.audio


async def tts_info(app: GatewayApp) -> Info:
    try:
        voices = await app.catalog.voices()
    except ApiError as exc:
        log.warning("wyoming describe: the TTS service did not answer", error=exc.message)
        voices = []
    program = TtsProgram(
        name="parole-tts",
        description="Parole text-to-speech (Piper, espeak-ng) through the Parole gateway",
        attribution=ATTRIBUTION,
        installed=True,
        version=VERSION,
        voices=[
            TtsVoice(
                name=v.name,
                description=f"{v.engine} {v.locale} {v.quality}".strip(),
                attribution=ATTRIBUTION,
                installed=True,
                version=VERSION,
                languages=[v.language],
            )
            for v in voices
        ],
        supports_synthesize_streaming=True,
    )
    return Info(tts=[program])


# ---------------------------------------------------------------------------------- servers
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
