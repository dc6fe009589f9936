"""Does a pause's transcript read as a sentence left hanging?

The end-of-turn model hears only the voice. Some pauses sound final and are not: a speaker
who stops on "…and so, my fellow Americans," or "…sur les rails et si…" has a finished
intonation and an unfinished sentence. The pause's speculative transcript says so in
writing: Whisper ends such text with a comma or an ellipsis, or on a word that cannot end a
sentence (an article, a conjunction, a possessive). ``sounds_unfinished`` reads that, and the
endpointer then keeps listening instead of ending the turn (``TurnSettings.text_veto``).

The word lists are deliberately short: a word that ends some complete sentence of the language
is not in them (English "on", "that", "to", stranded prepositions: "that's what it's for";
French "un", "une", "en", "qui", "son", "pour"). A question or an exclamation is never judged by
an ordinary last word ("what is it for?", "oh la la !"): only a conjunction or an article
leaves a question hanging ("…in London and?"), and "Et ?" alone is a question. A false
"unfinished" costs a complete turn the long silence (``max_silence_ms``); a missed one costs
what it cost before: the turn ends at the pause.

Whisper often completes a sentence that was left hanging ("…milk and" heard as "…milk and
milk in."), so this catches some hanging pauses, not all; it never ends a turn sooner.
"""

from __future__ import annotations

import re

HANGING_MARKS = (",", ";", ":", "...", "…", "-", "–", "—")
"""Endings of text Whisper writes when the speech breaks off mid-sentence."""

HANGING_WORDS: dict[str, frozenset[str]] = {
    "en": frozenset(
        [
            "the",
            "a",
            "an",
            "and",
            "or",
            "nor",
            "but",
            "because",
            "although",
            "whether",
            "if",
            "than",
            "my",
            "your",
            "our",
            "their",
        ]
    ),
    "fr": frozenset(
        [
            "le",
            "la",
            "les",
            "l'",
            "des",
            "du",
            "de",
            "d'",
            "au",
            "aux",
            "à",
            "et",
            "ou",
            "mais",
            "que",
            "qu'",
            "parce",
            "puisque",
            "lorsque",
            "mon",
            "ma",
            "mes",
            "ta",
            "tes",
            "sa",
            "ses",
            "notre",
            "nos",
            "votre",
            "vos",
            "leurs",
            "dans",
            "chez",
        ]
    ),
}
"""Words that do not end a statement of the language (articles, conjunctions, possessives)."""
DANGLING_IN_QUESTIONS: dict[str, frozenset[str]] = {
    "en": frozenset(["the", "an", "and", "or", "nor", "than"]),
    "fr": frozenset(["le", "les", "des", "du", "de", "d'", "l'", "et", "ou", "que", "qu'"]),
}
"""Those that do not end a question of more than one word either."""

_TRAILING = re.compile(r"[\s\"'»«“”)]+$")
_WORD_EDGE = re.compile(r"^[^\w']+|[^\w']+$")


def sounds_unfinished(text: str, language: str | None) -> bool:
    """True when ``text`` (a transcript of speech up to a pause) breaks off mid-sentence.
    ``language``: ISO 639-1 code of the transcript; other languages are judged by their
    punctuation only."""
    text = _TRAILING.sub("", text)
    if not text:
        return False
    if text.endswith(HANGING_MARKS):
        return True
    if text.endswith("!"):
        return False
    words = text.split()
    token = words[-1]
    last = _WORD_EDGE.sub("", token.lower().replace("’", "'"))
    if not last or "-" in last:
        return False  # "mets-le", "dis-moi": a hyphenated pronoun ends a command
    if "'" in last and not last.endswith("'"):
        last = last.split("'")[-1]  # "jusqu'au" -> "au"; "c'est" -> "est"
    lang = (language or "").split("-")[0].lower()
    if lang == "en" and last == "a" and token.lstrip("\"'“(").startswith("A") and " " in text:
        return False  # the letter ("plan A"), not the article
    if text.endswith("?"):
        # "And?" asks something; "What is the weather in London and?" does not.
        return len(words) > 1 and last in DANGLING_IN_QUESTIONS.get(lang, frozenset())
    return last in HANGING_WORDS.get(lang, frozenset())
