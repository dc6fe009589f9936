"""TTS service settings (env prefix ``TTS_``, nested with ``__``)."""

from __future__ import annotations

from pydantic import BaseModel, Field
from pydantic_settings import SettingsConfigDict

from services.runtime.config import ServerSettings, ServiceSettings

DEFAULT_FRENCH_KOKORO = "kokoro:jm_kumo"
"""The offline French default when siwis is absent: of Kokoro's five styles and three blends,
the best understood (round-trip WER through our STT in bench.tts; see the README)."""


class SplitSettings(BaseModel):
    """Where streamed text is cut (see ``services.tts.text.SplitPolicy``)."""

    model_config = {"extra": "forbid"}

    max_chars: int = Field(default=200, ge=40)
    """Sentences longer than this are cut at clause marks, then at spaces."""
    min_clause_chars: int = Field(default=25, ge=1)
    """No shorter piece is spoken alone: short sentences keep their commas."""
    first_split_over: int = Field(default=60, ge=1)
    """A stream's first sentence longer than this is cut at its first clause (early audio)."""
    stream_clause_chars: int = Field(default=100, ge=1)
    """Incremental input: after the first piece, a clause mark cuts only past this length."""
    first_chunk_min_words: int = Field(default=4, ge=1, le=50)
    """Incremental input: the first piece ends at the first natural boundary (clause mark, or
    before a joining word) once it holds this many words, so audio starts a few tokens into
    the answer instead of a sentence into it."""
    first_chunk_max_words: int = Field(default=8, ge=1, le=100)
    """...or after this many words, boundary or not."""


class KokoroSettings(BaseModel):
    """The Kokoro-82M engine: neural French offline (``services.tts.kokoro``)."""

    model_config = {"extra": "forbid"}

    enabled: bool = True
    """Offer the Kokoro voices when the model is assembled (``python -m services.models
    assemble kokoro``); missing files only log a warning and French falls back to espeak-ng."""
    threads: int = Field(default=0, ge=0)
    """onnxruntime threads per synthesis (0: ``device.threads``, else every core). Kokoro
    needs every core of a 2-core CPU to speak faster than real time: with one thread it ran at
    about real time, so French answers stalled mid-sentence (bench.e2e, 8 French questions:
    0.82 s of silence per answer on average and 3 of 8 stalling, against none with two threads,
    and first audio p50 3.28 s against 3.08 s). The LLM writes on the same cores meanwhile and
    slows down, but stays well ahead of speech."""
    blends: list[str] = Field(default_factory=lambda: ["jf_gongitsune*0.5+jf_nezumi*0.5"])
    """Style blends listed by ListVoices beside the named styles (``style*weight+...``; an
    unknown style stops the start-up, naming the styles there are); a request may name any
    other blend as ``kokoro:<blend>``. The default: the best understood mix of two female
    styles (bench.tts)."""
    espeak_voice: str = Field(default="fr-fr", pattern=r"^[a-z]{2,3}(-[a-z0-9]{2,8})?$")
    """espeak-ng voice that turns text into the phonemes Kokoro reads (and so its language)."""
    pace: float = Field(default=0.9, ge=0.5, le=2)
    """Kokoro's speed at a request's speed 1.0 (requests scale it). Slower than the model's
    own pace is understood better: round-trip WER 26.5 % at 0.9 against 32 % at 1.0 (jm_kumo,
    36 answers, one run), for 10 % more compute."""
    gain: float = Field(default=0.75, gt=0, le=4)
    """Fixed gain on Kokoro's output. Its styles are equally loud (speech RMS 0.12-0.13) but
    jm_kumo peaks at 1.05-1.18 (measured): 0.75 keeps every style under full scale."""


class TtsSettings(ServiceSettings):
    """Settings of the TTS service."""

    model_config = SettingsConfigDict(**{**ServiceSettings.model_config, "env_prefix": "TTS_"})

    server: ServerSettings = ServerSettings(port=50053, metrics_port=9093)
    split: SplitSettings = SplitSettings()
    default_language: str = "fr"
    """Language used when a request names neither a voice nor a language."""
    chains: dict[str, list[str]] = Field(
        default_factory=lambda: {
            "fr": ["fr_FR-siwis-medium", DEFAULT_FRENCH_KOKORO, "espeak-ng:fr"],
            "en": ["en_US-joe-medium", "espeak-ng:en-us"],
        }
    )
    """Preferred voices per language; absent voices are skipped, other neural voices of the
    language follow (one per model), espeak-ng comes last. French: the Piper voice siwis when
    its files are present, else Kokoro (chosen by round-trip WER in bench.tts), else espeak-ng."""
    preload: bool = True
    """Load and warm every Piper voice before reporting SERVING (else on first use)."""
    workers: int = Field(default=2, ge=1)
    """Synthesis threads (calls beyond this wait): one per core is the sweet spot on CPU."""
    max_text_chars: int = Field(default=10_000, ge=1)
    """Longest text per request (or per incremental stream); longer gets INVALID_ARGUMENT."""
    cache_bytes: int = Field(default=64 * 1024 * 1024, ge=0)
    """Byte budget of the phrase cache (0 disables it)."""
    breaker_threshold: int = Field(default=3, ge=1)
    """Consecutive failures that open an engine's breaker."""
    breaker_ttl_seconds: float = Field(default=30.0, gt=0)
    """How long an open breaker waits before letting one probe call through."""
    piper_gain: float = Field(default=1.0, gt=0, le=4)
    """Fixed gain on Piper's output (Piper voices peak around -5 dBFS unnormalised)."""
    kokoro: KokoroSettings = KokoroSettings()
    espeak_timeout_seconds: float = Field(default=10.0, gt=0)
    """An espeak-ng process running longer is killed (and counts as a failure)."""
