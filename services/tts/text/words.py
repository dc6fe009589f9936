"""Per-language word tables of the text pipeline: the words that numbers, symbols, dates,
money, units and abbreviations are read with, the words a streamed phrase may be cut before,
and which languages get which treatment. Data only; ``normalization`` and ``splitting`` read it."""

from __future__ import annotations

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
"""Languages whose numbers, abbreviations and symbols are read by the rules of ``normalization``."""
TERMINATORS = ".!?…"
CLAUSE_MARKS = ",;:—–"

# ----------------------------------------------------------------------------- words per language
WORDS: dict[str, dict[str, str]] = {
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

MONTHS = {
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
CURRENCIES: dict[str, dict[str, tuple[str, str, str, str]]] = {
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
UNITS: dict[str, dict[str, tuple[str, str]]] = {
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
ABBREVIATIONS: dict[str, dict[str, str]] = {
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
SENTENCE_FINAL_ABBREVIATIONS = frozenset({"etc."})


# Words a phrase can be cut before without breaking a unit of meaning: verbs "to be",
# conjunctions, relative pronouns and prepositions start the next phrase ("The capital of
# France | is Paris", "La capitale de l'Espagne | est Madrid").
# fmt: off
JOINING_WORDS = {
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


def words_for(language: str) -> str:
    """The language whose reading rules apply ("fr" or "en"; others read like English)."""
    return language if language in WORDS else "en"
