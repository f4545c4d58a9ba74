"""The engine's decisions as a sans-I/O state machine (h11's design): the one staggered race.

Rules: everything that decides what a run does — which candidate to launch and when, what a
failure, a verdict, a first token or a due timer triggers, what to cancel, what to reserve and
charge, what goes into the trace — lives here. Nothing here awaits, sleeps, reads a clock or
touches a socket: every event carries its time (``now``, seconds on the driver's clock) and
every decision comes back as a value. The drivers (``_engine``: anyio; ``specexec.bench._des``:
a heap of timed events) do the I/O — call the backend, run the verifiers and scorers, sleep,
cancel — and feed what happened back in.

Theory of operation. A driver makes a ``Core`` per run and asks ``next_action(now)``:

- ``Launch(attempt)`` — start this attempt now (its cost is reserved, its slots taken, its
  record in the trace); then ask again.
- ``Wait(until)`` — nothing to do before ``until`` (``inf``: before an attempt ends); ask again
  at ``until`` or as soon as an attempt ends, whichever comes first.
- ``Poll(until)`` — the primary waits for a rate or concurrency slot: ask again at ``until``
  (an attempt ending does not help: none is in flight).
- ``DONE`` — nothing more will be launched; wait for the attempts in flight, then ``result``.

Each attempt reports back through ``failed`` / ``answered`` → ``verdict`` (→ ``scored`` in
``pick``) and always ``ended`` (also when it was cancelled); streams through ``first_token``,
``stream_rejected``, ``commit``, ``stream_done``, ``stream_failed`` and ``stream_succeeded``.
An event whose consequence is to stop other attempts returns ``CANCEL_ALL`` (or, for a
stream's commit, the attempts to cancel): the driver cancels them and reports each one's
``ended``.
"""

from __future__ import annotations

import heapq
import math
import random
import weakref
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Final

import msgspec

from ._errors import (
    BackendError,
    BadResponse,
    BudgetExceeded,
    DeadlineExceeded,
    NoAcceptableResponse,
    RuntimeClosed,
    Timeout,
)
from ._query import Query, Response, ToolCall, Usage, estimate_input_tokens, estimate_tokens
from ._resources import CLOSED_IN_FLIGHT, current_resources
from ._trace import AttemptRecord, Trace, TraceEvent
from .scorers import Candidate, Scorer, as_scorer
from .verifiers import Verdict

if TYPE_CHECKING:
    from ._health._budget import HedgeBudgetLike
    from ._policy import Policy
    from ._runtime import BackendState, Runtime

__all__ = ["CANCEL_ALL", "DONE", "Core", "Launch", "Poll", "Resolved", "Result", "Wait"]

EPSILON: Final = 1e-12  # float slack when comparing money against the ceiling
MAX_TOKEN_COUNT: Final = 2**53
"""The largest token count taken as usage: beyond it a count is not exact as a float (10**400
cannot be priced at all), and no call is billed for it: such a count is estimated instead."""
LIMIT_POLL: Final = 0.005  # seconds between checks while the primary waits for a rate/concurrency slot
_ORDER_LABELS = {
    "as_listed": "as listed",
    "cost": "by worst-case cost",
    "latency": "by predicted latency",
    "weighted": "drawn by weight",
    "p2c": "by power of two choices (latency x load)",
}
CLOSED: Final = "closed"  # `record_failure`'s kind for a call whose runtime was exited under it
_CLOSED_REASON: Final = "the Runtime was exited while the run was in flight"  # its trace reason
_NOT_RETRIED = frozenset({"auth", "context_window", "bad_request"})  # another try at the same backend cannot help
_random = random.Random()  # backoff jitter, weighted and p2c draws (not security sensitive)


class Result(msgspec.Struct):
    """What ``run`` returns: the winning ``response``, its ``backend`` name, the run's ``latency``
    (seconds from start to acceptance), the total ``cost`` of every attempt, and the ``trace``;
    ``score`` in ``pick``; ``route`` the router's route when a ``Router`` chose the policy.

    ``ttft``: seconds from the start of the run to the first text — for a stream, when the
    caller got its first piece; for ``run``, when the winning attempt's first token arrived
    (``None`` if its backend reports none). ``response.ttft`` is the same time counted from the
    winning attempt's own start."""

    response: Response
    backend: str
    latency: float
    cost: float
    trace: Trace
    score: float | None = None
    route: str | None = None
    ttft: float | None = None


# -- actions out ----------------------------------------------------------------------------


class Launch:
    """Action: start ``attempt`` now."""

    __slots__ = ("attempt",)

    def __init__(self, attempt: Attempt) -> None:
        self.attempt = attempt


class Wait:
    """Action: ask again at ``until`` (``inf``: never by time) or when an attempt ends."""

    __slots__ = ("until",)

    def __init__(self, until: float) -> None:
        self.until = until


class Poll:
    """Action: the primary waits for a slot; ask again at ``until``."""

    __slots__ = ("until",)

    def __init__(self, until: float) -> None:
        self.until = until


class _Sentinel:
    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return self.name


DONE: Final = _Sentinel("DONE")
"""Action: nothing more will be launched; wait for the attempts in flight, then ``result``."""
CANCEL_ALL: Final = _Sentinel("CANCEL_ALL")
"""Consequence of an event: cancel every attempt in flight."""
SCORE: Final = _Sentinel("SCORE")
"""Consequence of ``verdict`` in ``pick``: score this response (``scored`` with the score)."""

Action = Launch | Wait | Poll | _Sentinel


