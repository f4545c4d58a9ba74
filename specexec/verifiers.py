"""Verifiers: fast checks that accept or reject a response.

A verifier is any callable ``(query, response) -> Verdict | bool`` — sync or async. The
built-ins below are also loadable from TOML (``verify = [{kind = "json_valid"}]``).
A verifier that raises counts as a rejection with the exception as its reason, never a crash.

>>> from specexec import verifiers as v
>>> policy_verify = [v.json_valid(), v.length(max=2000), v.not_refusal()]
"""

from __future__ import annotations

import functools
import inspect
import re
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeAlias

import msgspec

from ._errors import PolicyError
from ._query import Query, Response, ToolCall

__all__ = [
    "Verdict",
    "Verifier",
    "VerifierSpec",
    "all_of",
    "any_of",
    "check",
    "json_schema",
    "json_valid",
    "length",
    "matches_schema",
    "model_is",
    "not_refusal",
    "regex",
    "tool_call",
]


class Verdict(msgspec.Struct, frozen=True):
    """A verifier's answer: ``accept`` and, on rejection, a short ``reason``."""

    accept: bool
    reason: str = ""


ACCEPT = Verdict(True)

Verifier: TypeAlias = Callable[[Query, Response], "Verdict | bool | Awaitable[Verdict | bool]"]
"""Any sync or async callable ``(query, response) -> Verdict | bool``."""


