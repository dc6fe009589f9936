"""Settings of the LLM service (env prefix ``LLM_``, nested with ``__``)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, model_validator
from pydantic_settings import SettingsConfigDict

from services.runtime.config import ServerSettings, ServiceSettings

BackendName = Literal["ollama", "llamacpp", "canned"]
LANGUAGES = ("fr", "en")

# Short on purpose: every system-prompt token is read before the first answer token, and
# the answer is spoken, so markdown, lists and emoji would be read aloud or dropped.
DEFAULT_SYSTEM_PROMPTS: dict[str, str] = {
    "fr": (
        "Tu es un assistant vocal. Réponds en français, en une à trois phrases courtes, "
        "comme à l'oral : pas de markdown, pas de listes, pas d'emoji."
    ),
    "en": (
        "You are a voice assistant. Answer in English in one to three short sentences, "
        "as spoken language: no markdown, no lists, no emoji."
    ),
}


def _default_chain() -> list[BackendName]:
    return ["ollama", "llamacpp", "canned"]


class OllamaSettings(BaseModel):
    """The Ollama server used in production."""

    model_config = {"extra": "forbid"}

    host: str = "http://127.0.0.1:11434"
    """Base URL of the Ollama server (compose: http://ollama:11434)."""
    model: str = "nous-hermes-2-mistral-7b-dpo"
    """Model served by Ollama (the original product's)."""
    keep_alive: str = "30m"
    """How long Ollama keeps the model loaded after a call, so the next turn starts warm."""
    timeout_seconds: float | None = Field(default=None, gt=0)
    """Overrides ``timeout_seconds`` for Ollama (None: the service-wide one)."""
    warm_up: bool = True
    """Ask Ollama to load the model at start-up (best effort: a down Ollama does not block)."""


class LlamaCppSettings(BaseModel):
    """The embedded llama.cpp engine, for hosts without Ollama."""

    model_config = {"extra": "forbid"}

    model: str = "qwen2.5-coder-1.5b-instruct-q4_k_m"
    """GGUF model: an offline catalogue name, a file name in the cache's llm/ folder, or a path."""
    n_ctx: int = Field(default=4096, ge=256)
    """Context window in tokens (system prompt, history, new turn and answer)."""
    n_batch: int = Field(default=256, ge=16)
    """Prompt tokens decoded per batch; llama-cpp-python also sizes a logits buffer by it."""
    threads: int = Field(default=0, ge=0)
    """CPU threads; 0 takes ``device.threads``, else 2 (set it: the library default is all cores)."""
    timeout_seconds: float | None = Field(default=None, gt=0)
    """Overrides ``timeout_seconds`` for the embedded model. On a shared CPU its first token
    can be slow for reasons a fallback would not fix; None: the service-wide one."""
    parallel: int = Field(default=2, ge=1, le=16)
    """Conversations answered at once: one context (KV cache and worker thread) each, over the
    same memory-mapped weights (+~115 MB of cache each at the default n_ctx). Two on two
    cores: four questions at once get their last first token ~0.55x as late, with ~1.4x the
    tokens per second of one context (bench.llm's parallel section); one conversation alone
    is as fast as before. Set the orchestrator's ORCH_ANSWER_SLOTS to the same number."""
    sleeping_threads: bool = True
    """llama.cpp's OpenMP threads sleep at barriers instead of spinning (``OMP_WAIT_POLICY=
    PASSIVE`` while the library loads, unless the environment already sets a policy): beside
    two busy processes on two cores, 40 tokens took 5.2 s instead of 76 s; alone ~2 % slower
    (``services.runtime.openmp``). Off: libgomp's default (spin, then sleep)."""
    first_tokens: int = Field(default=12, ge=0)
    """Tokens of an answer written before other answers' later tokens: while one parallel
    answer reads its prompt or writes its first ``first_tokens``, the others past theirs step
    aside between two tokens and it takes their threads (a person waits in silence for those
    first words; the later ones have the time the first take to play). 0: no order, every
    answer shares the cores equally."""
    first_tokens_max_pause: float = Field(default=1.0, ge=0)
    """Seconds an answer may step aside in all, so that its own later words never fall far
    behind their speech."""
    max_waiting: int = Field(default=4, ge=0)
    """Requests allowed to wait while every context serves another; more get RESOURCE_EXHAUSTED."""
    shift_history: bool = True
    """When a session's oldest exchanges fall out of the history window (``max_turns``,
    ``max_history_tokens``), take them out of the KV cache and move the rest back, instead of
    reading the whole remaining history again: that reread is ~600 tokens, 4-5 s before the
    first token on two cores, at every turn once the window is full. The moved cache keeps a
    faint trace of what was dropped (llama.cpp's context shift does the same); off: exact
    rereads."""
    session_snapshots: int = Field(default=4, ge=0)
    """KV-cache snapshots kept for recent sessions, so alternating conversations do not
    re-read their whole history; 0 keeps only the live cache (the last conversation)."""
    session_snapshot_mb: int = Field(default=256, ge=0)
    """Memory the snapshots may take together (the oldest go first). A snapshot holds the KV
    cache of the tokens a session has read: about 28 kB a token for the default 1.5B model,
    so 256 MB holds four sessions at the default history bound (1,500 tokens plus answer)."""


class SessionSettings(BaseModel):
    """Conversation memory."""

    model_config = {"extra": "forbid"}

    max_turns: int = Field(default=8, ge=0)
    """Exchanges (user turn and answer) kept per session; older ones are dropped."""
    max_history_tokens: int = Field(default=1500, ge=0)
    """Tokens of history kept per session (system prompt excluded); oldest exchanges go first."""
    ttl_seconds: float = Field(default=1800.0, gt=0)
    """A session unused this long is forgotten."""
    max_sessions: int = Field(default=1000, ge=1)
    """Sessions held at once; the least recently used is forgotten beyond this."""


class LlmSettings(ServiceSettings):
    """Settings of ``python -m services.llm``."""

    model_config = SettingsConfigDict(**{**ServiceSettings.model_config, "env_prefix": "LLM_"})

    server: ServerSettings = ServerSettings(port=50052, metrics_port=9092)
    backends: list[BackendName] = Field(default_factory=lambda: _default_chain())
    """Fallback chain, tried in order. Production with Ollama may drop llamacpp to save its
    memory; ``canned`` (the last-resort reply) should stay last."""
    ollama: OllamaSettings = OllamaSettings()
    llamacpp: LlamaCppSettings = LlamaCppSettings()
    sessions: SessionSettings = SessionSettings()
    nice: int = Field(default=5, ge=0, le=19)
    """Below the speech services on a shared CPU (see ``ServiceSettings.nice``): bench.load at 4
    conversations, time to first audio p95 15.6 s at 5 against 18.4 s at 0."""
    timeout_seconds: float = Field(default=30.0, gt=0)
    """Longest wait for a backend's first token, and for each later token (the original's 30 s)."""
    max_tokens: int = Field(default=150, ge=1)
    """Default answer length in tokens (the original's 150)."""
    max_tokens_limit: int = Field(default=1024, ge=1)
    """Largest ``max_tokens`` a caller may ask for."""
    temperature: float = Field(default=0.7, ge=0.0, le=2.0)
    """Default sampling temperature."""
    max_text_chars: int = Field(default=2000, ge=1)
    """Longest user turn (and message, and system prompt) accepted, in characters."""
    max_messages: int = Field(default=100, ge=1)
    """Most messages a stateless caller may send."""
    default_language: Literal["fr", "en"] = "fr"
    """Language when neither the request nor the session says."""
    system_prompts: dict[str, str] = Field(default_factory=lambda: dict(DEFAULT_SYSTEM_PROMPTS))
    """Default system prompt per language."""
    breaker_threshold: int = Field(default=3, ge=1)
    """Consecutive failures that open a backend's circuit breaker."""
    breaker_ttl_seconds: float = Field(default=30.0, gt=0)
    """How long an open breaker skips its backend before probing it again."""

    def timeout_for(self, backend: str) -> float:
        """The first-token and between-token timeout of a backend."""
        override = {"ollama": self.ollama.timeout_seconds, "llamacpp": self.llamacpp.timeout_seconds}.get(backend)
        return override or self.timeout_seconds

    @model_validator(mode="after")
    def _check(self) -> LlmSettings:
        if not self.backends:
            raise ValueError("backends: at least one backend is needed (e.g. [llamacpp, canned])")
        if len(set(self.backends)) != len(self.backends):
            raise ValueError(f"backends: each backend once, got {self.backends}")
        missing = [lang for lang in LANGUAGES if not self.system_prompts.get(lang, "").strip()]
        if missing:
            raise ValueError(f"system_prompts: no prompt for {missing}")
        if self.max_tokens > self.max_tokens_limit:
            raise ValueError("max_tokens must not exceed max_tokens_limit")
        return self
