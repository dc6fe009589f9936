"""``POST /v1/audio/speech``: text spoken by the TTS service, encoded as it streams (mp3, opus,
aac, flac, wav, pcm), as raw audio or as server-sent events.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

from starlette.requests import Request
from starlette.responses import Response, StreamingResponse

from parole.tts.v1 import tts_pb2
from services.gateway.codec import SPEECH_FORMATS, SpeechEncoder
from services.gateway.errors import bad_request
from services.gateway.openai_api.common import (
    ApiBase,
    _first,
    _number,
    _str,
    _stream_errors,
    json_object,
    sse,
    sse_error,
)
from services.runtime.audio import resample_pcm16


class SpeechApi(ApiBase):
    """The speech endpoint."""

    async def speech(self, request: Request) -> Response:
        settings = self.app.settings.http
        body = await json_object(request, settings.max_json_bytes)
        text = _str(body, "input", required=True)
        if not text.strip():
            raise bad_request("'input' is empty: there is nothing to speak", param="input")
        if len(text) > settings.max_speech_chars:
            raise bad_request(
                f"'input' is {len(text)} characters; at most {settings.max_speech_chars} are accepted", param="input"
            )
        _str(body, "model")
        _str(body, "instructions")  # accepted, unused: our voices take no style instructions
        fmt = _str(body, "response_format", "mp3")
        if fmt not in SPEECH_FORMATS:
            raise bad_request(
                f"response_format must be one of {', '.join(SPEECH_FORMATS)}; got {fmt!r}", param="response_format"
            )
        stream_format = _str(body, "stream_format", "audio")
        if stream_format not in ("audio", "sse"):
            raise bad_request("stream_format must be 'audio' or 'sse'", param="stream_format")
        speed = _number(body, "speed", 0.25, 4.0) or 1.0
        choice = await self.app.catalog.voice(_str(body, "voice"))
        rate = settings.speech_sample_rate
        call = self.app.tts.SynthesizeStream(
            tts_pb2.SynthesizeStreamRequest(
                text=text,
                config=tts_pb2.SynthesisConfig(
                    voice=choice.voice, language=choice.language, speed=speed, sample_rate_hz=rate
                ),
            ),
            timeout=self.timeout,
        )
        stream = aiter(call)
        first = await _first(stream, "tts")
        encoder = SpeechEncoder(fmt, rate)
        # Compressed formats encode in a thread: FFmpeg's encoders hold the loop otherwise.
        threaded = fmt not in ("pcm", "wav")

        async def encode(pcm: bytes | None) -> bytes:
            def run() -> bytes:
                return encoder.feed(pcm) if pcm is not None else encoder.finish()

            return await asyncio.to_thread(run) if threaded else run()

        async def audio() -> AsyncIterator[bytes]:
            reply = first
            while reply is not None:
                data = await encode(_at_rate(reply.audio, rate))
                if data:
                    yield data
                reply = await anext(stream, None)
            tail = await encode(None)
            if tail:
                yield tail

        if stream_format == "sse":

            async def events() -> AsyncIterator[bytes]:
                import base64

                async for data in audio():
                    yield sse({"type": "speech.audio.delta", "audio": base64.b64encode(data).decode()})
                yield sse(
                    {"type": "speech.audio.done", "usage": {"input_tokens": 0, "output_tokens": 0, "total_tokens": 0}}
                )

            return StreamingResponse(_stream_errors(events(), "tts", sse_error, call), media_type="text/event-stream")
        return StreamingResponse(_stream_errors(audio(), "tts", None, call), media_type=encoder.content_type)


def _at_rate(chunk: tts_pb2.AudioChunk, rate: int) -> bytes:
    got = chunk.format.sample_rate_hz or rate
    return chunk.audio if got == rate else resample_pcm16(chunk.audio, got, rate)
