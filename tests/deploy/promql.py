"""Just enough PromQL reading for the tests: which metric names an expression uses."""

from __future__ import annotations

import re

# Words that can stand where a metric name could, but are not metrics.
KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "inf",
    "nan",
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'')
_GROUPING = re.compile(r"\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENT = re.compile(r"(?<![\w:$.])([a-zA-Z_:][a-zA-Z0-9_:]*)\b(?!\s*\()")


def strip(expr: str) -> str:
    """The expression without strings, label matchers, groupings, ranges and template variables."""
    out = _STRING.sub('""', expr)
    out = re.sub(r"\{[^}]*\}", " ", out)
    out = _GROUPING.sub(" ", out)
    out = re.sub(r"\[[^\]]*\]", " ", out)
    out = re.sub(r"\$\w+", " ", out)
    return out


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (function names and keywords excluded)."""
    names = set()
    for match in _IDENT.finditer(strip(expr)):
        word = match.group(1)
        if word.lower() in KEYWORDS or re.fullmatch(r"\d+[smhdwy]?", word):
            continue
        names.add(word)
    return names


def balanced(expr: str) -> bool:
    """Brackets, braces and parentheses pair up (outside strings)."""
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for ch in _STRING.sub('""', expr):
        if ch in "([{":
            stack.append(ch)
        elif ch in pairs and (not stack or stack.pop() != pairs[ch]):
            return False
    return not stack
