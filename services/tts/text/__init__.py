"""Text for speech: what to read, how to read it, and where to cut it for streaming.

Pure functions, no engine, in three modules: ``normalization`` (markdown, emoji, links,
numbers, abbreviations become plain words a voice reads correctly in French or English),
``splitting`` (sentences and clauses, so the first audio comes early without choppy prosody)
and ``words`` (the per-language word tables both read). The names callers use are importable
from here.
"""

from __future__ import annotations

from services.tts.text.normalization import (
    Cleaned,
    expand_abbreviations,
    keep_script,
    normalize,
    read_numbers,
    read_symbols,
    read_urls,
    say_number,
    strip_controls,
    strip_markdown,
)
from services.tts.text.splitting import (
    IncrementalSplitter,
    SplitPolicy,
    first_chunk_cut,
    first_clause_cut,
    segments,
    split_long,
    split_sentences,
)
from services.tts.text.words import CLAUSE_MARKS, LATIN_LANGUAGES, READ_LANGUAGES, TERMINATORS, words_for

__all__ = [
    "CLAUSE_MARKS",
    "LATIN_LANGUAGES",
    "READ_LANGUAGES",
    "TERMINATORS",
    "Cleaned",
    "IncrementalSplitter",
    "SplitPolicy",
    "expand_abbreviations",
    "first_chunk_cut",
    "first_clause_cut",
    "keep_script",
    "normalize",
    "read_numbers",
    "read_symbols",
    "read_urls",
    "say_number",
    "segments",
    "split_long",
    "split_sentences",
    "strip_controls",
    "strip_markdown",
    "words_for",
]
