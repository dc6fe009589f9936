"""Wyoming speech-to-text over the STT service's StreamingRecognize.

``transcribe`` (language), ``audio-start``, ``audio-chunk``..., ``audio-stop`` →
``transcript-start``, a ``transcript-chunk`` per utterance as soon as it is recognised,
``transcript-stop``, then the whole ``transcript`` (what clients without streaming read).
"""

from __future__ import annotations

import asyncio
import contextlib
from typing import TYPE_CHECKING, Any

from wyoming.asr import Transcribe, Transcript, TranscriptChunk, TranscriptStart, TranscriptStop
from wyoming.audio import AudioChunk, AudioChunkConverter, AudioStart, AudioStop
from wyoming.event import Event
from wyoming.info import AsrModel, AsrProgram, Describe, Info

from parole.audio.v1 import audio_pb2
from parole.stt.v1 import stt_pb2
from services.gateway.errors import ApiError
from services.gateway.metrics import WYOMING_REQUESTS
from services.gateway.wyoming_protocol import ATTRIBUTION, LANGUAGES, VERSION, BadRequest, Handler
from services.runtime.audio import INPUT_RATES, PCM16_WIDTH, SPEECH_RATE
from services.runtime.logging import get_logger
from services.runtime.streams import Channel

if TYPE_CHECKING:
    from services.gateway.app import GatewayApp

log = get_logger(__name__)


class AsrHandler(Handler):
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
