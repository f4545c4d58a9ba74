"""``Scheduler``: one probe loop per backend, with jitter, a timeout, a concurrency limit and the budget.

Each backend's loop runs in its own task of one task group: a slow, hung or failing backend
never delays another's probes. A loop probes at fixed times — the first after a random
``[0, jitter × interval]`` offset (spreading a fleet's probes), then every
``interval × (1 ± jitter)`` after the *scheduled* time, so a probe's own latency does not
push the next one back (a probe that overruns its slot is followed at once by the next;
probes of one backend never overlap). A probe waits for a slot of the shared
``anyio.CapacityLimiter`` (``max_concurrent``), then runs under ``anyio.move_on_after(timeout)``:
a hung probe is cut at its timeout and counted as a ``timeout`` failure. Before a probe is sent
its worst-case cost is reserved in the daily budget; a probe that does not fit is skipped and
the budget stays exhausted until UTC midnight (logged once).

Cancellation: ``run`` returns only by cancellation, and every probe it started has ended
(cancelled) by then.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable, Sequence

import anyio
import msgspec

from specexec import Backend, BackendError, Query, RateLimited, Response, Usage
from specexec._core import _is_count
from specexec._errors import MAX_ID_CHARS, redact_id
from specexec._query import estimate_input_tokens, estimate_tokens
from specexec._resources import Resources, _current

from ._budget import DailyBudget, day_label, utc_day
from ._config import Canary, TargetSettings
from ._snapshot import CANARY, PING
from ._state import ProbeState

__all__ = ["MODEL_CHARS", "Scheduler", "Target", "is_usage", "probe_cost", "usage_cost", "worst_case_cost"]

_log = logging.getLogger("specexec.probes")

MODEL_CHARS = MAX_ID_CHARS
"""The longest provider-reported model id kept (published in /v1/health, /metrics, the snapshot)."""


def _input_tokens(backend: Backend, query: Query) -> int:
    counter = getattr(backend, "count_input_tokens", None)
    return int(counter(query)) if counter is not None else estimate_input_tokens(query)


def _prices(backend: Backend) -> tuple[float, float]:
    return float(getattr(backend, "input_price", 0.0)), float(getattr(backend, "output_price", 0.0))


def worst_case_cost(backend: Backend, query: Query) -> float:
    """USD if ``query`` uses all its input estimate and ``max_tokens`` output at ``backend``."""
    input_price, output_price = _prices(backend)
    return (_input_tokens(backend, query) * input_price + query.max_tokens * output_price) / 1e6


def is_usage(usage: object) -> bool:
    """Whether ``usage`` is token usage a provider may bill: a ``Usage`` of two integer counts from
    0 to ``MAX_TOKEN_COUNT`` (the engine's check: negative, fractional, boolean or astronomically
    large counts — 10**400 cannot even be priced — are not usage)."""
    return isinstance(usage, Usage) and _is_count(usage.input_tokens) and _is_count(usage.output_tokens)


def usage_cost(backend: Backend, query: Query, usage: object, text: str | None) -> float:
    """USD of ``usage`` at ``backend``'s prices; usage that is not usage (see ``is_usage``) is
    estimated instead: the input estimate and the estimate of ``text`` (``max_tokens`` when
    there is no text), at most ``max_tokens``. Never negative."""
    input_price, output_price = _prices(backend)
    if isinstance(usage, Usage) and is_usage(usage):
        input_tokens, output_tokens = usage.input_tokens, usage.output_tokens
    else:
        input_tokens = _input_tokens(backend, query)
        output_tokens = min(estimate_tokens(text), query.max_tokens) if text is not None else query.max_tokens
    cost = (input_tokens * input_price + output_tokens * output_price) / 1e6
    return cost if cost > 0.0 else 0.0  # a negative price, or nan, costs nothing


def probe_cost(backend: Backend, query: Query, response: Response) -> float:
    """USD a probe's answer cost: prices × reported usage, estimated when the provider reported
    none (both counts 0) or reported something that is not usage (see ``usage_cost``)."""
    usage = response.usage
    if is_usage(usage) and usage.input_tokens == 0 and usage.output_tokens == 0:
        return usage_cost(backend, query, None, response.text)  # nothing reported: estimated
    return usage_cost(backend, query, usage, response.text)


def _short(value: object) -> str:
    """``repr(value)``, at most 40 characters (a 10**5000 count has no ``repr`` at all)."""
    if isinstance(value, int) and value.bit_length() > 64:
        return f"<an integer of {value.bit_length()} bits>"
    return repr(value)[:40]


class Target:
    """A probed backend: the backend, its effective settings, its state, its jitter RNG."""

    def __init__(self, backend: Backend, settings: TargetSettings, state: ProbeState, seed: int | None = None) -> None:
        self.backend = backend
        self.settings = settings
        self.state = state
        self.rng = random.Random(f"{seed}:{backend.name}") if seed is not None else random.Random()
        self.count = 0  # probes due so far (the canary cadence counts them)
        self.usage_warned = False  # "not usage" is logged once per backend

    def first_delay(self) -> float:
        """Seconds from the start to the first probe: uniform in ``[0, jitter × interval]``."""
        s = self.settings
        return self.rng.uniform(0.0, s.jitter * s.interval) if s.jitter else 0.0

    def next_delay(self) -> float:
        """Seconds from one scheduled probe to the next: ``interval × (1 ± jitter)``."""
        s = self.settings
        return s.interval * (1.0 + s.jitter * self.rng.uniform(-1.0, 1.0)) if s.jitter else s.interval

    def next_canary(self) -> Canary | None:
        """The canary if the probe now due is one (the first, then every ``every``-th)."""
        canary = self.settings.canary
        due = canary is not None and self.count % canary.every == 0
        self.count += 1
        return canary if due else None


class Scheduler:
    """Runs every enabled target's probe loop (see the module docs).

    ``wall_clock`` gives Unix time (for the budget's UTC day and published timestamps);
    ``resources`` are shared by the HTTP backends (one pooled client per host); ``redact``
    removes secrets from error messages before they are stored or logged; ``secrets`` gives the
    daemon's keys now, removed from reported model ids (``redact_id``).
    """

    def __init__(
        self,
        targets: Sequence[Target],
        *,
        max_concurrent: int,
        budget: DailyBudget,
        wall_clock: Callable[[], float],
        resources: Resources | None = None,
        redact: Callable[[str], str] = lambda text: text,
        secrets: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        self.targets = list(targets)
        self.max_concurrent = max_concurrent
        self.budget = budget
        self.wall_clock = wall_clock
        self.resources = resources
        self.redact = redact
        self.secrets = secrets
        self._limiter: anyio.CapacityLimiter | None = None
        self._exhausted_day: int | None = None

    @property
    def limiter(self) -> anyio.CapacityLimiter:
        """The shared limit on probes in flight."""
        if self._limiter is None:
            self._limiter = anyio.CapacityLimiter(self.max_concurrent)
        return self._limiter

    async def run(self) -> None:
        """Probe every enabled target on its schedule until cancelled."""
        async with anyio.create_task_group() as tg:
            for target in self.targets:
                if target.settings.enabled:
                    tg.start_soon(self._loop, target, name=f"probe {target.backend.name}")

    async def _loop(self, target: Target) -> None:
        next_at = anyio.current_time() + target.first_delay()
        while True:
            await anyio.sleep_until(next_at)
            await self.probe(target)
            next_at = max(next_at + target.next_delay(), anyio.current_time())

    async def probe(self, target: Target) -> None:
        """Probe ``target`` once, now: reserve its cost, wait for a slot, send, record the outcome."""
        canary = target.next_canary()
        query = canary.query if canary is not None else target.settings.query
        worst = worst_case_cost(target.backend, query)
        wall = self.wall_clock()
        if not self.budget.try_reserve(worst, wall):
            target.state.record_skip()
            self._budget_refused(wall)
            return
        if self._exhausted_day is not None and utc_day(wall) != self._exhausted_day:
            self._exhausted_day = None
            _log.info("probe budget: a new UTC day (%s) began; probing resumes", day_label(utc_day(wall)))
        cost = worst  # a probe cancelled mid-flight may still be billed
        try:
            async with self.limiter:
                cost = await self._send(target, query, canary, worst)
        finally:
            self.budget.settle(worst, cost, self.wall_clock())

    async def _send(self, target: Target, query: Query, canary: Canary | None, worst: float) -> float:
        """Send one probe and record its outcome; returns what it cost (USD)."""
        backend, state, timeout = target.backend, target.state, target.settings.timeout
        response: object = None
        error: Exception | None = None
        verdict: tuple[bool, str] | None = None
        elapsed = 0.0
        start = anyio.current_time()
        token = _current.set(self.resources)
        try:
            with anyio.move_on_after(timeout) as scope:
                try:
                    response = await backend.complete(query)
                    elapsed = anyio.current_time() - start
                    if canary is not None and isinstance(response, Response):
                        v = await canary.verdict(response)
                        verdict = (v.accept, self.redact(v.reason))  # it may quote the reply: published, logged
                except Exception as exc:  # a backend's failure, or a bug in a custom backend
                    error = exc
        finally:
            _current.reset(token)
        now, wall = anyio.current_time(), self.wall_clock()
        before = (state.state(wall), state.drift)
        name = CANARY if canary is not None else PING
        cost = 0.0
        if error is not None:
            kind = error.kind if isinstance(error, BackendError) else "error"
            message = str(error) if isinstance(error, BackendError) else f"{type(error).__name__}: {error}"
            retry_after = error.retry_after if isinstance(error, RateLimited) else None
            partial = getattr(error, "partial_usage", None)
            if isinstance(partial, Usage):  # it failed after it began to answer: the provider bills that
                self._check_usage(target, partial)
                cost = usage_cost(backend, query, partial, None)
            elif kind == "timeout":
                cost = worst
            state.record_failure(
                kind,
                self.redact(message),
                now=now,
                wall=wall,
                elapsed=now - start if kind == "timeout" else None,
                retry_after=retry_after,
                cost=cost,
                query=name,
            )
        elif scope.cancelled_caught and response is None:
            cost = worst
            state.record_failure(
                "timeout",
                f"no answer within {timeout:g} s",
                now=now,
                wall=wall,
                elapsed=now - start,
                cost=cost,
                query=name,
            )
        elif not isinstance(response, Response):
            state.record_failure(
                "bad_response",
                f"backend returned {type(response).__name__}, not a Response",
                now=now,
                wall=wall,
                query=name,
            )
        else:
            try:
                self._check_usage(target, response.usage)
                cost = probe_cost(backend, query, response)
                model = response.model
                # Published and logged: no secrets, bounded (a provider may echo the key as its model).
                clean = self._clean_model(model) if isinstance(model, str) and model else None
                if clean != model:
                    response = msgspec.structs.replace(response, model=clean)
            except Exception as exc:  # an answer that cannot be priced (a custom backend's bug): a failure
                cost = worst
                state.record_failure(
                    "bad_response",
                    self.redact(f"unusable response: {type(exc).__name__}: {exc}"),
                    now=now,
                    wall=wall,
                    cost=cost,
                    query=name,
                )
            else:
                if canary is not None and verdict is None:  # answered, but the verifier ran out of time
                    verdict = (False, f"canary verification did not finish within {timeout:g} s")
                state.record_success(elapsed, response, now=now, wall=wall, cost=cost, canary=verdict, query=name)
        self._log_changes(target, before, wall)
        return cost

    def _clean_model(self, model: str) -> str:
        """A provider-reported model id as it is kept: redacted (a provider may echo the key) and
        at most ``MODEL_CHARS`` long, as the HTTP backends keep ids (``redact_id``: a bounded
        prefix is scanned, and ``sk-`` inside a word, as in ``task-classifier``, is no key)."""
        return redact_id(model, self.secrets()) or ""

    def _check_usage(self, target: Target, usage: Usage) -> None:
        """Log (once per backend) a provider that reported something that is not usage."""
        if is_usage(usage) or target.usage_warned:
            return
        target.usage_warned = True
        _log.warning(
            "probe: backend %s reported input_tokens=%s, output_tokens=%s, which is not usage: "
            "its probes are charged an estimate",
            target.backend.name,
            _short(getattr(usage, "input_tokens", None)),
            _short(getattr(usage, "output_tokens", None)),
        )

    def _log_changes(self, target: Target, before: tuple[str, bool], wall: float) -> None:
        state = target.state
        name = target.backend.name
        was, drifted = before
        now_state = state.state(wall)
        if now_state != was:
            if now_state == "unhealthy":
                _log.warning(
                    "probe: backend %s is unhealthy (was %s): %s: %s",
                    name,
                    was,
                    state.health.last_error_kind,
                    state.last_error,
                )
            elif now_state == "degraded":
                _log.warning("probe: backend %s is degraded (was %s): canary %s", name, was, state.canary_reason)
            else:
                _log.info("probe: backend %s is %s (was %s)", name, now_state, was)
        else:
            _log.debug("probe: backend %s: %s", name, now_state)
        if state.drift and not drifted:
            _log.warning(
                "probe: backend %s reports model %r, not the pinned %r (drift)",
                name,
                state.reported_model,
                state.settings.pinned_model,
            )
        elif drifted and not state.drift:
            _log.info("probe: backend %s reports the pinned model %r again", name, state.reported_model)

    def _budget_refused(self, wall: float) -> None:
        day = utc_day(wall)
        if self._exhausted_day == day:
            return
        self._exhausted_day = day
        budget = self.budget
        _log.warning(
            "probe budget: the daily budget of $%.6f is spent ($%.6f on %s); probing stops until UTC midnight",
            budget.limit if budget.limit is not None else 0.0,
            budget.spent,
            day_label(day),
        )
