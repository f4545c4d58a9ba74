"""Confidence escalation for cascades: verifiers that reject an unsure answer, so ``cascade``
moves on to the next, dearer model.

- ``self_confidence(min=0.7)``: the model states its confidence in the same call (ask for it
  with ``ask_confidence(query)``); below ``min``, or not stated, is a rejection.
- ``hesitancy(max_markers=1, min_chars=0)``: a length/hesitancy heuristic — too short, or
  more hedging phrases ("I'm not sure", "I think", "possibly", …) than allowed, is a rejection.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Sequence

import msgspec

from .._query import Message, Query, Response
from ..verifiers import Verdict

CONFIDENCE_INSTRUCTION = (
    "After your answer, on a last line of its own, state how confident you are that the answer is "
    "correct as `Confidence: <a number from 0 to 1>`."
)
"""What ``ask_confidence`` adds to a query's system message."""

_STATED = re.compile(r"confidence\W{0,3}\s*[:=]?\s*\"?(\d+(?:\.\d+)?)\s*(%?)", re.I)

DEFAULT_HEDGES = (
    r"\bi'?m not (?:sure|certain)\b",
    r"\bi am not (?:sure|certain)\b",
    r"\bi think\b",
    r"\bi believe\b",
    r"\bpossibly\b",
    r"\bperhaps\b",
    r"\bmight be\b",
    r"\bi don'?t know\b",
    r"\bit'?s hard to say\b",
    r"\bi cannot be certain\b",
    r"\bnot entirely clear\b",
)
"""Phrases ``hesitancy`` counts (case-insensitive regular expressions)."""


@functools.cache
def _hedges(patterns: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(f"(?:{p})" for p in patterns), re.I)


def ask_confidence(query: Query, instruction: str = CONFIDENCE_INSTRUCTION) -> Query:
    """``query`` with ``instruction`` appended to its system message (one is added if none)."""
    chat = list(query.chat)
    if chat and chat[0].role == "system":
        chat[0] = Message("system", f"{chat[0].text}\n\n{instruction}")
    else:
        chat.insert(0, Message("system", instruction))
    return msgspec.structs.replace(query, prompt=None, messages=tuple(chat))


def stated_confidence(text: str) -> float | None:
    """The confidence a response states (``Confidence: 0.8``, ``confidence: 80%``, or JSON
    ``{"confidence": 0.8}``), the last one if several; ``None`` when it states none."""
    found = None
    for m in _STATED.finditer(text):
        value = float(m.group(1))
        found = value / 100.0 if m.group(2) == "%" or value > 1.0 else value
    return None if found is None else min(max(found, 0.0), 1.0)


class SelfConfidence(msgspec.Struct, frozen=True):
    """Reject a response whose stated confidence is below ``min`` (or that states none,
    unless ``missing_ok``)."""

    min: float = 0.7
    missing_ok: bool = False

    def __call__(self, query: Query, response: Response) -> Verdict:
        """Parse the stated confidence and compare."""
        confidence = stated_confidence(response.text)
        if confidence is None:
            return Verdict(True) if self.missing_ok else Verdict(False, "no confidence stated")
        if confidence < self.min:
            return Verdict(False, f"stated confidence {confidence:g} < {self.min:g}")
        return Verdict(True)


class Hesitancy(msgspec.Struct, frozen=True):
    """Reject a response shorter than ``min_chars`` or with more than ``max_markers`` hedges."""

    max_markers: int = 1
    min_chars: int = 0
    patterns: tuple[str, ...] = DEFAULT_HEDGES

    def __call__(self, query: Query, response: Response) -> Verdict:
        """Count the hedges and check the length."""
        text = response.text.strip()
        if len(text) < self.min_chars:
            return Verdict(False, f"answer of {len(text)} characters < {self.min_chars}")
        markers = _hedges(self.patterns).findall(text)
        if len(markers) > self.max_markers:
            return Verdict(False, f"{len(markers)} hesitant phrases > {self.max_markers} ({markers[0]!r}, …)")
        return Verdict(True)


def self_confidence(min: float = 0.7, *, missing_ok: bool = False) -> SelfConfidence:
    """A verifier: the model's stated confidence (``ask_confidence``) must be at least ``min``."""
    return SelfConfidence(min, missing_ok)


def hesitancy(max_markers: int = 1, *, min_chars: int = 0, patterns: Sequence[str] = DEFAULT_HEDGES) -> Hesitancy:
    """A verifier: at most ``max_markers`` hedging phrases and at least ``min_chars`` characters."""
    return Hesitancy(max_markers, min_chars, tuple(patterns))