class Attempt:
    """Book-keeping of one launched attempt (the public face is its ``AttemptRecord``); ``handle``
    is the driver's (a cancel scope, a timer entry)."""

    __slots__ = ("answered_at", "handle", "parts", "record", "reserved", "response", "started", "state", "text_at")

    def __init__(self, state: BackendState, record: AttemptRecord, reserved: float, started: float) -> None:
        self.state = state
        self.record = record
        self.reserved = reserved
        self.started = started
        self.response: Response | None = None
        self.answered_at = started  # when the backend answered (before verification)
        self.handle: Any = None  # the driver's: streams cancel each attempt alone
        self.parts: list[str] = []  # streams: the text received so far
        self.text_at = started  # streams: when text last came (the stall timeout counts from it)


class _SlotWait:
    """The primary is waiting up to ``limit_wait`` for a rate or concurrency slot."""

    __slots__ = ("give_up", "reason", "state", "trigger", "why", "worst")

    def __init__(self, state: BackendState, trigger: str, why: str, worst: float, reason: str, give_up: float) -> None:
        self.state, self.trigger, self.why, self.worst = state, trigger, why, worst
        self.reason, self.give_up = reason, give_up


class _Plan:
    """What a run needs of its policy, derived once per policy (``Policy`` is frozen)."""

    __slots__ = (
        "collect", "delay", "fatal_kinds", "first_reason", "max_attempts", "max_parallel", "next_reason", "order",
        "order_label", "single",
    )  # fmt: skip

    def __init__(self, policy: Policy) -> None:
        self.order = policy.effective_order
        self.order_label = _ORDER_LABELS[self.order]
        self.first_reason = f"first {self.order_label}"  # an attempt's `why`, formatted once per policy
        self.next_reason = f"next {self.order_label}"
        self.max_attempts = policy.effective_max_attempts
        self.max_parallel = policy.max_parallel or self.max_attempts
        self.collect = policy.scorer is not None
        self.single = self.max_attempts == 1 and not self.collect and not policy.retries
        self.fatal_kinds = frozenset(policy.fatal)
        self.delay = policy.effective_delay


_plans: weakref.WeakKeyDictionary[Policy, _Plan] = weakref.WeakKeyDictionary()


def _plan(policy: Policy) -> _Plan:
    plan = _plans.get(policy)
    if plan is None:
        plan = _plans[policy] = _Plan(policy)
    return plan


class Resolved(tuple["BackendState", ...]):
    """A policy's candidate states in order (what ``Runtime.resolve`` returns and caches per
    policy), with what every run of the policy needs derived once: the core's plan, the
    runtime's hedge budget for it, and the candidates' names for the trace. A plain sequence of
    states works too (the core then derives them per run)."""

    plan: _Plan
    budget: HedgeBudgetLike | None
    names: tuple[str, ...]
    one_domain: bool

    @classmethod
    def of(cls, states: Sequence[BackendState], policy: Policy, runtime: Runtime) -> Resolved:
        """``states`` with ``policy``'s plan, ``runtime``'s hedge budget for it and the names."""
        resolved = cls(states)
        resolved.plan = _plan(policy)
        resolved.budget = runtime.hedge_budget(policy.budget) if policy.budget is not None else None
        resolved.names = tuple(s.name for s in states)
        resolved.one_domain = len({s.domain for s in states}) <= 1  # no other failure domain to prefer
        return resolved


