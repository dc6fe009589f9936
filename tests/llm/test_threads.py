"""llama.cpp's OpenMP threads sleep at barriers (``services.runtime.openmp``). libgomp reads its
policy once, when it loads, so each case runs in a fresh interpreter, and libgomp itself says
what it read (``OMP_DISPLAY_ENV=VERBOSE``: its spin count before a thread sleeps, 0 when
threads sleep at once, 300000 by default)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from typing import Any

from services.models.store import ModelStore
from tests.llm.conftest import SMOL

PROBE = """
import asyncio, json, os, sys
from services.runtime.openmp import load_with_sleeping_threads
{before}
sleeps = load_with_sleeping_threads("llama_cpp")
print(json.dumps({{"sleeps": sleeps, "environment": os.environ.get("OMP_WAIT_POLICY")}}))
"""


def _probe(before: str = "", **env: str) -> dict[str, Any]:
    """What the helper said, the environment after it, and libgomp's own spin count."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("OMP_", "GOMP_"))}
    done = subprocess.run(
        [sys.executable, "-c", PROBE.format(before=before)],
        env={**clean, "OMP_DISPLAY_ENV": "VERBOSE", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    spins = re.findall(r"GOMP_SPINCOUNT = '(\d+)'", done.stderr)
    assert len(spins) == 1, done.stderr  # one libgomp loaded, once
    result["spin_count"] = int(spins[0])
    return result


def test_the_library_loads_with_sleeping_threads_and_the_environment_is_left_as_it_was() -> None:
    # left as it was: processes started later (the fleet's STT, say) keep their own default
    assert _probe() == {"sleeps": True, "environment": None, "spin_count": 0}


def test_the_operators_policy_wins() -> None:
    probe = _probe(OMP_WAIT_POLICY="active")
    assert probe["sleeps"] is False and probe["environment"] == "active"
    assert probe["spin_count"] > 300_000


def test_too_late_once_the_library_is_loaded() -> None:
    assert _probe(before="import llama_cpp") == {"sleeps": False, "environment": None, "spin_count": 300_000}


def test_the_embedded_model_loads_with_sleeping_threads(model_store: ModelStore) -> None:
    """The backend loads the library itself this way, and a second backend in the same
    process knows its threads already sleep."""
    load = f"""
from services.llm.backends.llamacpp import LlamaCppBackend
from pathlib import Path
assert "llama_cpp" not in sys.modules
for _ in range(2):
    backend = LlamaCppBackend(Path({str(model_store.gguf(SMOL))!r}), "smol", n_ctx=256, n_threads=1)
    asyncio.run(backend.load())
    asyncio.run(backend.close())
"""
    assert _probe(before=load) == {"sleeps": True, "environment": None, "spin_count": 0}
