"""Gateway settings (env prefix ``GATEWAY_``): where it listens, where the fleet is, limits.

The ``server`` section is the runtime's own: its port serves gRPC health (so the fleet
launcher, container probes and Kubernetes check the gateway as they check every service),
``metrics_port`` serves Prometheus, ``auth_token`` is the API key every HTTP and WebSocket
call must carry, and ``tls`` puts the HTTP API (and the health port) behind TLS or mTLS.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.runtime.channel import ChannelSettings
from services.runtime.config import ServerSettings, ServiceSettings, TlsSettings

WEB_CLIENT_DIR = Path(__file__).resolve().parent / "web"
"""The browser client (a single page over the Realtime API), served at ``/`` by default."""

# OpenAI's built-in voice names. Clients copied from OpenAI examples send one of them; they
# are English voices, so they map to our English default voice unless configured otherwise.
OPENAI_VOICES = (
    "alloy",
    "ash",
    "ballad",
    "cedar",
    "coral",
    "echo",
    "fable",
    "marin",
    "nova",
    "onyx",
    "sage",
    "shimmer",
    "verse",
)


class GatewayServerSettings(ServerSettings):
    """The runtime's server section with the gateway's defaults (a subclass, so that
    ``GATEWAY_SERVER__HOST`` alone keeps these ports)."""

    port: int = Field(default=50054, ge=0, le=65535)
    metrics_port: int | None = Field(default=9094, ge=0, le=65535)


class HttpSettings(BaseModel):
    """The OpenAI-compatible HTTP and WebSocket API."""

    model_config = {"extra": "forbid"}

    host: str | None = None
    """Address to listen on; None: the same as ``server.host``."""
    port: int = Field(default=8000, ge=0, le=65535)
    """HTTP port (base URL ``http://HOST:8000/v1``); 0 picks a free one (tests)."""
    tls: TlsSettings = TlsSettings()
    """HTTPS for the HTTP API alone, leaving the health port as it is (``make run`` probes it in
    plain text): a browser on another machine gives the web client its microphone only over
    https. Unset: ``server.tls``, which secures both."""
    max_upload_bytes: int = Field(default=25 * 1024 * 1024, gt=0)
    """Largest request body (an uploaded audio file); larger ones get 413. OpenAI's own limit."""
    max_json_bytes: int = Field(default=1024 * 1024, gt=0)
    """Largest JSON request body (chat messages, text to speak); larger ones get 413."""
    max_audio_seconds: float = Field(default=600.0, gt=0)
    """Longest audio file transcribed; longer ones get 400 (the STT service's own cap is 600 s)."""
    max_speech_chars: int = Field(default=4096, gt=0)
    """Longest text for /v1/audio/speech (OpenAI's limit)."""
    speech_sample_rate: int = Field(default=24000, ge=8000, le=48000)
    """Sample rate of synthesised speech: OpenAI's ``pcm`` format is 24 kHz, and clients that
    play it raw assume so."""
    max_event_bytes: int = Field(default=8 * 1024 * 1024, gt=0)
    """Largest Realtime client event; a larger one gets an ``error`` event (the socket stays
    open). A message past twice this is refused by the WebSocket layer itself (close 1009)."""
    static_dir: Path | None = WEB_CLIENT_DIR
    """The folder served at ``/``: the browser client by default, or a page of your own; empty
    (``GATEWAY_HTTP__STATIC_DIR=``) or None: nothing is served there."""
    timeout_seconds: float = Field(default=120.0, gt=0)
    """Deadline of each call the gateway makes to a service."""

    @field_validator("static_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # An empty variable would otherwise become Path(""), the working directory: served whole.
        if isinstance(value, str) and value.strip().lower() in ("", "none", "null", "off"):
            return None
        return value


class WyomingSettings(BaseModel):
    """Home Assistant's Wyoming protocol. Wyoming has no authentication or TLS of its own:
    keep these ports on a trusted network (or disable them)."""

    model_config = {"extra": "forbid"}

    enabled: bool = True
    """Serve Wyoming ASR and TTS."""
    host: str | None = None
    """Address to listen on; None: the same as ``server.host``."""
    asr_port: int = Field(default=10300, ge=0, le=65535)
    """Speech-to-text (the port wyoming-faster-whisper uses)."""
    tts_port: int = Field(default=10200, ge=0, le=65535)
    """Text-to-speech (the port wyoming-piper uses)."""
    max_payload_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    """Largest event (header, data or audio payload) read from a client; a larger one gets an
    ``error`` event and the connection is closed, since the stream cannot be resynchronised."""
    max_audio_seconds: float = Field(default=120.0, gt=0)
    """Longest audio one transcription may send (a voice command lasts seconds)."""
    samples_per_chunk: int = Field(default=1024, ge=64, le=48000)
    """Samples per audio-chunk event sent back (wyoming-piper's default)."""


class Defaults(BaseModel):
    """What a request gets when it leaves a field out."""

    model_config = {"extra": "forbid"}

    language: str = Field(default="fr", pattern=r"^[a-z]{2}$")
    """Conversation language of a Realtime session (the fleet speaks French first)."""
    voice_aliases: dict[str, str] = Field(default_factory=lambda: dict.fromkeys(OPENAI_VOICES, "en"))
    """Voice names that are not ours, mapped to one of our voices or to a language code (its
    default voice). OpenAI's names map to English."""
    speech_language: str = Field(default="en", pattern=r"^[a-z]{2}$")
    """Language of /v1/audio/speech and Wyoming text when the voice does not say (OpenAI's
    speech endpoint has no language field, and its clients send English)."""


class GatewaySettings(ServiceSettings):
    """Settings of ``python -m services.gateway``."""

    model_config = SettingsConfigDict(**{**ServiceSettings.model_config, "env_prefix": "GATEWAY_"})

    server: GatewayServerSettings = GatewayServerSettings()
    http: HttpSettings = HttpSettings()
    wyoming: WyomingSettings = WyomingSettings()
    defaults: Defaults = Defaults()
    stt: ChannelSettings = ChannelSettings(target="127.0.0.1:50051")
    """Speech-to-text service."""
    llm: ChannelSettings = ChannelSettings(target="127.0.0.1:50052")
    """Language model service."""
    tts: ChannelSettings = ChannelSettings(target="127.0.0.1:50053")
    """Text-to-speech service."""
    orchestrator: ChannelSettings = ChannelSettings(target="127.0.0.1:50050")
    """The conversation service, behind the Realtime API."""
    dependency_wait_seconds: float = Field(default=300.0, ge=0)
    """At start-up, wait this long for the four services to be SERVING before serving anyway
    (calls to a missing one get 503)."""

    def http_host(self) -> str:
        return self.http.host or self.server.host

    def wyoming_host(self) -> str:
        return self.wyoming.host or self.server.host
