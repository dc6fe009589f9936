"""Wyoming text-to-speech over the TTS service.

``synthesize`` → ``audio-start``/``audio-chunk``.../``audio-stop`` (SynthesizeStream); and
streaming, ``synthesize-start``/``synthesize-chunk``.../``synthesize-stop`` → audio as each
clause is ready, then ``synthesize-stopped`` (StreamingSynthesize).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from wyoming.audio import AudioChunk, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import Describe, Info, TtsProgram, TtsVoice
from wyoming.tts import Synthesize, SynthesizeChunk, SynthesizeStart, SynthesizeStop, SynthesizeStopped, SynthesizeVoice

from parole.tts.v1 import tts_pb2
from services.gateway.catalog import VoiceChoice
from services.gateway.errors import ApiError
from services.gateway.metrics import WYOMING_REQUESTS
from services.gateway.wyoming_protocol import ATTRIBUTION, VERSION, BadRequest, Handler
from services.runtime.audio import PCM16_WIDTH
from services.runtime.logging import get_logger
from services.runtime.streams import Channel

if TYPE_CHECKING:
    from services.gateway.app import GatewayApp

log = get_logger(__name__)


class TtsHandler(Handler):
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
