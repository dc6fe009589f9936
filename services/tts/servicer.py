"""gRPC face of the TTS service: maps requests and domain results to and from protobuf.
Requests are checked by ``validation`` (called by the synthesizer); the work itself happens
in ``synthesizer`` and, for incremental text, ``streaming``."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import grpc

from parole.audio.v1 import audio_pb2
from parole.tts.v1 import tts_pb2, tts_pb2_grpc
from services.runtime.config_first import after_config, first_config
from services.runtime.errors import ResourceExhausted
from services.tts.streaming import FLUSH, Flush, StreamSynthesis
from services.tts.synthesizer import AUDIO_SECONDS, TIME_TO_FIRST_AUDIO, Plan, Spoken, Synthesizer, join


def _plan(synth: Synthesizer, config: tts_pb2.SynthesisConfig) -> Plan:
    speaker = config.speaker_id if config.HasField("speaker_id") else None
    return synth.plan(config.voice, config.language, config.speed, speaker, config.sample_rate_hz)


def _chunk(spoken: Spoken, sequence: int) -> tts_pb2.AudioChunk:
    AUDIO_SECONDS.labels(spoken.engine).inc(spoken.audio.duration)
    return tts_pb2.AudioChunk(
        audio=spoken.audio.pcm,
        format=audio_pb2.AudioFormat(
            sample_rate_hz=spoken.audio.sample_rate,
            encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE,
            channels=1,
        ),
        sequence=sequence,
        text=spoken.text,
        voice=spoken.voice,
        engine=spoken.engine,
        duration_seconds=spoken.audio.duration,
        cached=spoken.cached,
    )


class TtsServicer(tts_pb2_grpc.TtsServiceServicer):
    """Thin: every decision lives in the synthesizer, the streaming session and the text package."""

    def __init__(self, synth: Synthesizer, max_send_bytes: int) -> None:
        self._synth = synth
        self._max_send = max_send_bytes

    async def Synthesize(
        self, request: tts_pb2.SynthesizeRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.SynthesizeResponse:
        started = time.perf_counter()
        plan = _plan(self._synth, request.config)
        pieces = self._synth.prepare_all(request.text, plan)
        spoken = [s async for s in self._synth.speak_all(pieces, plan)]
        whole = join(spoken)
        if len(whole.audio.pcm) > self._max_send - 4096:
            raise ResourceExhausted(
                f"the audio ({len(whole.audio.pcm)} bytes) is larger than the largest message this server sends "
                f"({self._max_send} bytes); use SynthesizeStream or a lower sample_rate_hz",
                fields={"text": "audio too large for one message"},
            )
        TIME_TO_FIRST_AUDIO.labels("Synthesize").observe(time.perf_counter() - started)
        return tts_pb2.SynthesizeResponse(audio=_chunk(whole, 0))

    async def SynthesizeStream(
        self, request: tts_pb2.SynthesizeStreamRequest, context: grpc.aio.ServicerContext
    ) -> AsyncIterator[tts_pb2.SynthesizeStreamResponse]:
        started = time.perf_counter()
        plan = _plan(self._synth, request.config)
        pieces = self._synth.prepare_all(request.text, plan)
        sequence = 0
        async for spoken in self._synth.speak_all(pieces, plan):
            if sequence == 0:
                TIME_TO_FIRST_AUDIO.labels("SynthesizeStream").observe(time.perf_counter() - started)
            yield tts_pb2.SynthesizeStreamResponse(audio=_chunk(spoken, sequence))
            sequence += 1

    async def StreamingSynthesize(
        self,
        request_iterator: AsyncIterator[tts_pb2.StreamingSynthesizeRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[tts_pb2.StreamingSynthesizeResponse]:
        plan = await self._read_config(request_iterator)
        session = StreamSynthesis(self._synth, plan)
        sequence = 0
        async for spoken in session.run(self._texts(request_iterator)):
            yield tts_pb2.StreamingSynthesizeResponse(audio=_chunk(spoken, sequence))
            sequence += 1

    async def _read_config(self, requests: AsyncIterator[tts_pb2.StreamingSynthesizeRequest]) -> Plan:
        first = await first_config(requests, "StreamingSynthesize")
        return _plan(self._synth, first.config)

    @staticmethod
    async def _texts(requests: AsyncIterator[tts_pb2.StreamingSynthesizeRequest]) -> AsyncIterator[str | Flush]:
        async for request in after_config(requests, "StreamingSynthesize"):
            kind = request.WhichOneof("request")
            if kind == "text":
                yield request.text
            elif kind == "flush":
                yield FLUSH

    async def ListVoices(
        self, request: tts_pb2.ListVoicesRequest, context: grpc.aio.ServicerContext
    ) -> tts_pb2.ListVoicesResponse:
        voices = []
        for voice in self._synth.registry.listing(request.language.lower()):
            spec = voice.spec
            voices.append(
                tts_pb2.VoiceInfo(
                    name=spec.name,
                    language=spec.language,
                    locale=spec.locale,
                    sample_rate_hz=spec.sample_rate,
                    engine=spec.engine,
                    quality=spec.quality,
                    num_speakers=spec.num_speakers,
                    breaker_state=await self._synth.breakers.state(spec.breaker),
                )
            )
        return tts_pb2.ListVoicesResponse(voices=voices)
