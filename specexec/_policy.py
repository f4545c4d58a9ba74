"""``Policy``: what a run may do — candidates, the launch schedule, checks, cost and time limits.

Every mode is the same engine with different knobs; a mode is only a set of defaults:

=========  ==============  ============  ======================================
mode       delay           order         what ends the run
=========  ==============  ============  ======================================
single     —               as listed     the one attempt
failover   ``inf``         as listed     first accepted (next after a failure)
cascade    ``inf``         cost          first accepted (cheapest first)
hedge      ``"p95"``       as listed     first accepted (next after the delay)
race       ``0``           as listed     first accepted (all at once)
pick       ``0``           as listed     best score of what arrived (needs a scorer)
=========  ==============  ============  ======================================

Any attempt that fails or is rejected launches the next candidate at once, whatever the
delay. Validation happens here, when the policy is built or loaded, with the path of the
bad field (``PolicyError: max_attempts must be >= 1, got 0 (at $.max_attempts)``).
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import math
import re
import types
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, Literal, TypeAlias, TypedDict, Unpack, get_args

import msgspec

from ._backend import Backend
from ._errors import PolicyError
from ._query import Query
from ._toml import decode_toml
from .scorers import LlmJudge, ScoreFn, Scorer, ScorerSpec
from .verifiers import AllOf, AnyOf, Verifier, VerifierSpec

Mode = Literal["single", "failover", "cascade", "hedge", "race", "pick"]
Commit = Literal["first_token", "complete"]
Order = Literal["as_listed", "latency", "cost", "weighted", "p2c"]
_ORDERS: tuple[str, ...] = get_args(Order)
CandidateRef: TypeAlias = "str | Backend"

DEFAULT_FALLBACK_DELAY = 0.2
"""Hedge delay (seconds) used while a quantile delay has too few samples to be trusted."""
DEFAULT_MAX_DELAY = 30.0
"""Ceiling of an adaptive hedge delay (seconds)."""
DEFAULT_STALL_TIMEOUT = 30.0
"""Seconds a stream may go without new text once it has begun (before and after commit)."""
DEFAULT_FATAL: tuple[str, ...] = ("bad_request",)
"""Error kinds that end a run: a request that is itself wrong (not a context-window overflow)."""
DEFAULT_BACKOFF = 0.1
"""Base of the retry backoff (seconds): retry k waits up to ``backoff * 2**k``."""
DEFAULT_MAX_BACKOFF = 5.0
"""Cap of one retry backoff (seconds)."""
ERROR_KINDS = frozenset(
    {"rate_limited", "unavailable", "timeout", "bad_response", "bad_request", "context_window", "auth", "error"}
)
"""The ``kind`` of every ``BackendError`` (``"error"``: any other exception from a backend)."""
MIN_BUDGET_TTL = 0.1
"""Shortest hedge-budget window (seconds): shorter ones cannot count a request rate."""

_MODE_DELAY: dict[str, float | str] = {
    "single": math.inf,
    "failover": math.inf,
    "cascade": math.inf,
    "hedge": "p95",
    "race": 0.0,
    "pick": 0.0,
}
_MODE_ORDER: dict[str, Order] = {"cascade": "cost"}


def _is_number(value: object) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not math.isnan(value)


def _is_finite(value: object) -> bool:
    return _is_number(value) and math.isfinite(value)  # type: ignore[arg-type]


def _require(ok: bool, message: str, got: object, path: str) -> None:
    if not ok:
        raise PolicyError(f"{message}, got {got!r}", path=path)


def _require_int(value: object, minimum: int, name: str, path: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise PolicyError(f"{name} must be an integer >= {minimum}, got {value!r}", path=path)


class HedgeBudgetConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The hedge budget: each request earns ``max_extra_load`` hedges, plus a reserve of
    ``min_per_second`` hedges per second over a ``ttl``-second window (Finagle's retry budget).

    The default reserve is 0.1/s (one hedge per 10 s window): Finagle's 10/s is meant for
    services at thousands of requests a second, and at LLM rates (1–100 req/s) it made a
    "5 %" budget hedge 15–70 % of requests. With 0.1/s the share is 5.25 % at 40 req/s and
    5.1 % at 100 req/s; an idle service still gets its first hedge.
    ``max_extra_load=0, min_per_second=0`` forbids timed hedges altogether.
    """

    max_extra_load: float = 0.05
    min_per_second: float = 0.1
    ttl: float = 10.0

    def __post_init__(self) -> None:
        _require(
            _is_number(self.max_extra_load) and 0 <= self.max_extra_load <= 10,
            "max_extra_load must be within [0, 10]",
            self.max_extra_load,
            "$.max_extra_load",
        )
        _require(
            _is_finite(self.min_per_second) and self.min_per_second >= 0,
            "min_per_second must be a finite number >= 0",
            self.min_per_second,
            "$.min_per_second",
        )
        _require(
            _is_finite(self.ttl) and self.ttl >= MIN_BUDGET_TTL,
            f"ttl must be a finite number of seconds >= {MIN_BUDGET_TTL}",
            self.ttl,
            "$.ttl",
        )


