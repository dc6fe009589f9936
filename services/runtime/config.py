"""Typed service configuration read from the environment and an optional YAML file.

Each service declares one settings class (``SttSettings``, ...) deriving from
``ServiceSettings`` with its own env prefix. Precedence, highest first: explicit
arguments, environment variables (nested with ``__``, e.g. ``STT_SERVER__PORT``), the YAML
file (``--config`` or ``<PREFIX>CONFIG_FILE``), then the defaults written here.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal, TypeVar, cast

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)


def default_model_dir() -> Path:
    """Model cache shared by every service and the ``models`` command."""
    env = os.environ.get("PAROLE_MODEL_DIR")
    if env:
        return Path(env).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "parole" / "models"


class TlsSettings(BaseModel):
    """Server-side TLS. Both files set: TLS; plus ``client_ca_file``: mutual TLS."""

    model_config = {"extra": "forbid"}

    cert_file: Path | None = None
    """PEM certificate chain of this server."""
    key_file: Path | None = None
    """PEM private key of this server."""
    client_ca_file: Path | None = None
    """PEM CA bundle; when set, clients must present a certificate signed by it (mTLS)."""

    @property
    def enabled(self) -> bool:
        return self.cert_file is not None

    @model_validator(mode="after")
    def _both_or_neither(self) -> TlsSettings:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("TLS needs both cert_file and key_file (or neither)")
        if self.client_ca_file is not None and self.cert_file is None:
            raise ValueError("client_ca_file (mTLS) needs cert_file and key_file too")
        return self


class ServerSettings(BaseModel):
    """Network side of a service: address, limits, keepalive, security."""

    model_config = {"extra": "forbid"}

    host: str = "0.0.0.0"
    """Address to listen on. Use 127.0.0.1 to keep a service local."""
    port: int = Field(default=50050, ge=0, le=65535)
    """gRPC port; 0 picks a free one (tests)."""
    metrics_port: int | None = Field(default=9090, ge=0, le=65535)
    """Port of the Prometheus ``/metrics`` endpoint; None disables it, 0 picks a free one."""
    metrics_host: str = "0.0.0.0"
    """Address of the metrics endpoint."""
    max_receive_message_bytes: int = Field(default=4 * 1024 * 1024, gt=0)
    """Largest request message accepted; larger ones get RESOURCE_EXHAUSTED."""
    max_send_message_bytes: int = Field(default=32 * 1024 * 1024, gt=0)
    """Largest response message sent (whole-text synthesis can be large)."""
    max_concurrent_rpcs: int | None = Field(default=None, gt=0)
    """Calls in flight at once; more get RESOURCE_EXHAUSTED. None: unlimited."""
    keepalive_time_seconds: float = Field(default=30.0, gt=0)
    """Ping an idle connection this often, so dead peers are noticed (NAT, crashed clients)."""
    keepalive_timeout_seconds: float = Field(default=10.0, gt=0)
    """Drop the connection if a ping is not answered within this time."""
    grace_seconds: float = Field(default=10.0, ge=0)
    """On SIGTERM, in-flight calls get this long to finish. Keep it below the container's
    stop period (compose: stop_grace_period)."""
    auth_token: SecretStr | None = None
    """When set, every call must carry ``authorization: Bearer <token>`` metadata."""
    auth_exempt_health: bool = True
    """Let health checks through without a token, so probes need no secret."""
    tls: TlsSettings = TlsSettings()


class DeviceSettings(BaseModel):
    """Where a model runs, and what to check at start-up before trusting that placement."""

    model_config = {"extra": "forbid"}

    device: Literal["auto", "cpu", "cuda"] = "auto"
    """auto: CUDA when a GPU is visible, else CPU. cuda: a GPU or exit. cpu: always CPU."""
    visible_devices: str | None = None
    """Sets CUDA_VISIBLE_DEVICES before any CUDA library loads ("1" pins the second card).
    None: leave the environment as it is."""
    device_order: str = "PCI_BUS_ID"
    """CUDA_DEVICE_ORDER: PCI_BUS_ID makes indices match nvidia-smi."""
    device_index: int = Field(default=0, ge=0)
    """Index among the visible GPUs (0 is the first visible card)."""
    compute_type: str = "auto"
    """Precision: auto picks float16 on CUDA, int8 on CPU; or e.g. int8_float16, float32."""
    require_gpu: bool = False
    """Exit at start-up unless the expected GPU is the one in use."""
    expected_name: str | None = None
    """Regular expression the GPU name must match (e.g. "RTX 3090"), checked when require_gpu."""
    min_memory_gib: float | None = Field(default=None, gt=0)
    """Least total GPU memory, in GiB, checked when require_gpu."""
    threads: int = Field(default=0, ge=0)
    """CPU threads for inference; 0: the library default (all cores)."""


class LogSettings(BaseModel):
    """Logging."""

    model_config = {"extra": "forbid"}

    level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    """Log level. Transcripts and answers are logged only at DEBUG."""
    json_format: bool = False
    """One JSON object per line (for log shippers) instead of readable text."""


class ServiceSettings(BaseSettings):
    """Settings every service has. Subclasses add their own and set ``env_prefix``."""

    model_config = SettingsConfigDict(
        env_nested_delimiter="__",
        extra="forbid",
        validate_default=True,
    )

    server: ServerSettings = ServerSettings()
    log: LogSettings = LogSettings()
    device: DeviceSettings = DeviceSettings()
    model_dir: Path = Field(default_factory=default_model_dir)
    """Model cache (``python -m services.models`` fills it). Env PAROLE_MODEL_DIR also sets it."""
    nice: int = Field(default=0, ge=0, le=19)
    """Lowers the process's CPU priority by this much at start (Unix nice). On a CPU host
    shared by the fleet, the service that would take every core for seconds (the language
    model) runs below the ones a person waits on in short bursts (the final transcript, the
    first clause's audio); alone on the machine it gets every core all the same."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            YamlConfigSettingsSource(settings_cls),
            file_secret_settings,
            _SectionDefaults(settings_cls),
        )


