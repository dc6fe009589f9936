"""Text for speech: what to read, how to read it, and where to cut it for streaming.

Pure functions, no engine: a language model's answer (markdown, emoji, links, numbers,
abbreviations) becomes plain words a voice reads correctly in French or English, and is cut
into sentences and clauses so the first audio comes early without choppy prosody.

Policy for characters a voice cannot read (one rule everywhere): control and invisible
format characters are removed; emoji and markdown are removed; for languages written in
Latin script, letters of other scripts (CJK, Cyrillic, Arabic...) are removed and reported.
When nothing speakable is left the caller refuses the text (INVALID_ARGUMENT) naming what
was removed, rather than sending silence.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import emoji
from num2words import num2words

# Languages whose voices read Latin script only: other scripts are dropped for them.
LATIN_LANGUAGES = frozenset(
    [
        "fr",
        "en",
        "de",
        "es",
        "it",
        "pt",
        "nl",
        "ca",
        "pl",
        "cs",
        "sk",
        "ro",
        "sv",
        "da",
        "no",
        "nb",
        "nn",
        "fi",
        "et",
        "lv",
        "lt",
        "hu",
        "sl",
        "hr",
        "bs",
        "sq",
        "tr",
        "id",
        "ms",
        "vi",
        "eu",
        "gl",
        "cy",
        "ga",
        "is",
        "mt",
        "af",
        "sw",
    ]
)
READ_LANGUAGES = frozenset({"fr", "en"})
"""Languages whose numbers, abbreviations and symbols are read by the rules below."""
TERMINATORS = ".!?…"
CLAUSE_MARKS = ",;:—–"

# ----------------------------------------------------------------------------- words per language
_WORDS: dict[str, dict[str, str]] = {
    "en": {
        "percent": "percent",
        "point": "point",
        "dot": "dot",
        "at": "at",
        "and": "and",
        "plus": "plus",
        "equals": "equals",
        "degrees": "degrees",
        "minus": "minus",
        "slash": "slash",
        "oclock": "o'clock",
        "hours": "hours",
    },
    "fr": {
        "percent": "pour cent",
        "point": "virgule",
        "dot": "point",
        "at": "arobase",
        "and": "et",
        "plus": "plus",
        "equals": "égale",
        "degrees": "degrés",
        "minus": "moins",
        "slash": "barre oblique",
        "oclock": "heures",
        "hours": "heures",
    },
}

_MONTHS = {
    "en": [
        "January",
        "February",
        "March",
        "April",
        "May",
        "June",
        "July",
        "August",
        "September",
        "October",
        "November",
        "December",
    ],
    "fr": [
        "janvier",
        "février",
        "mars",
        "avril",
        "mai",
        "juin",
        "juillet",
        "août",
        "septembre",
        "octobre",
        "novembre",
        "décembre",
    ],
}

# (singular, plural, cents singular, cents plural)
_CURRENCIES: dict[str, dict[str, tuple[str, str, str, str]]] = {
    "en": {
        "€": ("euro", "euros", "cent", "cents"),
        "$": ("dollar", "dollars", "cent", "cents"),
        "£": ("pound", "pounds", "penny", "pence"),
    },
    "fr": {
        "€": ("euro", "euros", "centime", "centimes"),
        "$": ("dollar", "dollars", "cent", "cents"),
        "£": ("livre", "livres", "penny", "pence"),
    },
}

# Units read after a number: (singular, plural).
_UNITS: dict[str, dict[str, tuple[str, str]]] = {
    "en": {
        "km/h": ("kilometer per hour", "kilometers per hour"),
        "km": ("kilometer", "kilometers"),
        "cm": ("centimeter", "centimeters"),
        "mm": ("millimeter", "millimeters"),
        "m": ("meter", "meters"),
        "kg": ("kilogram", "kilograms"),
        "mg": ("milligram", "milligrams"),
        "g": ("gram", "grams"),
        "ml": ("milliliter", "milliliters"),
        "°C": ("degree Celsius", "degrees Celsius"),
        "°F": ("degree Fahrenheit", "degrees Fahrenheit"),
        "GB": ("gigabyte", "gigabytes"),
        "MB": ("megabyte", "megabytes"),
        "min": ("minute", "minutes"),
        "ms": ("millisecond", "milliseconds"),
    },
    "fr": {
        "km/h": ("kilomètre par heure", "kilomètres par heure"),
        "km": ("kilomètre", "kilomètres"),
        "cm": ("centimètre", "centimètres"),
        "mm": ("millimètre", "millimètres"),
        "m": ("mètre", "mètres"),
        "kg": ("kilogramme", "kilogrammes"),
        "mg": ("milligramme", "milligrammes"),
        "g": ("gramme", "grammes"),
        "ml": ("millilitre", "millilitres"),
        "°C": ("degré Celsius", "degrés Celsius"),
        "°F": ("degré Fahrenheit", "degrés Fahrenheit"),
        "Go": ("gigaoctet", "gigaoctets"),
        "Mo": ("mégaoctet", "mégaoctets"),
        "min": ("minute", "minutes"),
        "ms": ("milliseconde", "millisecondes"),
    },
}

# Abbreviations with their trailing dot: the dot is not a sentence end.
_ABBREVIATIONS: dict[str, dict[str, str]] = {
    "en": {
        "Dr.": "Doctor",
        "Mr.": "Mister",
        "Mrs.": "Missus",
        "Ms.": "Miz",
        "Prof.": "Professor",
        "St.": "Saint",
        "Jr.": "Junior",
        "Sr.": "Senior",
        "e.g.": "for example",
        "i.e.": "that is",
        "vs.": "versus",
        "approx.": "approximately",
        "etc.": "et cetera",
        "No.": "number",
        "Fig.": "figure",
    },
    "fr": {
        "M.": "Monsieur",
        "MM.": "Messieurs",
        "Mme": "Madame",
        "Mmes": "Mesdames",
        "Mlle": "Mademoiselle",
        "Dr.": "Docteur",
        "Dr": "Docteur",
        "Pr.": "Professeur",
        "Pr": "Professeur",
        "etc.": "et cetera",
        "p. ex.": "par exemple",
        "c.-à-d.": "c'est-à-dire",
        "env.": "environ",
        "cf.": "voir",
        "n°": "numéro",
        "N°": "numéro",
        "av.": "avenue",
        "bd": "boulevard",
        "tél.": "téléphone",
    },
}
# Abbreviations that often end a sentence: keep the full stop when one is due.
_SENTENCE_FINAL_ABBREVIATIONS = frozenset({"etc."})


def words_for(language: str) -> str:
    """The language whose reading rules apply ("fr" or "en"; others read like English)."""
    return language if language in _WORDS else "en"


# ----------------------------------------------------------------------------- cleaning
@dataclass
class Cleaned:
    """Text after normalisation, and what was removed because no voice should read it."""

    text: str
    removed_scripts: set[str] = field(default_factory=set)
    removed_controls: int = 0

    @property
    def speakable(self) -> bool:
        return any(ch.isalnum() for ch in self.text)

    def why_empty(self) -> str:
        """Why nothing is left to speak, for the INVALID_ARGUMENT message."""
        parts = []
        if self.removed_scripts:
            parts.append(f"letters in scripts this voice cannot read ({', '.join(sorted(self.removed_scripts))})")
        if self.removed_controls:
            parts.append(f"{self.removed_controls} control character(s)")
        if not parts:
            return "the text has no words to speak (only punctuation, symbols, emoji or markup)"
        return "nothing speakable is left after removing " + " and ".join(parts)


_WS = re.compile(r"[^\S\n]+")


def strip_controls(text: str, report: Cleaned) -> str:
    """NFKC, then drops control/format/private/unassigned characters (keeps newlines and tabs
    as spaces): they are invisible, can break a synthesizer, and carry nothing to say."""
    text = unicodedata.normalize("NFKC", text)
    out = []
    for ch in text:
        if ch == "\n":
            out.append(ch)
            continue
        cat = unicodedata.category(ch)
        if ch in "\t\r\f\v":
            out.append(" ")
        elif cat in ("Cc", "Cs", "Co", "Cn"):
            report.removed_controls += 1
            out.append(" ")
        elif cat == "Cf" and ch != "\u200d":
            report.removed_controls += 1  # zero-width and bidi marks sit inside words: no space
        else:
            out.append(ch)
    return "".join(out)


def _script(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return name.split(" ")[0] if name else "UNKNOWN"


def keep_script(text: str, language: str, report: Cleaned) -> str:
    """For Latin-script languages, replaces letters of other scripts by spaces (and records
    which scripts): a French voice reading Chinese says nothing useful, or garbage."""
    if language not in LATIN_LANGUAGES:
        return text
    out = []
    kept_prev = True
    for ch in text:
        cat = unicodedata.category(ch)
        if cat.startswith("L") and not ch.isascii():
            script = _script(ch)
            if script != "LATIN":
                report.removed_scripts.add(script)
                out.append(" ")
                kept_prev = False
                continue
        if cat.startswith("M") and not kept_prev:
            continue  # a combining mark on a removed letter
        kept_prev = True
        out.append(ch)
    return "".join(out)


# ----------------------------------------------------------------------------- markdown
_FENCE = re.compile(r"```.*?(?:```|\Z)", re.S)
_IMAGE = re.compile(r"!\[([^\]]*)\]\([^)]*\)")
_LINK = re.compile(r"\[([^\]]+)\]\([^)]*\)")
_HTML_TAG = re.compile(r"</?[A-Za-z][^<>\n]*>")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+")
_BULLET = re.compile(r"^\s*(?:[-*+•]|\d{1,3}[.)])\s+")
_QUOTE = re.compile(r"^\s*>+\s?")
_RULE = re.compile(r"^\s*(?:[-*_]\s*){3,}$")
_TABLE_SEP = re.compile(r"^\s*\|?\s*:?-{2,}:?\s*(\|\s*:?-{2,}:?\s*)*\|?\s*$")


def strip_markdown(text: str) -> str:
    """Removes markdown an LLM emits, keeping the words. Code blocks are dropped (read aloud
    they are noise); headings, list items and table rows become sentences of their own."""
    text = _FENCE.sub("\n", text)
    text = _IMAGE.sub(r"\1", text)
    text = _LINK.sub(r"\1", text)
    text = _HTML_TAG.sub(" ", text)
    lines_out: list[str] = []
    lines = text.split("\n")
    for i, line in enumerate(lines):
        if _RULE.match(line) or _TABLE_SEP.match(line):
            lines_out.append("")
            continue
        structural = False
        for pattern in (_HEADING, _BULLET, _QUOTE):
            if pattern.match(line):
                line = pattern.sub("", line, count=1)
                structural = True
        if "|" in line and line.strip().startswith("|"):
            cells = [c.strip() for c in line.strip().strip("|").split("|")]
            line = ", ".join(c for c in cells if c)
            structural = True
        line = line.replace("`", "").replace("~~", "")
        line = re.sub(r"\*+", "", line)
        # snake_case and __bold__ both read best with the underscores gone
        line = line.replace("_", " ").strip()
        # a paragraph ends before a blank line; the text's own end is left as it is (a streamed
        # piece may stop mid-sentence, and a full stop there would drop the intonation)
        next_blank = i + 1 < len(lines) and not lines[i + 1].strip()
        if line and (structural or next_blank) and line[-1] not in TERMINATORS + CLAUSE_MARKS:
            line += "."  # a heading or list item is spoken as its own sentence
        lines_out.append(line)
    return " ".join(x for x in lines_out if x)


# ----------------------------------------------------------------------------- URLs, emails
_URL = re.compile(r"\b(?:https?://|www\.)[^\s<>()\"']+", re.I)
_EMAIL = re.compile(r"\b([\w.+-]+)@([\w-]+(?:\.[\w-]+)+)\b")


def _spell_host(host: str, w: dict[str, str]) -> str:
    return f" {w['dot']} ".join(p for p in host.split(".") if p)


def read_urls(text: str, language: str) -> str:
    """A link is read by its site name ("example dot com"): the path and query are noise
    when heard. Emails are read out in full."""
    w = _WORDS[words_for(language)]

    def url(m: re.Match[str]) -> str:
        raw = m.group(0).rstrip(".,;:!?")
        tail = m.group(0)[len(raw) :]
        host = re.sub(r"^(?:https?://)?(?:www\.)?", "", raw, flags=re.I).split("/")[0].split("?")[0]
        host = host.split("@")[-1].split(":")[0]
        return _spell_host(host, w) + tail

    def email(m: re.Match[str]) -> str:
        user = _spell_host(m.group(1), w)
        return f"{user} {w['at']} {_spell_host(m.group(2), w)}"

    return _EMAIL.sub(email, _URL.sub(url, text))


# ----------------------------------------------------------------------------- numbers
def _n2w(value: int | Decimal, language: str, to: str = "cardinal") -> str:
    # num2words writes "one thousand, two hundred": that comma is not a clause to cut at
    return str(num2words(value, lang=words_for(language), to=to)).replace(",", "")


def _number_pattern(language: str) -> str:
    if words_for(language) == "fr":
        # 1 234 567,89 (spaces, no-break spaces or thin spaces between thousands)
        return r"\d{1,3}(?:[ \u00a0\u202f]\d{3})+(?:,\d+)?|\d+(?:,\d+)?"
    return r"\d{1,3}(?:,\d{3})+(?:\.\d+)?|\d+(?:\.\d+)?"


def _parse(raw: str, language: str) -> Decimal | None:
    s = re.sub(r"[ \u00a0\u202f]", "", raw)
    s = s.replace(",", ".") if words_for(language) == "fr" else s.replace(",", "")
    try:
        return Decimal(s)
    except InvalidOperation:
        return None


def say_number(raw: str, language: str, *, year_ok: bool = True) -> str:
    """Reads one number as written in ``language`` (thousands separators, decimals, years)."""
    lang = words_for(language)
    w = _WORDS[lang]
    digits_only = raw.isdigit()
    if digits_only and len(raw) > 9:
        return " ".join(_n2w(int(d), lang) for d in raw)  # an identifier or phone number
    if digits_only and len(raw) > 1 and raw.startswith("0"):
        return " ".join(_n2w(int(d), lang) for d in raw)  # "007", a code
    value = _parse(raw, lang)
    if value is None:
        return raw
    if value == value.to_integral_value():
        n = int(value)
        if lang == "en" and year_ok and digits_only and len(raw) == 4 and 1100 <= n <= 2099 and n % 1000 >= 10:
            return _n2w(n, lang, "year")
        return _n2w(n, lang)
    int_part, _, frac = (raw.replace(",", ".") if lang == "fr" else raw.replace(",", "")).partition(".")
    int_words = _n2w(int(re.sub(r"\D", "", int_part) or "0"), lang)
    if lang == "fr" and not frac.startswith("0") and len(frac) <= 3:
        frac_words = _n2w(int(frac), lang)  # 3,14: "trois virgule quatorze"
    else:
        frac_words = " ".join(_n2w(int(d), lang) for d in frac)  # 3.14: "three point one four"
    return f"{int_words} {w['point']} {frac_words}"


def _currency(amount: str, symbol: str, language: str) -> str:
    lang = words_for(language)
    plain = re.fullmatch(r"\d+[.,]\d{1,2}", amount)
    value = Decimal(amount.replace(",", ".")) if plain else _parse(amount, lang)
    if value is None:
        return f"{amount} {symbol}"
    units, cents = int(value), int((value - int(value)) * 100 + Decimal("0.5"))
    one, many, cent1, cents_n = _CURRENCIES[lang][symbol]
    out = f"{_n2w(units, lang)} {one if units == 1 else many}"
    if cents:
        joiner = " and " if lang == "en" else " "
        cent_word = (cent1 if cents == 1 else cents_n) if lang == "en" else ""
        out += f"{joiner}{_n2w(cents, lang)}{(' ' + cent_word) if cent_word else ''}"
    return out


def _ordinal_en(m: re.Match[str]) -> str:
    return _n2w(int(m.group(1)), "en", "ordinal")


def _ordinal_fr(m: re.Match[str]) -> str:
    n, suffix = int(m.group(1)), m.group(2).lower()
    if n == 1:
        return "première" if suffix in ("re", "ère") else "premier"
    if suffix in ("nd", "nde"):
        return "seconde" if suffix == "nde" else "second"
    return _n2w(n, "fr", "ordinal")


def read_numbers(text: str, language: str) -> str:
    """Times, money, percentages, ordinals, units and plain numbers become words."""
    lang = words_for(language)
    w = _WORDS[lang]
    num = _number_pattern(lang)
    # A minus sign only where it cannot be a hyphen (start of text or after a space).
    neg = r"(?:(?<=\s)|^)-(?=\d)"
    text = re.sub(neg, f"{w['minus']} ", text)

    if lang == "fr":

        def fr_time(m: re.Match[str]) -> str:
            h, mins = int(m.group(1)), m.group(2)
            out = f"{_n2w(h, lang)} {'heure' if h == 1 else 'heures'}"
            return out + (f" {_n2w(int(mins), lang)}" if mins and int(mins) else "")

        text = re.sub(r"\b([01]?\d|2[0-3])\s?h\s?([0-5]\d)?\b", fr_time, text)
    else:

        def en_time(m: re.Match[str]) -> str:
            h, mins = int(m.group(1)), int(m.group(2))
            if mins == 0:
                return f"{_n2w(h, lang)} {w['oclock']}"
            mins_words = f"oh {_n2w(mins, lang)}" if mins < 10 else _n2w(mins, lang)
            return f"{_n2w(h, lang)} {mins_words}"

        def am_pm(m: re.Match[str]) -> str:
            # "a.m." is read "a m"; its last dot still ends a sentence when one ends there
            rest = m.string[m.end() :]
            ends = m.group(0).endswith(".") and re.match(r"\s+[A-Z]|\s*$", rest) is not None
            return f"{m.group(1)} m" + ("." if ends else "")

        text = re.sub(r"(?<=\d)\s?([ap])\.?m\b\.?", lambda m: " " + am_pm(m), text, flags=re.I)
        text = re.sub(r"\b([01]?\d|2[0-3]):([0-5]\d)\b", en_time, text)

    def iso_date(m: re.Match[str]) -> str:
        year, month, day = int(m.group(1)), int(m.group(2)), int(m.group(3))
        if not (1 <= month <= 12 and 1 <= day <= 31):
            return m.group(0)
        if lang == "fr":
            d = "premier" if day == 1 else _n2w(day, lang)
            return f"{d} {_MONTHS['fr'][month - 1]} {_n2w(year, lang)}"
        return f"{_MONTHS['en'][month - 1]} {_n2w(day, lang, 'ordinal')}, {_n2w(year, lang, 'year')}"

    text = re.sub(r"\b(\d{4})-(\d{2})-(\d{2})\b", iso_date, text)

    symbols = "€$£"
    # amounts take either decimal mark in both languages: "$12.50" appears in French text too
    money = rf"\d+[.,]\d{{1,2}}(?!\d)|{num}"
    text = re.sub(rf"([{symbols}])\s?({money})", lambda m: _currency(m.group(2), m.group(1), lang), text)
    text = re.sub(rf"({money})\s?([{symbols}])", lambda m: _currency(m.group(1), m.group(2), lang), text)
    text = re.sub(rf"({num})\s?%", lambda m: f"{say_number(m.group(1), lang, year_ok=False)} {w['percent']}", text)
    if lang == "fr":
        text = re.sub(r"\b(\d+)(er|re|ère|ème|eme|e|nde|nd)\b", _ordinal_fr, text)
    else:
        text = re.sub(r"\b(\d+)(st|nd|rd|th)\b", _ordinal_en, text, flags=re.I)

    units = _UNITS[lang]
    unit_alt = "|".join(re.escape(u) for u in sorted(units, key=len, reverse=True))

    def unit(m: re.Match[str]) -> str:
        value = _parse(m.group(1), lang)
        one, many = units[m.group(2)]
        words = say_number(m.group(1), lang, year_ok=False)
        return f"{words} {one if value == 1 else many}"

    text = re.sub(rf"({num})\s?({unit_alt})(?![\w/])", unit, text)
    text = re.sub(rf"(?<![\w.,])({num})(?![\w])", lambda m: say_number(m.group(1), lang), text)
    text = re.sub(r"\d+", lambda m: say_number(m.group(0), lang), text)  # digits glued to letters
    return text


# ----------------------------------------------------------------------------- abbreviations, symbols
def expand_abbreviations(text: str, language: str) -> str:
    """Common abbreviations in their spoken form; "etc." keeps its full stop at a sentence end."""
    lang = words_for(language)
    for abbr, full in sorted(_ABBREVIATIONS[lang].items(), key=lambda kv: -len(kv[0])):
        pattern = r"(?<![\w.])" + re.escape(abbr) + (r"(?!\w)" if abbr[-1].isalpha() else "")
        if abbr in _SENTENCE_FINAL_ABBREVIATIONS:

            def final(m: re.Match[str], full: str = full) -> str:
                rest = m.string[m.end() :]
                ends = not rest.strip() or re.match(r"\s+[A-ZÀ-Ý]", rest) is not None
                return full + ("." if ends else "")

            text = re.sub(pattern, final, text)
        else:
            # French "M." only before a name, so "5 M." (mega) or a final "M." stay as they are
            if abbr == "M.":
                pattern += r"(?=\s+[A-ZÀ-Ý])"
            text = re.sub(pattern, full, text)
    return text


def read_symbols(text: str, language: str) -> str:
    """Symbols that carry meaning are read; decoration is dropped."""
    w = _WORDS[words_for(language)]
    text = re.sub(r"\s&\s", f" {w['and']} ", text)
    text = re.sub(r"\s\+\s", f" {w['plus']} ", text)
    text = re.sub(r"\s=\s", f" {w['equals']} ", text)
    text = re.sub(r"(?<=\w)/(?=\w)", " ", text)  # and/or, km/h already read
    text = text.replace("%", f" {w['percent']} ").replace("°", f" {w['degrees']} ")
    text = re.sub(r"[#*|~^<>\\{}\[\]=+@_]", " ", text)
    text = re.sub(r"\.{2,}", "…", text)  # an ellipsis is one pause, not a run of sentence ends
    return text


def normalize(text: str, language: str) -> Cleaned:
    """The whole pipeline: what the voice reads for ``text`` in ``language``."""
    report = Cleaned("")
    text = strip_controls(text, report)
    text = emoji.replace_emoji(text, replace=" ")
    text = text.replace("\u200d", "").replace("\ufe0f", "")  # left-over emoji joiners
    text = keep_script(text, language, report)
    text = strip_markdown(text)
    if language in READ_LANGUAGES:
        text = read_urls(text, language)
        text = expand_abbreviations(text, language)
        text = read_numbers(text, language)
        text = read_symbols(text, language)
    else:
        # no reading rules here for this language: English number words in German text would
        # be wrong, while espeak-ng reads digits in its own language; only decoration goes
        text = re.sub(r"[#*|~^<>\\{}\[\]_]", " ", text)
    text = _WS.sub(" ", text.replace("\n", " ")).strip()
    text = re.sub(r"\s+([,.;:!?…])", r"\1", text)
    text = re.sub(r"[,;:]+([.!?…])", r"\1", text)  # "monde, !" once a removed word is gone
    text = re.sub(r"([,;:])(?:\s*[,;:])+", r"\1", text)  # ", ," left by removed words
    text = re.sub(r"([!?…,;:])\.+", r"\1", text)  # a full stop added after "!" or a clause mark
    text = re.sub(r"^[,;:.\s]+", "", text)
    text = re.sub(r"([,;:])(?=[^\s\d])", r"\1 ", text)  # "one,five" left by a number
    report.text = text
    return report


# ----------------------------------------------------------------------------- splitting
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


def _sentence_ends(text: str, language: str) -> list[int]:
    """Indices just past each sentence end (terminator + closing quotes), not counting dots of
    abbreviations, initials or numbers; a boundary needs a following space (or end)."""
    lang = words_for(language)
    abbrevs = {a for a in _ABBREVIATIONS[lang] if a.endswith(".")}
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


# Words a phrase can be cut before without breaking a unit of meaning: verbs "to be",
# conjunctions, relative pronouns and prepositions start the next phrase ("The capital of
# France | is Paris", "La capitale de l'Espagne | est Madrid").
# fmt: off
_JOINING_WORDS = {
    "en": frozenset({
        "is", "are", "was", "were", "will", "would", "can", "could", "should", "has", "have",
        "had", "and", "but", "or", "so", "because", "which", "that", "who", "whose", "where",
        "when", "while", "if", "as", "than", "of", "in", "on", "at", "for", "to", "with",
        "from", "by", "about", "into", "over", "after", "before", "since", "until", "during",
    }),
    "fr": frozenset({
        "est", "sont", "était", "étaient", "sera", "serait", "a", "ont", "avait", "et", "mais",
        "ou", "donc", "car", "qui", "que", "qu", "dont", "où", "quand", "si", "comme", "de",
        "du", "des", "à", "au", "aux", "en", "dans", "sur", "sous", "pour", "par", "avec",
        "sans", "chez", "vers", "entre", "pendant", "depuis", "avant", "après",
    }),
}
# fmt: on


def first_chunk_cut(text: str, language: str, policy: SplitPolicy) -> int | None:
    """Where to end the first piece of a stream: at a clause mark or before a joining word
    once it holds ``first_chunk_min_words`` complete words, or after ``first_chunk_max_words``
    whatever follows; None while neither has arrived. Only complete words count (the space
    after them has arrived), so "in" is not taken for the start of "instance"."""
    joining = _JOINING_WORDS[words_for(language)]
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
    for end in _sentence_ends(text, language):
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
        cuts = [end for end in _sentence_ends(scan, self.language) if end < len(scan)]  # the space arrived
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