@functools.cache
def parse_delay(delay: float | str) -> float | tuple[str, float]:
    """``0.2`` / ``"200ms"`` / ``"1.5s"`` → seconds; ``"p95"`` → ``("quantile", 0.95)``;
    ``"auto"`` → ``("auto", 0.0)``. Raises ``ValueError`` for anything else."""
    if isinstance(delay, bool):
        raise ValueError(f"delay must be seconds or a quantile such as 'p95', got {delay!r}")
    if isinstance(delay, (int, float)):
        if math.isnan(delay) or delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay!r}")
        return float(delay)
    if not isinstance(delay, str):
        raise ValueError(f"delay must be seconds or a quantile such as 'p95', got {delay!r}")
    text = delay.strip().lower()
    if text == "auto":
        return ("auto", 0.0)
    m = re.fullmatch(r"p(\d+(?:\.\d+)?)", text)
    if m:
        q = float(m.group(1)) / 100.0
        if not 0.0 < q < 1.0:
            raise ValueError(f"quantile delay must be between p0 and p100, got {delay!r}")
        return ("quantile", q)
    m = re.fullmatch(r"(\d+(?:\.\d+)?)\s*(ms|s)", text)
    if m:
        value = float(m.group(1))
        return value / 1000.0 if m.group(2) == "ms" else value
    raise ValueError(
        f"delay {delay!r} does not parse: use seconds (0.2, '200ms'), a quantile ('p95', 'p99.9') or 'auto'"
    )


