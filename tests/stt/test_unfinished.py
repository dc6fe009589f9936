"""The text side of end-of-turn: which transcripts break off mid-sentence."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.stt.unfinished import sounds_unfinished
from services.testkit.speech import real_samples

# What Whisper base wrote at real pauses of the shared paused recordings, where the speaker
# went on (bench.stt's replay, decoded at each pause).
BROKEN_OFF = [
    ("Oui, j'en ai... Je crois que c'est...", "fr"),
    ("Et en plus, c'est à sans arrêt du bruit des routes sur les rails et s'il...", "fr"),
    ("et de leur insertion, bonne vie, pour déterminer si ce rapport est...", "fr"),
    ("And it is worth mentioning in passing that as an example of fine typography,", "en"),
    ("For although the Chinese took impressions from wood blocks by a similar process,", "en"),
    ("And...", "en"),
    ("I was going to tell you about the", "en"),
    ("Could you book a table for two and", "en"),
    ("Je voudrais réserver une table pour deux et", "fr"),
    ("Allume la lumière de", "fr"),
    ("Rappelle-moi demain matin d'appeler ma", "fr"),
    ("le smartphone ajoute le toucher — ", "fr"),
    ("What is the weather in London and?", "en"),
    ("I need eggs, milk and...", "en"),
]
# Complete turns, including the words the lists leave out on purpose.
FINISHED = [
    ("Turn the lights on.", "en"),
    ("What is it for?", "en"),
    ("That's what I'm afraid of.", "en"),
    ("I'd love to.", "en"),
    ("We'll go with plan A", "en"),
    ("Oh my!", "en"),
    ("Il en reste un.", "fr"),
    ("J'en veux une", "fr"),
    ("Oh la la !", "fr"),
    ("Et ?", "fr"),
    ("And?", "en"),
    ("Which one, the big or the small?", "en"),
    ("Mets-le.", "fr"),
    ("Je suis pour.", "fr"),
    ("Qu'est-ce qu'il y a ?", "fr"),
    ("Baisse le son", "fr"),
    ("Dis-moi qui", "fr"),
    ("", "en"),
    ("Wie spät ist es?", "de"),
]


@pytest.mark.parametrize(("text", "language"), BROKEN_OFF)
def test_broken_off_text_sounds_unfinished(text: str, language: str) -> None:
    assert sounds_unfinished(text, language)


@pytest.mark.parametrize(("text", "language"), FINISHED)
def test_finished_text_does_not(text: str, language: str) -> None:
    assert not sounds_unfinished(text, language)


def test_no_shared_recordings_reference_ends_as_unfinished(speech_dir: Path) -> None:
    """Every transcript of the shared recordings is a finished turn (the paused recordings'
    references too: they are whole sentences)."""
    samples = real_samples(speech_dir)
    assert samples
    wrong = [s.transcript for s in samples if sounds_unfinished(s.transcript, s.language)]
    assert not wrong, wrong


def test_a_language_without_word_lists_is_judged_by_punctuation() -> None:
    assert sounds_unfinished("Ich möchte einen Tisch für zwei,", "de")
    assert not sounds_unfinished("Ich möchte einen Tisch für zwei und", "de")
