"""Settings of the STT service: the engine chain, endpointing, limits and resilience.

Everything is overridable by env with the ``STT_`` prefix and ``__`` nesting
(``STT_STREAMING__END_OF_SPEECH_SILENCE_MS=250``) or by a YAML file (``--config``);
``services/stt/stt.gpu.yaml`` shows the production chain (large-v3 on CUDA → base on CPU).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.runtime.config import ServerSettings, ServiceSettings
from services.stt.validation import EOS_SILENCE

ENGINE_NAME = re.compile(r"^[a-z0-9][a-z0-9_.\-]{0,63}$")


class EngineSettings(BaseModel):
    """One engine of the fallback chain: a Whisper model on a device."""

    model_config = {"extra": "forbid"}

    name: str
    """Name shown in results, metrics and ListEngines; usable as RecognitionConfig.model_hint."""
    model: str = "whisper-base"
    """Model reference resolved by the model store: an offline name (whisper-base,
    whisper-tiny.en), a fetched hub name (large-v3, large-v2) or a directory path."""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: the service's device placement (``device`` section). cpu: always CPU, whatever
    the placement (the last-resort fallback). cuda: the placement must have found a GPU."""
    compute_type: str = "auto"
    """auto: float16 on CUDA, int8 on CPU (float32 is several times slower on CPU)."""
    beam_size: int = Field(default=5, ge=1, le=10)
    """Beam width of final decodes. Interim decodes are always greedy (they are thrown away)."""
    english_only: bool = False
    """The model only knows English (tiny.en, base.en): skipped for other configured languages."""
    window_padding_seconds: float | None = Field(default=6.0, ge=0, le=30)
    """Whisper's encoder sees the utterance plus this much silence instead of its fixed 30 s
    window (rounded up to whole seconds): on CPU the encoder's cost follows its input, so a
    3 s question decodes several times faster (``python -m bench.stt_window`` measures it
    with the WER on real recordings). With less padding Whisper base more often loops or
    stops early; a degenerate result (a phrase repeated, too many words for the audio, the
    length bound hit) is decoded again with the full window. None: always the full 30 s; on a
    GPU the encoder is cheap, so the GPU profile (stt.gpu.yaml) keeps the full window."""
    window_min_seconds: float = Field(default=10.0, ge=1, le=30)
    """The shortest encoder window: short questions get this much rather than the audio plus
    the padding. On streamed real recordings French lost a few words with 8 s windows and
    none to speak of with 10 s (bench.stt_window); a 10 s window still costs about a third of
    the full one."""
    window_silence_floor: bool = True
    """Pad the encoder window with the log-mel of silence, as Whisper was trained, rather
    than faster-whisper's zeros (which read as faint noise); with the short window it
    recovered most of the French accuracy the zeros lost (bench.stt_window)."""

    @model_validator(mode="after")
    def _check_name(self) -> EngineSettings:
        if not ENGINE_NAME.match(self.name):
            raise ValueError(f"engine name {self.name!r} must be lowercase letters, digits, '.', '_' or '-'")
        return self


