"""llama.cpp's OpenMP threads sleep at barriers (``services.runtime.openmp``): the policy must
be in the environment before the library loads, so each case runs in a fresh interpreter."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from services.models.store import ModelStore
from tests.llm.conftest import SMOL

PROBE = """
import asyncio, json, os, sys
from services.runtime.openmp import sleep_at_barriers
{before}
print(json.dumps({{"sleeps": sleep_at_barriers("llama_cpp"), "policy": os.environ.get("OMP_WAIT_POLICY")}}))
"""


def _probe(before: str = "", **env: str) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(before=before)],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def test_the_policy_is_set_before_the_library_loads() -> None:
    assert _probe() == {"sleeps": True, "policy": "PASSIVE"}


def test_the_operators_policy_wins() -> None:
    assert _probe(OMP_WAIT_POLICY="active") == {"sleeps": False, "policy": "active"}


def test_too_late_once_the_library_is_loaded() -> None:
    # libgomp read the (unset) policy when llama_cpp loaded: setting it now would change nothing
    assert _probe(before="import llama_cpp") == {"sleeps": False, "policy": None}


def test_the_embedded_model_loads_with_sleeping_threads(model_store: ModelStore) -> None:
    """The backend sets the policy itself before its first ``import llama_cpp``, and says so
    when it is too late."""
    load = f"""
from services.llm.backends.llamacpp import LlamaCppBackend
from pathlib import Path
assert "llama_cpp" not in sys.modules
backend = LlamaCppBackend(Path({str(model_store.gguf(SMOL))!r}), "smol", n_ctx=256, n_threads=1)
asyncio.run(backend.load())
assert "llama_cpp" in sys.modules
"""
    assert _probe(before=load) == {"sleeps": True, "policy": "PASSIVE"}
