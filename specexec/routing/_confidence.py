"""Confidence escalation for cascades: verifiers that reject an unsure answer, so ``cascade``
moves on to the next, dearer model.

- ``self_confidence(min=0.7)``: the model states its confidence in the same call (ask for it
  with ``ask_confidence(query)``); below ``min``, or not stated, is a rejection.
- ``hesitancy(max_markers=1, min_chars=0)``: a length/hesitancy heuristic — too short, or
  more hedging phrases ("I'm not sure", "I think", "possibly", …) than allowed, is a rejection.
"""

from __future__ import annotations

from collections.abc import Sequence

import msgspec

from .._query import Message, Query
from ..verifiers import DEFAULT_HEDGES, Hesitancy, SelfConfidence

CONFIDENCE_INSTRUCTION = (
    "After your answer, on a last line of its own, state how confident you are that the answer is "
    "correct as `Confidence: <a number from 0 to 1>`."
)
"""What ``ask_confidence`` adds to a query's system message."""


def ask_confidence(query: Query, instruction: str = CONFIDENCE_INSTRUCTION) -> Query:
    """``query`` with ``instruction`` appended to its system message (one is added if none)."""
    chat = list(query.chat)
    if chat and chat[0].role == "system":
        chat[0] = Message("system", f"{chat[0].text}\n\n{instruction}")
    else:
        chat.insert(0, Message("system", instruction))
    return msgspec.structs.replace(query, prompt=None, messages=tuple(chat))


def self_confidence(min: float = 0.7, *, missing_ok: bool = False) -> SelfConfidence:
    """A verifier: the model's stated confidence (``ask_confidence``) must be at least ``min``."""
    return SelfConfidence(min, missing_ok)


def hesitancy(max_markers: int = 1, *, min_chars: int = 0, patterns: Sequence[str] = DEFAULT_HEDGES) -> Hesitancy:
    """A verifier: at most ``max_markers`` hedging phrases and at least ``min_chars`` characters."""
    return Hesitancy(max_markers, min_chars, tuple(patterns))
