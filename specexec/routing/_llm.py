"""LLM-as-router: a small model asked for a JSON route name, through the one engine.

The call is a ``Policy`` run (``Policy.single(backend)`` unless a policy is given, so it can
itself be hedged); its cost is counted in the decision and against the route's ``max_cost``,
its latency is in the decision's ``latency``, its trace goes to the sinks with the route.
Anything but a clean answer passes to the next selector: a parse failure, an unknown label,
the timeout, an error — never a failed run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import TYPE_CHECKING

import anyio
import msgspec

from .._backend import Backend
from .._errors import PolicyError
from .._policy import Policy
from .._query import Message, Query
from ._selectors import Choice

if TYPE_CHECKING:
    from ._context import SelectContext

DEFAULT_INSTRUCTION = (
    "You route requests to a model tier. Classify the user's request into exactly one route.\n"
    "Routes: {labels}.\n"
    'Answer with JSON only, no prose: {{"route": <one of the routes>, "confidence": <0..1>}}.'
)
"""The router's system prompt; ``{labels}`` is replaced by the labels as a JSON list."""

_BRACE = re.compile(r"\{")
_DECODER = json.JSONDecoder()
_MAX_ANSWER = 8000
"""Characters of an answer searched for its JSON object (a router answer is a few dozen)."""
_MAX_OBJECTS = 64
"""Opening braces tried as the start of a JSON object, at most."""


class LlmRouter:
    """A selector that asks a model (see ``llm``)."""

    slow = True

    def __init__(
        self,
        backend: str | Backend | Policy,
        labels: Sequence[str],
        *,
        timeout: float,
        max_tokens: int,
        threshold: float,
        instruction: str,
        max_chars: int,
        name: str | None,
    ) -> None:
        labels = list(labels)
        if not labels or not all(isinstance(label, str) and label for label in labels):
            raise PolicyError(f"labels must be a non-empty list of route names, got {labels!r}", path="$.labels")
        if not (isinstance(timeout, (int, float)) and timeout > 0):
            raise PolicyError(f"timeout must be a positive number of seconds, got {timeout!r}", path="$.timeout")
        if not (isinstance(max_tokens, int) and not isinstance(max_tokens, bool) and max_tokens >= 1):
            raise PolicyError(
                f"max_tokens must be an integer >= 1 (the answer is a short JSON object), got {max_tokens!r}",
                path="$.max_tokens",
            )
        if not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool) and 0 <= threshold <= 1):
            raise PolicyError(
                f"threshold must be a confidence in [0, 1] (a stated confidence is cut to it), got {threshold!r}",
                path="$.threshold",
            )
        self.policy = backend if isinstance(backend, Policy) else Policy.single(backend, name="router:llm")
        self.labels = labels
        self.timeout = float(timeout)
        self.max_tokens = max_tokens
        self.threshold = threshold
        self.system = instruction.format(labels=msgspec.json.encode(labels).decode())
        self.max_chars = max_chars
        self.name = name or "llm"
        # constrained output: the route is an enum of the labels (for providers that take a schema)
        self.schema = {
            "type": "object",
            "properties": {"route": {"enum": labels}, "confidence": {"type": "number"}},
            "required": ["route"],
        }

    def prompt(self, query: Query) -> Query:
        """The router's own query for ``query``."""
        users = [m.text for m in query.chat if m.role == "user"]
        text = "\n".join(users) if users else query.text
        if len(text) > self.max_chars:
            text = text[: self.max_chars] + " …"
        return Query(
            messages=(Message("system", self.system), Message("user", text)),
            max_tokens=self.max_tokens,
            temperature=0.0,
            tenant=query.tenant,
            priority=query.priority,
            metadata={**query.metadata, "router": self.name, "json_schema": self.schema},
        )

    def parse(self, text: str) -> tuple[str, float | None] | str:
        """``(route, confidence)`` from the model's answer, or why it cannot be used.

        The answer's first JSON object with a ``route`` key counts (prose, code fences, nested
        objects and braces inside strings around it are fine); a ``confidence`` that is not a
        number is none."""
        text = text[:_MAX_ANSWER]
        objects: list[dict[str, object]] = []
        bad: str | None = None
        for i, m in enumerate(_BRACE.finditer(text)):
            if i == _MAX_OBJECTS:
                break
            try:
                value, _ = _DECODER.raw_decode(text, m.start())
            except json.JSONDecodeError as exc:
                bad = bad or f"bad JSON {text[m.start() : m.start() + 60]!r}: {exc}"
                continue
            if isinstance(value, dict):
                objects.append(value)
                if "route" in value:
                    break
        if not objects:
            return bad or f"no JSON object in the answer {text[:60]!r}"
        data = next((o for o in objects if "route" in o), objects[0])
        route = data.get("route")
        if not isinstance(route, str) or route not in self.labels:
            return f"unknown label {route!r}"
        confidence = data.get("confidence")
        if isinstance(confidence, (int, float)) and not isinstance(confidence, bool):
            return route, min(max(float(confidence), 0.0), 1.0)
        return route, None

    async def select(self, query: Query, ctx: SelectContext) -> Choice | None:
        """Ask the model; pass (raise, which the router records) on anything but a clean answer."""
        with anyio.move_on_after(self.timeout) as timer:
            result = await ctx.execute(self.prompt(query), self.policy)
        if timer.cancelled_caught:
            raise TimeoutError(f"no answer within {self.timeout:g}s")
        parsed = self.parse(result.response.text)
        if isinstance(parsed, str):
            raise ValueError(parsed)
        route, confidence = parsed
        conf = f", confidence {confidence:.3g}" if confidence is not None else ""
        return Choice(route, confidence, f"{result.backend} answered {route!r}{conf}")


def llm(
    backend: str | Backend | Policy,
    labels: Sequence[str],
    *,
    timeout: float = 2.0,
    max_tokens: int = 32,
    threshold: float = 0.0,
    instruction: str = DEFAULT_INSTRUCTION,
    max_chars: int = 4000,
    name: str | None = None,
) -> LlmRouter:
    """LLM-as-router: ask ``backend`` (a name, a ``Backend`` or a ``Policy``, e.g. a hedge of two
    small models) for ``{"route": <label>}``. The labels are an enum in the prompt and in
    ``query.metadata["json_schema"]`` (the request's metadata is kept); the user messages are
    cut to ``max_chars``. Bad JSON, an
    unknown label, ``timeout`` or an error passes to the next selector. ``threshold`` applies to
    a confidence the model reports."""
    return LlmRouter(
        backend,
        labels,
        timeout=timeout,
        max_tokens=max_tokens,
        threshold=threshold,
        instruction=instruction,
        max_chars=max_chars,
        name=name,
    )
