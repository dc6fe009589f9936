"""gRPC face of the STT service: converts audio, maps domain results to protobuf. Requests
are checked by ``validation``; the work itself happens in ``streaming`` and ``recognizer``."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import grpc
import numpy as np
import soxr

from parole.stt.v1 import stt_pb2, stt_pb2_grpc
from services.runtime.audio import PCM16_WIDTH, SPEECH_RATE, FloatAudio, resample
from services.runtime.config_first import after_config, first_config
from services.stt import validation
from services.stt.config import SttSettings
from services.stt.endpointing import VadModel
from services.stt.engine import DecodeOptions, Transcript
from services.stt.events import (
    END_UTTERANCE,
    EndOfTurn,
    EndUtterance,
    SessionEvent,
    SpeechEvent,
    StreamConfig,
)
from services.stt.recognizer import AUDIO_SECONDS, Recognizer
from services.stt.streaming import StreamSession
from services.stt.turn import TurnDetector

END_MODE = {"semantic": stt_pb2.ENDPOINTING_MODE_SEMANTIC, "silence": stt_pb2.ENDPOINTING_MODE_SILENCE}
END_REASON = {
    "complete": stt_pb2.END_OF_TURN_REASON_COMPLETE,
    "max_silence": stt_pb2.END_OF_TURN_REASON_MAX_SILENCE,
    "silence": stt_pb2.END_OF_TURN_REASON_SILENCE,
    "max_length": stt_pb2.END_OF_TURN_REASON_MAX_LENGTH,
    "end_of_stream": stt_pb2.END_OF_TURN_REASON_END_OF_STREAM,
    "client": stt_pb2.END_OF_TURN_REASON_CLIENT,
}


class AudioConverter:
    """PCM16 chunks at an accepted rate → 16 kHz mono float, resampled as a stream so chunk
    edges leave no clicks."""

    def __init__(self, rate: int, channels: int) -> None:
        self.rate = rate
        self.channels = channels
        self._stream = soxr.ResampleStream(rate, SPEECH_RATE, 1, dtype="float32") if rate != SPEECH_RATE else None

    def convert(self, data: bytes) -> FloatAudio:
        validation.check_whole_frames(data, self.channels)
        audio = np.frombuffer(data, dtype="<i2").astype(np.float32) / 32768.0
        if self.channels > 1:
            audio = audio.reshape(-1, self.channels).mean(axis=1, dtype=np.float32)
        if self._stream is None:
            return audio
        return np.asarray(self._stream.resample_chunk(audio), dtype=np.float32)

    def flush(self) -> FloatAudio:
        if self._stream is None:
            return np.zeros(0, dtype=np.float32)
        return np.asarray(self._stream.resample_chunk(np.zeros(0, dtype=np.float32), last=True), dtype=np.float32)


class SttServicer(stt_pb2_grpc.SttServiceServicer):
    """StreamingRecognize, Recognize and ListEngines over a ``Recognizer``."""

    def __init__(
        self,
        recognizer: Recognizer,
        settings: SttSettings,
        vad_factory: Callable[[], VadModel],
        languages: frozenset[str],
        turn: TurnDetector | None = None,
    ) -> None:
        self.recognizer = recognizer
        self.settings = settings
        self.vad_factory = vad_factory
        self.languages = languages
        self.turn = turn

    def _model_hint(self, hint: str) -> None:
        """An unknown engine is refused by the recognizer, which knows the chain."""
        if hint:
            self.recognizer.chain(hint, None)

    # ------------------------------------------------------------------ streaming
    async def StreamingRecognize(
        self,
        request_iterator: AsyncIterator[stt_pb2.StreamingRecognizeRequest],
        context: grpc.aio.ServicerContext[stt_pb2.StreamingRecognizeRequest, stt_pb2.StreamingRecognizeResponse],
    ) -> AsyncIterator[stt_pb2.StreamingRecognizeResponse]:
        first = await first_config(request_iterator, "StreamingRecognize", required=False)
        if first is None:
            return  # the client closed without sending anything: nothing to recognize
        config = first.config
        checked = validation.check_stream_config(config, self.languages)
        self._model_hint(config.model_hint)
        stream_config = StreamConfig(
            language=checked.common.language,
            interim_results=config.interim_results,
            word_timestamps=config.word_timestamps,
            initial_prompt=checked.common.prompt,
            model_hint=config.model_hint,
            single_utterance=config.single_utterance,
            end_of_speech_silence_ms=checked.end_of_speech_silence_ms,
            endpointing=checked.endpointing,
            speculative_results=config.speculative_results,
        )
        converter = AudioConverter(checked.rate, checked.channels)
        session = StreamSession(self.recognizer, self.vad_factory(), self.settings.streaming, stream_config, self.turn)
        async for event in session.run(self._audio(request_iterator, converter)):
            yield _stream_response(event)

    @staticmethod
    async def _audio(
        requests: AsyncIterator[stt_pb2.StreamingRecognizeRequest], converter: AudioConverter
    ) -> AsyncIterator[FloatAudio | EndUtterance]:
        counter = AUDIO_SECONDS.labels("streaming")
        async for request in after_config(requests, "StreamingRecognize"):
            which = request.WhichOneof("request")
            if which == "end_utterance":
                yield END_UTTERANCE
                continue
            if which is None or not request.audio:
                continue
            audio = converter.convert(request.audio)
            counter.inc(len(request.audio) / (PCM16_WIDTH * converter.channels * converter.rate))
            yield audio
        tail = converter.flush()
        if tail.size:
            yield tail

    # ------------------------------------------------------------------ unary
    async def Recognize(
        self,
        request: stt_pb2.RecognizeRequest,
        context: grpc.aio.ServicerContext[stt_pb2.RecognizeRequest, stt_pb2.RecognizeResponse],
    ) -> stt_pb2.RecognizeResponse:
        config = request.config
        checked = validation.check_recognize(request, self.languages, self.settings.max_audio_seconds)
        self._model_hint(config.model_hint)
        duration, channels = checked.duration, checked.channels
        AUDIO_SECONDS.labels("unary").inc(duration)
        audio = np.frombuffer(checked.data, dtype="<i2").astype(np.float32) / 32768.0
        if channels > 1:
            audio = audio.reshape(-1, channels).mean(axis=1, dtype=np.float32)
        audio = resample(audio, checked.rate, SPEECH_RATE)
        options = DecodeOptions(
            language=checked.common.language,
            word_timestamps=config.word_timestamps,
            initial_prompt=checked.common.prompt,
            kind="unary",
            # A file may hold long silences: Silero drops them (and silence-only audio gives
            # an empty transcript instead of Whisper's hallucinated "Thank you.").
            vad_filter=True,
        )
        rec = await self.recognizer.recognize(audio, options, hint=config.model_hint, deadline=context.time_remaining())
        return stt_pb2.RecognizeResponse(
            result=_result(rec.transcript, True, 0, 0.0, duration),
            audio_duration_seconds=duration,
            cached=rec.cached,
        )

    async def ListEngines(
        self,
        request: stt_pb2.ListEnginesRequest,
        context: grpc.aio.ServicerContext[stt_pb2.ListEnginesRequest, stt_pb2.ListEnginesResponse],
    ) -> stt_pb2.ListEnginesResponse:
        infos = [
            stt_pb2.EngineInfo(
                name=e.name,
                model=e.model,
                device=e.device_label,
                compute_type=e.compute_type,
                breaker_state=await self.recognizer.breakers.state(e.name),
            )
            for e in self.recognizer.engines
        ]
        return stt_pb2.ListEnginesResponse(engines=infos)


SPEECH_EVENTS = {
    "started": stt_pb2.SPEECH_EVENT_TYPE_SPEECH_STARTED,
    "ended": stt_pb2.SPEECH_EVENT_TYPE_SPEECH_ENDED,
    "resumed": stt_pb2.SPEECH_EVENT_TYPE_SPEECH_RESUMED,
}


def _end_of_turn(d: EndOfTurn) -> stt_pb2.EndOfTurn:
    return stt_pb2.EndOfTurn(
        mode=END_MODE[d.mode],
        reason=END_REASON[d.reason],
        probability=d.probability,
        checks=d.checks,
        silence_seconds=d.silence_seconds,
        held_seconds=d.held_seconds,
        decision_cpu_seconds=d.decision_cpu_seconds,
        decision_wall_seconds=d.decision_wall_seconds,
        overruled=d.overruled,
    )


def _result(
    t: Transcript,
    final: bool,
    utterance: int,
    start: float,
    end: float,
    decision: EndOfTurn | None = None,
    speculative: bool = False,
) -> stt_pb2.RecognitionResult:
    return stt_pb2.RecognitionResult(
        transcript=t.text,
        is_final=final,
        language=t.language,
        language_probability=t.language_probability,
        confidence=t.confidence,
        words=[
            stt_pb2.WordInfo(word=w.word, start_seconds=w.start, end_seconds=w.end, probability=w.probability)
            for w in t.words
        ],
        start_seconds=start,
        end_seconds=end,
        engine=t.engine,
        decode_seconds=t.decode_seconds,
        utterance_index=utterance,
        end_of_turn=None if decision is None else _end_of_turn(decision),
        speculative=speculative,
    )


def _stream_response(event: SessionEvent) -> stt_pb2.StreamingRecognizeResponse:
    if isinstance(event, SpeechEvent):
        kind = SPEECH_EVENTS[event.kind]
        return stt_pb2.StreamingRecognizeResponse(
            speech_event=kind,
            event_seconds=event.at_seconds,
            audio_processed_seconds=event.processed_seconds,
            voice_end_seconds=event.voice_end_seconds,
        )
    return stt_pb2.StreamingRecognizeResponse(
        result=_result(
            event.transcript,
            event.is_final,
            event.utterance,
            event.start_seconds,
            event.end_seconds,
            event.end_of_turn,
            event.speculative,
        ),
        audio_processed_seconds=event.processed_seconds,
    )
