"""Configuration: the production GPU chain validates, env overrides, placement mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.models.store import ModelError, ModelStore
from services.runtime.config import ConfigError, load_settings
from services.runtime.device import DeviceError, GpuInfo, Placement
from services.stt.app import build_engine
from services.stt.config import EngineSettings, SttSettings

GPU_YAML = Path(__file__).resolve().parents[2] / "services" / "stt" / "stt.gpu.yaml"


def test_gpu_chain_file_loads() -> None:
    s = load_settings(SttSettings, GPU_YAML)
    assert [(e.name, e.model, e.device, e.compute_type) for e in s.engines] == [
        ("large-v3-gpu", "large-v3", "cuda", "float16"),
        ("base-gpu", "whisper-base", "cuda", "float16"),
        ("base-cpu", "whisper-base", "cpu", "int8"),
    ]
    assert s.device.require_gpu and s.server.port == 50051 and s.server.metrics_port == 9091


def test_env_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("STT_STREAMING__END_OF_SPEECH_SILENCE_MS", "250")
    monkeypatch.setenv("STT_SERVER__PORT", "6000")
    s = load_settings(SttSettings)
    assert s.streaming.end_of_speech_silence_ms == 250 and s.server.port == 6000
    # Setting one server field keeps the service's other server defaults.
    assert s.server.metrics_port == 9091 and s.server.max_receive_message_bytes == 32 * 1024 * 1024
    monkeypatch.delenv("STT_STREAMING__END_OF_SPEECH_SILENCE_MS")
    assert load_settings(SttSettings).streaming.end_of_speech_silence_ms <= 300


def test_invalid_chains_are_refused() -> None:
    with pytest.raises(ConfigError, match="unique"):
        load_settings(SttSettings, engines=[EngineSettings(name="a"), EngineSettings(name="a")])
    with pytest.raises(ConfigError, match="engine name"):
        load_settings(SttSettings, engines=[{"name": "Bad Name"}])


def test_engine_placement(model_store: ModelStore) -> None:
    settings = SttSettings()
    gpu = Placement("cuda", 0, "float16", GpuInfo(1, "NVIDIA GeForce RTX 3090", 24 * 1024**3))
    on_gpu = build_engine(EngineSettings(name="g"), settings, gpu, model_store)
    assert (on_gpu.device, on_gpu.compute_type, on_gpu.device_label) == ("cuda", "float16", "cuda:0")
    cpu_of_gpu_service = build_engine(EngineSettings(name="c", device="cpu"), settings, gpu, model_store)
    assert (cpu_of_gpu_service.device, cpu_of_gpu_service.compute_type) == ("cpu", "int8")
    with pytest.raises(DeviceError, match="CUDA"):
        build_engine(EngineSettings(name="x", device="cuda"), settings, Placement("cpu", 0, "int8"), model_store)
    with pytest.raises(ModelError, match="fetch large-v3"):
        build_engine(EngineSettings(name="l", model="large-v3"), settings, gpu, ModelStore(Path("/nonexistent")))