class _SectionDefaults(PydanticBaseSettingsSource):
    """Lowest-priority source: each section's default object, as a dict.

    pydantic-settings deep-merges its sources, but a section set partly by env
    (``LLM_SERVER__HOST`` alone) would otherwise be rebuilt from the section *class*
    defaults, losing the service's own (port 50052 became 50050). Offering the service's
    defaults as a source makes the partial override merge over them.
    """

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, info in self.settings_cls.model_fields.items():
            if isinstance(info.default, BaseModel):
                out[name] = info.default.model_dump(exclude_unset=True)
        return out


class ConfigError(Exception):
    """The configuration cannot be used; the message says what to change."""


S = TypeVar("S", bound=ServiceSettings)


def load_settings(cls: type[S], config_file: Path | str | None = None, **overrides: Any) -> S:
    """Builds ``cls`` from env, the YAML file (argument or ``<PREFIX>CONFIG_FILE``) and overrides."""
    prefix = str(cls.model_config.get("env_prefix", ""))
    path = config_file or os.environ.get(f"{prefix}CONFIG_FILE")
    if path:
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError(f"config file {path} does not exist (from --config or {prefix}CONFIG_FILE)")
    # The YAML source reads model_config["yaml_file"]; bind it on a throwaway subclass so the
    # service's class itself stays free of any particular file.
    bound = type(cls.__name__, (cls,), {"model_config": {**cls.model_config, "yaml_file": path}})
    try:
        return cast(S, bound(**overrides))
    except ValueError as exc:  # pydantic's ValidationError is a ValueError
        raise ConfigError(f"invalid {cls.__name__} ({prefix}* env vars, config file {path}): {exc}") from exc
