"""What streaming recognition says, as domain types: the endpointer's events (speech started,
paused, resumed, ended; time to ask the end-of-turn model) and the session's (speech events,
interim, speculative and final transcripts with how the turn was ended), with the client's
validated options. Neither knows about gRPC: the servicer maps them to protobuf.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from services.runtime.audio import FloatAudio
from services.stt.engine import Transcript

EndReason = Literal["silence", "complete", "max_silence", "max_length", "end_of_stream", "client"]
"""silence: the silence-only rule (end_of_speech_silence_ms). complete: the end-of-turn model
judged the turn finished. max_silence: it judged it unfinished, but the silence reached the
longest allowed pause. max_length: the utterance cap. end_of_stream: the client closed."""
EndpointingMode = Literal["semantic", "silence"]
SILENT_ENDS = ("silence", "complete", "max_silence")
"""The ends decided by silence (measured from where the voice stopped)."""


# ----------------------------------------------------------------------------- endpointer events
@dataclass(frozen=True)
class SpeechStarted:
    utterance: int
    at_sample: int
    """Stream sample where the first voiced window began."""


@dataclass(frozen=True)
class Paused:
    """A short pause: ``audio`` is what the final will be if the pause ends the utterance."""

    utterance: int
    audio: FloatAudio
    start_sample: int
    end_sample: int
    voice_end_sample: int
    """Where the voice stopped (``end_sample`` runs on by the pause decoded with it)."""


@dataclass(frozen=True)
class CheckTurn:
    """Time to ask the end-of-turn model. ``audio`` is the end of the utterance up to now,
    its trailing silence included (what the model was trained on); ``check`` identifies the
    answer expected by ``Endpointer.verdict``."""

    utterance: int
    check: int
    audio: FloatAudio
    silence_samples: int


@dataclass(frozen=True)
class Resumed:
    """Speech came back before end of speech; a speculative decode is now stale."""

    utterance: int
    at_sample: int
    """Stream sample where the voice came back (the end of the window heard as speech)."""


@dataclass(frozen=True)
class SpeechEnded:
    utterance: int
    audio: FloatAudio
    start_sample: int
    end_sample: int
    at_sample: int
    """Stream sample at which the end was detected."""
    reason: EndReason
    voice_end_sample: int
    """Stream sample at which the voice stopped: the end of the last window heard as speech.
    ``end_sample`` runs on by the pause decoded with it (``speculative_pause_ms``), so this is
    the end of speech a listener would name, and what latency is measured from."""
    probability: float | None = None
    """The end-of-turn model's last answer in the pause that ended the utterance (None: not asked)."""
    checks: int = 0
    """Times the model was asked in that pause."""
    mode: EndpointingMode = "silence"
    """The endpointing in effect."""
    decided_sample: int = 0
    """Where the end was decided: for a turn judged complete, where the model's answer was
    applied; ``at_sample`` may be later when the end was held for the pause's transcript."""
    overruled: bool = False
    """The model judged this pause complete and the pause's transcript, reading as unfinished,
    overruled it (``unfinished.sounds_unfinished``)."""

    @property
    def silence_samples(self) -> int:
        """Silence waited: from where the voice stopped to where the end was decided."""
        return self.decided_sample - self.voice_end_sample

    @property
    def held_samples(self) -> int:
        """Silence listened to after the decision, while the pause's transcript was decoded."""
        return self.at_sample - self.decided_sample


EndpointEvent = SpeechStarted | Paused | CheckTurn | Resumed | SpeechEnded


# ----------------------------------------------------------------------------- session
class EndUtterance:
    """In a session's input, between audio chunks: the client says the utterance is over."""


END_UTTERANCE = EndUtterance()


@dataclass(frozen=True)
class StreamConfig:
    """What a client asked for, validated."""

    language: str | None = None
    interim_results: bool = False
    word_timestamps: bool = False
    initial_prompt: str | None = None
    model_hint: str = ""
    single_utterance: bool = False
    end_of_speech_silence_ms: int = 0
    endpointing: EndpointingMode | None = None
    """None: the server's default (``turn.mode``)."""
    speculative_results: bool = False
    """Send each pause's speculative transcript as soon as it is decoded."""


@dataclass(frozen=True)
class SpeechEvent:
    """Speech started or ended (or resumed after a pause whose speculative transcript was
    sent), at ``at_seconds`` of stream time."""

    kind: Literal["started", "ended", "resumed"]
    utterance: int
    at_seconds: float
    processed_seconds: float
    voice_end_seconds: float = 0.0
    """For "ended": where the voice stopped (the final's end), before the silence that ended it."""


@dataclass(frozen=True)
class EndOfTurn:
    """How an utterance was ended: what a final reports of the decision."""

    mode: EndpointingMode
    reason: EndReason
    probability: float | None
    """The end-of-turn model's last answer in the final pause (None: not asked)."""
    checks: int
    silence_seconds: float
    """From the end of the voice to the decision, in stream time."""
    held_seconds: float
    """After a "complete" decision, the silence listened to until the pause's transcript was
    ready (the end waits for it: the final could not come sooner)."""
    decision_cpu_seconds: float
    """CPU time of the model's runs in the final pause."""
    decision_wall_seconds: float
    """From asking to the answer, for the last run (waiting for a core included)."""
    overruled: bool = False
    """The model's "complete" was overruled by a transcript that broke off mid-sentence."""


@dataclass(frozen=True)
class StreamResult:
    """An interim or final transcript of one utterance."""

    transcript: Transcript
    is_final: bool
    utterance: int
    start_seconds: float
    end_seconds: float
    processed_seconds: float
    end_of_turn: EndOfTurn | None = None
    """Finals only."""
    speculative: bool = False
    """The transcript of a pause's speculative decode (not final)."""


SessionEvent = SpeechEvent | StreamResult