class Policy(msgspec.Struct, frozen=True, forbid_unknown_fields=True, weakref=True, cache_hash=True):
    """How ``run`` may answer a query. Build it with a preset (``Policy.hedge(...)``) or from TOML.

    - ``candidates``: backend names (looked up in the runtime) or ``Backend`` objects; a name
      may appear more than once (several samples from one model, for ``pick``).
    - ``delay``: wait before the next launch — seconds, ``"200ms"``, a quantile of the
      primary's live latency (``"p95"``) or ``"auto"`` (the quantile 1 − ``budget.max_extra_load``);
      ``None`` is the mode's default. A failure or rejection launches the next at once.
    - ``max_attempts``: most attempts launched (default: one per candidate; ``single``: 1).
    - ``max_parallel``: most attempts in flight at once (default: no limit).
    - ``verify``: verifiers every response must pass; ``scorer`` + ``accept_score`` for ``pick``.
    - ``max_cost``: USD ceiling per run, enforced by reserving each attempt's worst case.
    - ``deadline``: seconds for the whole run; ``attempt_timeout``: seconds per attempt.
    - ``order``: ``as_listed``, ``latency`` (predicted, from health), ``cost``, ``weighted``
      (a random order drawn by ``weights``, a name → weight table, default 1 each) or ``p2c``
      (power of two choices: of two random candidates, the one with the lower predicted latency
      × (attempts in flight + 1) goes first, as Finagle's/Linkerd's P2C); ``None`` is the
      mode's default. Hedges prefer another provider and region than those in flight.
    - ``budget``: the hedge budget (``None``: timed hedges are not rationed).
    - ``fallback_delay``, ``min_delay``, ``max_delay``: bounds of an adaptive delay.
    - ``limit_wait``: how long the *primary* may wait for a rate/concurrency slot (hedges never wait).
    - ``fatal``: error kinds that end the run (default ``("bad_request",)``: a request that is
      itself wrong; a context-window overflow or a refused key only fails that candidate).
    - ``retries``: same-backend retries after a retryable failure, each after an exponential
      backoff (``backoff * 2**k`` capped at ``max_backoff``; full jitter unless ``jitter=False``),
      launched when no other candidate can take the failure's place, within the deadline and
      the failover throttle. Attempts total at most ``max_attempts * (1 + retries)``.
    - ``panic``: when every candidate is skipped because its breaker is open, try the one whose
      cooldown ends first instead of failing with no attempt (Envoy's panic threshold).
    - Streams (``specexec.stream``): ``commit="first_token"`` commits to the first attempt whose
      first ``prefix_chars`` characters (or whole text, if shorter) pass ``verify_prefix``;
      ``"complete"`` buffers each answer, verifies it whole with ``verify``, then streams it.
      ``stall_timeout``: seconds a begun stream may go without new text (before commit: the
      attempt fails and the next launches; after: the stream ends with ``Timeout``). For a
      stream, ``delay`` times the first token (``"p95"`` reads the TTFT histogram) and
      ``attempt_timeout`` bounds the time to the first token (after it, ``stall_timeout``
      bounds each wait for the next piece; ``deadline`` the whole stream).
    """

    candidates: tuple[CandidateRef, ...]
    mode: Mode = "hedge"
    delay: float | str | None = None
    max_attempts: int | None = None
    max_parallel: int | None = None
    verify: tuple[Verifier, ...] = ()
    scorer: Scorer | ScoreFn | None = None
    accept_score: float | None = None
    max_cost: float | None = None
    deadline: float | None = None
    attempt_timeout: float | None = None
    order: Order | None = None
    weights: dict[str, float] | None = None
    budget: HedgeBudgetConfig | None = None
    fallback_delay: float = DEFAULT_FALLBACK_DELAY
    min_delay: float = 0.0
    max_delay: float = DEFAULT_MAX_DELAY
    limit_wait: float = 0.0
    fatal: tuple[str, ...] = DEFAULT_FATAL
    retries: int = 0
    backoff: float = DEFAULT_BACKOFF
    max_backoff: float = DEFAULT_MAX_BACKOFF
    jitter: bool = True
    panic: bool = True
    verify_prefix: tuple[Verifier, ...] = ()
    prefix_chars: int = 1
    commit: Commit = "first_token"
    stall_timeout: float | None = DEFAULT_STALL_TIMEOUT
    name: str | None = None

    def __post_init__(self) -> None:
        _validate(self)

    # -- presets ---------------------------------------------------------------------------

    @classmethod
    def single(cls, candidate: CandidateRef, **knobs: Unpack[PolicyKnobs]) -> Policy:
        """One attempt at one backend (and its retries, if any)."""
        if knobs.get("max_attempts", 1) != 1:
            raise PolicyError(
                f"single mode makes one attempt, got max_attempts={knobs['max_attempts']!r}", path="$.max_attempts"
            )
        return _make(cls, (candidate,), "single", {**knobs, "max_attempts": 1})

    @classmethod
    def failover(cls, candidates: Sequence[CandidateRef], **knobs: Unpack[PolicyKnobs]) -> Policy:
        """Next candidate only after a failure or rejection."""
        return _make(cls, candidates, "failover", knobs)

    @classmethod
    def cascade(cls, candidates: Sequence[CandidateRef], **knobs: Unpack[PolicyKnobs]) -> Policy:
        """Cheapest first; the verifiers are the gate to the next, dearer one."""
        return _make(cls, candidates, "cascade", knobs)

    @classmethod
    def hedge(
        cls,
        candidates: Sequence[CandidateRef],
        *,
        delay: float | str = "p95",
        budget: HedgeBudgetConfig | None = HedgeBudgetConfig(),
        **knobs: Unpack[_HedgeKnobs],
    ) -> Policy:
        """Next candidate after ``delay`` (or at once on failure), within the hedge budget."""
        return _make(cls, candidates, "hedge", {**knobs, "delay": delay, "budget": budget})

    @classmethod
    def race(cls, candidates: Sequence[CandidateRef], **knobs: Unpack[PolicyKnobs]) -> Policy:
        """All candidates at once; the first accepted wins."""
        return _make(cls, candidates, "race", knobs)

    @classmethod
    def pick(
        cls, candidates: Sequence[CandidateRef], *, scorer: Scorer | ScoreFn, **knobs: Unpack[_PickKnobs]
    ) -> Policy:
        """Up to ``max_parallel`` at once within ``max_cost``; the best-scored accepted response wins."""
        return _make(cls, candidates, "pick", {**knobs, "scorer": scorer})

    # -- loading ---------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, source: str | Path) -> Policy:
        """Load from a TOML file path or TOML text. Unknown keys and bad values raise
        ``PolicyError`` naming the key path (and the file)."""
        return from_file(decode_toml(source, _PolicyFile))

    # -- resolved knobs --------------------------------------------------------------------

    @property
    def effective_delay(self) -> float | tuple[str, float]:
        """The parsed delay, the mode's default when ``delay`` is ``None``."""
        return parse_delay(self.delay if self.delay is not None else _MODE_DELAY[self.mode])

    def weight_of(self, name: str) -> float:
        """The weight of candidate ``name`` for ``order = "weighted"`` (1 unless ``weights`` says)."""
        return dict(self.weights or ()).get(name, 1.0)

    @property
    def effective_order(self) -> Order:
        """The candidate order, the mode's default when ``order`` is ``None``."""
        return self.order or _MODE_ORDER.get(self.mode, "as_listed")

    @property
    def effective_max_attempts(self) -> int:
        """Most attempts launched: ``max_attempts`` or one per candidate."""
        return self.max_attempts if self.max_attempts is not None else len(self.candidates)

    @property
    def label(self) -> str:
        """A name for reports: ``name`` or the mode."""
        return self.name or self.mode

    def cost_bound(self, query: Query, cost: Callable[[CandidateRef, Query], float]) -> float:
        """The most one run of this policy can cost for ``query`` (USD): its dearest
        ``max_attempts`` candidates, each ``1 + retries`` times (a failed attempt is charged, then
        retried), plus an ``llm_judge``'s call for each response it may score (one per candidate
        launched, at ``LlmJudge.worst_query``), capped by ``max_cost``. ``cost(candidate, query)``
        is one call's worst case (``worst_case_cost``). What a budget reserves and ``--target``
        shows; a custom scorer's own calls are not in it."""
        worst = sorted((cost(c, query) for c in self.candidates), reverse=True)
        attempts = self.effective_max_attempts
        bound = sum(worst[:attempts]) * (1 + self.retries)
        if isinstance(self.scorer, LlmJudge):
            bound += attempts * cost(self.scorer.backend, self.scorer.worst_query(query))
        return min(bound, self.max_cost) if self.max_cost is not None else bound


