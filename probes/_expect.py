"""The canary's ``expect`` match: the expected answer, normalised, found in the reply at word and number boundaries.

Both texts are NFKC-normalised (full-width ``４`` is ``4``), case-folded (``Straße`` is
``STRASSE``) and their runs of whitespace collapsed to one space; the expectation is also
stripped of surrounding whitespace and punctuation (``"4."`` expects ``4``). The expectation
must then occur in the reply as a whole word: not inside a longer word (``four`` is not
found in ``fourteen``, ``Paris`` not in ``Parisian``) and, when it starts or ends with a
digit, not inside a longer number either — ``4`` is found in ``2 + 2 = 4``, ``The answer
is 4.`` and ``**4**``, but not in ``14``, ``40``, ``4.5``, ``0.4``, ``4,000`` or ``-4``.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

__all__ = ["contains_answer", "normalise"]

_SPACE = re.compile(r"\s+")


def _fold(text: str) -> str:
    return _SPACE.sub(" ", unicodedata.normalize("NFKC", text).casefold())


def _is_edge(char: str) -> bool:
    return char.isspace() or unicodedata.category(char).startswith("P")


def normalise(text: str) -> str:
    """``text`` as an expectation: NFKC, case-folded, whitespace collapsed, surrounding punctuation stripped."""
    folded = _fold(text)
    start, end = 0, len(folded)
    while start < end and _is_edge(folded[start]):
        start += 1
    while end > start and _is_edge(folded[end - 1]):
        end -= 1
    return folded[start:end]


@lru_cache(maxsize=256)
def _pattern(expect: str) -> re.Pattern[str]:
    lead = r"(?<!\w)"
    if expect[0].isdigit():
        lead += r"(?<!\d[.,])(?<![-+\u2212])"  # not the tail of 0.4, 1,4 or a signed -4
    trail = r"(?!\w)"
    if expect[-1].isdigit():
        trail += r"(?![.,]\d)"  # not the head of 4.5 or 4,000
    return re.compile(lead + re.escape(expect) + trail)


def contains_answer(reply: str, expect: str) -> bool:
    """Whether ``reply`` contains the answer ``expect`` (see the module docs); an empty expectation never matches."""
    wanted = normalise(expect)
    if not wanted:
        return False
    return _pattern(wanted).search(_fold(reply)) is not None