class _Builtin(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    def __call__(self, query: Query, response: Response) -> Verdict:
        raise NotImplementedError


class JsonValid(_Builtin, tag="json_valid", frozen=True):
    """Accept text that parses as JSON (surrounding whitespace and a ``` fence are tolerated)."""

    def __call__(self, query: Query, response: Response) -> Verdict:
        """Parse the text with msgspec's JSON decoder."""
        try:
            msgspec.json.decode(_strip_fence(response.text))
        except msgspec.DecodeError as exc:
            return Verdict(False, f"not valid JSON: {exc}")
        return ACCEPT


class MatchesSchema(msgspec.Struct, frozen=True):
    """Accept JSON text that decodes into ``schema`` (any type msgspec can decode into)."""

    schema: Any

    def __post_init__(self) -> None:
        msgspec.json.Decoder(self.schema)  # fail at construction for a type msgspec cannot decode into

    def __call__(self, query: Query, response: Response) -> Verdict:
        """Decode and validate with msgspec."""
        try:
            msgspec.json.decode(_strip_fence(response.text), type=self.schema)
        except msgspec.ValidationError as exc:
            return Verdict(False, f"does not match schema: {exc}")
        except msgspec.DecodeError as exc:
            return Verdict(False, f"not valid JSON: {exc}")
        return ACCEPT


class Regex(_Builtin, tag="regex", frozen=True):
    """Accept text in which ``pattern`` is found (``fullmatch=True``: the whole text must match)."""

    pattern: str
    fullmatch: bool = False

    def __post_init__(self) -> None:
        try:
            re.compile(self.pattern)
        except re.error as exc:
            raise ValueError(f"regex: bad pattern {self.pattern!r}: {exc}") from None

    def __call__(self, query: Query, response: Response) -> Verdict:
        """Search (or fullmatch) the text."""
        compiled = _compiled(self.pattern)
        found = compiled.fullmatch(response.text) if self.fullmatch else compiled.search(response.text)
        return ACCEPT if found else Verdict(False, f"does not match /{self.pattern}/")


class Length(_Builtin, tag="length", frozen=True):
    """Accept text whose length in characters is within [``min``, ``max``]."""

    min: int = 0
    max: int | None = None

    def __post_init__(self) -> None:
        if self.min < 0 or (self.max is not None and self.max < self.min):
            raise ValueError(f"length: need 0 <= min <= max, got min={self.min}, max={self.max}")

    def __call__(self, query: Query, response: Response) -> Verdict:
        """Compare ``len(text)`` with the bounds."""
        n = len(response.text)
        if n < self.min:
            return Verdict(False, f"too short: {n} < {self.min} characters")
        if self.max is not None and n > self.max:
            return Verdict(False, f"too long: {n} > {self.max} characters")
        return ACCEPT


DEFAULT_REFUSALS = (
    r"\bI(?:'m| am) (?:sorry|unable|not able)\b",
    r"\bI can(?:'|no)t (?:help|assist|comply|do that)\b",
    r"\bas an AI\b",
    r"\bI (?:must|have to) (?:decline|refuse)\b",
)


class NotRefusal(_Builtin, tag="not_refusal", frozen=True):
    """Reject text that reads as a refusal ("I'm sorry, I can't help with that")."""

    patterns: tuple[str, ...] = DEFAULT_REFUSALS

    def __call__(self, query: Query, response: Response) -> Verdict:
        """Look for any refusal pattern (case-insensitive) in the first 300 characters."""
        head = response.text[:300]
        for pattern in self.patterns:
            if _compiled(pattern, re.I).search(head):
                return Verdict(False, "reads as a refusal")
        return ACCEPT


class ModelIs(_Builtin, tag="model_is", frozen=True):
    """Accept only responses whose reported model id is ``model`` (a pinned, dated version).

    A response that reports no model id is rejected.
    """

    model: str

    def __call__(self, query: Query, response: Response) -> Verdict:
        """Compare the reported model id."""
        if response.model == self.model:
            return ACCEPT
        return Verdict(False, f"model {response.model!r} is not the pinned {self.model!r}")


class AllOf(_Builtin, tag="all_of", frozen=True):
    """Accept when every verifier accepts; the first rejection's reason is kept."""

    verifiers: tuple[VerifierSpec, ...]

    async def __call__(self, query: Query, response: Response) -> Verdict:  # type: ignore[override]
        """Run the verifiers in order, stopping at the first rejection."""
        return await check(self.verifiers, query, response)


class AnyOf(_Builtin, tag="any_of", frozen=True):
    """Accept when at least one verifier accepts; otherwise reject with every reason."""

    verifiers: tuple[VerifierSpec, ...]

    async def __call__(self, query: Query, response: Response) -> Verdict:  # type: ignore[override]
        """Run the verifiers in order, stopping at the first acceptance."""
        reasons = []
        for verifier in self.verifiers:
            verdict = await check((verifier,), query, response)
            if verdict.accept:
                return ACCEPT
            reasons.append(verdict.reason)
        return Verdict(False, "none accepted: " + "; ".join(reasons))


def _schema_validator(schema: dict[str, Any], path: str) -> Any:
    """A ``jsonschema`` validator for ``schema`` (checked now: a ``PolicyError`` if invalid)."""
    try:
        import jsonschema  # type: ignore[import-untyped]
    except ImportError:  # pragma: no cover - the "schema" extra
        raise PolicyError(
            "JSON-schema verifiers need the jsonschema package: pip install 'specexec[schema]' (or pass a "
            "msgspec type instead of a schema dict)",
            path=path,
        ) from None
    cls = jsonschema.validators.validator_for(schema)
    try:
        cls.check_schema(schema)
    except jsonschema.SchemaError as exc:
        raise PolicyError(f"not a valid JSON schema: {exc.message}", path=path) from None
    return cls(schema)


def _schema_errors(validator: Any, instance: Any) -> str | None:
    """The first validation error's message (with its path in the instance), or ``None``."""
    error = next(iter(validator.iter_errors(instance)), None)
    if error is None:
        return None
    where = "/".join(str(p) for p in error.absolute_path)
    return f"{error.message} (at /{where})" if where else str(error.message)


class JsonSchema(_Builtin, tag="json_schema", frozen=True):
    """Accept text that is JSON valid against the JSON ``schema`` (a ``` fence is tolerated)."""

    schema: dict[str, Any]

    def __post_init__(self) -> None:
        _validator(self.schema, "$.verify.json_schema.schema")

    def __call__(self, query: Query, response: Response) -> Verdict:
        """Parse the text, then validate it against the schema."""
        try:
            value = msgspec.json.decode(_strip_fence(response.text))
        except msgspec.DecodeError as exc:
            return Verdict(False, f"not valid JSON: {exc}")
        problem = _schema_errors(_validator(self.schema), value)
        return ACCEPT if problem is None else Verdict(False, f"does not match the JSON schema: {problem}")


class ToolCallMatches(_Builtin, tag="tool_call", frozen=True):
    """Accept a response with a tool call (named ``name``, if given) whose arguments are valid
    against the JSON ``schema`` (if given)."""

    name: str | None = None
    schema: dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.schema is not None:
            _validator(self.schema, "$.verify.tool_call.schema")

    def __call__(self, query: Query, response: Response) -> Verdict:
        """Look for one call that matches."""
        return _tool_verdict(self.name, response.tool_calls, self._problem)

    def _problem(self, call: ToolCall) -> str | None:
        return None if self.schema is None else _schema_errors(_validator(self.schema), call.arguments)


class ToolCallType(msgspec.Struct, frozen=True):
    """Accept a tool call (named ``name``, if given) whose arguments convert into the msgspec
    type ``schema`` (a Struct, dataclass, TypedDict, …)."""

    name: str | None
    schema: Any

    def __call__(self, query: Query, response: Response) -> Verdict:
        """Look for one call whose arguments ``msgspec.convert`` into ``schema``."""
        return _tool_verdict(self.name, response.tool_calls, self._problem)

    def _problem(self, call: ToolCall) -> str | None:
        try:
            msgspec.convert(call.arguments, self.schema)
        except msgspec.ValidationError as exc:
            return str(exc)
        return None


def _tool_verdict(name: str | None, calls: Sequence[ToolCall], problem: Callable[[ToolCall], str | None]) -> Verdict:
    wanted = f"a tool call to {name!r}" if name is not None else "a tool call"
    if not calls:
        return Verdict(False, f"no tool call (expected {wanted})")
    candidates = [c for c in calls if name is None or c.name == name]
    if not candidates:
        return Verdict(False, f"expected {wanted}, got calls to {sorted({c.name for c in calls})}")
    problems = []
    for call in candidates:
        found = problem(call)
        if found is None:
            return ACCEPT
        problems.append(f"{call.name}: {found}")
    return Verdict(False, "tool call arguments do not match the schema: " + "; ".join(problems))


_VALIDATORS: dict[bytes, Any] = {}
"""Checked validators by schema (its canonical JSON): frozen structs cannot hold one."""


def _validator(schema: dict[str, Any], path: str = "$.verify") -> Any:
    key = msgspec.json.encode(schema, order="sorted")
    validator = _VALIDATORS.get(key)
    if validator is None:
        validator = _VALIDATORS[key] = _schema_validator(schema, path)
    return validator


# -- confidence (escalation in cascades: routing.ask_confidence asks for it) --------------------

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


def stated_confidence(text: str) -> float | None:
    """The confidence a response states (``Confidence: 0.8``, ``confidence: 80%``, or JSON
    ``{"confidence": 0.8}``), the last one if several; ``None`` when it states none."""
    found = None
    for m in _STATED.finditer(text):
        value = float(m.group(1))
        found = value / 100.0 if m.group(2) == "%" or value > 1.0 else value
    return None if found is None else min(max(found, 0.0), 1.0)


class SelfConfidence(_Builtin, tag="self_confidence", frozen=True):
    """Reject a response whose stated confidence is below ``min`` (or that states none,
    unless ``missing_ok``)."""

    min: float = 0.7
    missing_ok: bool = False

    def __post_init__(self) -> None:
        if isinstance(self.min, bool) or not isinstance(self.min, (int, float)) or not 0.0 <= self.min <= 1.0:
            raise PolicyError(f"min must be a confidence within [0, 1], got {self.min!r}", path="$.min")

    def __call__(self, query: Query, response: Response) -> Verdict:
        """Parse the stated confidence and compare."""
        confidence = stated_confidence(response.text)
        if confidence is None:
            return Verdict(True) if self.missing_ok else Verdict(False, "no confidence stated")
        if confidence < self.min:
            return Verdict(False, f"stated confidence {confidence:g} < {self.min:g}")
        return Verdict(True)


class Hesitancy(_Builtin, tag="hesitancy", frozen=True):
    """Reject a response shorter than ``min_chars`` or with more than ``max_markers`` hedges."""

    max_markers: int = 1
    min_chars: int = 0
    patterns: tuple[str, ...] = DEFAULT_HEDGES

    def __post_init__(self) -> None:
        for name in ("max_markers", "min_chars"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PolicyError(f"{name} must be an integer >= 0, got {value!r}", path=f"$.{name}")
        for i, pattern in enumerate(self.patterns):
            try:
                re.compile(pattern)
            except re.error as exc:
                raise PolicyError(f"pattern does not compile: {exc}", path=f"$.patterns[{i}]") from None

    def __call__(self, query: Query, response: Response) -> Verdict:
        """Count the hedges and check the length."""
        text = response.text.strip()
        if len(text) < self.min_chars:
            return Verdict(False, f"answer of {len(text)} characters < {self.min_chars}")
        markers = _hedges(self.patterns).findall(text)
        if len(markers) > self.max_markers:
            return Verdict(False, f"{len(markers)} hesitant phrases > {self.max_markers} ({markers[0]!r}, …)")
        return Verdict(True)


VerifierSpec = (
    JsonValid
    | Regex
    | Length
    | NotRefusal
    | ModelIs
    | AllOf
    | AnyOf
    | JsonSchema
    | ToolCallMatches
    | SelfConfidence
    | Hesitancy
)
"""The verifiers a TOML policy can name (a tagged union on ``kind``)."""


def json_valid() -> JsonValid:
    """Accept text that parses as JSON."""
    return JsonValid()


def matches_schema(schema: Any) -> MatchesSchema:
    """Accept JSON that decodes into ``schema`` (a msgspec Struct, dataclass, TypedDict, ...)."""
    return MatchesSchema(schema)


def json_schema(schema: Any) -> JsonSchema | MatchesSchema:
    """Accept JSON text valid against ``schema``: a JSON schema ``dict`` (validated with the
    ``jsonschema`` package) or a msgspec type (as ``matches_schema``)."""
    if isinstance(schema, dict):
        return JsonSchema(schema)
    return MatchesSchema(schema)


def tool_call(name: str | None = None, *, schema: Any = None) -> ToolCallMatches | ToolCallType:
    """Accept a response with a tool call named ``name`` (any name if ``None``) whose arguments
    match ``schema``: a JSON schema ``dict``, a msgspec type, or ``None`` (any arguments)."""
    if schema is None or isinstance(schema, dict):
        return ToolCallMatches(name, schema)
    msgspec.json.Decoder(schema)  # fail now for a type msgspec cannot convert into
    return ToolCallType(name, schema)


def regex(pattern: str, *, fullmatch: bool = False) -> Regex:
    """Accept text matching ``pattern``."""
    return Regex(pattern, fullmatch)


def length(min: int = 0, max: int | None = None) -> Length:
    """Accept text of ``min`` to ``max`` characters."""
    return Length(min, max)


def not_refusal(patterns: Sequence[str] = DEFAULT_REFUSALS) -> NotRefusal:
    """Reject refusals."""
    return NotRefusal(tuple(patterns))


def model_is(model: str) -> ModelIs:
    """Accept only responses reporting exactly ``model``."""
    return ModelIs(model)


def all_of(*verifiers: Verifier) -> AllOf:
    """Accept when all of ``verifiers`` accept."""
    return AllOf(tuple(verifiers))  # type: ignore[arg-type]


def any_of(*verifiers: Verifier) -> AnyOf:
    """Accept when any of ``verifiers`` accepts."""
    return AnyOf(tuple(verifiers))  # type: ignore[arg-type]


async def check(verifiers: Sequence[Verifier], query: Query, response: Response) -> Verdict:
    """Run ``verifiers`` in order; the first rejection wins. A raising verifier rejects."""
    for verifier in verifiers:
        try:
            out = verifier(query, response)
            if inspect.isawaitable(out):
                out = await out
        except Exception as exc:
            return Verdict(False, f"verifier {_name(verifier)} raised {type(exc).__name__}: {exc}")
        if out is True:
            continue
        if isinstance(out, Verdict):
            if not out.accept:
                return out
            continue
        if out is False:
            return Verdict(False, f"rejected by {_name(verifier)}")
        return Verdict(False, f"verifier {_name(verifier)} returned {out!r}, expected Verdict or bool")
    return ACCEPT


def _name(verifier: object) -> str:
    if isinstance(verifier, msgspec.Struct):
        return type(verifier).__name__
    return getattr(verifier, "__name__", type(verifier).__name__)


_regex_cache: dict[tuple[str, int], re.Pattern[str]] = {}


def _compiled(pattern: str, flags: int = 0) -> re.Pattern[str]:
    key = (pattern, flags)
    compiled = _regex_cache.get(key)
    if compiled is None:
        compiled = _regex_cache[key] = re.compile(pattern, flags)
    return compiled


_FENCE = re.compile(r"^\s*```(?:json)?\s*\n(.*?)\n?```\s*$", re.S)


def _strip_fence(text: str) -> str:
    m = _FENCE.match(text)
    return m.group(1) if m else text
