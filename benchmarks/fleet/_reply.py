"""Reply text and token counting.

Token rule (documented, deliberately simple): **a token is a whitespace-separated word**.
``prompt_tokens`` is the number of words in every message (and the system prompt);
completion tokens are the words of the reply, and a stream sends one word per chunk (with
its leading space), so the chunks joined give the reply text exactly.

The reply a deployment *plans* is cut at the request's ``max_tokens`` (then
``finish_reason`` is ``"length"``, else ``"stop"``):

- an exact match (after stripping whitespace) of the last user message in ``answers``:
  that answer (canary probes use this);
- ``reply = "lorem"``: ``output_tokens`` words of lorem ipsum;
- ``reply = "json"``: a JSON object of ``output_tokens`` words, ``{"answer": "lorem ipsum ..."}``;
- ``reply = "echo"``: the last user message;
- a prompt of one of the fleet's ``classes`` at a deployment with ``quality`` or ``labels``:
  the quality model's marked answer (``_quality``), unless ``answers`` has one.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from ._config import Deployment

__all__ = ["Reply", "count_tokens", "lorem", "make_reply", "split_tokens"]

_LOREM_TEXT = (
    "lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et "
    "dolore magna aliqua ut enim ad minim veniam quis nostrud exercitation ullamco laboris nisi ut aliquip "
    "ex ea commodo consequat"
)
_LOREM = _LOREM_TEXT.split()

_TOKEN = re.compile(r"\s*\S+")


def count_tokens(text: str) -> int:
    """The number of tokens in ``text``: its whitespace-separated words."""
    return len(text.split())


def split_tokens(text: str) -> list[str]:
    """``text`` as tokens, each word with the whitespace before it.

    ``"".join`` of the tokens gives back ``text`` (less trailing whitespace).
    """
    return _TOKEN.findall(text)


def lorem(n: int) -> str:
    """``n`` words of lorem ipsum."""
    return " ".join(_LOREM[i % len(_LOREM)] for i in range(n))


@dataclass(frozen=True, slots=True)
class Reply:
    """A reply as the tokens to send and why it ended (``"stop"``, or ``"length"`` when cut at ``max_tokens``)."""

    tokens: list[str]
    finish: Literal["stop", "length"]

    @property
    def text(self) -> str:
        """The whole reply text."""
        return "".join(self.tokens)


def make_reply(
    deployment: Deployment, messages: Iterable[tuple[str, str]], max_tokens: int | None, marked: str | None = None
) -> Reply:
    """The reply ``deployment`` gives to ``messages`` (``(role, text)`` pairs), cut at ``max_tokens``;
    ``marked`` (the quality model's answer) replaces the planned reply unless ``answers`` has one."""
    last_user = ""
    for role, text in messages:
        if role == "user":
            last_user = text
    answer = deployment.answers.get(last_user.strip())
    if answer is not None:
        planned = split_tokens(answer)
    elif marked is not None:
        planned = split_tokens(marked)
    elif deployment.reply == "echo":
        planned = split_tokens(last_user)
    elif deployment.reply == "json":
        n = deployment.output_tokens
        planned = split_tokens(json.dumps({"answer": lorem(max(1, n - 1))})) if n else []
    else:
        planned = split_tokens(lorem(deployment.output_tokens))
    if max_tokens is not None and len(planned) > max_tokens:
        return Reply(tokens=planned[:max_tokens], finish="length")
    return Reply(tokens=planned, finish="stop")
