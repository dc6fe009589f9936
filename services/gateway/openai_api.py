"""The OpenAI-compatible HTTP API: transcriptions, speech, chat completions and models, each a
translation of one request into calls to the fleet's gRPC services.

Every failure is an ``ApiError`` in OpenAI's shape with the status that fits; a stream that
fails after its first bytes ends with an ``error`` event (SSE) or is cut short (audio), since
its status line is already sent.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import grpc
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response, StreamingResponse

from parole.audio.v1 import audio_pb2
from parole.llm.v1 import llm_pb2
from parole.stt.v1 import stt_pb2
from parole.tts.v1 import tts_pb2
from services.gateway.codec import SPEECH_FORMATS, SpeechEncoder, decode_file
from services.gateway.errors import ApiError, bad_request, from_grpc
from services.runtime.audio import INPUT_RATES, SPEECH_RATE, Pcm, chunks, read_wav_bytes, resample_pcm16
from services.runtime.errors import InvalidArgument
from services.runtime.logging import get_logger

if TYPE_CHECKING:
    from services.gateway.app import GatewayApp

log = get_logger(__name__)

TRANSCRIPTION_FORMATS = ("json", "text", "verbose_json", "srt", "vtt")
CHAT_ROLES = {
    "system": llm_pb2.ROLE_SYSTEM,
    "developer": llm_pb2.ROLE_SYSTEM,
    "user": llm_pb2.ROLE_USER,
    "assistant": llm_pb2.ROLE_ASSISTANT,
}
FINISH = {llm_pb2.FINISH_REASON_STOP: "stop", llm_pb2.FINISH_REASON_LENGTH: "length"}
MAX_CHAT_TOKENS = 4096
# A neutral system prompt for chat completions that bring none: the LLM service's own default
# asks for short spoken answers in the session language, which is the voice assistant's
# persona, not what an API caller expects.
CHAT_SYSTEM_PROMPT = "You are a helpful assistant."
# Parts of a chat request the gateway cannot honour: refused, rather than silently ignored.
UNSUPPORTED_CHAT = ("tools", "functions", "tool_choice", "function_call", "audio", "logprobs", "response_format")


# ---------------------------------------------------------------------------------- helpers
class BodyTooLarge(ApiError):
    def __init__(self, limit: int) -> None:
        super().__init__(
            413, f"request body is larger than {limit} bytes, the largest accepted", code="request_too_large"
        )


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused with 413 as soon as it passes ``limit`` (Content-Length or not)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise BodyTooLarge(limit)
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > limit:
            raise BodyTooLarge(limit)
    return bytes(body)


async def json_object(request: Request, limit: int) -> dict[str, Any]:
    body = await read_body(request, limit)
    try:
        value = json.loads(body)
    except (ValueError, RecursionError) as exc:
        raise bad_request(f"the body is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(value, dict):
        raise bad_request("the body must be a JSON object", code="invalid_json")
    return value


def _str(body: dict[str, Any] | FormData, name: str, default: str | None = None, *, required: bool = False) -> str:
    value = body.get(name)
    if value is None:
        if required:
            raise bad_request(f"'{name}' is required", param=name, code="missing_required_parameter")
        return default or ""
    if not isinstance(value, str):
        raise bad_request(f"'{name}' must be a string", param=name, code="invalid_type")
    return value


def _number(body: dict[str, Any] | FormData, name: str, lo: float, hi: float, *, integer: bool = False) -> float | None:
    raw = body.get(name)
    if raw is None or raw == "":
        return None
    if isinstance(raw, str):  # multipart fields are text
        try:
            raw = float(raw)
        except ValueError:
            raise bad_request(f"'{name}' must be a number", param=name, code="invalid_type") from None
    if isinstance(raw, bool) or not isinstance(raw, int | float) or not math.isfinite(raw):
        raise bad_request(f"'{name}' must be a number", param=name, code="invalid_type")
    if integer and raw != int(raw):
        raise bad_request(f"'{name}' must be an integer", param=name, code="invalid_type")
    if not lo <= raw <= hi:
        raise bad_request(f"'{name}' must be between {lo:g} and {hi:g}; got {raw:g}", param=name)
    return float(raw)


def _bool(body: dict[str, Any] | FormData, name: str) -> bool:
    raw = body.get(name)
    if raw is None:
        return False
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.lower() in ("true", "false"):
        return raw.lower() == "true"
    raise bad_request(f"'{name}' must be true or false", param=name, code="invalid_type")


def sse(data: dict[str, Any] | str) -> bytes:
    """One server-sent event."""
    text = data if isinstance(data, str) else json.dumps(data, ensure_ascii=False)
    return f"data: {text}\n\n".encode()


async def _first(stream: AsyncIterator[Any], service: str) -> Any:
    """The first message of a gRPC stream, failures mapped to ``ApiError`` while the HTTP
    status can still say so; None when the stream is empty."""
    try:
        return await anext(stream, None)
    except grpc.aio.AioRpcError as err:
        raise from_grpc(err, service) from err


async def _stream_errors(
    source: AsyncIterator[bytes], service: str, on_error: Callable[[ApiError], bytes] | None, call: Any
) -> AsyncIterator[bytes]:
    """Passes a response body through; a failure after the headers becomes an ``error`` event
    (SSE) or an early end (audio), logged either way. The gRPC call is cancelled when the body
    ends early (the client went away), so the service stops working for nobody."""
    try:
        async for item in source:
            yield item
    except grpc.aio.AioRpcError as err:
        api = from_grpc(err, service)
        log.warning("stream failed after its first bytes", service=service, error=api.message)
        if on_error is not None:
            yield on_error(api)
    except ApiError as api:
        log.warning("stream failed after its first bytes", service=service, error=api.message)
        if on_error is not None:
            yield on_error(api)
    finally:
        call.cancel()


def sse_error(api: ApiError) -> bytes:
    return sse({"error": api.body()})


# ---------------------------------------------------------------------------------- the API
@dataclass
class OpenAiApi:
    """Handlers of the ``/v1`` HTTP endpoints over the gateway's stubs."""

    app: GatewayApp

    @property
    def timeout(self) -> float:
        return self.app.settings.http.timeout_seconds

    # ------------------------------------------------------------------ models
    async def list_models(self, request: Request) -> Response:
        return JSONResponse({"object": "list", "data": await self._models()})

    async def get_model(self, request: Request) -> Response:
        model_id = request.path_params["model_id"]
        for entry in await self._models():
            if entry["id"] == model_id:
                return JSONResponse(entry)
        raise ApiError(404, f"the model {model_id!r} does not exist", param="model", code="model_not_found")

    async def _models(self) -> list[dict[str, Any]]:
        catalog = self.app.catalog
        engines, models, voices = await asyncio.gather(
            catalog.engines(), catalog.models(), catalog.voices(), return_exceptions=True
        )
        failures = [r for r in (engines, models, voices) if isinstance(r, BaseException)]
        if len(failures) == 3:
            raise failures[0]
        created = int(self.app.started_at)

        def entry(model_id: str, kind: str, **extra: Any) -> dict[str, Any]:
            return {
                "id": model_id,
                "object": "model",
                "created": created,
                "owned_by": "parole",
                "parole": extra | {"kind": kind},
            }

        data: list[dict[str, Any]] = []
        if isinstance(engines, list):
            data += [entry(e.name, "stt", model=e.model, device=e.device, state=e.breaker_state) for e in engines]
        if isinstance(models, list):
            data += [entry(m.model, "llm", backend=m.backend, state=m.breaker_state) for m in models]
        if isinstance(voices, list):
            data += [
                entry(v.name, "tts", language=v.language, engine=v.engine, sample_rate_hz=v.sample_rate_hz)
                for v in voices
            ]
        for failure in failures:
            log.warning("models: a service did not answer", error=str(failure))
        return data

    # ------------------------------------------------------------------ transcriptions
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

    # ------------------------------------------------------------------ speech
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

    # ------------------------------------------------------------------ chat
    async def chat_completions(self, request: Request) -> Response:
        body = await json_object(request, self.app.settings.http.max_json_bytes)
        model = _str(body, "model")
        for key in UNSUPPORTED_CHAT:
            if body.get(key) not in (None, False):
                raise bad_request(f"'{key}' is not supported by this server", param=key, code="unsupported_parameter")
        n = _number(body, "n", 1, 1, integer=True)
        del n  # only one choice: validated above
        max_tokens = _number(body, "max_completion_tokens", 1, MAX_CHAT_TOKENS, integer=True) or _number(
            body, "max_tokens", 1, MAX_CHAT_TOKENS, integer=True
        )
        temperature = _number(body, "temperature", 0.0, 2.0)
        stream = _bool(body, "stream")
        options = body.get("stream_options") or {}
        if not isinstance(options, dict):
            raise bad_request("'stream_options' must be an object", param="stream_options", code="invalid_type")
        include_usage = _bool(options, "include_usage")
        messages = chat_messages(body.get("messages"))
        gen = llm_pb2.GenerationOptions(
            max_tokens=int(max_tokens or 0),
            backend=await self.app.catalog.llm_backend(model),
            system_prompt="" if any(m.role == llm_pb2.ROLE_SYSTEM for m in messages) else CHAT_SYSTEM_PROMPT,
        )
        if temperature is not None:
            gen.temperature = temperature
        call = self.app.llm.Generate(llm_pb2.GenerateRequest(messages=messages, options=gen), timeout=self.timeout)
        stream_it = aiter(call)
        first = await _first(stream_it, "llm")
        completion_id = f"chatcmpl-{uuid.uuid4().hex}"
        created = int(time.time())
        if not stream:
            return await self._chat_whole(first, stream_it, completion_id, created, model)

        def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
            return sse(
                {
                    "id": completion_id,
                    "object": "chat.completion.chunk",
                    "created": created,
                    "model": model,
                    "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
                    **extra,
                }
            )

        async def events() -> AsyncIterator[bytes]:
            yield chunk({"role": "assistant", "content": ""})
            reply = first
            while reply is not None:
                if reply.WhichOneof("response") == "delta":
                    yield chunk({"content": reply.delta})
                elif reply.WhichOneof("response") == "summary":
                    s = reply.summary
                    if s.finish_reason == llm_pb2.FINISH_REASON_FALLBACK:
                        yield sse_error(_fallback_error(s))
                        return
                    yield chunk({}, FINISH.get(s.finish_reason, "stop"))
                    if include_usage:
                        yield sse(
                            {
                                "id": completion_id,
                                "object": "chat.completion.chunk",
                                "created": created,
                                "model": model,
                                "choices": [],
                                "usage": _usage(s),
                            }
                        )
                reply = await anext(stream_it, None)
            yield sse("[DONE]")

        return StreamingResponse(_stream_errors(events(), "llm", sse_error, call), media_type="text/event-stream")

    async def _chat_whole(
        self, first: Any, rest: AsyncIterator[llm_pb2.GenerateResponse], completion_id: str, created: int, model: str
    ) -> Response:
        parts: list[str] = []
        summary: llm_pb2.GenerationSummary | None = None
        try:
            reply = first
            while reply is not None:
                if reply.WhichOneof("response") == "delta":
                    parts.append(reply.delta)
                else:
                    summary = reply.summary
                reply = await anext(rest, None)
        except grpc.aio.AioRpcError as err:
            raise from_grpc(err, "llm") from err
        if summary is None:
            raise ApiError(502, "the language model ended its answer without a summary", type="server_error")
        if summary.finish_reason == llm_pb2.FINISH_REASON_FALLBACK:
            raise _fallback_error(summary)
        return JSONResponse(
            {
                "id": completion_id,
                "object": "chat.completion",
                "created": created,
                "model": model or summary.model,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": summary.text or "".join(parts)},
                        "finish_reason": FINISH.get(summary.finish_reason, "stop"),
                        "logprobs": None,
                    }
                ],
                "usage": _usage(summary),
            }
        )


