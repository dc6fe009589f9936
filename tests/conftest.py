"""Fixtures shared by every test: the model cache, real speech samples, spoken test audio."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from services.models.store import ModelStore
from services.runtime.config import default_model_dir

REPO = Path(__file__).resolve().parent.parent
# Real recordings beside the checkout (../shared/speech); a user's clone has none, so the
# tests that read them skip cleanly.
SPEECH_DIR = Path(os.environ.get("PAROLE_SPEECH_DIR", REPO.parent / "shared" / "speech"))


@pytest.fixture(scope="session")
def model_store() -> ModelStore:
    """The assembled model cache (``make models``); missing models fail with the fix."""
    return ModelStore(default_model_dir())


@pytest.fixture(scope="session")
def speech_dir() -> Path:
    """Folder of real speech recordings with manifest.tsv; skips when absent."""
    if not (SPEECH_DIR / "manifest.tsv").is_file():
        pytest.skip(f"no real speech samples at {SPEECH_DIR}")
    return SPEECH_DIR
