"""``POST /v1/audio/transcriptions``: an uploaded file (a WAV as it is, anything else through
FFmpeg) recognised by the STT service, whole or streamed as server-sent events. The response
formats are in ``transcripts``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
from starlette.datastructures import UploadFile
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from parole.audio.v1 import audio_pb2
from parole.stt.v1 import stt_pb2
from services.gateway.codec import decode_file
from services.gateway.errors import bad_request, from_grpc
from services.gateway.openai_api.common import (
    ApiBase,
    _bool,
    _first,
    _number,
    _str,
    _stream_errors,
    read_body,
    sse,
    sse_error,
)
from services.gateway.openai_api.transcripts import transcription_response
from services.runtime.audio import INPUT_RATES, SPEECH_RATE, Pcm, chunks, read_wav_bytes
from services.runtime.errors import InvalidArgument

TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")


class TranscriptionsApi(ApiBase):
    """The transcriptions endpoint."""

    async def transcriptions(self, request: Request) -> Response:
        settings = self.app.settings.http
        body = await read_body(request, settings.max_upload_bytes)

        async def replay() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        form = await Request(request.scope, replay).form(max_files=1, max_fields=32, max_part_size=64 * 1024)
        upload = form.get("file")
        if upload is None:
            raise bad_request("'file' is required: send the audio as a multipart file field", param="file")
        if not isinstance(upload, UploadFile):
            raise bad_request("'file' must be a file upload, not a text field", param="file", code="invalid_type")
        model = _str(form, "model")
        language = _str(form, "language").strip().lower()
        prompt = _str(form, "prompt")
        fmt = _str(form, "response_format", "json")
        if fmt not in TRANSCRIPTION_FORMATS:
            raise bad_request(
                f"response_format must be one of {', '.join(TRANSCRIPTION_FORMATS)}; got {fmt!r}",
                param="response_format",
            )
        _number(form, "temperature", 0.0, 1.0)  # accepted, unused: the fleet decodes with beam search
        granularities: list[str] = []
        for g in form.getlist("timestamp_granularities[]") + form.getlist("timestamp_granularities"):
            if not isinstance(g, str) or g not in ("word", "segment"):
                raise bad_request(
                    "timestamp_granularities[] takes 'word' and/or 'segment'", param="timestamp_granularities"
                )
            granularities.append(g)
        if granularities and fmt != "verbose_json":
            raise bad_request(
                "timestamp_granularities needs response_format=verbose_json", param="timestamp_granularities"
            )
        stream = _bool(form, "stream")
        if stream and fmt not in ("json", "text"):
            raise bad_request("stream=true works with response_format json or text", param="stream")
        blob = await upload.read()
        pcm = await asyncio.to_thread(load_audio, blob, settings.max_audio_seconds)
        hint = await self.app.catalog.stt_hint(model)
        config = stt_pb2.RecognitionConfig(
            language=language,
            audio_format=audio_pb2.AudioFormat(
                sample_rate_hz=pcm.sample_rate, encoding=audio_pb2.AUDIO_ENCODING_PCM_S16LE, channels=1
            ),
            word_timestamps=fmt in ("verbose_json", "srt", "vtt"),
            model_hint=hint,
            initial_prompt=prompt,
        )
        if stream:
            return await self._transcribe_stream(config, pcm)
        try:
            reply = await self.app.stt.Recognize(
                stt_pb2.RecognizeRequest(config=config, audio=pcm.data), timeout=self.timeout
            )
        except grpc.aio.AioRpcError as err:
            raise from_grpc(err, "stt") from err
        return transcription_response(reply.result, pcm.duration, fmt, granularities)

    async def _transcribe_stream(self, config: stt_pb2.RecognitionConfig, pcm: Pcm) -> Response:
        async def requests() -> AsyncIterator[stt_pb2.StreamingRecognizeRequest]:
            yield stt_pb2.StreamingRecognizeRequest(config=config)
            # The whole file at once, in 1 s messages: recognition runs on audio time, not
            # wall time, so there is no reason to pace it.
            for chunk in chunks(pcm.data, pcm.sample_rate, 1000):
                yield stt_pb2.StreamingRecognizeRequest(audio=chunk)

        call = self.app.stt.StreamingRecognize(requests(), timeout=self.timeout)
        finals = _finals(call)
        first = await _first(finals, "stt")

        async def events() -> AsyncIterator[bytes]:
            parts: list[str] = []
            text = first
            while text is not None:
                delta = (" " if parts else "") + text
                parts.append(text)
                yield sse({"type": "transcript.text.delta", "delta": delta})
                text = await anext(finals, None)
            yield sse(
                {
                    "type": "transcript.text.done",
                    "text": " ".join(parts),
                    "usage": {"type": "duration", "seconds": round(pcm.duration, 3)},
                }
            )

        return StreamingResponse(_stream_errors(events(), "stt", sse_error, call), media_type="text/event-stream")


async def _finals(call: Any) -> AsyncIterator[str]:
    """The final transcripts with words of a streaming recognition."""
    async for response in call:
        result = response.result
        if response.HasField("result") and result.is_final and result.transcript.strip():
            yield result.transcript.strip()


def load_audio(blob: bytes, max_seconds: float) -> Pcm:
    """An uploaded file as PCM16 mono. A PCM WAV at a rate the STT takes goes as it is (no
    decode, no resampling: the common case costs microseconds); anything else through FFmpeg."""
    if blob[:4] == b"RIFF":
        try:
            pcm = read_wav_bytes(blob)
        except InvalidArgument:
            pcm = None  # not PCM16 (float, A-law...): FFmpeg reads it
        if pcm is not None and pcm.sample_rate in INPUT_RATES:
            if not pcm.data:
                raise bad_request("the WAV file holds no audio samples", param="file", code="empty_audio")
            if pcm.duration > max_seconds:
                raise bad_request(
                    f"the audio lasts {pcm.duration:.0f} s; the longest this server transcribes is {max_seconds:g} s",
                    param="file",
                    code="audio_too_long",
                )
            return pcm
    return Pcm(decode_file(blob, SPEECH_RATE, max_seconds), SPEECH_RATE)