def _fallback_error(summary: llm_pb2.GenerationSummary) -> ApiError:
    reasons = "; ".join(summary.fallbacks) or "every backend failed"
    return ApiError(503, f"no language model could answer ({reasons})", type="server_error", code="llm_unavailable")


def _usage(s: llm_pb2.GenerationSummary) -> dict[str, int]:
    return {
        "prompt_tokens": s.prompt_tokens,
        "completion_tokens": s.completion_tokens,
        "total_tokens": s.prompt_tokens + s.completion_tokens,
    }


def chat_messages(raw: Any) -> list[llm_pb2.ChatMessage]:
    """OpenAI chat messages as the LLM service's, or a 400 naming the bad one."""
    if not isinstance(raw, list) or not raw:
        raise bad_request("'messages' must be a non-empty array", param="messages")
    out: list[llm_pb2.ChatMessage] = []
    for i, m in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(m, dict):
            raise bad_request(f"{where} must be an object", param=where, code="invalid_type")
        role = m.get("role")
        if not isinstance(role, str) or role not in CHAT_ROLES:
            raise bad_request(
                f"{where}.role must be system, developer, user or assistant; got {role!r}", param=f"{where}.role"
            )
        content = m.get("content")
        if isinstance(content, list):
            texts = []
            for j, part in enumerate(content):
                if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                    raise bad_request(
                        f"{where}.content[{j}] must be a text part ({{'type': 'text', 'text': ...}}); other parts are not supported",
                        param=f"{where}.content",
                    )
                texts.append(part["text"])
            content = "\n".join(texts)
        if not isinstance(content, str):
            raise bad_request(f"{where}.content must be a string or an array of text parts", param=f"{where}.content")
        out.append(llm_pb2.ChatMessage(role=CHAT_ROLES[role], content=content))
    return out


