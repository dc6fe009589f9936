"""Splitting: where to cut text so the first audio comes early without choppy prosody.

``segments`` cuts normalised text into sentences (long ones at clauses, the first one of a
stream early); ``IncrementalSplitter`` cuts raw text arriving in deltas (an LLM's tokens) into
pieces that are then normalised and segmented one by one.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from services.tts.text.words import ABBREVIATIONS, CLAUSE_MARKS, JOINING_WORDS, words_for


@dataclass(frozen=True)
class SplitPolicy:
    """Where to cut text for streaming. Tuned on the joe voice: a clause under ~25 characters
    sounds clipped on its own, and Piper needs ~0.1 s per 25 characters on 2 cores."""

    max_chars: int = 200
    """Sentences longer than this are cut at clause marks (then at spaces)."""
    min_clause_chars: int = 25
    """No piece shorter than this is spoken alone (short sentences keep their commas)."""
    first_split_over: int = 60
    """The first sentence of a stream is cut at its first clause if longer than this, so audio
    starts early; later sentences are not (the first one's audio covers their synthesis)."""
    stream_clause_chars: int = 100
    """Incremental input: a clause mark cuts pending text only past this length (after the
    first piece), so normal sentences are spoken whole."""
    first_chunk_min_words: int = 4
    """Incremental input: the first piece of a stream is cut at the first natural boundary
    (a clause mark, or before a joining word such as "is", "of", "and", "est", "de") once it
    holds this many words, so the first audio waits for a few tokens, not a sentence."""
    first_chunk_max_words: int = 8
    """...and at the next word boundary once it holds this many, boundary or not."""


def sentence_ends(text: str, language: str) -> list[int]:
    """Indices just past each sentence end (terminator + closing quotes), not counting dots of
    abbreviations, initials or numbers; a boundary needs a following space (or end)."""
    lang = words_for(language)
    abbrevs = {a for a in ABBREVIATIONS[lang] if a.endswith(".")}
    ends = []
    for m in re.finditer(r"[.!?…]+[\"'»”’)\]*_`]*(?=\s|$)", text):
        if m.group(0).startswith("."):
            before = text[: m.start() + 1]
            word = re.search(r"(\S+)$", before)
            token = word.group(1) if word else ""
            is_abbrev = any(
                token.endswith(a) and (len(token) == len(a) or not token[-len(a) - 1].isalpha()) for a in abbrevs
            )
            final_etc = token.endswith("etc.") and re.match(r"\s+[A-ZÀ-Ý]|\s*$", text[m.end() :]) is not None
            if is_abbrev and not final_etc:
                continue
            if re.fullmatch(r"[A-ZÀ-Ý]\.", token[-2:]) and (len(token) == 2 or not token[-3].isalpha()):
                continue  # an initial: "J. K. Rowling", "M. Dupont"
        ends.append(m.end())
    return ends


def first_chunk_cut(text: str, language: str, policy: SplitPolicy) -> int | None:
    """Where to end the first piece of a stream: at a clause mark or before a joining word
    once it holds ``first_chunk_min_words`` complete words, or after ``first_chunk_max_words``
    whatever follows; None while neither has arrived. Only complete words count (the space
    after them has arrived), so "in" is not taken for the start of "instance"."""
    joining = JOINING_WORDS[words_for(language)]
    words = [m for m in re.finditer(r"\S+", text) if m.end() < len(text)]
    for count, word in enumerate(words, 1):
        if count >= policy.first_chunk_max_words:
            return word.end()
        if count < policy.first_chunk_min_words:
            continue
        if word.group(0)[-1] in CLAUSE_MARKS:
            return word.end()
        if count < len(words):
            following = re.sub(r"^\W+|['’]\w*$|\W+$", "", words[count].group(0).lower())
            if following in joining:
                return word.end()
    return None


def split_sentences(text: str, language: str = "en") -> list[str]:
    """Sentences of ``text``, each with its punctuation."""
    out, start = [], 0
    for end in sentence_ends(text, language):
        piece = text[start:end].strip()
        if piece:
            out.append(piece)
        start = end
    rest = text[start:].strip()
    if rest:
        out.append(rest)
    return out


def _clause_cuts(text: str) -> list[int]:
    return [m.end() for m in re.finditer(rf"[{CLAUSE_MARKS}](?=\s)", text)]


def _cut_at_space(text: str, limit: int) -> int:
    cut = text.rfind(" ", 0, limit)
    return cut if cut > 0 else limit


def split_long(sentence: str, policy: SplitPolicy) -> list[str]:
    """Cuts a sentence longer than ``max_chars`` at clause marks into pieces of
    ``min_clause_chars``..``max_chars`` (at spaces when a clause alone is too long)."""
    pieces: list[str] = []
    rest = sentence.strip()
    while len(rest) > policy.max_chars:
        cuts = [c for c in _clause_cuts(rest) if policy.min_clause_chars <= c <= policy.max_chars]
        cuts = [c for c in cuts if len(rest) - c >= policy.min_clause_chars]
        cut = cuts[-1] if cuts else _cut_at_space(rest, policy.max_chars)
        pieces.append(rest[:cut].strip())
        rest = rest[cut:].strip()
    if rest:
        pieces.append(rest)
    return pieces


def first_clause_cut(sentence: str, policy: SplitPolicy) -> int | None:
    """Where to cut a stream's first sentence so audio starts early, or None to keep it whole."""
    if len(sentence) <= policy.first_split_over:
        return None
    for cut in _clause_cuts(sentence):
        if cut >= policy.min_clause_chars and len(sentence) - cut >= policy.min_clause_chars:
            return cut
    return None


def segments(text: str, language: str, policy: SplitPolicy, *, first: bool = True) -> list[str]:
    """Normalised text cut for streaming: sentences, long ones at clauses, and, when this is
    the start of a stream (``first``), an early cut of the first sentence."""
    out: list[str] = []
    for sentence in split_sentences(text, language):
        if first and not out:
            cut = first_clause_cut(sentence, policy)
            if cut is not None:
                out.append(sentence[:cut].strip())
                sentence = sentence[cut:].strip()
        out.extend(split_long(sentence, policy))
    return [s for s in out if any(ch.isalnum() for ch in s)]


class IncrementalSplitter:
    """Cuts raw text arriving in deltas (an LLM's tokens) into pieces ready to normalise and
    speak: at sentence ends, at a clause once enough text waits, at a space past ``max_chars``.

    Works on the raw text so that markup and numbers are normalised whole: a boundary needs
    the following space to have arrived ("3." may become "3.14"), and nothing is cut inside
    an open code fence.
    """

    def __init__(self, language: str, policy: SplitPolicy) -> None:
        self.language = language
        self.policy = policy
        self.pending = ""
        self.emitted = 0

    def feed(self, delta: str) -> list[str]:
        """Adds text; returns the pieces now complete."""
        self.pending += delta
        out = []
        while (cut := self._next_cut()) is not None:
            piece, self.pending = self.pending[:cut], self.pending[cut:]
            if piece.strip():
                out.append(piece)
                self.emitted += 1
        return out

    def flush(self) -> str:
        """Everything still pending (flush or end of input)."""
        piece, self.pending = self.pending, ""
        if piece.strip():
            self.emitted += 1
        return piece

    def _next_cut(self) -> int | None:
        text = self.pending
        fence = _open_fence(text)
        scan = text[:fence] if fence is not None else text
        # a closed code block is one piece (dropped when normalised): no cut inside it
        scan = re.sub(r"```.*?```", lambda m: "x" * len(m.group(0)), scan, flags=re.S)
        policy = self.policy
        cuts = [end for end in sentence_ends(scan, self.language) if end < len(scan)]  # the space arrived
        newline = scan.find("\n")
        if 0 <= newline < len(text) - 1:
            cuts.append(newline + 1)  # a line break ends a heading or list item
        if cuts:
            return min(cuts)
        if self.emitted == 0:
            return first_chunk_cut(scan, self.language, policy)
        limit = policy.stream_clause_chars
        for cut in _clause_cuts(scan):
            if cut >= limit and cut < len(scan):
                return cut
        if len(scan) > policy.max_chars:
            return _cut_at_space(scan, policy.max_chars)
        return None


def _open_fence(text: str) -> int | None:
    """Start of an unclosed ``` code fence, if any."""
    positions = [m.start() for m in re.finditer("```", text)]
    return positions[-1] if len(positions) % 2 else None
