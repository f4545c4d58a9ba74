"""Routers in TOML: the shape, loading with path-precise errors, and writing back.

::

    default = "simple"
    speculate = true
    similar = ["tenant", "feature"]   # optional: what makes traffic similar for the guess

    [routes.simple]                  # a route is a policy table (Policy.from_toml's shape) ...
    mode = "hedge"
    candidates = ["mini-us", "mini-eu"]
    [routes.hard]
    policy = "frontier"              # ... or names a table of [policies]
    [policies.frontier]
    mode = "cascade"
    candidates = ["mid", "frontier"]

    [[select]]                       # tried in order
    kind = "rule"                    # rule | classifier | semantic | trained | llm
    route = "code"
    regex = '```|\\bdef '

    [budget]                         # optional
    limit_usd = 10.0
    period = "day"                   # hour | day | month | seconds
    key = "tenant"
    exempt_priority = 5
    [[budget.downgrade]]
    below = 0.5
    routes = { hard = "simple" }
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from .._errors import PolicyError
from .._policy import _UNSET_BUDGET, Policy, _PolicyFile, from_file
from .._toml import read_toml_source, validation_error
from ._budget import Budget, Downgrade
from ._selectors import Selector, classifier, rule

if TYPE_CHECKING:
    from ._router import Router


class _Spec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, omit_defaults=True):
    pass


class RuleSpec(_Spec, tag="rule", tag_field="kind", frozen=True):
    """``kind = "rule"``: see ``routing.rule``."""

    route: str
    regex: str | None = None
    min_tokens: int | None = None
    max_tokens: int | None = None
    tenant: str | list[str] | None = None
    min_priority: int | None = None
    max_priority: int | None = None
    feature: str | list[str] | None = None
    step: str | list[str] | None = None
    metadata: dict[str, Any] = {}
    name: str | None = None


class ClassifierSpec(_Spec, tag="classifier", tag_field="kind", frozen=True):
    """``kind = "classifier"``: a callable given to ``from_toml(classifiers={name: fn})``."""

    name: str
    threshold: float = 0.5
    slow: bool = True


class SemanticSpec(_Spec, tag="semantic", tag_field="kind", frozen=True):
    """``kind = "semantic"``: see ``routing.semantic``."""

    exemplars: dict[str, list[str]]
    threshold: float | None = None
    method: Literal["max", "centroid"] = "max"
    name: str | None = None


class TrainedSpec(_Spec, tag="trained", tag_field="kind", frozen=True):
    """``kind = "trained"``: a classifier file written by ``TrainedClassifier.save``."""

    path: str
    threshold: float = 0.5
    name: str | None = None


class LlmSpec(_Spec, tag="llm", tag_field="kind", frozen=True):
    """``kind = "llm"``: see ``routing.llm``."""

    backend: str
    labels: list[str]
    timeout: float = 2.0
    max_tokens: int = 32
    threshold: float = 0.0
    name: str | None = None


SelectorSpec = RuleSpec | ClassifierSpec | SemanticSpec | TrainedSpec | LlmSpec


class DowngradeSpec(_Spec, frozen=True):
    """One ``[[budget.downgrade]]``."""

    below: float
    routes: dict[str, str] | None = None
    to: str | None = None


class BudgetSpec(_Spec, frozen=True):
    """``[budget]``."""

    limit_usd: float
    period: Literal["hour", "day", "month"] | float = "day"
    key: str = "tenant"
    exempt_priority: int | None = None
    downgrade: list[DowngradeSpec] = []


class RouterFile(_Spec, frozen=True):
    """The TOML shape of a router."""

    default: str
    routes: dict[str, str | _PolicyFile]
    policies: dict[str, _PolicyFile] = {}
    select: list[SelectorSpec] = []
    speculate: bool = False
    similar: list[str] | None = None
    budget: BudgetSpec | None = None
    name: str | None = None


def _inner(exc: PolicyError, prefix: str, origin: str | None) -> PolicyError:
    message = str(exc).rsplit(" (at ", 1)[0]
    if exc.source:
        message = message.removeprefix(f"{exc.source}: ")
    return PolicyError(message, path=prefix + exc.path[1:], source=origin)


def load_router(source: str | Path, *, classifiers: Mapping[str, Any], **options: Any) -> Router:
    """Decode, validate and build (errors name the file and key path)."""
    from ._router import Router, similar_by

    text, origin = read_toml_source(source)
    try:
        raw = msgspec.toml.decode(text)
    except msgspec.DecodeError as exc:
        raise PolicyError(f"not valid TOML: {exc}", source=origin) from None
    for section in ("routes", "policies"):  # one at a time: msgspec's paths say [...] for a table key
        tables = raw.get(section) if isinstance(raw, dict) else None
        for name, table in (tables or {}).items() if isinstance(tables, dict) else ():
            if isinstance(table, dict):
                try:
                    msgspec.convert(table, _PolicyFile)
                except msgspec.ValidationError as exc:
                    inner = validation_error(exc, None, _PolicyFile)
                    raise _inner(inner, f"$.{section}.{name}", origin) from None
    try:
        spec = msgspec.convert(raw, RouterFile)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, origin, RouterFile) from None
    routes: dict[str, Policy] = {}
    # from_file, as Policy.from_toml: a table without `budget` gets the mode's default budget
    policies = {name: from_file(p) for name, p in spec.policies.items()}
    for name, entry in spec.routes.items():
        if isinstance(entry, str):
            if entry not in policies:
                known = ", ".join(policies) or "none"
                raise PolicyError(
                    f"route {name!r} names policy {entry!r}, which is not a [policies] table; known: {known}",
                    path=f"$.routes.{name}",
                    source=origin,
                )
            routes[name] = policies[entry]
        else:
            routes[name] = from_file(entry)
    selectors: list[Selector] = []
    for i, sel in enumerate(spec.select):
        try:
            selectors.append(_build_selector(sel, classifiers, options))
        except PolicyError as exc:
            raise _inner(exc, f"$.select[{i}]", origin) from None
    budget = None
    if spec.budget is not None:
        try:
            downgrades = []
            for j, d in enumerate(spec.budget.downgrade):
                try:
                    downgrades.append(Downgrade(d.below, d.routes, d.to))
                except PolicyError as exc:
                    raise _inner(exc, f"$.downgrade[{j}]", None) from None
            budget = Budget(
                spec.budget.limit_usd,
                spec.budget.period,
                spec.budget.key,
                downgrade=downgrades,
                exempt_priority=spec.budget.exempt_priority,
            )
        except PolicyError as exc:
            raise _inner(exc, "$.budget", origin) from None
        for j, rule in enumerate(downgrades):  # in the file's order
            problem = rule.unknown_route(routes)
            if problem is not None:
                what, where = problem
                raise PolicyError(
                    f"{what}; routes: {', '.join(routes)}", path=f"$.budget.downgrade[{j}]{where}", source=origin
                )
    extra: dict[str, Any] = {}
    if spec.similar is not None:
        try:
            extra["similar"] = similar_by(spec.similar)
        except PolicyError as exc:
            raise _inner(exc, "$", origin) from None
    try:
        router = Router(
            routes,
            selectors,
            default=spec.default,
            speculate=spec.speculate,
            budget=budget,
            name=spec.name,
            **extra,
        )
    except PolicyError as exc:
        raise _inner(exc, "$", origin) from None
    router.source = spec
    router.origin = origin
    return router


def _build_selector(sel: SelectorSpec, classifiers: Mapping[str, Any], options: Mapping[str, Any]) -> Selector:
    if isinstance(sel, RuleSpec):
        return rule(
            sel.route,
            regex=sel.regex,
            min_tokens=sel.min_tokens,
            max_tokens=sel.max_tokens,
            tenant=sel.tenant,
            min_priority=sel.min_priority,
            max_priority=sel.max_priority,
            feature=sel.feature,
            step=sel.step,
            metadata=sel.metadata,
            name=sel.name,
        )
    if isinstance(sel, ClassifierSpec):
        fn = classifiers.get(sel.name)
        if fn is None:
            known = ", ".join(classifiers) or "none given"
            raise PolicyError(
                f"classifier {sel.name!r} is not among those given to from_toml(classifiers=...): {known}",
                path="$.name",
            )
        return classifier(fn, threshold=sel.threshold, slow=sel.slow, name=sel.name)
    if isinstance(sel, SemanticSpec):
        from ._semantic import semantic

        return semantic(
            sel.exemplars, threshold=sel.threshold, method=sel.method, name=sel.name, embedder=options.get("embedder")
        )
    if isinstance(sel, TrainedSpec):
        from ._trained import TrainedClassifier

        return TrainedClassifier.load(
            sel.path, threshold=sel.threshold, name=sel.name, embedder=options.get("embedder")
        )
    from ._llm import llm

    return llm(
        sel.backend,
        labels=sel.labels,
        timeout=sel.timeout,
        max_tokens=sel.max_tokens,
        threshold=sel.threshold,
        name=sel.name,
    )


# -- writing -------------------------------------------------------------------------------------

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def _key(key: str) -> str:
    return key if _BARE.match(key) else json.dumps(key, ensure_ascii=False)


def _value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return ("inf" if value > 0 else "-inf") if math.isinf(value) else repr(value)
    if isinstance(value, (int, str)):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(_value(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{_key(k)} = {_value(v)}" for k, v in value.items()) + " }"
    raise PolicyError(f"cannot write {value!r} as TOML", path="$")


def _clean(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _clean(v) for k, v in value.items() if v is not None and v not in ([], (), {})}
    if isinstance(value, (list, tuple)):
        return [_clean(v) for v in value]
    return value


def _minimal(table: dict[str, Any]) -> dict[str, Any]:
    """A policy table without the keys that hold their mode's default (it loads to the same policy)."""
    defaults = _clean(
        msgspec.to_builtins(
            msgspec.convert({"mode": table.get("mode", "hedge"), "candidates": table["candidates"]}, _PolicyFile)
        )
    )
    return {k: v for k, v in table.items() if k in ("mode", "candidates") or defaults.get(k, object()) != v}


