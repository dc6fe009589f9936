"""Orchestrator settings (env prefix ``ORCH_``)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from services.orchestrator.validation import EOS_SILENCE, FEEDBACK_TAIL
from services.runtime.channel import ChannelSettings
from services.runtime.config import ServerSettings, ServiceSettings


class ConversationDefaults(BaseModel):
    """What a session gets when its config leaves a field empty."""

    model_config = {"extra": "forbid"}

    language: str = "fr"
    """The assistant speaks French first, as the original did."""
    voices: dict[str, str] = {}
    """Voice per language (e.g. {"fr": "fr_FR-siwis-medium"}); missing: the TTS service's default chain."""
    feedback_tail_ms: int = Field(default=300, ge=FEEDBACK_TAIL.low, le=FEEDBACK_TAIL.high)
    """Microphone stays gated this long after playback ends. The original paused a fixed 3 s
    after every answer; here the gate follows the real playback (client reports, or the audio's
    duration) so only the room's echo needs covering: living-room reverberation times are
    0.3-0.6 s, and the STT's VAD needs speech well above the decayed tail, so 300 ms suffices
    with a headset or a speaker at normal volume. Set 3000 for the original behaviour."""
    playback_slack_ms: int = Field(default=500, ge=0, le=10_000)
    """When the client never reports playback finished, the gate lasts the audio's duration
    plus this (client-side buffering)."""
    barge_in: bool = False
    """Default for sessions that do not say."""
    end_of_speech_silence_ms: int = Field(default=300, ge=EOS_SILENCE.low, le=EOS_SILENCE.high)
    """Silence that ends the user's turn, passed to the STT: held to the range it applies."""


class OrchestratorSettings(ServiceSettings):
    """Settings of ``python -m services.orchestrator``."""

    model_config = SettingsConfigDict(**{**ServiceSettings.model_config, "env_prefix": "ORCH_"})

    server: ServerSettings = ServerSettings(port=50050, metrics_port=9090)
    stt: ChannelSettings = ChannelSettings(target="127.0.0.1:50051")
    """Speech-to-text service."""
    llm: ChannelSettings = ChannelSettings(target="127.0.0.1:50052")
    """Language model service."""
    tts: ChannelSettings = ChannelSettings(target="127.0.0.1:50053")
    """Text-to-speech service."""
    defaults: ConversationDefaults = ConversationDefaults()
    llm_timeout_seconds: float = Field(default=60.0, gt=0)
    """Whole-answer deadline for the language model. The LLM service itself gives up on a
    backend after 30 s without a token (the original's timeout) and falls back; this bounds
    the whole streamed answer on a loaded CPU host."""
    tts_timeout_seconds: float = Field(default=60.0, gt=0)
    """Deadline for speaking one answer, once the LLM is done: the TTS stream opens with the
    turn, so its deadline is ``llm_timeout_seconds`` plus this."""
    dependency_wait_seconds: float = Field(default=300.0, ge=0)
    """At start-up, wait this long for the three services to be SERVING before serving anyway
    (degraded) — model loading can take minutes on a cold host."""
    max_sessions: int = Field(default=64, gt=0)
    """Conversations at once; more get RESOURCE_EXHAUSTED. Conversations are also refused, with
    a retry hint, while a new turn's expected wait is past ``give_up_seconds``."""
    answer_slots: int = Field(default=2, ge=1)
    """Turns answered at once across every session (the rest wait in arrival order). Match the
    language model's parallel capacity: the embedded model's ``LLM_LLAMACPP__PARALLEL``
    (default 2: on two cores, two contexts at once answer four simultaneous questions with the
    last first token ~0.55x as late and ~1.4x the tokens per second of one at a time, see
    bench.llm), or Ollama's OLLAMA_NUM_PARALLEL on a GPU host."""
    wait_notice_seconds: float = Field(default=2.5, ge=0)
    """From the end of the person's speech: a turn expected to wait for the language model
    past this, or with no audio by then on a shared machine, hears a short "one moment" /
    "un instant" at once, never silence. 2.5 s: heard within 3 s."""
    give_up_seconds: float = Field(default=20.0, gt=0)
    """A turn still waiting after this many seconds is declined politely (StageError LLM,
    RESOURCE_EXHAUSTED): a person told "one moment" waits about this long."""
    continuation_seconds: float = Field(default=2.5, ge=0, le=10)
    """Speech that resumes within this many seconds after the end of a spoken turn, before any
    of its answer was heard, continues that turn: its answer is held, and if the new speech
    has words the turn is answered again as one (the two transcripts joined), unheard; if it
    was only noise, what was held goes out. The end-of-turn model judges some long pauses
    inside a sentence as its end ("…en trente-huit et quarante", then a second of silence):
    without this the first half would be answered on its own and the rest after it. 0: off."""
    preemptive_generation: bool = True
    """Answer a pause's transcript as soon as the STT has it, before it decides whether the
    turn is over (its output held until the final confirms it, dropped if the speaker goes
    on). Costs an LLM call that is thrown away each time the speaker resumes after a pause;
    saves the wait for the end of the turn whenever they do not."""
    stt_reconnect_max_seconds: float = Field(default=2.0, gt=0)
    """Longest pause between attempts to reopen a broken speech-to-text stream. An attempt
    while the service is still down fails at once (its channel reconnects on its own, within
    ``stt.reconnect_max_seconds``), so a short pause costs nothing and the session hears again
    within about two seconds of the service's return."""
    breaker_threshold: int = Field(default=3, ge=1)
    """Consecutive outages (UNAVAILABLE, DEADLINE_EXCEEDED, INTERNAL, UNKNOWN) of the LLM or TTS
    service that open its circuit breaker: turns then degrade at once (canned reply, or text
    only) instead of each waiting for a deadline on a service that is down or hanging."""
    breaker_ttl_seconds: float = Field(default=10.0, gt=0)
    """How long an open breaker skips its service before one turn probes it again. Short: a
    restarted service is back within seconds (the STT stream reconnects with its own backoff)."""
