"""The OpenAI-compatible HTTP API: transcriptions, speech, chat completions and models, each a
translation of one request into calls to the fleet's gRPC services.

Every failure is an ``ApiError`` in OpenAI's shape with the status that fits; a stream that
fails after its first bytes ends with an ``error`` event (SSE) or is cut short (audio), since
its status line is already sent.

Modules: ``common`` (request reading and checks, server-sent events, stream failures),
``models``, ``transcriptions`` (with ``transcripts``: the response formats), ``speech`` and
``chat``, one per endpoint family; ``OpenAiApi`` combines their handlers.
"""

from __future__ import annotations

from dataclasses import dataclass

from services.gateway.openai_api.chat import CHAT_ROLES, CHAT_SYSTEM_PROMPT, MAX_CHAT_TOKENS, ChatApi, chat_messages
from services.gateway.openai_api.common import BodyTooLarge, Handler, json_object, read_body, sse, sse_error
from services.gateway.openai_api.models import ModelsApi
from services.gateway.openai_api.speech import SpeechApi
from services.gateway.openai_api.transcriptions import TRANSCRIPTION_FORMATS, TranscriptionsApi, load_audio
from services.gateway.openai_api.transcripts import Segment, segments, transcription_response

__all__ = [
    "CHAT_ROLES",
    "CHAT_SYSTEM_PROMPT",
    "MAX_CHAT_TOKENS",
    "TRANSCRIPTION_FORMATS",
    "BodyTooLarge",
    "Handler",
    "OpenAiApi",
    "Segment",
    "chat_messages",
    "json_object",
    "load_audio",
    "read_body",
    "segments",
    "sse",
    "sse_error",
    "transcription_response",
]


@dataclass
class OpenAiApi(ModelsApi, TranscriptionsApi, SpeechApi, ChatApi):
    """Handlers of the ``/v1`` HTTP endpoints over the gateway's stubs."""
