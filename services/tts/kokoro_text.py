"""What Kokoro reads: French (or another espeak-ng language) text as phonemes in its vocabulary.

The text is cut into clauses at the punctuation that shapes prosody (``split_clauses``);
espeak-ng gives each clause's IPA, its tied phonemes become Kokoro's one-symbol ones and the
punctuation is put back between them (``Phonemizer``); the token ids are cut into runs the
network takes (``token_runs``). No model here: ``services.tts.kokoro`` runs the network.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Sequence

from services.tts.engines import EngineError

MAX_TOKENS = 510
"""The style table has one row per token count (510), and the network's context is 512 with
the two pad tokens: a longer phoneme string is spoken in several runs."""

# Marks that shape prosody and that the vocabulary has: they are cut from the text before
# espeak-ng sees it (it would drop them from its IPA) and put back between the phonemes.
_PUNCT = re.compile(r"\s*([,;:.!?…]+|\s[-–—]\s|[—–]|\(|\))\s*")
_DROP = str.maketrans({c: " " for c in '"«»“”„‟[]{}<>*_#|~^`'})
_LANG_FLAG = re.compile(r"\([a-z0-9^\-]{2,16}\)")
# espeak-ng writes some two-letter phonemes with a tie; Kokoro's vocabulary has one symbol
# for each (the same table as hexgrad's misaki, which produced its training phonemes).
_TIES = {
    "a^ɪ": "I",
    "a^ʊ": "W",
    "d^z": "ʣ",
    "d^ʒ": "ʤ",
    "e^ɪ": "A",
    "o^ʊ": "O",
    "ə^ʊ": "Q",
    "s^s": "S",
    "t^s": "ʦ",
    "t^ʃ": "ʧ",
    "ɔ^ɪ": "Y",
}


def _mark(raw: str) -> str:
    """The vocabulary symbol for a run of punctuation: the pause it asks for."""
    raw = raw.strip()
    if raw in ("(", ")") or raw in ("-", "–", "—"):
        return ","  # an aside or a dash: a short pause, like a comma
    for mark in ("?", "!", "…", ".", ";", ":", ","):
        if mark in raw:
            return mark
    return ","


def split_clauses(text: str) -> list[tuple[str, str]]:
    """``text`` as (words, punctuation after them) pairs; quotes and brackets are dropped."""
    text = text.replace("’", "'").replace("...", "…").translate(_DROP)
    out: list[tuple[str, str]] = []
    pos = 0
    for m in _PUNCT.finditer(text):
        words = " ".join(text[pos : m.start()].split())
        mark = _mark(m.group(1))
        if words:
            out.append((words, mark))
        elif out and mark in "?!.…" and out[-1][1] == ",":
            out[-1] = (out[-1][0], mark)  # "word, !" ends the sentence, not a clause
        pos = m.end()
    tail = " ".join(text[pos:].split())
    if tail:
        out.append((tail, ""))
    return out


class Phonemizer:
    """French (or another espeak-ng language) text to the IPA Kokoro reads, punctuation kept.

    espeak-ng runs as a process per call, like the espeak-ng voices (engines.py says why). All
    clauses of a piece go in one call, one per line: espeak-ng answers one IPA line per input
    line, and the punctuation it would drop is put back between them.
    """

    def __init__(
        self, vocab: dict[str, int], voice: str = "fr-fr", executable: str | None = None, timeout: float = 10.0
    ) -> None:
        self._vocab = vocab
        self._voice = voice
        self._exe = executable or shutil.which("espeak-ng")
        self._timeout = timeout

    @property
    def available(self) -> bool:
        return self._exe is not None

    def __call__(self, text: str) -> str:
        clauses = split_clauses(text)
        if not clauses:
            return ""
        lines = self._ipa([words for words, _ in clauses])
        if len(lines) != len(clauses):
            # a clause espeak-ng cut in two (it should not: its own marks were taken out)
            lines = [" ".join(self._ipa([words])) for words, _ in clauses]
        parts = []
        for line, (_, mark) in zip(lines, clauses, strict=True):
            phonemes = self._clean(line)
            if phonemes:
                parts.append(phonemes + mark)
        return " ".join(parts)

    def _ipa(self, lines: Sequence[str]) -> list[str]:
        if self._exe is None:
            raise EngineError("espeak-ng is not installed: Kokoro needs it for phonemes (apt-get install espeak-ng)")
        cmd = [self._exe, "-q", "-v", self._voice, "--ipa", "--tie=^", "--stdin"]
        try:
            done = subprocess.run(
                cmd, input="\n".join(lines).encode(), capture_output=True, timeout=self._timeout, check=False
            )
        except (subprocess.TimeoutExpired, OSError) as exc:
            raise EngineError(f"espeak-ng (phonemes) failed: {exc}") from exc
        if done.returncode != 0:
            raise EngineError(f"espeak-ng (phonemes) exited {done.returncode}: {done.stderr.decode()[-300:]}")
        return [line.strip() for line in done.stdout.decode().strip("\n").split("\n")]

    def _clean(self, ipa: str) -> str:
        # "(en)" / "(fr)": espeak-ng switching language for a foreign word; the phonemes stay
        ipa = _LANG_FLAG.sub("", ipa)
        for tied, symbol in _TIES.items():
            ipa = ipa.replace(tied, symbol)
        # what is left out of the vocabulary: the tie, "-" after unstressed words, stray marks
        kept = "".join(c for c in ipa if c in self._vocab)
        return " ".join(kept.split())


def token_runs(ids: list[int], vocab: dict[str, int]) -> list[list[int]]:
    """Token ids cut into runs the network takes (≤ MAX_TOKENS - 1 each), at the last
    punctuation, else the last space, before the limit."""
    limit = MAX_TOKENS - 1
    if len(ids) <= limit:
        return [ids]
    marks = {vocab[c] for c in ",;:.!?…" if c in vocab}
    space = vocab.get(" ")
    runs: list[list[int]] = []
    while len(ids) > limit:
        window = ids[:limit]
        cut = next((i + 1 for i in range(limit - 1, 0, -1) if window[i] in marks), None)
        if cut is None:
            cut = next((i for i in range(limit - 1, 0, -1) if window[i] == space), limit)
        runs.append(ids[:cut])
        ids = ids[cut:]
        while ids and ids[0] == space:
            ids = ids[1:]
    if ids:
        runs.append(ids)
    return runs
