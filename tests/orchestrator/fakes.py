"""Fake STT, LLM and TTS services for turn-level tests of the orchestrator: small in-process
servicers on one real grpc.aio server, so the orchestrator talks to them through its real
channels and stubs (request streams, cancellation, status codes) with no model behind them.

Each test scripts them: what the STT "hears" (``FakeStt.send``), what the LLM answers (or how
it fails, or that it waits mid-answer), how the TTS speaks (or fails, or which voice answers).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field

import grpc

from parole.audio.v1 import audio_pb2
from parole.llm.v1 import llm_pb2, llm_pb2_grpc
from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.runtime.streams import Channel, producing

TTS_RATE = 16000


class FakeStt(stt_pb2_grpc.SttServiceServicer):
    """Hears what the test says it heard; counts the microphone audio that reached it."""

    def __init__(self) -> None:
        self.fail: grpc.StatusCode | None = None
        """When set, every stream is refused with this status (the service is down)."""
        self.configs: list[stt_pb2.RecognitionConfig] = []
        self.attempts = 0
        self.attempted = asyncio.Event()
        self.audio_bytes = 0
        self.audio_arrived = asyncio.Event()
        self.ends_at: list[int] = []
        """For each end_utterance received: the audio bytes received before it."""
        self.connected = asyncio.Event()
        self.streams = 0
        """Streams opened (config read): ``send`` speaks on the newest."""
        self._live: Channel[stt_pb2.StreamingRecognizeResponse] | None = None

    def send(self, response: stt_pb2.StreamingRecognizeResponse) -> None:
        """Sends a speech event or transcript on the open stream."""
        assert self._live is not None, "no STT stream is open"
        self._live.send_nowait(response)

    async def StreamingRecognize(
        self, request_iterator: AsyncIterator[stt_pb2.StreamingRecognizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[stt_pb2.StreamingRecognizeResponse]:
        self.attempts += 1
        self.attempted.set()
        if self.fail is not None:
            await context.abort(self.fail, "fake STT failure")
        first = await anext(aiter(request_iterator))
        self.configs.append(first.config)
        live: Channel[stt_pb2.StreamingRecognizeResponse] = Channel()
        self._live = live
        self.streams += 1
        self.connected.set()
        # The stream ends when the orchestrator closes its side (the client is done).
        async with producing(live, self._read(request_iterator)) as responses:
            async for response in responses:
                yield response

    async def _read(self, requests: AsyncIterator[stt_pb2.StreamingRecognizeRequest]) -> None:
        async for request in requests:
            if request.WhichOneof("request") == "end_utterance":
                self.ends_at.append(self.audio_bytes)
            self.audio_bytes += len(request.audio)
            self.audio_arrived.set()


@dataclass
class FakeLlm(llm_pb2_grpc.LlmServiceServicer):
    """Answers every turn with ``reply``, piece by piece; or fails with ``fail``."""

    reply: Sequence[str] = ("Paris is ", "the capital ", "of France.")
    fail: grpc.StatusCode | None = None
    hold: asyncio.Event | None = None
    """When given, the answer stops after its first piece until this is set (or cancelled)."""
    fallback: bool = False
    """End like the LLM service's own last resort (FINISH_REASON_FALLBACK)."""
    requests: list[llm_pb2.GenerateRequest] = field(default_factory=list)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)
    called: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on each Generate call."""
    exchanges: list[llm_pb2.AddExchangeRequest] = field(default_factory=list)
    """What AddExchange was asked to remember."""

    async def AddExchange(
        self, request: llm_pb2.AddExchangeRequest, context: grpc.aio.ServicerContext
    ) -> llm_pb2.AddExchangeResponse:
        self.exchanges.append(request)
        return llm_pb2.AddExchangeResponse()

    async def Generate(
        self, request: llm_pb2.GenerateRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[llm_pb2.GenerateResponse]:
        self.requests.append(request)
        self.called.set()
        if self.fail is not None:
            await context.abort(self.fail, "fake LLM failure")
        try:
            for i, piece in enumerate(self.reply):
                yield llm_pb2.GenerateResponse(delta=piece)
                if i == 0 and self.hold is not None:
                    await self.hold.wait()
        except asyncio.CancelledError:
            self.cancelled.set()
            raise
        reason = llm_pb2.FINISH_REASON_FALLBACK if self.fallback else llm_pb2.FINISH_REASON_STOP
        yield llm_pb2.GenerateResponse(
            summary=llm_pb2.GenerationSummary(finish_reason=reason, text="".join(self.reply))
        )


@dataclass
class FakeTts(tts_pb2_grpc.TtsServiceServicer):
    """Speaks each piece of text it receives as ``chunk_seconds`` of silence; or fails."""

    fail: grpc.StatusCode | None = None
    chunk_seconds: float = 0.1
    voice: str = "fake-voice"
    """The voice that answers (a session asking for another sees a fallback)."""
    configs: list[tts_pb2.SynthesisConfig] = field(default_factory=list)
    texts: list[str] = field(default_factory=list)
    spoke: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on each piece of text spoken."""
    phrases: list[str] = field(default_factory=list)
    """Texts spoken whole (``Synthesize``: the orchestrator's wait notices and refusals)."""
    hold: asyncio.Event | None = None
    """When given, streamed speech waits for this before its first audio (a slow voice)."""
    received: asyncio.Event = field(default_factory=asyncio.Event)
    """Set on each piece of text received (before it is spoken)."""

    async def Synthesize(
        self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.SynthesizeResponse:
        if self.fail is not None:
            await context.abort(self.fail, "fake TTS failure")
        self.phrases.append(request.text)
        return tts_pb2.SynthesizeResponse(audio=self._chunk(request.text, 0))

    async def StreamingSynthesize(
        self, request_iterator: AsyncIterator[tts_pb2.StreamingSynthesizeRequest], context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tts_pb2.StreamingSynthesizeResponse]:
        first = await anext(aiter(request_iterator))
        self.configs.append(first.config)
        if self.fail is not None:
            await context.abort(self.fail, "fake TTS failure")
        sequence = 0
        async for request in request_iterator:
            if not request.text:
                continue
            self.texts.append(request.text)
            self.received.set()
            if self.hold is not None:
                await self.hold.wait()
            self.spoke.set()
            yield tts_pb2.StreamingSynthesizeResponse(audio=self._chunk(request.text, sequence))
            sequence += 1

    def _chunk(self, text: str, sequence: int) -> tts_pb2.AudioChunk:
        samples = int(TTS_RATE * self.chunk_seconds)
        return tts_pb2.AudioChunk(
            audio=b"\0\0" * samples,
            format=audio_pb2.AudioFormat(
                sample_rate_hz=TTS_RATE, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, channels=1
            ),
            sequence=sequence,
            text=text,
            voice=self.voice,
            engine="fake",
            duration_seconds=samples / TTS_RATE,
        )


@dataclass
class Neighbours:
    """The three fakes, registered on one server."""

    stt: FakeStt = field(default_factory=FakeStt)
    llm: FakeLlm = field(default_factory=FakeLlm)
    tts: FakeTts = field(default_factory=FakeTts)
    name: str = "fake-neighbours"

    def register(self, server: grpc.aio.Server) -> list[str]:
        stt_pb2_grpc.add_SttServiceServicer_to_server(self.stt, server)
        llm_pb2_grpc.add_LlmServiceServicer_to_server(self.llm, server)
        tts_pb2_grpc.add_TtsServiceServicer_to_server(self.tts, server)
        return [
            stt_pb2.DESCRIPTOR.services_by_name["SttService"].full_name,
            llm_pb2.DESCRIPTOR.services_by_name["LlmService"].full_name,
            tts_pb2.DESCRIPTOR.services_by_name["TtsService"].full_name,
        ]

    async def warm_up(self) -> None:
        """Nothing to load."""

    async def close(self) -> None:
        """Nothing to release."""


def final(text: str, end_seconds: float = 0.0) -> stt_pb2.StreamingRecognizeResponse:
    return stt_pb2.StreamingRecognizeResponse(
        result=stt_pb2.RecognitionResult(transcript=text, is_final=True, language="en", end_seconds=end_seconds)
    )


def speech_event(started: bool) -> stt_pb2.StreamingRecognizeResponse:
    kind = stt_pb2.SPEECH_EVENT_TYPE_SPEECH_STARTED if started else stt_pb2.SPEECH_EVENT_TYPE_SPEECH_ENDED
    return stt_pb2.StreamingRecognizeResponse(speech_event=kind)


def speculative(text: str, end_seconds: float = 0.0) -> stt_pb2.StreamingRecognizeResponse:
    """The transcript of a pause, sent before the end of the turn is decided."""
    return stt_pb2.StreamingRecognizeResponse(
        result=stt_pb2.RecognitionResult(transcript=text, speculative=True, language="en", end_seconds=end_seconds)
    )


def resumed() -> stt_pb2.StreamingRecognizeResponse:
    return stt_pb2.StreamingRecognizeResponse(speech_event=stt_pb2.SPEECH_EVENT_TYPE_SPEECH_RESUMED)
