"""Bundled spoken questions for the demo conversation (``make demo``) and their manifest."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

DEMO_DIR = Path(__file__).resolve().parent
MANIFEST = DEMO_DIR / "questions.tsv"


@dataclass(frozen=True)
class Question:
    """A bundled question: its WAV file, language, what it says and how it was made."""

    path: Path
    language: str
    text: str
    made_with: str


def questions(manifest: Path = MANIFEST) -> list[Question]:
    """The questions listed in the manifest, in order."""
    with manifest.open(encoding="utf-8") as f:
        rows = list(csv.DictReader(f, delimiter="\t"))
    return [Question(manifest.parent / r["file"], r["language"], r["text"], r["made_with"]) for r in rows]