class TurnSettings(BaseModel):
    """Semantic end of turn: at a pause, a model judges whether the speaker has finished.

    The model is asked at ``check_silence_ms`` of silence; the speculative decode still starts
    at ``speculative_pause_ms``, before any decision. Judged complete: the utterance ends at
    ``complete_silence_ms`` (or when the pause's transcript is ready, within
    ``hold_for_transcript_ms``). Judged unfinished: the
    model is asked again every ``recheck_ms`` while the silence lasts (it hears the longer
    silence), and the utterance ends anyway at ``max_silence_ms``. Each check is applied at
    the stream position it was asked for, so a stream sent faster than real time ends exactly
    where a live one would."""

    model_config = {"extra": "forbid"}

    mode: Literal["semantic", "silence"] = "semantic"
    """Endpointing of streams whose RecognitionConfig.endpointing is unspecified."""
    model: str = "smart-turn-v3.2"
    """End-of-turn model: an offline name (assembled by ``python -m services.models assemble``)
    or a path to a Smart Turn .onnx file. Missing: streams fall back to silence-only
    endpointing, with a warning at start-up."""
    check_silence_ms: int = Field(default=64, ge=32, le=5000)
    """Silence after the voice at which the model is asked; its answer is applied at
    complete_silence_ms. Asked before the speculative decode starts (160 ms), so that on an
    idle 2-core host its ~60 ms of CPU is done before Whisper takes both cores: when the two
    overlap, Whisper's parallel decode slows by two to three times the model's CPU time (a
    0.45 s decode took 0.63 s beside one model run, measured on this host). Asking at 32,
    64, 96, 128 or 160 ms split the same shared recordings; 64 ms costs about 25 % more model
    runs than 160 ms (short gaps inside speech)."""
    complete_threshold: float = Field(default=0.5, gt=0, lt=1)
    """Probability at or above which the model's answer means "the turn is complete"."""
    complete_silence_ms: int = Field(default=200, ge=32, le=5000)
    """Silence after the voice that ends a turn judged complete (at least check_silence_ms;
    rounded up to whole 32 ms VAD windows: 224 ms)."""
    hold_for_transcript_ms: int = Field(default=500, ge=0, le=5000)
    """A turn judged complete ends when the pause's speculative decode is ready, if that is
    later, by at most this much more silence: the final cannot come before that decode, so
    listening on meanwhile costs no latency, and a speaker who goes on within it is not cut
    off. On a fast GPU the decode is ready first and complete_silence_ms alone applies; for a
    stream sent faster than real time the bound applies. 0: end at complete_silence_ms."""
    recheck_ms: int = Field(default=0, ge=0, le=10000)
    """While a turn judged unfinished stays silent, ask the model again after this much more
    silence. 0 (the default): once per pause. Measured on the shared recordings, a second
    answer mostly turns a real hesitation into "complete" (the model's probability rises with
    the silence it hears), which cuts the speaker off: rechecking at 500 ms split 2 more of 16
    paused turns and ended no complete command sooner."""
    text_veto: bool = True
    """A pause whose speculative transcript breaks off mid-sentence (a trailing comma or
    ellipsis, a dangling article, conjunction or possessive: ``unfinished``) is unfinished,
    whatever the model says: the turn waits for max_silence_ms. It needs the transcript
    within the hold (hold_for_transcript_ms above 0); a later one changes nothing."""
    max_silence_ms: int = Field(default=2000, ge=100, le=10000)
    """Silence that ends a turn whatever the model says: the longest a person may pause."""
    decision_timeout_ms: int = Field(default=1000, ge=50, le=10000)
    """A model answer later than this (an overloaded host) counts as none: that pause is
    judged by end_of_speech_silence_ms alone."""
    threads: int = Field(default=1, ge=1, le=64)
    """CPU threads of one model run. One: a run is ~60 ms of CPU and runs beside Whisper's."""

    @model_validator(mode="after")
    def _ordered(self) -> TurnSettings:
        if self.complete_silence_ms >= self.max_silence_ms:
            raise ValueError("turn.complete_silence_ms must be below turn.max_silence_ms")
        if self.check_silence_ms >= self.max_silence_ms:
            raise ValueError("turn.check_silence_ms must be below turn.max_silence_ms")
        return self


class StreamingSettings(BaseModel):
    """Voice activity detection and endpointing of streaming recognition."""

    model_config = {"extra": "forbid"}

    end_of_speech_silence_ms: int = Field(default=300, ge=EOS_SILENCE.low, le=EOS_SILENCE.high)
    """Silence that ends an utterance when the client does not set one, under silence-only
    endpointing. Under semantic endpointing the model decides instead, and this is the rule
    for a pause it could not judge (model missing, failed or late). Held to the range a
    client may ask for (``validation.EOS_SILENCE``)."""
    turn: TurnSettings = TurnSettings()
    speculative_pause_ms: int = Field(default=160, ge=32, le=2000)
    """At this much silence the final decode starts speculatively; the same audio is the final's
    when the silence goes on to end the utterance, so the final is ready sooner. Also the
    silence kept after the last speech in the decoded audio."""
    pre_roll_ms: int = Field(default=100, ge=0, le=1000)
    """Audio kept before the first voiced window (Silero triggers a little late). Kept short:
    Whisper base misreads more often after a long lead of silence (measured on French)."""
    min_speech_ms: int = Field(default=96, ge=32, le=1000)
    """Voiced audio needed before SPEECH_STARTED: coughs and clicks shorter than this are ignored."""
    vad_threshold: float = Field(default=0.5, gt=0, lt=1)
    """Silero speech probability at or above which a 32 ms window is speech."""
    vad_neg_threshold: float = Field(default=0.35, gt=0, lt=1)
    """Below this a window is silence; between the two thresholds the previous state holds."""
    vad_reset_ms: int = Field(default=320, ge=0, le=10000)
    """Between utterances, Silero's recurrent state starts afresh after this much silence (and
    again after each further stretch of it); 0: never. Its state after an utterance and the
    silence behind it hears the next words less surely than a fresh one: a 1-second "What time
    is it?" right after "What's the weather like in New York?" and 4 s of silence got speech
    probabilities of at most 0.62 and was never heard; from a fresh state, 0.91."""
    interim_interval_ms: int = Field(default=1000, ge=200, le=10000)
    """New speech between two interim decodes. Interims only run when a decode worker is idle,
    so on a busy CPU they thin out instead of delaying finals."""
    max_utterance_seconds: float = Field(default=30.0, gt=1, le=120)
    """An utterance is cut at its quietest moment in its second half when it reaches this length (a final is sent, recognition goes on).
    30 s is Whisper's window: longer would need the slower sliding decode."""

    @model_validator(mode="after")
    def _consistent(self) -> StreamingSettings:
        if self.vad_neg_threshold > self.vad_threshold:
            raise ValueError("vad_neg_threshold must not exceed vad_threshold")
        if self.speculative_pause_ms >= self.turn.max_silence_ms:
            raise ValueError("speculative_pause_ms must be below turn.max_silence_ms")
        return self


