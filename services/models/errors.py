"""``ModelError`` and the model-name checks that raise it.

Separate from ``store.py`` because every part of the model store raises it (resolving paths in
``store.py``, checksums in ``checksums.py``, registry packages in ``wheels.py``), and they
must not import each other in a circle. Services import it from ``services.models.store``.
"""

from __future__ import annotations

import re
from pathlib import Path

SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,127}$")
MODELS_CMD = "python -m services.models"


class ModelError(Exception):
    """A model is missing, corrupt or unknown; the message says how to get it."""

    def __init__(self, model: str, path: Path | None, problem: str, fix: str) -> None:
        where = f" at {path}" if path is not None else ""
        super().__init__(f"model '{model}'{where}: {problem}. {fix}")
        self.model = model
        self.path = path


def safe_name(name: str, what: str) -> str:
    """Refuses names that could escape the model directory (``..``, ``/``, absolute paths)."""
    if not SAFE_NAME.match(name) or ".." in name:
        raise ModelError(name, None, f"invalid {what} name", "Use letters, digits, '.', '_' and '-' only")
    return name