class _Knobs(TypedDict, total=False):
    """The keyword arguments of every preset (``Policy``'s fields; see its docstring)."""

    max_attempts: int | None
    max_parallel: int | None
    verify: Sequence[Verifier]
    accept_score: float | None
    max_cost: float | None
    deadline: float | None
    attempt_timeout: float | None
    order: Order | None
    weights: Mapping[str, float] | None
    fallback_delay: float
    min_delay: float
    max_delay: float
    limit_wait: float
    fatal: Sequence[str]
    retries: int
    backoff: float
    max_backoff: float
    jitter: bool
    panic: bool
    verify_prefix: Sequence[Verifier]
    prefix_chars: int
    commit: Commit
    stall_timeout: float | None
    name: str | None


class PolicyKnobs(_Knobs, total=False):
    """The keyword arguments ``Policy.single``/``failover``/``cascade``/``race`` take."""

    delay: float | str | None
    budget: HedgeBudgetConfig | None
    scorer: Scorer | ScoreFn | None


class _HedgeKnobs(_Knobs, total=False):
    scorer: Scorer | ScoreFn | None


class _PickKnobs(_Knobs, total=False):
    delay: float | str | None
    budget: HedgeBudgetConfig | None


_UNSET_BUDGET = HedgeBudgetConfig(max_extra_load=0.0, min_per_second=0.0, ttl=MIN_BUDGET_TTL * 1.5)
"""A sentinel for "no budget key in the file" (TOML has no null)."""