class SttServerSettings(ServerSettings):
    """The server section with the STT service's own defaults. A subclass, not a default
    instance: ``STT_SERVER__PORT`` alone must not reset the other fields to the base defaults."""

    port: int = Field(default=50051, ge=0, le=65535)
    metrics_port: int | None = Field(default=9091, ge=0, le=65535)
    max_receive_message_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    """Unary recognition takes whole files: 32 MiB is about 17 minutes of 16 kHz PCM."""


class SttSettings(ServiceSettings):
    """Settings of the speech-to-text service (env prefix ``STT_``)."""

    model_config = SettingsConfigDict(**{**ServiceSettings.model_config, "env_prefix": "STT_"})

    server: SttServerSettings = SttServerSettings()
    engines: list[EngineSettings] = Field(default_factory=lambda: [EngineSettings(name="base")])
    """The fallback chain, first tried first. Every engine is loaded at start-up."""
    streaming: StreamingSettings = StreamingSettings()
    decode_workers: int = Field(default=2, ge=1, le=16)
    """Decodes run at once (CTranslate2 workers). Interims may hold all but one, so a final
    never waits behind an interim. On CPU each worker may use every core (``device.threads``
    overrides): a lone decode, the usual case for a voice assistant, then runs on all of them.
    Measured by bench.stt (Whisper base int8, 2-core AVX2), against cores/workers threads: a lone
    decode 1.2-1.9x faster; four decodes two at a time at 0.83-1.08x the throughput across runs,
    so under full concurrency this trades up to a sixth of throughput for single-turn latency."""
    max_pending_decodes: int = Field(default=16, ge=1, le=1024)
    """Decodes running or waiting, across every stream; beyond it calls get RESOURCE_EXHAUSTED."""
    decode_timeout_base_seconds: float = Field(default=10.0, gt=0)
    """Time allowed for a decode, before the per-second allowance is added."""
    decode_timeout_per_audio_second: float = Field(default=1.0, gt=0)
    """Extra time allowed per second of audio (a 30 s file on CPU needs ~10 s)."""
    breaker_threshold: int = Field(default=3, ge=1)
    """Consecutive failures that open an engine's circuit breaker."""
    breaker_ttl_seconds: float = Field(default=30.0, gt=0)
    """How long an open breaker skips its engine before one call probes it again."""
    cache_max_bytes: int = Field(default=200 * 1024 * 1024, ge=0)
    """Byte budget of the result cache (keyed by a hash of the audio and options); 0 disables it."""
    max_audio_seconds: float = Field(default=600.0, gt=0)
    """Longest audio accepted by unary Recognize; longer gets INVALID_ARGUMENT."""
    temperatures: tuple[float, ...] = (0.0, 0.2, 0.4)
    """Temperature fallback of final decodes when the greedy/beam result looks degenerate. A
    short list bounds the worst-case decode time on noise."""

    @model_validator(mode="after")
    def _check_engines(self) -> SttSettings:
        if not self.engines:
            raise ValueError("engines: at least one engine is needed")
        names = [e.name for e in self.engines]
        if len(set(names)) != len(names):
            raise ValueError(f"engines: names must be unique, got {names}")
        return self
