"""The STT contract's request limits and checks: every refusal of a bad RecognitionConfig or
audio is decided here (the servicer converts, the recognizer recognizes).

Light on purpose (protobuf and the runtime only, no engine, no metrics): the orchestrator
imports ``EOS_SILENCE`` and ``check_endpointing`` for the fields it passes to this service.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from parole.audio.v1 import audio_pb2
from parole.stt.v1 import stt_pb2
from services.runtime.audio import PCM16_WIDTH, check_input_rate, read_wav_bytes
from services.runtime.errors import InvalidArgument
from services.runtime.validation import Cap, Limit

if TYPE_CHECKING:
    from services.stt.events import EndpointingMode

PROMPT = Cap("config.initial_prompt", 2000, "characters")
CHANNELS = Cap("config.audio_format.channels", 8, "channels", hint="mono is best")
EOS_SILENCE = Limit(
    "config.end_of_speech_silence_ms", 64, 5000, unit="ms", hint="0: the server default", zero_is_default=True
)
"""Silence that ends an utterance: the range the endpointer applies (it counts silence in
32 ms VAD windows, so 64 ms is two of them). The server's own default
(``STT_STREAMING__END_OF_SPEECH_SILENCE_MS``) and the orchestrator, which passes its session's
value through, are held to this same declaration."""

ENDPOINTING: dict[int, EndpointingMode | None] = {
    stt_pb2.ENDPOINTING_MODE_UNSPECIFIED: None,
    stt_pb2.ENDPOINTING_MODE_SEMANTIC: "semantic",
    stt_pb2.ENDPOINTING_MODE_SILENCE: "silence",
}
RATE_FIELD = "config.audio_format.sample_rate_hz"


@dataclass(frozen=True)
class Common:
    """What RecognitionConfig says for both unary and streaming calls, checked."""

    language: str | None
    """ISO 639-1 code; None: detect it."""
    prompt: str | None


@dataclass(frozen=True)
class StreamFormat:
    """A checked streaming config: its audio format and endpointing."""

    rate: int
    channels: int
    common: Common
    end_of_speech_silence_ms: int
    """0: the server default."""
    endpointing: EndpointingMode | None


@dataclass(frozen=True)
class UnaryAudio:
    """A checked Recognize request's audio: whole frames, within the length cap."""

    data: bytes
    rate: int
    channels: int
    duration: float
    common: Common


def check_language(config: stt_pb2.RecognitionConfig, languages: frozenset[str]) -> str | None:
    """The language, lower-cased; None when empty (detect it)."""
    lang = config.language.strip().lower()
    if not lang:
        return None
    if lang not in languages:
        raise InvalidArgument(
            f"language {config.language!r} is not one Whisper knows; use an ISO 639-1 code such as "
            "'en' or 'fr', or leave it empty to detect it",
            fields={"config.language": "unknown language"},
        )
    return lang


def check_common(config: stt_pb2.RecognitionConfig, languages: frozenset[str]) -> Common:
    """The fields every call uses. ``model_hint`` is the recognizer's to check (it knows the engines)."""
    PROMPT.check(len(config.initial_prompt))
    return Common(check_language(config, languages), config.initial_prompt or None)


def check_channels(fmt: audio_pb2.AudioFormat) -> int:
    """The channel count (0 means mono)."""
    channels = fmt.channels or 1
    CHANNELS.check(channels)
    return channels


def check_endpointing(value: int) -> EndpointingMode | None:
    """The endpointing mode asked; None: the server's default."""
    if value not in ENDPOINTING:
        raise InvalidArgument(
            f"endpointing {value} is not an EndpointingMode; use ENDPOINTING_MODE_SEMANTIC, "
            "ENDPOINTING_MODE_SILENCE or leave it unspecified for the server's default",
            fields={"config.endpointing": "unknown value"},
        )
    return ENDPOINTING[value]


def check_whole_frames(data: bytes, channels: int) -> None:
    """Audio must hold whole 16-bit frames: a partial one means the client cut its bytes wrong."""
    frame = PCM16_WIDTH * channels
    if len(data) % frame:
        raise InvalidArgument(
            f"audio of {len(data)} bytes does not hold whole samples ({frame} bytes per frame "
            f"for 16-bit PCM with {channels} channel(s))",
            fields={"audio": "partial sample"},
        )


def check_stream_config(config: stt_pb2.RecognitionConfig, languages: frozenset[str]) -> StreamFormat:
    """StreamingRecognize's opening config."""
    fmt = config.audio_format
    if fmt.encoding == audio_pb2.AUDIO_ENCODING_WAV:
        raise InvalidArgument(
            "WAV is only accepted by unary Recognize; stream raw PCM_S16LE chunks",
            fields={"config.audio_format.encoding": "WAV in a stream"},
        )
    rate = check_input_rate(fmt.sample_rate_hz, RATE_FIELD)
    channels = check_channels(fmt)
    common = check_common(config, languages)
    eos = EOS_SILENCE.check(config.end_of_speech_silence_ms)
    return StreamFormat(rate, channels, common, eos, check_endpointing(config.endpointing))


def check_recognize(
    request: stt_pb2.RecognizeRequest, languages: frozenset[str], max_audio_seconds: float
) -> UnaryAudio:
    """A Recognize request: raw PCM in the config's format, or a whole WAV file."""
    config = request.config
    fmt = config.audio_format
    if not request.audio:
        raise InvalidArgument("audio is empty", fields={"audio": "empty"})
    if fmt.encoding == audio_pb2.AUDIO_ENCODING_WAV:
        pcm = read_wav_bytes(request.audio)
        rate = check_input_rate(pcm.sample_rate, "audio (WAV header sample rate)")
        data, channels = pcm.data, 1
    else:
        rate = check_input_rate(fmt.sample_rate_hz, RATE_FIELD)
        data, channels = request.audio, check_channels(fmt)
    common = check_common(config, languages)
    check_whole_frames(data, channels)
    duration = len(data) / (PCM16_WIDTH * channels) / rate
    if duration > max_audio_seconds:
        raise InvalidArgument(
            f"audio lasts {duration:.1f} s; the limit is {max_audio_seconds:g} s "
            "(split it, or stream it with StreamingRecognize)",
            fields={"audio": "too long"},
        )
    return UnaryAudio(data, rate, channels, duration, common)
