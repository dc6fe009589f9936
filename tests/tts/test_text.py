"""Text for speech: normalisation in French and English, the character policy, and cutting."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from services.tts.text import IncrementalSplitter, SplitPolicy, normalize, segments, split_long, split_sentences

POLICY = SplitPolicy()


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("It costs $12.50.", "It costs twelve dollars and fifty cents."),
        ("It costs $1,234.", "It costs one thousand two hundred and thirty-four dollars."),
        ("Save 15% today", "Save fifteen percent today"),
        ("the 21st floor and the 3rd door", "the twenty-first floor and the third door"),
        ("Born in 1999, moved in 2024.", "Born in nineteen ninety-nine, moved in twenty twenty-four."),
        ("Pi is 3.14", "Pi is three point one four"),
        ("Meet at 10:30 am. Bring food.", "Meet at ten thirty a m. Bring food."),
        ("at 9:05, or 7:00", "at nine oh five, or seven o'clock"),
        ("It is -5 outside", "It is minus five outside"),
        ("It is 12 km away and 21 °C", "It is twelve kilometers away and twenty-one degrees Celsius"),
        ("On 2024-03-05 we met", "On March fifth, twenty twenty-four we met"),
        ("Dr. Smith and Mr. Jones, e.g. friends", "Doctor Smith and Mister Jones, for example friends"),
        ("apples, pears, etc. Then more.", "apples, pears, et cetera. Then more."),
        ("Call 0612345678 now", "Call zero six one two three four five six seven eight now"),
    ],
)
def test_english_reading(raw: str, spoken: str) -> None:
    assert normalize(raw, "en").text == spoken


@pytest.mark.parametrize(
    ("raw", "spoken"),
    [
        ("Ça coûte 12,50 €.", "Ça coûte douze euros cinquante."),
        (
            "Il y a 1 234 567 habitants",
            "Il y a un million deux cent trente-quatre mille cinq cent soixante-sept habitants",
        ),
        ("une baisse de 15 %", "une baisse de quinze pour cent"),
        ("le 1er mai, la 1re fois, le 2e étage", "le premier mai, la première fois, le deuxième étage"),
        ("Il fait 21,5 °C", "Il fait vingt et un virgule cinq degrés Celsius"),
        ("Rendez-vous à 14h30.", "Rendez-vous à quatorze heures trente."),
        ("Le 2024-05-01", "Le premier mai deux mille vingt-quatre"),
        ("M. Dupont et Mme Durand", "Monsieur Dupont et Madame Durand"),
        ("Le Dr. Martin, p. ex. au n° 5", "Le Docteur Martin, par exemple au numéro cinq"),
        ("J'ai 3 chats", "J'ai trois chats"),
    ],
)
def test_french_reading(raw: str, spoken: str) -> None:
    assert normalize(raw, "fr").text == spoken


def test_markdown_and_emoji_are_not_read() -> None:
    answer = (
        "# Weather\n\n"
        "Here is **the forecast** for _today_ 🌞:\n"
        "- Morning: `sunny`\n"
        "- Evening: rain ☔\n\n"
        "```python\nprint('not read')\n```\n"
        "See [the details](https://example.com/x) and ![a map](map.png).\n"
        "| day | temp |\n|---|---|\n| Mon | 20 |\n"
    )
    spoken = normalize(answer, "en").text
    assert spoken == (
        "Weather. Here is the forecast for today: Morning: sunny. Evening: rain. "
        "See the details and a map. day, temp. Mon, twenty."
    )
    for leftover in ("#", "*", "`", "_", "|", "print", "http", "🌞"):
        assert leftover not in spoken


def test_urls_are_read_by_site_and_emails_in_full() -> None:
    assert normalize("Go to https://www.example.com/a/b?q=1.", "en").text == "Go to example dot com."
    assert normalize("Voir www.service-public.fr pour plus", "fr").text == "Voir service-public point fr pour plus"
    assert normalize("Mail jane.doe@example.org today", "en").text == "Mail jane dot doe at example dot org today"
    assert normalize("Écrivez à contact@exemple.fr", "fr").text == "Écrivez à contact arobase exemple point fr"


def test_control_characters_are_removed_and_counted() -> None:
    cleaned = normalize("Hello\x00 wor\u200bld\x07, bye\x1b\u202e", "en")
    assert cleaned.text == "Hello world, bye"
    assert cleaned.removed_controls == 5
    assert cleaned.speakable


def test_other_scripts_are_removed_for_a_latin_voice_and_reported() -> None:
    mixed = normalize("Bonjour 你好 le monde, Привет !", "fr")
    assert mixed.text == "Bonjour le monde!"
    assert mixed.removed_scripts == {"CJK", "CYRILLIC"}
    only_foreign = normalize("你好世界", "en")
    assert not only_foreign.speakable
    assert "CJK" in only_foreign.why_empty()
    # a voice of a language written in that script keeps it
    assert normalize("Привет мир", "ru").text == "Привет мир"


def test_accents_and_ligatures_survive() -> None:
    assert normalize("Noël à l'île, cœur ﬁdèle", "fr").text == "Noël à l'île, cœur fidèle"


def test_emoji_only_is_not_speakable() -> None:
    cleaned = normalize("👍 🎉 ✨", "en")
    assert not cleaned.speakable
    assert "emoji" in cleaned.why_empty()


def test_sentences_do_not_end_at_abbreviations_initials_or_decimals() -> None:
    text = "Dr. Smith met J. K. Rowling. Pi is 3.14 today! Is it? Yes… fine."
    assert split_sentences(text, "en") == [
        "Dr. Smith met J. K. Rowling.",
        "Pi is 3.14 today!",
        "Is it?",
        "Yes…",
        "fine.",
    ]
    assert split_sentences("M. Dupont est là. Il part.", "fr") == ["M. Dupont est là.", "Il part."]


def test_long_sentences_are_cut_at_clauses_within_bounds() -> None:
    sentence = (
        "When the train finally arrived at the station after a long delay, the passengers, who had been "
        "waiting in the cold for more than an hour, rushed towards the doors; some of them were shouting, "
        "others were laughing, and a few simply sat down on the platform and waited for the crowd to thin out."
    )
    pieces = split_long(sentence, POLICY)
    assert len(pieces) >= 2
    assert " ".join(pieces) == sentence
    assert all(POLICY.min_clause_chars <= len(p) <= POLICY.max_chars for p in pieces)
    assert all(p[-1] in ",;:." for p in pieces)  # cut at clause marks, not mid-clause


def test_a_clause_without_marks_is_cut_at_a_space() -> None:
    sentence = " ".join(["word"] * 80)
    pieces = split_long(sentence, POLICY)
    assert all(len(p) <= POLICY.max_chars for p in pieces)
    assert " ".join(pieces) == sentence


def test_first_sentence_is_cut_early_but_short_ones_keep_their_commas() -> None:
    long_first = "Sure, here is what I found about the weather in Paris, it will be sunny all day. Then rain."
    assert segments(long_first, "en", POLICY) == [
        "Sure, here is what I found about the weather in Paris,",
        "it will be sunny all day.",
        "Then rain.",
    ]
    short = "Yes, of course, gladly. Then, later, more."
    assert segments(short, "en", POLICY) == ["Yes, of course, gladly.", "Then, later, more."]
    # only the start of a stream is cut early: later sentences stay whole
    assert segments(long_first, "en", POLICY, first=False)[0] == (
        "Sure, here is what I found about the weather in Paris, it will be sunny all day."
    )


def _feed_words(splitter: IncrementalSplitter, text: str) -> list[str]:
    out: list[str] = []
    words = text.split(" ")
    for i, word in enumerate(words):
        out += splitter.feed(word + (" " if i < len(words) - 1 else ""))
    return out


def test_incremental_cut_waits_for_the_space_after_a_dot() -> None:
    splitter = IncrementalSplitter("en", POLICY)
    assert splitter.feed("Pi is 3.") == []
    assert splitter.feed("14 exactly. Next") == ["Pi is 3.14 exactly."]
    assert splitter.flush() == " Next"


def test_incremental_cut_speaks_a_few_first_words_then_whole_sentences() -> None:
    splitter = IncrementalSplitter("en", POLICY)
    pieces = _feed_words(
        splitter,
        "Sure, here is what I found about the weather today: it will be sunny, with a high of 24. "
        "Tomorrow, as far as I can tell, rain is expected.",
    )
    pieces.append(splitter.flush())
    assert [p.strip() for p in pieces] == [
        "Sure, here is what I found",  # four words or more, cut before "about"
        "about the weather today: it will be sunny, with a high of 24.",
        "Tomorrow, as far as I can tell, rain is expected.",
    ]


@pytest.mark.parametrize(
    ("language", "answer", "first"),
    [
        ("en", "The capital of France is Paris.", "The capital of France"),
        ("en", "There are seven days in a week.", "There are seven days"),
        ("en", "Two plus three equals five.", "Two plus three equals five."),  # the sentence ends first
        ("en", "Hello! How can I help?", "Hello!"),
        ("en", "Absolutely marvellous sunny weather awaits everyone tomorrow morning everywhere.", None),
        ("fr", "La capitale de l'Espagne est Madrid.", "La capitale de l'Espagne"),
        ("fr", "Il y a sept jours dans une semaine.", "Il y a sept jours"),
        ("fr", "Bonjour, je suis ravi de vous aider.", "Bonjour, je suis ravi"),
        ("fr", "Je pense qu'il pleuvra demain.", "Je pense qu'il pleuvra demain."),  # "qu'il" after 2 words
    ],
)
def test_incremental_first_piece_ends_at_a_natural_boundary_after_a_few_words(
    language: str, answer: str, first: str | None
) -> None:
    splitter = IncrementalSplitter(language, POLICY)
    pieces = [*_feed_words(splitter, answer), splitter.flush()]
    if first is None:  # no boundary: cut after the eighth word
        assert pieces[0].split() == answer.split()[: POLICY.first_chunk_max_words]
    else:
        assert pieces[0].strip() == first


def test_incremental_first_piece_waits_for_whole_words() -> None:
    splitter = IncrementalSplitter("en", POLICY)
    assert splitter.feed("The capital of France i") == []  # "i" may be "in", "is" or "island"
    assert splitter.feed("s") == []
    assert splitter.feed(" Paris") == ["The capital of France"]


def test_incremental_cut_does_not_split_abbreviations_or_code() -> None:
    splitter = IncrementalSplitter("en", POLICY)
    assert _feed_words(splitter, "Ask Dr. Smith now. ") == ["Ask Dr. Smith now."]
    pieces = splitter.feed("Run this:\n```\nx = 1. y = 2. z = 3\n")
    assert pieces == [" Run this:\n"]  # the space left after "now." goes with the next piece
    assert splitter.feed("```\nDone. ") == ["```\nx = 1. y = 2. z = 3\n```\n", "Done."]
    assert normalize("```\nx = 1. y = 2. z = 3\n```\n", "en").text == ""


def test_incremental_cut_at_a_space_when_no_mark_comes() -> None:
    splitter = IncrementalSplitter("en", POLICY)
    pieces = _feed_words(splitter, " ".join(["blah"] * 100))
    assert pieces and all(len(p) <= POLICY.max_chars for p in pieces)


def test_other_languages_keep_digits_for_the_engine() -> None:
    # no German reading rules: digits stay for espeak-ng to read in German, not "three"
    assert normalize("Ich habe **3** Äpfel 🍎 für 2,50 €", "de").text == "Ich habe 3 Äpfel für 2,50 €"


_ANSWERS = st.text(alphabet=st.sampled_from(list("abcdef XYZ,.;:!?\n-*#`0123456789€%éà")), min_size=0, max_size=400)


@settings(max_examples=200, deadline=None)
@given(text=_ANSWERS, cuts=st.lists(st.integers(min_value=0, max_value=400), max_size=30))
def test_incremental_cuts_lose_and_reorder_nothing(text: str, cuts: list[int]) -> None:
    splitter = IncrementalSplitter("en", POLICY)
    bounds = sorted({0, len(text), *[c for c in cuts if c <= len(text)]})
    pieces: list[str] = []
    for a, b in itertools.pairwise(bounds):
        pieces += splitter.feed(text[a:b])
    pieces.append(splitter.flush())
    # whitespace-only pieces are not spoken; every other character comes out once, in order
    assert re.sub(r"\s", "", "".join(pieces)) == re.sub(r"\s", "", text)


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=300), language=st.sampled_from(["en", "fr", "de", "ru"]))
def test_normalize_accepts_any_text(text: str, language: str) -> None:
    cleaned = normalize(text, language)
    assert not any(ch in cleaned.text for ch in "\x00\x07\x1b\u200b\u202e")
    assert "\n" not in cleaned.text
    for piece in segments(cleaned.text, language, POLICY):
        assert piece.strip() and len(piece) <= POLICY.max_chars