async def _finals(call: Any) -> AsyncIterator[str]:
    """The final transcripts with words of a streaming recognition."""
    async for response in call:
        result = response.result
        if response.HasField("result") and result.is_final and result.transcript.strip():
            yield result.transcript.strip()


def _at_rate(chunk: tts_pb2.AudioChunk, rate: int) -> bytes:
    got = chunk.format.sample_rate_hz or rate
    return chunk.audio if got == rate else resample_pcm16(chunk.audio, got, rate)


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


# ---------------------------------------------------------------------------------- transcripts
@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    text: str


def segments(result: stt_pb2.RecognitionResult, duration: float) -> list[Segment]:
    """Subtitle-sized segments from the word timings: a new one after a sentence end, a pause
    over 0.8 s, or 8 s of speech (the STT gives one result per file, not Whisper's segments)."""
    if not result.transcript.strip():
        return []
    if not result.words:
        return [Segment(result.start_seconds, result.end_seconds or duration, result.transcript.strip())]
    out: list[Segment] = []
    words: list[stt_pb2.WordInfo] = []

    def close() -> None:
        if words:
            out.append(Segment(words[0].start_seconds, words[-1].end_seconds, " ".join(w.word for w in words)))
            words.clear()

    for w in result.words:
        if words and (w.start_seconds - words[-1].end_seconds > 0.8 or w.end_seconds - words[0].start_seconds > 8.0):
            close()
        words.append(w)
        if w.word.rstrip().endswith((".", "?", "!")):
            close()
    close()
    return out