class Core:
    """The decisions of one run: a state machine with no I/O (see the module docstring)."""

    __slots__ = (
        "accepted", "budget", "collect", "committed", "cost_skips", "deadline_passed", "fatal", "first_delta",
        "halted", "in_flight", "input_estimate", "launched", "lost_reason", "max_attempts", "max_parallel", "next_at",
        "one_domain", "open_skips", "owed", "panicking", "plan", "policy", "primary", "query", "queue", "retries_used",
        "retry_due", "retry_seq", "rt", "scored_all", "scorer", "single", "stream_error", "streaming", "t0", "timed",
        "tokens", "trace", "waiting", "winner",
    )  # fmt: skip

    def __init__(
        self,
        runtime: Runtime,
        query: Query,
        policy: Policy,
        states: Sequence[BackendState],
        now: float,
        wall_time: float,
        *,
        streaming: bool = False,
    ) -> None:
        self.rt = runtime
        self.streaming = streaming  # a stream: hedges are timed on the first token, commits cancel
        self.stream_error: BackendError | None = None  # the committed stream failed after commit
        self.first_delta: float | None = None  # a stream: when the caller took its first piece (run time)
        self.query = query
        self.policy = policy
        self.t0 = now
        if not isinstance(states, Resolved):  # `Runtime.resolve` derives these once per policy
            states = Resolved.of(states, policy, runtime)
        plan = self.plan = states.plan
        self.budget = states.budget
        self.one_domain = states.one_domain
        self.trace = Trace(
            mode=policy.mode,
            policy=policy.name,
            wall_time=wall_time,
            candidates=list(states.names),
            max_cost=policy.max_cost,
            tenant=query.tenant,
        )
        self.input_estimate = estimate_input_tokens(query)  # the generic input-token bound, once per run
        self.tokens = self.input_estimate + query.max_tokens  # what rate limits are charged per attempt
        self.queue = self._ordered(states) if plan.order != "as_listed" else list(states)
        self.max_attempts = plan.max_attempts
        self.max_parallel = plan.max_parallel
        self.collect = plan.collect
        self.scorer: Scorer | None = as_scorer(policy.scorer) if policy.scorer is not None else None
        self.scored_all = False  # `set_scores` has been called
        self.single = plan.single
        self.committed = 0.0  # open reservations + settled costs, USD
        self.launched = 0
        self.in_flight: list[Attempt] = []
        self.owed = 0  # immediate launches owed to failures and rejections
        self.winner: Attempt | None = None
        self.lost_reason: str | None = None  # why the winner's rivals were cancelled (`cancel_reason`)
        self.accepted: list[Attempt] = []
        self.fatal: BackendError | RuntimeClosed | None = None
        self.deadline_passed = False
        self.cost_skips = 0
        self.primary: BackendState | None = None  # the first attempt's backend: hedges are timed on it
        self.halted = False  # the ceiling was crossed by over-reported usage: launch nothing more
        self.open_skips: list[BackendState] = []  # candidates skipped with an open breaker (for panic mode)
        self.panicking = False  # panic mode: every breaker was open; retries ignore breakers too
        self.retry_due: list[tuple[float, int, BackendState, int]] = []  # heap of (due, seq, backend, retry number)
        self.retries_used: dict[int, int] = {}  # id(state) -> retries booked
        self.retry_seq = 0
        self.next_at = -math.inf  # when the next timed launch is due
        self.timed = True  # timed hedges still allowed (the budget has not refused one)
        self.waiting: _SlotWait | None = None  # the primary waiting for a slot
        if self.budget is not None:
            self.budget.deposit(now)

    def _ordered(self, states: Sequence[BackendState]) -> list[BackendState]:
        """Candidates in launch order: as listed, by worst-case cost, or by predicted latency.

        A backend with no estimate (no recent traffic, no probes) is ranked as a typical one
        — the median of the others' predictions — not last: otherwise a backend demoted once
        would never be tried again, its window would stay empty and it would stay last.
        Ties keep the listed order.
        """
        order = self.plan.order
        if order == "cost":
            return sorted(states, key=lambda s: s.worst_case_cost(self.query, self.input_estimate))
        if order == "weighted":  # Efraimidis–Spirakis: a weighted random order in one pass
            keys = {id(s): _random.random() ** (1.0 / self.policy.weight_of(s.name)) for s in states}
            return sorted(states, key=lambda s: -keys[id(s)])
        if order in ("latency", "p2c"):
            now = self.t0
            predicted = [s.health.predicted_latency(now) for s in states]
            known = sorted(p for p in predicted if p is not None)
            typical = known[len(known) // 2] if known else 1.0
            rank = {id(s): typical if p is None else p for s, p in zip(states, predicted, strict=True)}
            if order == "latency":
                return sorted(states, key=lambda s: rank[id(s)])
            return self._p2c(states, rank)
        return list(states)

    def _p2c(self, states: Sequence[BackendState], latency: dict[int, float]) -> list[BackendState]:
        """Power of two choices: of two random candidates the one with the lower predicted latency
        x (attempts in flight + 1) leads; the rest follow by the same cost (hedges still prefer
        another failure domain, in ``_choose``)."""

        def cost(s: BackendState) -> float:
            return latency[id(s)] * (s.health.concurrency.in_use + 1)

        rest = list(states)
        if len(rest) < 2:
            return rest
        a, b = _random.sample(range(len(rest)), 2)
        first = rest[a] if cost(rest[a]) <= cost(rest[b]) else rest[b]
        rest.remove(first)
        return [first, *sorted(rest, key=cost)]

    # -- the schedule ------------------------------------------------------------------------

    def next_action(self, now: float) -> Action:
        """What to do at ``now``: launch an attempt, wait, poll for a slot, or nothing more."""
        while self.winner is None and self.fatal is None and not self.halted:
            if self.waiting is not None:  # the primary's slot wait resumes
                launched = self._launch(self.waiting.trigger, waiting_allowed=True, now=now)
                if launched is not None:
                    return self._launched(launched, now)
                continue
            room = len(self.in_flight) < self.max_parallel
            if not (self.launched < self.max_attempts and self.queue):
                # no new candidate: a failure may still be retried on its backend after a backoff
                if not (self.owed and self.retry_due):
                    if not (self.in_flight and self.policy.retries):
                        return DONE  # nothing more to launch: wait for what is in flight
                    return Wait(math.inf)  # an attempt in flight may fail and book a retry
                due = self.retry_due[0][0]
                if room and now >= due:
                    self.owed -= 1
                    attempt = self._launch_retry(now)
                    if attempt is not None:
                        return Launch(attempt)
                    continue
                return Wait(due if room else math.inf)
            if room and (self.owed or now >= self.next_at):
                if self.owed:
                    self.owed -= 1
                    trigger = "after failure"
                elif not self.launched:
                    trigger = "primary"
                elif self.plan.delay == 0.0:
                    trigger = "parallel"
                else:
                    trigger = "hedge"
                    if self.budget is not None and not self.budget.try_withdraw(now):
                        self.event("skipped", "hedge budget: no tokens left for a hedge", now)
                        self.timed, self.next_at = False, math.inf  # no more timed hedges; failures still launch
                        continue
                launched = self._launch(trigger, waiting_allowed=not self.launched, now=now)
                if launched is not None:
                    return self._launched(launched, now)
                continue
            if not self.in_flight:
                return DONE  # nothing in flight and nothing due (a hedge the budget refused)
            return Wait(self.next_at if room else math.inf)
        return DONE

    def launch_single(self, now: float) -> Attempt | Poll | None:
        """A run with one possible attempt: the primary (or a slot to wait for), or ``None``."""
        trigger = self.waiting.trigger if self.waiting is not None else "primary"
        return self._launch(trigger, waiting_allowed=True, now=now)

    def _launched(self, launched: Attempt | Poll, now: float) -> Action:
        if isinstance(launched, Poll):
            return launched
        if not self.timed:
            self.next_at = math.inf
        else:
            spec = self.plan.delay  # a fixed delay without a call (launches of a race: every one)
            self.next_at = now + (spec if not isinstance(spec, tuple) else self.delay(now))
        return Launch(launched)

    def delay(self, now: float) -> float:
        """Seconds from this launch to the next timed one: fixed, or a quantile of the primary."""
        spec = self.plan.delay
        if not isinstance(spec, tuple):
            return spec
        kind, q = spec
        if kind == "auto":
            assert self.policy.budget is not None
            q = 1.0 - self.policy.budget.max_extra_load
        primary = self.primary
        if primary is None:
            value = None
        elif self.streaming:  # a stream: hedge on the first token
            value = primary.health.ttft_quantile(q, now)
        else:
            value = primary.health.hedge_delay(q, now)
        if value is None:
            value = self.policy.fallback_delay
        return min(max(value, self.policy.min_delay), self.policy.max_delay)

    # -- launching ---------------------------------------------------------------------------

    def _launch(self, trigger: str, *, waiting_allowed: bool, now: float) -> Attempt | Poll | None:
        """Pick the next candidate that can run at ``now``, reserve its cost and book it; a slot
        to wait for; or None."""
        if self.waiting is not None:
            polled = self._poll_slot(now)
            if polled is not None:
                return polled
        plan = self.plan
        while self.queue and not self.halted:
            if not self.in_flight or self.one_domain or len(self.queue) == 1:  # the head: no domain to weigh
                index, why = 0, plan.next_reason if self.launched else plan.first_reason
            else:
                index, why = self._choose()
            state = self.queue.pop(index)
            admitted = self._admit(state, trigger, why, now, waiting_allowed=waiting_allowed)
            if admitted is not None:
                return admitted
        if self.launched == 0 and not self.in_flight and self.open_skips and self.policy.panic and not self.halted:
            return self._panic(now)
        return None

    def _poll_slot(self, now: float) -> Attempt | Poll | None:
        """The waiting primary at ``now``: its slot (booked), another poll, or given up (skipped)."""
        waiting = self.waiting
        assert waiting is not None
        reason = waiting.state.health.acquire(now, self.tokens)
        if reason is None:
            self.waiting = None
            return self._book(waiting.state, waiting.trigger, waiting.why, waiting.worst, now)
        if now < waiting.give_up:
            waiting.reason = reason
            return Poll(now + min(LIMIT_POLL, waiting.give_up - now))
        self.waiting = None
        self._refused(waiting.state, f"{reason} (waited {self.policy.limit_wait:g}s)", now)
        return None

    def _admit(
        self, state: BackendState, trigger: str, why: str, now: float, *, waiting_allowed: bool
    ) -> Attempt | Poll | None:
        """Launch ``state`` now if it fits the ceiling, its window, the throttle and its limits; else skip it."""
        worst = state.worst_case_cost(self.query, self.input_estimate)
        if self.policy.max_cost is not None and self.committed + worst > self.policy.max_cost + EPSILON:
            self.cost_skips += 1
            left = self.policy.max_cost - self.committed
            self.skip(state, f"cost ceiling: worst case ${worst:.6f} > ${max(left, 0.0):.6f} left", now)
            return None
        window = state.context_window
        if window is not None:
            needed = state.input_tokens(self.query, self.input_estimate)
            if needed + self.query.max_tokens > window:
                self.skip(
                    state, f"context window: {needed} input + {self.query.max_tokens} max_tokens > {window} tokens", now
                )
                return None
        if trigger == "after failure" and not state.throttle.allow():
            self.skip(state, "failover throttle: this backend fails too often", now)
            return None
        tokens = self.tokens
        reason = state.health.acquire(now, tokens)
        if reason is not None:  # asked only when refused: what never admits is refused by `acquire` too
            never = state.health.never_admits(tokens)
            if never is not None:
                self.skip(state, never, now)
                return None
        if reason is not None and waiting_allowed and self.policy.limit_wait > 0 and not reason.startswith("circuit"):
            give_up = now + self.policy.limit_wait
            self.waiting = _SlotWait(state, trigger, why, worst, reason, give_up)
            return Poll(now + min(LIMIT_POLL, give_up - now))
        if reason is not None:
            self._refused(state, reason, now)
            return None
        return self._book(state, trigger, why, worst, now)

    def _refused(self, state: BackendState, reason: str, now: float) -> None:
        if reason.startswith("circuit open"):
            self.open_skips.append(state)
        self.skip(state, reason, now)

    def _book(self, state: BackendState, trigger: str, why: str, worst: float, now: float) -> Attempt:
        """Reserve ``worst`` and record a launched attempt (its slots are already taken)."""
        self.committed += worst
        record = AttemptRecord(
            backend=state.name,
            provider=state.provider,
            region=state.region,
            trigger=trigger,
            why=why,
            started=now - self.t0,
            reserved=worst,
            cost=worst,
        )
        self.trace.attempts.append(record)
        attempt = Attempt(state, record, worst, now)
        if trigger != "retry":
            self.launched += 1
        self.in_flight.append(attempt)
        if self.primary is None:
            self.primary = state
        return attempt

    def _panic(self, now: float) -> Attempt | None:
        """Every candidate was skipped with an open breaker: try the one whose cooldown ends first."""
        state = min(self.open_skips, key=lambda s: s.health.breaker.open_until or 0.0)
        self.open_skips.clear()
        until = state.health.breaker.open_until
        left = f"{until - now:.3g}s" if until is not None else "?"
        worst = state.worst_case_cost(self.query, self.input_estimate)
        if self.policy.max_cost is not None and self.committed + worst > self.policy.max_cost + EPSILON:
            return None
        reason = state.health.acquire(now, self.tokens, ignore_breaker=True)
        if reason is not None:
            self.event("panic refused", f"{state.name}: {reason}", now)
            return None
        self.event(
            "panic", f"every candidate's breaker is open; trying {state.name} (its cooldown ends in {left})", now
        )
        self.panicking = True
        return self._book(state, "panic", "panic: its cooldown ends first", worst, now)

    def _launch_retry(self, now: float) -> Attempt | None:
        """Launch the retry that is due (same backend, after its backoff), or skip it."""
        _, _, state, number = heapq.heappop(self.retry_due)
        worst = state.worst_case_cost(self.query, self.input_estimate)
        if self.policy.max_cost is not None and self.committed + worst > self.policy.max_cost + EPSILON:
            self.skip(state, f"retry {number}: cost ceiling", now)
            return None
        if not state.throttle.allow():
            self.skip(state, f"retry {number}: failover throttle: this backend fails too often", now)
            return None
        reason = state.health.acquire(now, self.tokens, ignore_breaker=self.panicking)
        if reason is not None:
            self.skip(state, f"retry {number}: {reason}", now)
            return None
        return self._book(state, "retry", f"retry {number} of {self.policy.retries} after a backoff", worst, now)

    def _schedule_retry(self, state: BackendState, exc: BaseException, now: float) -> None:
        """After a retryable failure, book a retry of the same backend after an exponential backoff."""
        policy = self.policy
        number = self.retries_used.get(id(state), 0) + 1
        if number > policy.retries or self.halted:
            return
        kind = exc.kind if isinstance(exc, BackendError) else "error"
        if kind in _NOT_RETRIED:
            return
        cap = min(policy.max_backoff, policy.backoff * 2.0 ** (number - 1))
        wait = _random.uniform(0.0, cap) if policy.jitter else cap
        retry_after = getattr(exc, "retry_after", None)
        if isinstance(retry_after, (int, float)) and math.isfinite(retry_after) and retry_after > wait:
            wait = min(retry_after, state.health.config.max_retry_after)  # sooner would be refused
        due = now + wait
        if policy.deadline is not None and due >= self.t0 + policy.deadline:
            self.event("retry not scheduled", f"{state.name}: a backoff of {wait:.3g}s ends after the deadline", now)
            return
        self.retries_used[id(state)] = number
        self.retry_seq += 1  # ties on `due` go by booking order, never by comparing backends
        heapq.heappush(self.retry_due, (due, self.retry_seq, state, number))
        self.event("retry scheduled", f"{state.name}: retry {number} in {wait:.3g}s", now)

    def _choose(self) -> tuple[int, str]:
        """The next candidate's index in the queue (of two or more, with attempts in flight), and
        why: the head of the queue, unless a hedge can go to another provider and region than the
        attempts in flight."""
        # The failure domains in flight, and their providers and regions: a few each, so lists
        # filled by plain loops (no comprehension frames: this runs on every launch of a race).
        busy: list[tuple[str, str]] = []
        for a in self.in_flight:
            busy.append(a.state.domain)
        providers: list[str] | None = None  # built when a candidate outside every busy domain is ranked
        regions: list[str] = []
        best, best_rank = 0, 3
        for i, s in enumerate(self.queue):
            if s.domain in busy:
                continue  # rank 3: a domain in flight
            if providers is None:
                providers = []
                for provider, region in busy:
                    providers.append(provider)
                    regions.append(region)
            rank = (s.region in regions) + (s.provider in providers) * 2
            if rank < best_rank:
                best, best_rank = i, rank
                if rank == 0:
                    break
        if best == 0:
            return 0, self.plan.next_reason
        chosen = self.queue[best]
        return best, f"other failure domain than in flight ({chosen.provider}/{chosen.region})"

    # -- the trace ---------------------------------------------------------------------------

    def skip(self, state: BackendState, reason: str, now: float) -> None:
        """Record ``state`` as skipped for ``reason``."""
        self.trace.attempts.append(
            AttemptRecord(
                backend=state.name,
                provider=state.provider,
                region=state.region,
                outcome="skipped",
                reason=reason,
                started=now - self.t0,
            )
        )

    def event(self, what: str, detail: str, now: float) -> None:
        """Record a decision in the trace."""
        self.trace.events.append(TraceEvent(now - self.t0, what, detail))

    # -- one attempt: events in --------------------------------------------------------------

    def answered(self, attempt: Attempt, response: Response, now: float) -> None:
        """The backend answered ``response`` at ``now`` (before verification): settle its cost."""
        attempt.response = response
        attempt.answered_at = now
        record = attempt.record
        self.settle(attempt, response.usage, response.text, now)
        record.latency, record.ttft, record.model = now - attempt.started, response.ttft, response.model

    def verdict(self, attempt: Attempt, verdict: Verdict | None, now: float) -> _Sentinel | None:
        """The verifiers' ``verdict`` on the answer (``None``: no verifiers) at ``now``:
        rejected → the next launches at once; accepted → ``CANCEL_ALL``, or ``SCORE`` in ``pick``."""
        state, record = attempt.state, attempt.record
        response = attempt.response
        assert response is not None
        ended = attempt.answered_at
        latency = ended - attempt.started
        record.ended = now - self.t0
        if verdict is not None and not verdict.accept:
            state.health.on_rejected(latency, ended)
            state.throttle.on_success()  # it answered: a quality miss, not a load failure
            record.outcome, record.reason = "rejected", verdict.reason
            self.owed += 1
            return None
        state.health.on_success(latency, ended, response.ttft, response.model)
        state.throttle.on_success()
        if self.collect:
            record.outcome = "accepted"
            self.accepted.append(attempt)
            return SCORE if self.scorer is not None and self.scorer.per_response else None
        return self._accept(attempt)

    def scored(self, attempt: Attempt, score: float | BaseException) -> _Sentinel | None:
        """``pick``: the per-response score (or the scorer's exception); ``CANCEL_ALL`` when it
        reaches ``accept_score``."""
        record = attempt.record
        if isinstance(score, BaseException):
            record.reason = f"unscored: {type(score).__name__}: {score}"
            return None
        record.score = score
        threshold = self.policy.accept_score
        if threshold is not None and score >= threshold and self.winner is None:
            self.winner = attempt
            record.reason = f"score {score:g} >= accept_score {threshold:g}"
            return CANCEL_ALL
        return None

    def _accept(self, attempt: Attempt) -> _Sentinel | None:
        if self.winner is not None:  # two near-simultaneous winners: the first stands
            attempt.record.outcome, attempt.record.reason = "cancelled", "a verified response came first"
            return None
        self.winner = attempt
        attempt.record.outcome = "accepted"
        if len(self.in_flight) > 1:  # alone, it ends the run when it ends (`ended`): no cancel needed
            return CANCEL_ALL
        return None

    def failed(self, attempt: Attempt, exc: Exception, now: float) -> _Sentinel | None:
        """The call raised ``exc`` at ``now``: the next launches at once (a retry may be booked);
        a fatal kind stops the run (``CANCEL_ALL``)."""
        record = attempt.record
        record.ended = now - self.t0
        record.latency = now - attempt.started
        record.outcome, record.error = "failed", exc
        kind = self.record_failure(attempt, exc, now)
        if kind == CLOSED:
            return CANCEL_ALL
        if isinstance(exc, BackendError) and kind in self.plan.fatal_kinds:
            self.fatal = exc
            return CANCEL_ALL
        self.owed += 1
        self._schedule_retry(attempt.state, exc, now)
        return None

    def record_failure(self, attempt: Attempt, exc: Exception, now: float) -> str:
        """Health, throttle, cost and reason of a failed call (race attempt or judge call); its kind
        (``CLOSED``: the runtime's clients were closed under it — not the backend's failure)."""
        record, state = attempt.record, attempt.state
        resources = current_resources()
        if resources is not None and resources.closed:
            record.outcome, record.reason = "cancelled", _CLOSED_REASON
            if self.fatal is None:
                self.fatal = RuntimeClosed(CLOSED_IN_FLIGHT)
            return CLOSED  # no health, no throttle; the reservation stays charged, as a cancellation's
        kind = exc.kind if isinstance(exc, BackendError) else "error"
        record.reason = f"{kind}: {exc}" if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
        retry_after = getattr(exc, "retry_after", None)
        if not isinstance(retry_after, (int, float)) or math.isnan(retry_after):
            retry_after = None
        elif retry_after > state.health.config.max_retry_after:
            cap = state.health.config.max_retry_after
            self.event("retry-after capped", f"{state.name} asked for {retry_after:.6g}s; capped at {cap:g}s", now)
        state.health.on_failure(kind, now, retry_after, now - attempt.started)
        if kind != "context_window":  # the request did not fit: no sign of this backend's load
            state.throttle.on_failure()
        partial = getattr(exc, "partial_usage", None)
        if isinstance(partial, Usage):  # it began to answer: the provider bills what it sent
            self.settle(attempt, partial, None, now)
        elif not isinstance(exc, Timeout):  # a refused request costs nothing; a timed-out one may have
            self.charge(attempt, 0.0)
        return kind

    def ended(self, attempt: Attempt, now: float) -> None:
        """Last words of every attempt, at ``now`` (also when cancelled; twice is harmless)."""
        record = attempt.record
        if attempt not in self.in_flight:
            return  # already ended (its task's `finally`, then the run's sweep)
        if record.outcome is None:
            record.outcome = "cancelled"
            record.ended = now - self.t0
            if attempt.response is None:
                attempt.state.health.on_cancelled(now - attempt.started, now)
            else:  # cancelled while verifying or scoring: it did answer
                attempt.state.health.on_unverified(now)
            if self.streaming:
                if attempt.parts:
                    self.charge_received(attempt)
                else:
                    attempt.state.health.on_no_first_token(now - attempt.started, now)
            record.reason = self.cancel_reason(now, attempt)
        attempt.state.health.release()
        self.in_flight.remove(attempt)

    def cancel_reason(self, now: float, attempt: Attempt | None = None) -> str:
        """Why ``attempt`` (or a judge call: ``None``), still running at ``now``, is being cancelled.
        The committed stream itself is cancelled only by the deadline or the caller, never by its
        own commit."""
        winner = self.winner
        if winner is not None and winner is not attempt:
            reason = self.lost_reason  # the same for every loser: formatted once per run
            if reason is None:
                reason = self.lost_reason = (
                    f"{winner.record.backend} {'committed' if self.streaming else 'answered'} first"
                )
            return reason
        if isinstance(self.fatal, RuntimeClosed):
            return _CLOSED_REASON
        if self.fatal is not None:
            return "run stopped by a fatal error"
        if self.policy.deadline is not None and now >= self.t0 + self.policy.deadline:
            return "deadline"
        return "caller cancelled"

    # -- money -------------------------------------------------------------------------------

    def settle(self, attempt: Attempt, usage: Usage, text: str | None, now: float) -> None:
        """Charge what the provider reported — unless it is not usage (negative, not an integer,
        above ``MAX_TOKEN_COUNT``): then an estimate, marked so. Usage above the reservation is real
        money: charged as reported; when that crosses ``max_cost``, nothing more is launched."""
        record, state, query = attempt.record, attempt.state, self.query
        input_tokens, output_tokens, estimated = usage.input_tokens, usage.output_tokens, usage.estimated
        if not (
            (
                type(input_tokens) is int
                and type(output_tokens) is int
                and 0 <= input_tokens <= MAX_TOKEN_COUNT
                and 0 <= output_tokens <= MAX_TOKEN_COUNT
            )
            or (_is_count(input_tokens) and _is_count(output_tokens))  # an int subclass, not a bool
        ):
            self.event(
                "usage ignored",
                f"{state.name} reported input_tokens={input_tokens!r}, output_tokens={output_tokens!r}, "
                "which is not usage: estimated instead",
                now,
            )
            input_tokens = state.input_tokens(query, self.input_estimate)
            output_tokens = min(estimate_tokens(text), query.max_tokens) if text is not None else query.max_tokens
            estimated = True
        record.input_tokens, record.output_tokens, record.usage_estimated = input_tokens, output_tokens, estimated
        actual = (input_tokens * state.input_price + output_tokens * state.output_price) / 1e6
        self.charge(attempt, actual)
        max_cost = self.policy.max_cost
        if actual > attempt.reserved + EPSILON and max_cost is not None and self.committed > max_cost + EPSILON:
            if output_tokens > query.max_tokens:
                detail = f"{state.name} reported {output_tokens} output tokens > max_tokens {query.max_tokens}"
            else:
                bound = state.input_tokens(query, self.input_estimate)
                detail = f"{state.name} reported {input_tokens} input tokens > the input bound {bound}"
            self.event("ceiling crossed", detail, now)
            self.halted = True

    def charge(self, attempt: Attempt, actual: float) -> None:
        """Replace what ``attempt`` is charged (its reservation at first) by ``actual`` USD."""
        self.committed += actual - attempt.record.cost
        attempt.record.cost = actual

    def charge_received(self, attempt: Attempt) -> None:
        """A stream that stopped early is charged its input and the text it sent (the provider bills it)."""
        record, state = attempt.record, attempt.state
        output = min(estimate_tokens("".join(attempt.parts)), self.query.max_tokens)
        record.input_tokens = state.input_tokens(self.query, self.input_estimate)
        record.output_tokens, record.usage_estimated = output, True
        self.charge(attempt, (record.input_tokens * state.input_price + output * state.output_price) / 1e6)

    # -- judge calls (a scorer calling a backend through the run) -----------------------------

    def judge_admit(self, state: BackendState, query: Query, now: float) -> Attempt | BaseException:
        """Admit a scorer's call to ``state`` (reserved against the ceiling, traced), or the error."""
        from ._errors import Unavailable

        worst = state.worst_case_cost(query)
        max_cost = self.policy.max_cost
        if max_cost is not None and self.committed + worst > max_cost + EPSILON:
            return BudgetExceeded(f"judge call to {state.name} (worst case ${worst:.6f}) does not fit max_cost")
        tokens = state.input_tokens(query) + query.max_tokens
        reason = state.health.never_admits(tokens) or state.health.acquire(now, tokens)
        if reason is not None:
            self.skip(state, f"judge call: {reason}", now)
            self.trace.attempts[-1].trigger = "judge"
            return Unavailable(f"judge backend not admitted: {reason}", backend=state.name)
        record = AttemptRecord(
            backend=state.name,
            provider=state.provider,
            region=state.region,
            trigger="judge",
            why="scorer",
            started=now - self.t0,
            reserved=worst,
            cost=worst,
        )
        self.trace.attempts.append(record)
        self.committed += worst
        return Attempt(state, record, worst, now)

    def judge_failed(self, attempt: Attempt, exc: Exception, now: float) -> None:
        """The judge call raised ``exc`` at ``now``."""
        record = attempt.record
        record.outcome, record.ended, record.latency, record.error = (
            "failed",
            now - self.t0,
            now - attempt.started,
            exc,
        )
        self.record_failure(attempt, exc, now)

    def judge_cancelled(self, attempt: Attempt, now: float) -> None:
        """The judge call was cancelled at ``now``."""
        record = attempt.record
        record.outcome, record.ended, record.reason = "cancelled", now - self.t0, self.cancel_reason(now)
        attempt.state.health.on_cancelled(now - attempt.started, now)

    def judge_done(self, attempt: Attempt, response: Response, now: float) -> None:
        """The judge call answered ``response`` at ``now``."""
        state, record = attempt.state, attempt.record
        self.settle(attempt, response.usage, response.text, now)
        state.health.on_success(now - attempt.started, now, response.ttft, response.model)
        state.throttle.on_success()
        record.outcome, record.ended, record.latency = "accepted", now - self.t0, now - attempt.started

    # -- streams -----------------------------------------------------------------------------

    def first_token(self, attempt: Attempt, now: float) -> None:
        """The first piece of text of ``attempt`` arrived at ``now``."""
        record = attempt.record
        record.ttft = now - attempt.started
        attempt.state.health.on_first_token(record.ttft, now)

    def stream_rejected(self, attempt: Attempt, verdict: Verdict, now: float) -> None:
        """(A prefix of) a streamed answer was rejected at ``now``: the next launches at once."""
        record = attempt.record
        record.ended, record.outcome, record.reason = now - self.t0, "rejected", verdict.reason
        attempt.state.health.on_rejected(now - attempt.started, now)
        attempt.state.throttle.on_success()
        self.charge_received(attempt)
        self.owed += 1

    def commit(self, attempt: Attempt, why: str, now: float) -> list[Attempt] | None:
        """Make ``attempt`` the stream the caller reads: the other attempts to cancel; ``None``
        if another stream committed first (cancel this one)."""
        if self.winner is not None:
            return None
        self.winner = attempt
        self.event("commit", f"{attempt.record.backend}: {why}", now)
        return [other for other in self.in_flight if other is not attempt]

    def stream_done(
        self,
        attempt: Attempt,
        usage: Usage | None,
        model: str | None,
        finish: str | None,
        tool_calls: tuple[ToolCall, ...],
        request_id: str | None,
        now: float,
    ) -> Response:
        """The stream of ``attempt`` ended at ``now``: its whole response, charged."""
        state, record = attempt.state, attempt.record
        text = "".join(attempt.parts)
        if usage is None:
            usage = Usage(
                state.input_tokens(self.query, self.input_estimate),
                min(estimate_tokens(text), self.query.max_tokens),
                estimated=True,
            )
        response = Response(
            text,
            usage,
            model=model,
            ttft=record.ttft,
            finish_reason=finish,
            tool_calls=tool_calls,
            request_id=request_id,
        )
        attempt.response = response
        record.latency, record.model = now - attempt.started, model
        self.settle(attempt, usage, text, now)
        return response

    def stream_succeeded(self, attempt: Attempt, ended: float) -> None:
        """The committed stream read to its end (at ``ended``) and passed."""
        response = attempt.response
        assert response is not None
        attempt.state.health.on_success(attempt.record.latency or 0.0, ended, None, response.model)
        attempt.state.throttle.on_success()
        attempt.record.outcome = "accepted"

    def stream_failed(self, attempt: Attempt, exc: Exception, now: float) -> _Sentinel | None:
        """A stream failed at ``now``: before commit like any failed attempt; after, the stream ends with it."""
        partial = attempt.parts and getattr(exc, "partial_usage", None) is None
        action = None
        if attempt is self.winner:
            record = attempt.record
            record.ended, record.latency, record.outcome, record.error = (
                now - self.t0,
                now - attempt.started,
                "failed",
                exc,
            )
            self.record_failure(attempt, exc, now)
            self.stream_error = exc if isinstance(exc, BackendError) else _after_commit_error(exc, attempt.state.name)
        else:
            action = self.failed(attempt, exc, now)
        if partial:
            self.charge_received(attempt)
        return action

    # -- the end -----------------------------------------------------------------------------

    @property
    def needs_scores(self) -> bool:
        """``pick`` with a scorer comparing all responses: call ``set_scores`` before ``result``."""
        return (
            self.fatal is None
            and self.stream_error is None
            and self.winner is None
            and bool(self.accepted)
            and self.scorer is not None
            and not self.scorer.per_response
            and not self.scored_all
        )

    def candidates(self) -> list[Candidate]:
        """The accepted responses, as the scorer sees them."""
        return [self.candidate(a) for a in self.accepted]

    def candidate(self, attempt: Attempt) -> Candidate:
        """One accepted response as the scorer sees it."""
        assert attempt.response is not None
        latency = attempt.record.latency or 0.0
        return Candidate(attempt.state.name, attempt.response, latency, attempt.record.cost)

    def set_scores(self, scores: Sequence[float | None] | BaseException, now: float) -> None:
        """The scorer's scores of ``candidates()`` (or its exception)."""
        self.scored_all = True
        if isinstance(scores, BaseException):
            self.event("scorer failed", f"{type(scores).__name__}: {scores}", now)
            scores = [None] * len(self.accepted)
        for a, s in zip(self.accepted, scores, strict=True):
            a.record.score = s

    def result(self, now: float) -> Result:
        """The run's ``Result`` at ``now`` (every attempt ended), or the error to raise."""
        trace = self.trace
        trace.cost = self.committed
        if self.fatal is not None:
            trace.outcome = "fatal"
            raise self.fatal
        if self.stream_error is not None:
            trace.outcome = "stream_failed"
            raise self.stream_error
        if self.deadline_passed and self.needs_scores:  # the deadline cut the scoring short
            trace.outcome = "deadline"
            raise DeadlineExceeded(
                f"deadline of {self.policy.deadline:g}s passed while scoring {len(self.accepted)} accepted "
                "responses: none was picked",
                trace=trace,
            )
        winner = self.winner
        if winner is not None and winner.record.outcome != "accepted":  # a committed stream cut short
            return self._fail()
        if winner is None and self.accepted:
            winner = self._best()
        if winner is None:
            return self._fail()
        for a in self.accepted:
            if a is not winner and a.record.reason == "":
                a.record.reason = f"not picked: {winner.record.backend} scored best"
        assert winner.response is not None
        latency = (winner.record.ended or 0.0) if not self.collect else now - self.t0
        trace.outcome, trace.winner, trace.latency = "ok", winner.record.backend, latency
        if self.streaming:
            ttft = self.first_delta
        else:
            record = winner.record
            ttft = record.started + record.ttft if record.ttft is not None and record.started is not None else None
        return Result(
            winner.response, winner.record.backend, latency, self.committed, trace, winner.record.score, ttft=ttft
        )

    def _best(self) -> Attempt:
        """``pick``: the best-scored accepted response; ties → lower latency, then lower cost."""

        def rank(a: Attempt) -> tuple[bool, float, float, float]:
            score = a.record.score
            return (score is not None, score if score is not None else 0.0, -(a.record.latency or 0.0), -a.record.cost)

        return max(self.accepted, key=rank)

    def _fail(self) -> Result:
        trace = self.trace
        summary = "; ".join(f"{a.backend}: {a.outcome} ({a.reason})" for a in trace.attempts) or "no candidates"
        if self.deadline_passed:
            trace.outcome = "deadline"
            cut = self._cut()
            raise DeadlineExceeded(f"deadline of {self.policy.deadline:g}s passed {cut}: {summary}", trace=trace)
        if self.launched == 0 and self.cost_skips:
            trace.outcome = "budget"
            raise BudgetExceeded(f"no candidate fits max_cost=${self.policy.max_cost}: {summary}", trace=trace)
        trace.outcome = "no_acceptable"
        raise NoAcceptableResponse(f"no acceptable response after {self.launched} attempt(s): {summary}", trace=trace)

    def _cut(self) -> str:
        """What the deadline cut: a committed stream (still sending, or its verify after commit) or the race."""
        winner = self.winner
        if winner is None or not self.streaming:
            return "with no accepted response"
        size = sum(map(len, winner.parts))
        if winner.response is not None:  # read to its end: the verifiers after commit were running
            return (
                f"while verifying the committed stream from {winner.record.backend}, after its whole text "
                f"({size} characters) was sent"
            )
        return f"while the committed stream from {winner.record.backend} was still sending ({size} characters read)"


def _after_commit_error(exc: Exception, backend: str) -> BackendError:
    """A non-``BackendError`` from a committed stream, as the typed error the caller sees."""
    return BadResponse(f"stream failed after commit: {type(exc).__name__}: {exc}", backend=backend)


def _is_count(value: object) -> bool:
    """A token count a provider may report: an integer from 0 to ``MAX_TOKEN_COUNT``."""
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_TOKEN_COUNT
