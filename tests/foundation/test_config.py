"""Typed settings from defaults, a YAML file and the environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.runtime.config import ConfigError, load_settings
from tests.foundation.echo_service import EchoSettings


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PAROLE_MODEL_DIR", "/srv/models")
    s = load_settings(EchoSettings)
    assert s.server.port == 50099 and s.server.max_receive_message_bytes == 4 * 1024 * 1024
    assert s.device.device == "auto" and s.log.level == "INFO"
    assert s.model_dir == Path("/srv/models")


def test_env_nested_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ECHO_SERVER__PORT", "6000")
    monkeypatch.setenv("ECHO_SERVER__AUTH_TOKEN", "zq-secret-77")
    monkeypatch.setenv("ECHO_DEVICE__VISIBLE_DEVICES", "1")
    monkeypatch.setenv("ECHO_DELAY_SECONDS", "0.25")
    s = load_settings(EchoSettings)
    assert s.server.port == 6000
    assert s.server.auth_token is not None and s.server.auth_token.get_secret_value() == "zq-secret-77"
    assert "zq-secret-77" not in repr(s)  # secrets never show in logs or reprs
    assert s.device.visible_devices == "1" and s.delay_seconds == 0.25


def test_yaml_file_and_env_precedence(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = tmp_path / "echo.yaml"
    cfg.write_text(
        "server:\n  port: 7000\n  keepalive_time_seconds: 12\n"
        "device:\n  require_gpu: true\n  expected_name: RTX 3090\n  min_memory_gib: 20\n"
        "delay_seconds: 1.5\n"
    )
    s = load_settings(EchoSettings, cfg)
    assert s.server.port == 7000 and s.server.keepalive_time_seconds == 12
    assert s.device.require_gpu and s.device.expected_name == "RTX 3090" and s.device.min_memory_gib == 20
    assert s.delay_seconds == 1.5
    # The environment wins over the file; the file can also come from <PREFIX>CONFIG_FILE.
    monkeypatch.setenv("ECHO_CONFIG_FILE", str(cfg))
    monkeypatch.setenv("ECHO_SERVER__PORT", "7001")
    s = load_settings(EchoSettings)
    assert s.server.port == 7001 and s.delay_seconds == 1.5


@pytest.mark.parametrize(
    ("yaml", "needle"),
    [
        ("server:\n  port: 70000\n", "port"),
        ("server:\n  prot: 1\n", "prot"),  # typos are refused, not ignored
        ("server:\n  tls:\n    cert_file: /a.pem\n", "key_file"),
        ("device:\n  device: tpu\n", "device"),
    ],
)
def test_invalid_values_name_the_field(tmp_path: Path, yaml: str, needle: str) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml)
    with pytest.raises(ConfigError, match=needle):
        load_settings(EchoSettings, cfg)


def test_missing_config_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(EchoSettings, tmp_path / "nope.yaml")


def test_partial_section_override_keeps_the_service_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # EchoSettings' own server defaults are port 50099 and no metrics; setting one field of
    # the section by env or file must not bring back the generic section's 50050 / 9090.
    monkeypatch.setenv("ECHO_SERVER__HOST", "127.0.0.1")
    s = load_settings(EchoSettings)
    assert (s.server.host, s.server.port, s.server.metrics_port) == ("127.0.0.1", 50099, None)
    monkeypatch.delenv("ECHO_SERVER__HOST")
    cfg = tmp_path / "echo.yaml"
    cfg.write_text("server:\n  grace_seconds: 3\n")
    s = load_settings(EchoSettings, cfg)
    assert (s.server.grace_seconds, s.server.port, s.server.metrics_port) == (3, 50099, None)