def _timestamp(seconds: float, sep: str) -> str:
    ms = max(0, round(seconds * 1000))
    h, rest = divmod(ms, 3_600_000)
    m, rest = divmod(rest, 60_000)
    s, ms = divmod(rest, 1000)
    return f"{h:02d}:{m:02d}:{s:02d}{sep}{ms:03d}"


def transcription_response(
    result: stt_pb2.RecognitionResult, duration: float, fmt: str, granularities: list[str]
) -> Response:
    text = result.transcript.strip()
    usage = {"type": "duration", "seconds": round(duration, 3)}
    if fmt == "json":
        return JSONResponse({"text": text, "usage": usage})
    if fmt == "text":
        return PlainTextResponse(text + "\n")
    segs = segments(result, duration)
    if fmt == "srt":
        cues = [
            f"{i}\n{_timestamp(s.start, ',')} --> {_timestamp(s.end, ',')}\n{s.text}\n" for i, s in enumerate(segs, 1)
        ]
        return PlainTextResponse("\n".join(cues), media_type="application/x-subrip")
    if fmt == "vtt":
        cues = [f"{_timestamp(s.start, '.')} --> {_timestamp(s.end, '.')}\n{s.text}\n" for s in segs]
        return PlainTextResponse("WEBVTT\n\n" + "\n".join(cues), media_type="text/vtt")
    body: dict[str, Any] = {
        "task": "transcribe",
        "language": result.language,
        "duration": round(duration, 3),
        "text": text,
        "usage": usage,
    }
    if not granularities or "segment" in granularities:
        body["segments"] = [
            {
                "id": i,
                "seek": 0,
                "start": round(s.start, 3),
                "end": round(s.end, 3),
                "text": s.text,
                "tokens": [],
                "temperature": 0.0,
                "avg_logprob": math.log(max(result.confidence, 1e-6)),
                "compression_ratio": 0.0,
                "no_speech_prob": 0.0,
            }
            for i, s in enumerate(segs)
        ]
    if "word" in granularities:
        body["words"] = [
            {"word": w.word, "start": round(w.start_seconds, 3), "end": round(w.end_seconds, 3)} for w in result.words
        ]
    return JSONResponse(body)


Handler = Callable[[Request], Awaitable[Response]]
