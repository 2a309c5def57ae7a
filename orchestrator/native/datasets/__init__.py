"""Offline training and evaluation data for the native path, each item with the attributes it was made from.

- :mod:`.timeseries`: ChatTS-style series built from declared attributes (trend, seasonality, noise,
  spikes, level shifts) with question/answer pairs about them.
- :mod:`.speech`: sentences spoken by the packaged Piper voice, for speech -> text alignment.
- :mod:`.scenes`: drawn scenes (shapes, colours, positions, a written word) with captions and QA.

Everything is deterministic from a seed. This module holds what the three share: the QA item and
the parsing of free-form answers into the values they are scored against.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from orchestrator.errors import InvalidInputError


@dataclass
class QAItem:
    question: str
    answer: str
    kind: str                                     # what is asked, e.g. "trend", "seasonality", "colour"
    attributes: dict[str, Any] = field(default_factory=dict)  # the truth the answer is scored against


_NUMBER_WORDS = {"zero": 0, "no": 0, "none": 0, "one": 1, "a single": 1, "single": 1, "two": 2, "three": 3, "four": 4,
                 "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10}
_NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def parse_number(text: str) -> float | None:
    """The first number in an answer, digits or an English word ('two', 'none'); None if there is none."""
    if not isinstance(text, str):
        return None
    lowered = text.lower()
    match = _NUMBER.search(lowered)
    if match:  # digits win over words: "No, there are 2" is 2
        return float(match.group())
    words = [(m.start(), value) for word, value in _NUMBER_WORDS.items() for m in re.finditer(rf"\b{word}\b", lowered)]
    return float(min(words)[1]) if words else None


def parse_yes_no(text: str) -> bool | None:
    """True for a yes, False for a no, None when the answer says neither or both."""
    if not isinstance(text, str):
        return None
    lowered = text.lower()
    yes = bool(re.search(r"\b(yes|yeah|yep|true)\b", lowered))
    no = bool(re.search(r"\b(no|not|nope|false|none)\b|n't\b", lowered))
    if not yes and not no:  # "there is a cycle", "it does"
        yes = bool(re.search(r"\b(there (is|are)|it (does|has|is))\b", lowered))
    return None if yes == no else yes


def parse_choice(text: str, synonyms: dict[str, tuple[str, ...]]) -> str | None:
    """The one canonical choice an answer names (via its synonyms); None when it names none or several."""
    if not isinstance(text, str):
        return None
    lowered = text.lower()
    named = {choice for choice, words in synonyms.items()
             if any(re.search(rf"\b{re.escape(word)}\b", lowered) for word in words)}
    return named.pop() if len(named) == 1 else None


def check_count(n: int, what: str = "n") -> None:
    if not isinstance(n, int) or isinstance(n, bool) or n < 0:
        raise InvalidInputError(f"{what} must be a non-negative integer, got {n!r}")