class _PolicyFile(Policy, frozen=True, forbid_unknown_fields=True):
    """The TOML shape of a policy: candidates are names; verifiers and scorer are built-ins;
    ``budget = "none"`` for an unrationed hedge (absent: ``mode = "hedge"`` gets the default)."""

    candidates: tuple[str, ...]
    verify: tuple[VerifierSpec, ...] = ()
    verify_prefix: tuple[VerifierSpec, ...] = ()
    scorer: ScorerSpec | None = None
    budget: HedgeBudgetConfig | Literal["none"] | None = _UNSET_BUDGET  # type: ignore[assignment]


def from_file(loaded: _PolicyFile) -> Policy:
    """The policy a decoded TOML table describes (``budget`` absent: the mode's default budget)."""
    fields = msgspec.structs.asdict(loaded)
    budget = fields.pop("budget")
    if budget is _UNSET_BUDGET:  # absent: the mode's default, as the preset gives it
        budget = HedgeBudgetConfig() if loaded.mode == "hedge" else None
    elif budget == "none":
        budget = None
    return Policy(budget=budget, **fields)


def _make(cls: type[Policy], candidates: Sequence[CandidateRef], mode: Mode, knobs: Mapping[str, Any]) -> Policy:
    """A preset's policy: the typed knobs (checked by the type checker) as the struct's fields."""
    if isinstance(candidates, str):  # `tuple("fast")` would be the candidates 'f', 'a', 's', 't'
        raise PolicyError(
            f"candidates must be a list of backend names, got the string {candidates!r}: write [{candidates!r}]",
            path="$.candidates",
        )
    return cls(candidates=tuple(candidates), mode=mode, **knobs)


_SIGNATURE_PROBLEMS: weakref.WeakKeyDictionary[Any, str | None] = weakref.WeakKeyDictionary()
"""``_verifier_signature_problem``'s answers by function, or by class for a callable object (a
policy is re-validated whenever it is copied with ``msgspec.structs.replace``)."""
_FUNCTIONS = (types.FunctionType, types.MethodType, types.BuiltinFunctionType, functools.partial)


