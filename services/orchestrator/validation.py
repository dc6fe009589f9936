"""The orchestrator contract's request limits and checks: the SessionConfig that opens a
Converse stream and each message after it. ``SessionSettings.from_config`` and the intake
stage call these; the stream's shape (config first, and once) is ``runtime.config_first``'s.

A field passed on to another service is checked with that service's declaration, never a
copy: the end-of-speech silence and the endpointing mode go to the STT as they are, the
session id names the LLM's session, the output rate is the TTS's ``sample_rate_hz``. A copy
drifts (the silence was 100 to 5000 ms here while the STT applies 64 to 5000).
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from dataclasses import dataclass

from parole.audio.v1 import audio_pb2
from parole.orchestrator.v1 import orchestrator_pb2 as pb
from services.llm.validation import check_session_id
from services.runtime.audio import PCM16_WIDTH, check_input_rate
from services.runtime.errors import InvalidArgument
from services.runtime.validation import Cap, Limit
from services.stt import validation as stt
from services.tts import validation as tts

FEEDBACK_TAIL = Limit("config.feedback_tail_ms", 0, 10_000, unit="ms")
"""How long the microphone stays gated after playback (the room's echo): 10 s is already
far past any echo; the server default (``ORCH_DEFAULTS__FEEDBACK_TAIL_MS``) is held to it too."""
EOS_SILENCE = stt.EOS_SILENCE
"""Passed to the STT as is: its range, not one of ours."""
OUTPUT_RATE = dataclasses.replace(
    tts.SAMPLE_RATE, field="config.output_sample_rate_hz", high=48000, hint="0: the voice's own rate"
)
"""The TTS's ``sample_rate_hz``, which the answers are asked in; a conversation's player gets
at most 48 kHz (the TTS itself would resample up to its own higher cap)."""
TEXT_TURN = Cap("text", 2000, "characters")
"""A typed turn: about what a person says in one go. The LLM service has its own, larger cap."""
LANGUAGE = re.compile(r"[a-z]{2}")


@dataclass(frozen=True)
class CheckedConfig:
    """The SessionConfig fields that need more than a default once checked."""

    session_id: str
    """The client's, or a new one."""
    language: str
    """Lower-cased ISO 639-1."""
    input_rate: int
    feedback_tail_ms: int | None
    """None: the server default."""


def check_session_config(cfg: pb.SessionConfig, default_language: str) -> CheckedConfig:
    """The opening SessionConfig; INVALID_ARGUMENT naming the first bad field."""
    session_id = check_session_id(cfg.session_id, "config.session_id") if cfg.session_id else uuid.uuid4().hex
    language = (cfg.language or default_language).lower()
    if not LANGUAGE.fullmatch(language):
        raise InvalidArgument(
            f"language must be an ISO 639-1 code such as 'fr' or 'en'; got {cfg.language!r}",
            fields={"config.language": "not a two-letter code"},
        )
    if cfg.input_format.encoding not in (audio_pb2.AUDIO_ENCODING_UNSPECIFIED, audio_pb2.AUDIO_ENCODING_PCM_S16LE):
        raise InvalidArgument(
            "microphone audio must be PCM S16LE", fields={"config.input_format.encoding": "use PCM_S16LE"}
        )
    if cfg.input_format.channels > 1:
        raise InvalidArgument("microphone audio must be mono", fields={"config.input_format.channels": "use 1"})
    OUTPUT_RATE.check(cfg.output_sample_rate_hz)
    EOS_SILENCE.check(cfg.end_of_speech_silence_ms)
    stt.check_endpointing(cfg.endpointing)
    tail = FEEDBACK_TAIL.check(cfg.feedback_tail_ms) if cfg.HasField("feedback_tail_ms") else None
    input_rate = check_input_rate(cfg.input_format.sample_rate_hz, "config.input_format.sample_rate_hz")
    return CheckedConfig(session_id, language, input_rate, tail)


# ------------------------------------------------------------------ after the config
def check_kind(request: pb.ConverseRequest) -> str:
    """Which message it is; a message with nothing set is refused."""
    kind = request.WhichOneof("request")
    if kind is None:
        raise InvalidArgument("empty ConverseRequest: set one of audio, playback, control or text")
    return kind


def check_audio(data: bytes) -> None:
    """Microphone audio: whole 16-bit samples (mono, so a sample is a frame)."""
    if len(data) % PCM16_WIDTH:
        raise InvalidArgument(
            f"microphone audio must hold whole 16-bit samples; got a chunk of {len(data)} bytes",
            fields={"audio": "odd byte count"},
        )


def check_control(control: pb.Control) -> None:
    """A Control must ask for something."""
    if not (control.interrupt or control.end_of_turn):
        raise InvalidArgument(
            "empty Control: set interrupt (stop the answer) or end_of_turn (the user has finished)",
            fields={"control": "nothing asked"},
        )


def check_playback(event: pb.PlaybackEvent) -> None:
    """A playback report says whether playback started or finished."""
    if event.type not in (pb.PLAYBACK_EVENT_TYPE_STARTED, pb.PLAYBACK_EVENT_TYPE_FINISHED):
        raise InvalidArgument("playback.type must be STARTED or FINISHED", fields={"playback.type": "unspecified"})


def check_text_turn(text: str) -> str:
    """A typed turn, stripped: not blank, within ``TEXT_TURN``."""
    text = text.strip()
    if not text:
        raise InvalidArgument("a text turn must not be empty", fields={"text": "blank"})
    TEXT_TURN.check(len(text))
    return text
