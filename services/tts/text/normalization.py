"""Normalisation: what a voice reads for a text, in French or English.

A language model's answer (markdown, emoji, links, numbers, abbreviations) becomes plain words
a voice reads correctly. Policy for characters a voice cannot read (one rule everywhere):
control and invisible format characters are removed; emoji and markdown are removed; for
languages written in Latin script, letters of other scripts (CJK, Cyrillic, Arabic...) are
removed and reported. When nothing speakable is left the caller refuses the text
(INVALID_ARGUMENT) naming what was removed, rather than sending silence.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation

import emoji
from num2words import num2words

from services.tts.text.words import (
    ABBREVIATIONS,
    CLAUSE_MARKS,
    CURRENCIES,
    LATIN_LANGUAGES,
    MONTHS,
    READ_LANGUAGES,
    SENTENCE_FINAL_ABBREVIATIONS,
    TERMINATORS,
    UNITS,
    WORDS,
    words_for,
)


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
    w = WORDS[words_for(language)]

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
    w = WORDS[lang]
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
    one, many, cent1, cents_n = CURRENCIES[lang][symbol]
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
    w = WORDS[lang]
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
            return f"{d} {MONTHS['fr'][month - 1]} {_n2w(year, lang)}"
        return f"{MONTHS['en'][month - 1]} {_n2w(day, lang, 'ordinal')}, {_n2w(year, lang, 'year')}"

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

    units = UNITS[lang]
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
    for abbr, full in sorted(ABBREVIATIONS[lang].items(), key=lambda kv: -len(kv[0])):
        pattern = r"(?<![\w.])" + re.escape(abbr) + (r"(?!\w)" if abbr[-1].isalpha() else "")
        if abbr in SENTENCE_FINAL_ABBREVIATIONS:

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
    w = WORDS[words_for(language)]
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
