"""The TTS contract's request limits and checks: the text to speak and the SynthesisConfig.
The synthesizer and the streaming session call these; what only the running service can
tell (a voice that does not exist, audio too large for one message) is refused where it is
known."""

from __future__ import annotations

from services.runtime.errors import InvalidArgument
from services.runtime.validation import Cap, Limit

SPEED = Limit("config.speed", 0.25, 4.0, hint="1.0 is normal")
SAMPLE_RATE = Limit("config.sample_rate_hz", 8000, 96000, unit="Hz", hint="0: the voice's rate", zero_is_default=True)
TEXT_FIELD = "text"


def check_text(text: str, max_chars: int) -> None:
    """INVALID_ARGUMENT for empty, blank or oversized text (``max_chars`` is the server's
    ``TTS_MAX_TEXT_CHARS``)."""
    if not text.strip():
        raise InvalidArgument("text is empty or blank: send the words to speak", fields={TEXT_FIELD: "empty"})
    Cap(TEXT_FIELD, max_chars, "characters", hint="split it, or stream it with StreamingSynthesize").check(len(text))


def check_streamed_total(total: int, max_chars: int) -> None:
    """A StreamingSynthesize stream's text so far, against the same cap as one request's."""
    if total > max_chars:
        raise InvalidArgument(
            f"the streamed text passed {max_chars} characters, the limit per stream",
            fields={TEXT_FIELD: "stream too long"},
        )


def check_options(speed: float, sample_rate: int) -> float:
    """The speaking rate (0 means 1.0) once speed and output rate are checked."""
    speed = SPEED.check(speed or 1.0)
    SAMPLE_RATE.check(sample_rate)
    return speed


def check_speaker(speaker_id: int | None, voice: str, num_speakers: int) -> None:
    """A speaker id must name one of the voice's speakers."""
    if speaker_id is not None and speaker_id >= num_speakers:
        raise InvalidArgument(
            f"speaker_id {speaker_id} does not exist: voice {voice} has {num_speakers} speaker(s), "
            f"ids 0..{num_speakers - 1}",
            fields={"config.speaker_id": "out of range"},
        )


def check_speakable(pieces: list[str], why_empty: str) -> list[str]:
    """A whole request whose normalised text left nothing to say is refused, saying why."""
    if not pieces:
        raise InvalidArgument(f"nothing to speak: {why_empty}", fields={TEXT_FIELD: "no speakable words"})
    return pieces


def check_stream_spoke(spoken: int) -> None:
    """A StreamingSynthesize stream that ended with nothing spoken sent nothing to speak."""
    if spoken == 0:
        raise InvalidArgument(
            "nothing to speak: no text, or only text with no speakable words, was sent after the config",
            fields={TEXT_FIELD: "no speakable words"},
        )
