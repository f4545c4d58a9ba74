"""Selectors: what maps a query to a route name — rules and the classifier hook.

A selector is an object with ``name`` (for traces), ``slow`` (whether speculative routing
starts a guessed route while it runs), ``threshold`` (the least confidence it must report to
decide) and ``async select(query, ctx) -> Choice | None``. ``None``, a ``Choice`` whose
confidence is below the threshold, or a route the router does not know, passes the query to
the next selector. A selector that raises passes too (the error is logged in ``passed``):
routing never fails a run.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Awaitable, Callable, Collection, Mapping
from typing import TYPE_CHECKING, Any, Protocol, TypeAlias

import msgspec

from .._errors import PolicyError
from .._query import Query, estimate_input_tokens

if TYPE_CHECKING:
    from ._context import SelectContext


class Choice(msgspec.Struct, frozen=True):
    """A selector's answer: a ``route``, its ``confidence`` (``None``: not stated) and ``why``."""

    route: str
    confidence: float | None = None
    why: str = ""


class Selector(Protocol):
    """What the router asks, in order, for a route."""

    name: str
    slow: bool
    threshold: float

    async def select(self, query: Query, ctx: SelectContext) -> Choice | None:
        """A route for ``query``, or ``None`` to pass it on."""
        ...


def _as_set(value: object, path: str) -> frozenset[Any] | None:
    """The values a condition accepts: one scalar (a string, a number, a date …) or a collection
    of them; ``PolicyError`` at ``path`` for a value that cannot be compared by equality."""
    if value is None:
        return None
    try:
        if isinstance(value, Collection) and not isinstance(value, (str, bytes, Mapping)):
            return frozenset(value)
        return frozenset((value,))
    except TypeError:
        raise PolicyError(
            f"a condition takes a value or a list of values (strings, numbers), got {value!r}", path=path
        ) from None


class Rule:
    """A condition on the query; all given conditions must hold (see ``rule``)."""

    slow = False
    threshold = 0.0

    def __init__(
        self,
        route: str,
        *,
        regex: str | None = None,
        min_tokens: int | None = None,
        max_tokens: int | None = None,
        tenant: str | Collection[str] | None = None,
        min_priority: int | None = None,
        max_priority: int | None = None,
        feature: str | Collection[str] | None = None,
        step: str | Collection[str] | None = None,
        metadata: Mapping[str, Any] | None = None,
        name: str | None = None,
    ) -> None:
        if not isinstance(route, str) or not route:
            raise PolicyError(f"a rule needs a route name, got {route!r}", path="$.route")
        self.route = route
        self.name = name or f"rule:{route}"
        try:
            self.regex = re.compile(regex) if regex is not None else None
        except re.error as exc:
            raise PolicyError(f"regex {regex!r} does not compile: {exc}", path="$.regex") from None
        for key, bound in (("min_tokens", min_tokens), ("max_tokens", max_tokens)):
            if bound is not None and (not isinstance(bound, int) or isinstance(bound, bool) or bound < 0):
                raise PolicyError(f"{key} must be an integer >= 0, got {bound!r}", path=f"$.{key}")
        self.min_tokens, self.max_tokens = min_tokens, max_tokens
        self.tenant = _as_set(tenant, "$.tenant")
        self.min_priority, self.max_priority = min_priority, max_priority
        conditions: dict[str, frozenset[Any]] = {}
        for key, value in (metadata or {}).items():
            conditions[key] = _as_set(value, f"$.metadata.{key}") or frozenset()
        if feature is not None:
            conditions["feature"] = _as_set(feature, "$.feature") or frozenset()
        if step is not None:
            conditions["step"] = _as_set(step, "$.step") or frozenset()
        self.metadata = conditions
        self.conditions = {
            "regex": regex,
            "min_tokens": min_tokens,
            "max_tokens": max_tokens,
            "tenant": tenant,
            "min_priority": min_priority,
            "max_priority": max_priority,
            "metadata": {k: sorted(v, key=str) for k, v in conditions.items()},
        }
        if all(v is None for k, v in self.conditions.items() if k != "metadata") and not conditions:
            raise PolicyError(f"rule for {route!r} has no condition: it would take every query", path="$")

    def match(self, query: Query) -> str | None:
        """Why every condition holds for ``query``, or ``None`` when one does not."""
        why: list[str] = []
        if self.tenant is not None:
            if query.tenant not in self.tenant:
                return None
            why.append(f"tenant={query.tenant}")
        if self.min_priority is not None:
            if query.priority < self.min_priority:
                return None
            why.append(f"priority {query.priority} >= {self.min_priority}")
        if self.max_priority is not None:
            if query.priority > self.max_priority:
                return None
            why.append(f"priority {query.priority} <= {self.max_priority}")
        for key, allowed in self.metadata.items():
            value = query.metadata.get(key)
            try:
                if value not in allowed:
                    return None
            except TypeError:  # a list or dict in the query's metadata: equal to no allowed value
                return None
            why.append(f"{key}={value}")
        if self.min_tokens is not None or self.max_tokens is not None:
            tokens = estimate_input_tokens(query)
            if self.min_tokens is not None:
                if tokens < self.min_tokens:
                    return None
                why.append(f"input-token bound {tokens} >= {self.min_tokens}")
            if self.max_tokens is not None:
                if tokens > self.max_tokens:
                    return None
                why.append(f"input-token bound {tokens} <= {self.max_tokens}")
        if self.regex is not None:
            m = self.regex.search(query.text)
            if m is None:
                return None
            why.append(f"regex matched {m.group(0)[:40]!r}")
        return ", ".join(why)

    async def select(self, query: Query, ctx: SelectContext) -> Choice | None:
        """The rule's route when it matches (confidence 1), else ``None``."""
        why = self.match(query)
        return None if why is None else Choice(self.route, 1.0, why)


