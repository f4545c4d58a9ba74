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

Tools and JSON mode (whatever ``reply`` says): a request offering tools (and not
``tool_choice: none``) gets a call to the chosen tool (the one ``tool_choice`` names, else the
first) whose arguments are a JSON instance of the tool's parameter schema (``_instance``:
strings ``"lorem"`` or the first ``enum`` value, integers 1, numbers 1.5, booleans true, every
property present); the reply's tokens are that JSON's words and ``finish`` is ``"tool"``.
A request for JSON output (OpenAI ``response_format``) gets an instance of its schema, or
``{"answer": "lorem ..."}`` for ``json_object``. Cut at ``max_tokens``, either is
``"length"`` with its JSON cut short (as a real model's).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from ._config import Deployment

__all__ = [
    "Reply",
    "ToolPlan",
    "count_tokens",
    "instance_of",
    "lorem",
    "make_reply",
    "refusal_reply",
    "split_tokens",
]

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
    finish: Literal["stop", "length", "tool"]
    tool: str | None = None
    """The tool called (its arguments' JSON is the tokens), or ``None`` for a text reply."""

    @property
    def text(self) -> str:
        """The whole reply text."""
        return "".join(self.tokens)


@dataclass(frozen=True, slots=True)
class ToolPlan:
    """The tool a request makes the fleet call: its name and JSON-schema parameters."""

    name: str
    schema: dict[str, Any]


def instance_of(schema: Any) -> Any:
    """A small JSON value valid against the simple JSON ``schema`` (objects get every property)."""
    if not isinstance(schema, dict):
        return {}
    if schema.get("enum"):
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        return {name: instance_of(sub) for name, sub in (schema.get("properties") or {}).items()}
    if kind == "array":
        return [instance_of(schema.get("items") or {})]
    return {"string": "lorem", "integer": 1, "number": 1.5, "boolean": True, "null": None}.get(kind, "lorem")


def make_reply(
    deployment: Deployment,
    messages: Iterable[tuple[str, str]],
    max_tokens: int | None,
    *,
    tool: ToolPlan | None = None,
    json_schema: dict[str, Any] | None = None,
    json_mode: bool = False,
    marked: str | None = None,
) -> Reply:
    """The reply ``deployment`` gives to ``messages`` (``(role, text)`` pairs), cut at ``max_tokens``:
    a call to ``tool``, JSON (``json_mode``, of ``json_schema`` if given), else text — ``marked``
    (the quality model's answer) replacing the planned text unless ``answers`` has one."""
    if tool is not None:
        planned = split_tokens(json.dumps(instance_of(tool.schema)))
        if max_tokens is not None and len(planned) > max_tokens:
            return Reply(tokens=planned[:max_tokens], finish="length", tool=tool.name)
        return Reply(tokens=planned, finish="tool", tool=tool.name)
    if json_mode:
        value = instance_of(json_schema) if json_schema is not None else {"answer": lorem(deployment.output_tokens)}
        planned = split_tokens(json.dumps(value))
        if max_tokens is not None and len(planned) > max_tokens:
            return Reply(tokens=planned[:max_tokens], finish="length")
        return Reply(tokens=planned, finish="stop")
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


def refusal_reply(text: str, max_tokens: int | None) -> Reply:
    """A refusal (the ``refusal`` fault): ``text`` in place of any text, tool call or JSON, cut at ``max_tokens``."""
    planned = split_tokens(text)
    if max_tokens is not None and len(planned) > max_tokens:
        return Reply(tokens=planned[:max_tokens], finish="length")
    return Reply(tokens=planned, finish="stop")