def router_toml(data: Mapping[str, Any]) -> str:
    """A router's TOML text (what ``Router.from_toml`` loads) from its shape as plain data: the keys
    of a router file (``default``, ``routes``, ``policies``, ``select``, ``budget``, …; see the
    module docs), as ``msgspec.to_builtins(router.source)`` gives them. Policy tables are written
    without the keys that hold their mode's default, ``mode`` and ``candidates`` first. Raises
    ``PolicyError`` with the key path when ``data`` is not a router's shape."""
    try:
        spec = msgspec.convert(dict(data), RouterFile)
    except msgspec.ValidationError as exc:
        raise validation_error(exc, None, RouterFile) from None
    return dump_router(spec, minimal=True)


def dump_router(spec: RouterFile, *, minimal: bool = False) -> str:
    """``spec`` as TOML text that ``load_router`` reads back to the same spec (``minimal``: policy
    tables without the keys at their mode's default, which load to the same policies)."""
    data = _clean(msgspec.to_builtins(spec))
    if minimal:
        for section in ("policies", "routes"):
            data[section] = {k: v if isinstance(v, str) else _minimal(v) for k, v in data.get(section, {}).items()}
    lines: list[str] = []
    top = {k: v for k, v in data.items() if k not in ("routes", "policies", "select", "budget")}
    lines.extend(f"{_key(k)} = {_value(v)}" for k, v in top.items())
    refs = {k: v for k, v in data.get("routes", {}).items() if isinstance(v, str)}
    if refs:
        lines.append("\n[routes]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in refs.items())
    for section in ("policies", "routes"):
        for name, table in data.get(section, {}).items():
            if isinstance(table, str):
                continue
            lines.append(f"\n[{section}.{_key(name)}]")
            unset = msgspec.to_builtins(_UNSET_BUDGET)  # no `budget` key in the file: write none
            kept = {k: v for k, v in table.items() if not (k == "budget" and v == unset)}
            order = ["mode", "candidates", *(k for k in kept if k not in ("mode", "candidates"))]
            lines.extend(f"{_key(k)} = {_value(kept[k])}" for k in order if k in kept)
    for item in data.get("select", []):
        lines.append("\n[[select]]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in item.items())
    budget = data.get("budget")
    if budget is not None:
        downgrades = budget.pop("downgrade", [])
        lines.append("\n[budget]")
        lines.extend(f"{_key(k)} = {_value(v)}" for k, v in budget.items())
        for d in downgrades:
            lines.append("\n[[budget.downgrade]]")
            lines.extend(f"{_key(k)} = {_value(v)}" for k, v in d.items())
    return "\n".join(lines).lstrip("\n") + "\n"