def _verifier_signature_problem(v: object) -> str | None:
    """Why ``v(query, response)`` cannot be called, or ``None``: also when ``v``'s signature
    cannot be read (a builtin, an extension type), which is then found at run time."""
    key = v if isinstance(v, _FUNCTIONS) else type(v)
    try:
        return _SIGNATURE_PROBLEMS[key]
    except (KeyError, TypeError):  # not seen yet; or not hashable or weakly referable: not cached
        pass
    try:
        signature = inspect.signature(v)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        problem = None
    else:
        try:
            signature.bind(None, None)
            problem = None
        except TypeError as exc:
            name = getattr(v, "__qualname__", None) or type(v).__qualname__
            bare = signature.replace(
                parameters=[q.replace(annotation=q.empty) for q in signature.parameters.values()],
                return_annotation=signature.empty,
            )
            problem = f"{name}{bare} does not take two positional arguments ({exc})"
    with contextlib.suppress(TypeError):  # not hashable or weakly referable: not cached
        _SIGNATURE_PROBLEMS[key] = problem
    return problem


def _check_verifiers(verifiers: Sequence[object], path: str) -> None:
    """``PolicyError`` (with its path) for a verifier in ``verifiers`` — or nested in an
    ``all_of`` / ``any_of`` among them — that is not callable as ``verifier(query, response)``."""
    for i, v in enumerate(verifiers):
        where = f"{path}[{i}]"
        if not callable(v):
            raise PolicyError(f"a verifier must be callable (query, response), got {v!r}", path=where)
        if isinstance(v, (AllOf, AnyOf)):
            _check_verifiers(v.verifiers, f"{where}.verifiers")
            continue
        problem = _verifier_signature_problem(v)
        if problem is not None:
            raise PolicyError(
                f"a verifier is called as verifier(query, response) -> bool | Verdict (sync or async); {problem}",
                path=where,
            )


