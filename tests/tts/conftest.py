"""TTS fixtures: a model directory with the joe voice and a French Piper voice made from it
(and one with the Kokoro model too), one real server for the session, and Whisper base to
listen to what it says."""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import pytest

from parole.tts.v1 import tts_pb2_grpc
from services.models.store import ModelStore
from services.runtime.config import ServerSettings
from services.runtime.server import RunningServer, start_app
from services.tts.app import TtsApp
from services.tts.config import TtsSettings

FRENCH_TEST_VOICE = "fr_FR-test-medium"


def _link_or_copy(src: Path, dst: Path) -> None:
    try:
        os.link(src, dst)  # same file system: no 63 MB copy
    except OSError:
        shutil.copyfile(src, dst)


def add_piper_voice(store: ModelStore, model_dir: Path, name: str, language: dict[str, str] | None = None) -> None:
    """Puts the joe model under another voice name; ``language`` rewrites the JSON's language
    fields (and its espeak phonemizer voice), as a real voice of that language would have."""
    onnx, config = store.piper_voice("en_US-joe-medium")
    folder = model_dir / "piper"
    folder.mkdir(parents=True, exist_ok=True)
    _link_or_copy(onnx, folder / f"{name}.onnx")
    data: dict[str, Any] = json.loads(config.read_text())
    if language is not None:
        data["language"] = {**data["language"], **language}
        data["espeak"] = {"voice": language["family"]}
    (folder / f"{name}.onnx.json").write_text(json.dumps(data))


def add_kokoro(store: ModelStore, model_dir: Path) -> None:
    """Links the assembled Kokoro files into another model directory."""
    folder = model_dir / "kokoro"
    folder.mkdir(parents=True, exist_ok=True)
    for path in store.kokoro():
        _link_or_copy(path, folder / path.name)


@pytest.fixture(scope="session")
def tts_model_dir(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """joe, plus a French Piper voice (joe's network with French phonemes): exercises voice
    discovery and the French chain the way fr_FR-siwis-medium would."""
    root = tmp_path_factory.mktemp("tts-models")
    add_piper_voice(model_store, root, "en_US-joe-medium")
    add_piper_voice(
        model_store,
        root,
        FRENCH_TEST_VOICE,
        {"code": "fr_FR", "family": "fr", "region": "FR", "name_native": "Français", "name_english": "French"},
    )
    return root


@pytest.fixture(scope="session")
def full_model_dir(model_store: ModelStore, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """joe and the Kokoro model: every engine's voices (the French Piper voice is left out so
    that Kokoro leads the French chain, as on a machine without siwis)."""
    root = tmp_path_factory.mktemp("tts-models-kokoro")
    add_piper_voice(model_store, root, "en_US-joe-medium")
    add_kokoro(model_store, root)
    return root


def tts_settings(model_dir: Path, **overrides: Any) -> TtsSettings:
    return TtsSettings(
        server=ServerSettings(host="127.0.0.1", port=0, metrics_port=None),
        model_dir=model_dir,
        **overrides,
    )


@pytest.fixture(scope="session")
def tts_app(tts_model_dir: Path) -> TtsApp:
    # one thread for onnxruntime: two engineers' test suites share these 2 cores
    settings = tts_settings(tts_model_dir)
    settings.device.device = "cpu"
    settings.device.threads = 1
    return TtsApp(settings)


@pytest.fixture(scope="session")
async def tts_server(tts_app: TtsApp) -> AsyncIterator[RunningServer]:
    running = await start_app(tts_app, tts_app.settings.server)
    yield running
    await running.stop(0)
    await tts_app.close()


@pytest.fixture(scope="session")
async def tts_stub(tts_server: RunningServer) -> AsyncIterator[tts_pb2_grpc.TtsServiceAsyncStub]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{tts_server.port}") as channel:
        stub: tts_pb2_grpc.TtsServiceAsyncStub = tts_pb2_grpc.TtsServiceStub(channel)  # type: ignore[assignment]
        yield stub


@pytest.fixture(scope="session")
def whisper(model_store: ModelStore) -> Any:
    from faster_whisper import WhisperModel

    return WhisperModel(str(model_store.whisper("whisper-base")), device="cpu", compute_type="int8", cpu_threads=2)