def rule(
    route: str,
    *,
    regex: str | None = None,
    min_tokens: int | None = None,
    max_tokens: int | None = None,
    tenant: str | Collection[str] | None = None,
    min_priority: int | None = None,
    max_priority: int | None = None,
    feature: str | Collection[str] | None = None,
    step: str | Collection[str] | None = None,
    metadata: Mapping[str, Any] | None = None,
    name: str | None = None,
) -> Rule:
    """A sub-millisecond rule: ``route`` when every given condition holds.

    - ``regex``: searched in the query's text (all messages joined).
    - ``min_tokens`` / ``max_tokens``: bounds on the input-token *bound* the engine reserves
      cost by (UTF-8 bytes plus message framing: ≥ the real token count, ≈ 4× on English).
    - ``tenant``, ``feature``, ``step`` (from ``Query.metadata``), any ``metadata`` key: a
      value or a collection of accepted values.
    - ``min_priority`` / ``max_priority``: bounds on ``Query.priority``.
    """
    return Rule(
        route,
        regex=regex,
        min_tokens=min_tokens,
        max_tokens=max_tokens,
        tenant=tenant,
        min_priority=min_priority,
        max_priority=max_priority,
        feature=feature,
        step=step,
        metadata=metadata,
        name=name,
    )


ClassifierResult: TypeAlias = "str | tuple[str, float] | Choice | None"
ClassifierFn: TypeAlias = Callable[[Query], "ClassifierResult | Awaitable[ClassifierResult]"]


def as_choice(value: object, source: str) -> Choice | None:
    """A classifier's return value as a ``Choice`` (``str``, ``(route, confidence)``, ``Choice``, ``None``)."""
    if value is None or isinstance(value, Choice):
        return value
    if isinstance(value, str):
        return Choice(value, None, source)
    if isinstance(value, tuple) and len(value) == 2 and isinstance(value[0], str):
        confidence = float(value[1])
        return Choice(value[0], confidence, f"{source}: confidence {confidence:.3g}")
    raise TypeError(f"{source} returned {value!r}: expected a route, (route, confidence), a Choice or None")


class Classifier:
    """Any sync or async callable as a selector (see ``classifier``)."""

    def __init__(self, fn: ClassifierFn, *, threshold: float, slow: bool, name: str | None) -> None:
        if not callable(fn):
            raise PolicyError(f"a classifier must be callable (query) -> route, got {fn!r}", path="$")
        self.fn = fn
        self.threshold = threshold
        self.slow = slow
        self.name = name or f"classifier:{getattr(fn, '__name__', type(fn).__name__)}"

    async def select(self, query: Query, ctx: SelectContext) -> Choice | None:
        """Call the function (awaiting it if it is async) and read its answer."""
        value = self.fn(query)
        if inspect.isawaitable(value):
            value = await value
        return as_choice(value, self.name)


def classifier(fn: ClassifierFn, *, threshold: float = 0.5, slow: bool = True, name: str | None = None) -> Classifier:
    """A classifier hook: ``fn(query)`` (sync or async) returns a route name, ``(route,
    confidence)``, a ``Choice`` or ``None``. A confidence below ``threshold`` passes the query to
    the next selector. ``slow`` (default) lets speculative routing start a guess while it runs."""
    return Classifier(fn, threshold=threshold, slow=slow, name=name)