def _validate(p: Policy) -> None:
    for name in (
        "candidates",
        "verify",
        "fatal",
        "verify_prefix",
    ):  # accept any sequence; store a tuple (hashable, immutable)
        value = getattr(p, name)
        if isinstance(value, (list, tuple)) and not isinstance(value, tuple):
            msgspec.structs.force_setattr(p, name, tuple(value))
        elif not isinstance(value, tuple):
            raise PolicyError(f"{name} must be a list, got {type(value).__name__}", path=f"$.{name}")
    if not isinstance(p.candidates, tuple) or not p.candidates:
        raise PolicyError("candidates must name at least one backend", path="$.candidates")
    for i, c in enumerate(p.candidates):
        if isinstance(c, str):
            if not c:
                raise PolicyError("a candidate name must not be empty", path=f"$.candidates[{i}]")
        elif not (hasattr(c, "complete") and hasattr(c, "name")):
            raise PolicyError(f"a candidate must be a backend name or a Backend, got {c!r}", path=f"$.candidates[{i}]")
    if p.mode not in _MODE_DELAY:
        raise PolicyError(f"mode must be one of {sorted(_MODE_DELAY)}, got {p.mode!r}", path="$.mode")
    if p.order is not None and p.order not in _ORDERS:
        raise PolicyError(f"order must be one of {', '.join(_ORDERS)}, got {p.order!r}", path="$.order")
    if p.budget is not None and not isinstance(p.budget, HedgeBudgetConfig) and not isinstance(p, _PolicyFile):
        hint = " ('none' is the TOML spelling: in Python pass budget=None)" if p.budget == "none" else ""
        raise PolicyError(
            f"budget must be a HedgeBudgetConfig or None (timed hedges not rationed), got {p.budget!r}{hint}",
            path="$.budget",
        )
    if p.name is not None and not isinstance(p.name, str):
        raise PolicyError(f"name must be a string, got {p.name!r}", path="$.name")
    try:
        delay = p.effective_delay
    except ValueError as exc:
        raise PolicyError(str(exc), path="$.delay") from None
    if delay == ("auto", 0.0) and p.budget is None:
        raise PolicyError("delay 'auto' derives its quantile from the hedge budget: set budget", path="$.delay")
    if p.max_attempts is not None:
        _require_int(p.max_attempts, 1, "max_attempts", "$.max_attempts")
        if p.max_attempts > len(p.candidates):
            raise PolicyError(
                f"max_attempts={p.max_attempts} exceeds the {len(p.candidates)} candidates; list a backend "
                "more than once to try it again",
                path="$.max_attempts",
            )
    if p.mode == "single" and len(p.candidates) != 1:
        raise PolicyError(f"single mode takes exactly one candidate, got {len(p.candidates)}", path="$.candidates")
    if p.max_parallel is not None:
        _require_int(p.max_parallel, 1, "max_parallel", "$.max_parallel")
    if p.mode == "pick" and p.scorer is None:
        raise PolicyError("pick mode needs a scorer (e.g. specexec.scorers.majority())", path="$.scorer")
    if p.scorer is not None and not callable(getattr(p.scorer, "score_all", None)) and not callable(p.scorer):
        raise PolicyError(f"scorer must be a Scorer or a callable, got {p.scorer!r}", path="$.scorer")
    if p.accept_score is not None and p.scorer is None:
        raise PolicyError("accept_score needs a scorer", path="$.accept_score")
    for field in ("verify", "verify_prefix"):
        _check_verifiers(getattr(p, field), f"$.{field}")
    _require_int(p.prefix_chars, 1, "prefix_chars", "$.prefix_chars")
    if p.weights is not None:
        if not isinstance(p.weights, (dict, tuple)):
            raise PolicyError(f"weights must be a table of name = weight, got {p.weights!r}", path="$.weights")
        pairs = tuple(sorted(dict(p.weights).items()))
        names = {c if isinstance(c, str) else c.name for c in p.candidates}
        for name, weight in pairs:
            if name not in names:
                raise PolicyError(f"weights names {name!r}, which is not a candidate", path=f"$.weights.{name}")
            _require(
                _is_finite(weight) and weight > 0, "a weight must be a finite number > 0", weight, f"$.weights.{name}"
            )
        msgspec.structs.force_setattr(p, "weights", pairs)  # hashable: the policy is a cache key
    _require(
        p.commit in ("first_token", "complete"), "commit must be 'first_token' or 'complete'", p.commit, "$.commit"
    )
    if p.commit == "complete" and p.verify_prefix:  # it would be ignored: what it blocks would stream
        raise PolicyError(
            "verify_prefix applies to commit='first_token' (it judges the first prefix_chars before the commit); "
            "with commit='complete' the whole answer is verified before it streams: put these verifiers in verify",
            path="$.verify_prefix",
        )
    if p.stall_timeout is not None:
        _require(
            _is_finite(p.stall_timeout) and p.stall_timeout > 0,
            "stall_timeout must be a finite positive number",
            p.stall_timeout,
            "$.stall_timeout",
        )
    for name in ("max_cost", "deadline", "attempt_timeout"):
        value = getattr(p, name)
        if value is not None:
            _require(_is_finite(value) and value > 0, f"{name} must be a finite positive number", value, f"$.{name}")
    for name in ("fallback_delay", "min_delay", "backoff", "max_backoff"):
        value = getattr(p, name)
        _require(_is_finite(value) and value >= 0, f"{name} must be a finite number >= 0", value, f"$.{name}")
    for name in ("max_delay", "limit_wait"):  # may be infinite: no ceiling / wait as long as it takes
        value = getattr(p, name)
        _require(_is_number(value) and value >= 0, f"{name} must be a number >= 0", value, f"$.{name}")
    _require(p.min_delay <= p.max_delay, "min_delay must be <= max_delay", p.min_delay, "$.min_delay")
    _require_int(p.retries, 0, "retries", "$.retries")
    for name in ("jitter", "panic"):
        _require(isinstance(getattr(p, name), bool), f"{name} must be true or false", getattr(p, name), f"$.{name}")
    for i, kind in enumerate(p.fatal):
        if kind not in ERROR_KINDS:
            raise PolicyError(
                f"fatal lists error kinds, one of {sorted(ERROR_KINDS)}, got {kind!r}", path=f"$.fatal[{i}]"
            )
