"""The one engine: a staggered race (trio's happy-eyeballs loop, grown up).

Launch attempt 1; launch the next when the delay passes — or at once when an attempt fails or
is rejected; each attempt runs, then is verified (and, in ``pick``, scored) in its own task;
the first accepted response cancels every other attempt. Every mode is this loop with other
knobs (see ``_policy``). A run with one possible attempt takes a path without a task group.

Cancellation: when ``execute`` returns or raises, every attempt it started has finished or
been cancelled; the caller's cancellation propagates through it unchanged.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from ._clock import loop_clock
from ._errors import (
    BackendError,
    BudgetExceeded,
    DeadlineExceeded,
    NoAcceptableResponse,
    PolicyError,
    Timeout,
    Unavailable,
)
from ._query import Query, Response, StreamChunk, ToolCall, Usage, estimate_input_tokens, estimate_tokens
from ._trace import AttemptRecord, Trace, TraceEvent
from .scorers import Candidate, Scorer, as_scorer
from .verifiers import check

if TYPE_CHECKING:
    from ._policy import Policy
    from ._runtime import BackendState, Runtime

_EPSILON = 1e-12  # float slack when comparing money against the ceiling
_ORDER_LABELS = {
    "as_listed": "as listed",
    "cost": "by worst-case cost",
    "latency": "by predicted latency",
    "weighted": "drawn by weight",
    "p2c": "by power of two choices (latency x load)",
}
_LIMIT_POLL = 0.005  # seconds between checks while the primary waits for a rate/concurrency slot
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


class _Attempt:
    """Book-keeping of one launched attempt (the public face is its ``AttemptRecord``)."""

    __slots__ = ("parts", "record", "reserved", "response", "scope", "started", "state")

    def __init__(self, state: BackendState, record: AttemptRecord, reserved: float, started: float) -> None:
        self.state = state
        self.record = record
        self.reserved = reserved
        self.started = started
        self.response: Response | None = None
        self.scope: anyio.CancelScope | None = None  # streams: each attempt can be cancelled alone
        self.parts: list[str] = []  # streams: the text received so far


class _Run:
    """One call of ``run``: the scheduler state and the loop."""

    def __init__(
        self,
        runtime: Runtime,
        query: Query,
        policy: Policy,
        states: Sequence[BackendState],
        sink: MemoryObjectSendStream[str] | None = None,
    ) -> None:
        self.rt = runtime
        self.sink = sink  # a stream: the committed attempt's text goes here
        self.stream_error: BackendError | None = None  # the committed stream failed after commit
        self.first_delta: float | None = None  # a stream: when the caller took its first piece (run time)
        self.query = query
        self.policy = policy
        self.now = loop_clock()
        self.t0 = self.now()
        self.trace = Trace(
            mode=policy.mode,
            policy=policy.name,
            wall_time=time.time(),
            candidates=[s.name for s in states],
            max_cost=policy.max_cost,
            tenant=query.tenant,
        )
        self.input_estimate = estimate_input_tokens(query)  # the generic input-token bound, once per run
        self.tokens = self.input_estimate + query.max_tokens  # what rate limits are charged per attempt
        self.queue = self._ordered(states)
        self.order_label = _ORDER_LABELS[policy.effective_order]
        self.max_attempts = policy.effective_max_attempts
        self.max_parallel = policy.max_parallel or self.max_attempts
        self.collect = policy.scorer is not None
        self.scorer: Scorer | None = as_scorer(policy.scorer) if policy.scorer is not None else None
        self.committed = 0.0  # open reservations + settled costs, USD
        self.launched = 0
        self.in_flight: list[_Attempt] = []
        self.owed = 0  # immediate launches owed to failures and rejections
        self.winner: _Attempt | None = None
        self.accepted: list[_Attempt] = []
        self.fatal: BackendError | None = None
        self.budget = runtime.hedge_budget(policy.budget) if policy.budget is not None else None
        self.wake: anyio.Event | None = None
        self.tg: TaskGroup | None = None
        self.deadline_passed = False
        self.cost_skips = 0
        self.primary: BackendState | None = None  # the first attempt's backend: hedges are timed on it
        self.fatal_kinds = frozenset(policy.fatal)
        self.halted = False  # the ceiling was crossed by over-reported usage: launch nothing more
        self.open_skips: list[BackendState] = []  # candidates skipped with an open breaker (for panic mode)
        self.panicking = False  # panic mode: every breaker was open; retries ignore breakers too
        self.retry_due: list[tuple[float, int, BackendState, int]] = []  # heap of (due, seq, backend, retry number)
        self.retries_used: dict[int, int] = {}  # id(state) -> retries booked
        self.retry_seq = 0

    def _ordered(self, states: Sequence[BackendState]) -> list[BackendState]:
        """Candidates in launch order: as listed, by worst-case cost, or by predicted latency.

        A backend with no estimate (no recent traffic, no probes) is ranked as a typical one
        — the median of the others' predictions — not last: otherwise a backend demoted once
        would never be tried again, its window would stay empty and it would stay last.
        Ties keep the listed order.
        """
        order = self.policy.effective_order
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

    # -- the loop ----------------------------------------------------------------------------

    async def execute(self) -> Result:
        """Run to a result or an error; every attempt has ended when this returns or raises."""
        policy = self.policy
        if self.budget is not None:
            self.budget.deposit(self.t0)
        try:
            if policy.deadline is None:  # no scope to enter: ~10-25 µs saved per run
                await self._run_attempts()
            else:
                with anyio.CancelScope(deadline=self.t0 + policy.deadline) as scope:
                    await self._run_attempts()
                self.deadline_passed = scope.cancelled_caught
            return await self._finish()
        except BaseException:
            self.trace.outcome = "cancelled" if self.trace.outcome == "running" else self.trace.outcome
            raise
        finally:
            self.trace.cost = self.committed
            self.rt.emit(self.trace)

    async def _run_attempts(self) -> None:
        if self.max_attempts == 1 and not self.collect and not self.policy.retries:
            attempt = await self._launch("primary", waiting_allowed=True, now=self.t0)
            if attempt is not None:
                await self._attempt(attempt)
        else:
            try:
                async with anyio.create_task_group() as tg:
                    self.tg = tg
                    await self._schedule(tg)
            finally:
                # A task cancelled before its first step (asyncio) never runs its own `finally`:
                # give back what its launch took, so no slot outlives the run.
                for attempt in list(self.in_flight):
                    self._ended(attempt)

    async def _schedule(self, tg: TaskGroup) -> None:
        next_at = -math.inf  # when the next timed launch is due
        zero_delay = self.policy.effective_delay == 0.0
        timed = True
        while self.winner is None and self.fatal is None and not self.halted:
            now = self.now()
            room = len(self.in_flight) < self.max_parallel
            if not (self.launched < self.max_attempts and self.queue):
                # no new candidate: a failure may still be retried on its backend after a backoff
                if not (self.owed and self.retry_due):
                    if not (self.in_flight and self.policy.retries):
                        return  # nothing more to launch: the task group waits for what is in flight
                    self.wake = anyio.Event()  # an attempt in flight may fail and book a retry
                    await self.wake.wait()
                    continue
                due = self.retry_due[0][0]
                if room and now >= due:
                    self.owed -= 1
                    attempt = self._launch_retry(now)
                    if attempt is not None:
                        tg.start_soon(self._attempt, attempt)
                    continue
                self.wake = anyio.Event()
                with anyio.move_on_after(due - now if room else math.inf):
                    await self.wake.wait()
                continue
            if room and (self.owed or now >= next_at):
                if self.owed:
                    self.owed -= 1
                    trigger = "after failure"
                elif not self.launched:
                    trigger = "primary"
                elif zero_delay:
                    trigger = "parallel"
                else:
                    trigger = "hedge"
                    if self.budget is not None and not self.budget.try_withdraw(now):
                        self._event("skipped", "hedge budget: no tokens left for a hedge")
                        timed, next_at = False, math.inf  # no more timed hedges; failures still launch
                        continue
                attempt = await self._launch(trigger, waiting_allowed=not self.launched, now=now)
                if attempt is not None:
                    tg.start_soon(self._attempt, attempt)
                    next_at = now + self._delay(now) if timed else math.inf
                continue
            if not self.in_flight:
                return  # nothing in flight and nothing due (a hedge the budget refused)
            self.wake = anyio.Event()
            with anyio.move_on_after(next_at - now if room else math.inf):
                await self.wake.wait()

    def _delay(self, now: float) -> float:
        """Seconds from this launch to the next timed one: fixed, or a quantile of the primary."""
        spec = self.policy.effective_delay
        if not isinstance(spec, tuple):
            return spec
        kind, q = spec
        if kind == "auto":
            assert self.policy.budget is not None
            q = 1.0 - self.policy.budget.max_extra_load
        primary = self.primary
        if primary is None:
            value = None
        elif self.sink is not None:  # a stream: hedge on the first token
            value = primary.health.ttft_quantile(q, now)
        else:
            value = primary.health.quantile(q, now)
        if value is None:
            value = self.policy.fallback_delay
        return min(max(value, self.policy.min_delay), self.policy.max_delay)

    # -- launching ---------------------------------------------------------------------------

    async def _launch(self, trigger: str, *, waiting_allowed: bool, now: float) -> _Attempt | None:
        """Pick the next candidate that can run at ``now``, reserve its cost and book it; or None."""
        while self.queue and not self.halted:  # no await between `now` and a launch, except waiting for a slot
            index, why = self._choose(now)
            state = self.queue.pop(index)
            attempt = await self._admit(state, trigger, why, now, waiting_allowed=waiting_allowed)
            if attempt is not None:
                return attempt
            now = self.now()
        if self.launched == 0 and not self.in_flight and self.open_skips and self.policy.panic and not self.halted:
            return self._panic(now)
        return None

    async def _admit(
        self, state: BackendState, trigger: str, why: str, now: float, *, waiting_allowed: bool
    ) -> _Attempt | None:
        """Launch ``state`` now if it fits the ceiling, its window, the throttle and its limits; else skip it."""
        worst = state.worst_case_cost(self.query, self.input_estimate)
        if self.policy.max_cost is not None and self.committed + worst > self.policy.max_cost + _EPSILON:
            self.cost_skips += 1
            left = self.policy.max_cost - self.committed
            self._skip(state, f"cost ceiling: worst case ${worst:.6f} > ${max(left, 0.0):.6f} left")
            return None
        window = state.context_window
        if window is not None:
            needed = state.input_tokens(self.query, self.input_estimate)
            if needed + self.query.max_tokens > window:
                self._skip(
                    state, f"context window: {needed} input + {self.query.max_tokens} max_tokens > {window} tokens"
                )
                return None
        if trigger == "after failure" and not state.throttle.allow():
            self._skip(state, "failover throttle: this backend fails too often")
            return None
        tokens = self.tokens
        never = state.health.never_admits(tokens)
        if never is not None:
            self._skip(state, never)
            return None
        reason = state.health.acquire(now, tokens)
        if reason is not None and waiting_allowed and self.policy.limit_wait > 0 and not reason.startswith("circuit"):
            reason = await self._wait_for_slot(state, tokens, reason)
            now = self.now()
        if reason is not None:
            if reason.startswith("circuit open"):
                self.open_skips.append(state)
            self._skip(state, reason)
            return None
        return self._book(state, trigger, why, worst, now)

    def _book(self, state: BackendState, trigger: str, why: str, worst: float, now: float) -> _Attempt:
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
        attempt = _Attempt(state, record, worst, now)
        if trigger != "retry":
            self.launched += 1
        self.in_flight.append(attempt)
        if self.primary is None:
            self.primary = state
        return attempt

    def _panic(self, now: float) -> _Attempt | None:
        """Every candidate was skipped with an open breaker: try the one whose cooldown ends first."""
        state = min(self.open_skips, key=lambda s: s.health.breaker.open_until or 0.0)
        self.open_skips.clear()
        until = state.health.breaker.open_until
        left = f"{until - now:.3g}s" if until is not None else "?"
        worst = state.worst_case_cost(self.query, self.input_estimate)
        if self.policy.max_cost is not None and self.committed + worst > self.policy.max_cost + _EPSILON:
            return None
        reason = state.health.acquire(now, self.tokens, ignore_breaker=True)
        if reason is not None:
            self._event("panic refused", f"{state.name}: {reason}")
            return None
        self._event("panic", f"every candidate's breaker is open; trying {state.name} (its cooldown ends in {left})")
        self.panicking = True
        return self._book(state, "panic", "panic: its cooldown ends first", worst, now)

    def _launch_retry(self, now: float) -> _Attempt | None:
        """Launch the retry that is due (same backend, after its backoff), or skip it."""
        _, _, state, number = heapq.heappop(self.retry_due)
        worst = state.worst_case_cost(self.query, self.input_estimate)
        if self.policy.max_cost is not None and self.committed + worst > self.policy.max_cost + _EPSILON:
            self._skip(state, f"retry {number}: cost ceiling")
            return None
        if not state.throttle.allow():
            self._skip(state, f"retry {number}: failover throttle: this backend fails too often")
            return None
        reason = state.health.acquire(now, self.tokens, ignore_breaker=self.panicking)
        if reason is not None:
            self._skip(state, f"retry {number}: {reason}")
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
            self._event("retry not scheduled", f"{state.name}: a backoff of {wait:.3g}s ends after the deadline")
            return
        self.retries_used[id(state)] = number
        self.retry_seq += 1  # ties on `due` go by booking order, never by comparing backends
        heapq.heappush(self.retry_due, (due, self.retry_seq, state, number))
        self._event("retry scheduled", f"{state.name}: retry {number} in {wait:.3g}s")

    def _choose(self, now: float) -> tuple[int, str]:
        """The next candidate's index in the queue, and why: the head of the queue, unless a
        hedge can go to another provider and region than the attempts in flight."""
        if not self.in_flight or len(self.queue) == 1:
            return 0, f"{'next' if self.launched else 'first'} {self.order_label}"
        busy_regions = {(a.state.provider, a.state.region) for a in self.in_flight}
        regions = {r for _, r in busy_regions}
        providers = {p for p, _ in busy_regions}
        best, best_rank = 0, 3
        for i, s in enumerate(self.queue):
            rank = (
                (s.region in regions) + (s.provider in providers) * 2
                if (s.provider, s.region) not in busy_regions
                else 3
            )
            if rank < best_rank:
                best, best_rank = i, rank
                if rank == 0:
                    break
        if best == 0:
            return 0, f"next {self.order_label}"
        chosen = self.queue[best]
        return best, f"other failure domain than in flight ({chosen.provider}/{chosen.region})"

    async def _wait_for_slot(self, state: BackendState, tokens: int, reason: str) -> str | None:
        """The primary may wait up to ``limit_wait`` for a rate or concurrency slot (polled every 5 ms)."""
        give_up = self.now() + self.policy.limit_wait
        waited: str | None = reason
        while waited is not None:
            now = self.now()
            if now >= give_up:
                return f"{waited} (waited {self.policy.limit_wait:g}s)"
            await anyio.sleep(min(_LIMIT_POLL, give_up - now))
            waited = state.health.acquire(self.now(), tokens)
        return None

    def _skip(self, state: BackendState, reason: str) -> None:
        self.trace.attempts.append(
            AttemptRecord(
                backend=state.name,
                provider=state.provider,
                region=state.region,
                outcome="skipped",
                reason=reason,
                started=self.now() - self.t0,
            )
        )

    def _event(self, what: str, detail: str) -> None:
        self.trace.events.append(TraceEvent(self.now() - self.t0, what, detail))

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, attempt: _Attempt) -> None:
        """Call the backend, verify (and score), and report; always ends in one outcome."""
        if self.sink is not None:
            await self._stream_attempt(attempt)
            return
        state, record = attempt.state, attempt.record
        health = state.health
        try:
            try:
                response = await self._call(state, self.query)
            except Exception as exc:
                self._failed(attempt, exc)
                return
            ended = self.now()
            attempt.response = response
            latency = ended - attempt.started
            self._settle(attempt, response)
            record.latency, record.ttft, record.model = latency, response.ttft, response.model
            if self.policy.verify:
                verdict = await check(self.policy.verify, self.query, response)
                now = self.now()
            else:
                verdict, now = None, ended
            record.ended = now - self.t0
            if verdict is not None and not verdict.accept:
                health.on_rejected(latency, ended)
                state.throttle.on_success()  # it answered: a quality miss, not a load failure
                record.outcome, record.reason = "rejected", verdict.reason
                self.owed += 1
                return
            health.on_success(latency, ended, response.ttft, response.model)
            state.throttle.on_success()
            if self.collect:
                await self._collect(attempt)
            else:
                self._accept(attempt)
        finally:
            self._ended(attempt)

    async def _call(self, state: BackendState, query: Query) -> Response:
        """One call of a backend within the policy's ``attempt_timeout``."""
        timeout = self.policy.attempt_timeout
        if timeout is None:
            return await state.backend.complete(query)
        with anyio.move_on_after(timeout):
            return await state.backend.complete(query)
        raise Timeout(f"no answer within attempt_timeout={timeout:g}s", backend=state.name)

    def _failed(self, attempt: _Attempt, exc: Exception) -> None:
        now = self.now()
        record = attempt.record
        record.ended = now - self.t0
        record.latency = now - attempt.started
        record.outcome, record.error = "failed", exc
        kind = self._record_failure(attempt, exc, now)
        if isinstance(exc, BackendError) and kind in self.fatal_kinds:
            self.fatal = exc
            self._cancel_all()
            return
        self.owed += 1
        self._schedule_retry(attempt.state, exc, now)

    def _record_failure(self, attempt: _Attempt, exc: Exception, now: float) -> str:
        """Health, throttle, cost and reason of a failed call (race attempt or judge call); its kind."""
        record, state = attempt.record, attempt.state
        kind = exc.kind if isinstance(exc, BackendError) else "error"
        record.reason = f"{kind}: {exc}" if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
        retry_after = getattr(exc, "retry_after", None)
        if not isinstance(retry_after, (int, float)) or math.isnan(retry_after):
            retry_after = None
        elif retry_after > state.health.config.max_retry_after:
            cap = state.health.config.max_retry_after
            self._event("retry-after capped", f"{state.name} asked for {retry_after:.6g}s; capped at {cap:g}s")
        state.health.on_failure(kind, now, retry_after, now - attempt.started)
        if kind != "context_window":  # the request did not fit: no sign of this backend's load
            state.throttle.on_failure()
        partial = getattr(exc, "partial_usage", None)
        if isinstance(partial, Usage):  # it began to answer: the provider bills what it sent
            self._settle_usage(attempt, partial, None)
        elif not isinstance(exc, Timeout):  # a refused request costs nothing; a timed-out one may have
            self._charge(attempt, 0.0)
        return kind

    def _ended(self, attempt: _Attempt) -> None:
        """Last words of every attempt (runs during cancellation too: no awaits here)."""
        record = attempt.record
        if attempt not in self.in_flight:
            return  # already ended (its task's `finally`, then the run's sweep)
        if record.outcome is None:
            now = self.now()
            record.outcome = "cancelled"
            record.ended = now - self.t0
            if attempt.response is None:
                attempt.state.health.on_cancelled(now - attempt.started, now)
            else:  # cancelled while verifying or scoring: it did answer
                attempt.state.health.on_unverified(now)
            if self.sink is not None:
                if attempt.parts:
                    self._charge_received(attempt)
                else:
                    attempt.state.health.on_no_first_token(now - attempt.started, now)
            record.reason = self._cancel_reason(attempt)
        attempt.state.health.release()
        self.in_flight.remove(attempt)
        if self.wake is not None:
            self.wake.set()

    def _cancel_reason(self, attempt: _Attempt | None = None) -> str:
        """Why ``attempt`` (or a judge call: ``None``) was cancelled. The committed stream itself
        is cancelled only by the deadline or the caller, never by its own commit."""
        if self.winner is not None and self.winner is not attempt:
            verb = "committed" if self.sink is not None else "answered"
            return f"{self.winner.record.backend} {verb} first"
        if self.fatal is not None:
            return "run stopped by a fatal error"
        if self.policy.deadline is not None and self.now() >= self.t0 + self.policy.deadline:
            return "deadline"
        return "caller cancelled"

    def _settle(self, attempt: _Attempt, response: Response) -> None:
        self._settle_usage(attempt, response.usage, response.text)

    def _settle_usage(self, attempt: _Attempt, usage: Usage, text: str | None) -> None:
        """Charge what the provider reported — unless it is not usage (negative, not an integer):
        then an estimate, marked so. Usage above the reservation is real money: charged as
        reported; when that crosses ``max_cost``, nothing more is launched in this run."""
        record, state, query = attempt.record, attempt.state, self.query
        input_tokens, output_tokens, estimated = usage.input_tokens, usage.output_tokens, usage.estimated
        if not (_is_count(input_tokens) and _is_count(output_tokens)):
            self._event(
                "usage ignored",
                f"{state.name} reported input_tokens={input_tokens!r}, output_tokens={output_tokens!r}, "
                "which is not usage: estimated instead",
            )
            input_tokens = state.input_tokens(query, self.input_estimate)
            output_tokens = min(estimate_tokens(text), query.max_tokens) if text is not None else query.max_tokens
            estimated = True
        record.input_tokens, record.output_tokens, record.usage_estimated = input_tokens, output_tokens, estimated
        actual = (input_tokens * state.input_price + output_tokens * state.output_price) / 1e6
        self._charge(attempt, actual)
        max_cost = self.policy.max_cost
        if actual > attempt.reserved + _EPSILON and max_cost is not None and self.committed > max_cost + _EPSILON:
            if output_tokens > query.max_tokens:
                detail = f"{state.name} reported {output_tokens} output tokens > max_tokens {query.max_tokens}"
            else:
                bound = state.input_tokens(query, self.input_estimate)
                detail = f"{state.name} reported {input_tokens} input tokens > the input bound {bound}"
            self._event("ceiling crossed", detail)
            self.halted = True

    def _charge(self, attempt: _Attempt, actual: float) -> None:
        self.committed += actual - attempt.record.cost
        attempt.record.cost = actual

    def _accept(self, attempt: _Attempt) -> None:
        if self.winner is not None:  # two near-simultaneous winners: the first stands
            attempt.record.outcome, attempt.record.reason = "cancelled", "a verified response came first"
            return
        self.winner = attempt
        attempt.record.outcome = "accepted"
        if len(self.in_flight) > 1:  # alone, it ends the run by waking the scheduler (`_ended`): no cancel needed
            self._cancel_all()

    def _cancel_all(self) -> None:
        if self.tg is not None:
            self.tg.cancel_scope.cancel()

    async def _collect(self, attempt: _Attempt) -> None:
        """``pick``: keep an accepted response; score it now if the scorer works per response."""
        record = attempt.record
        record.outcome = "accepted"
        self.accepted.append(attempt)
        if self.scorer is None or not self.scorer.per_response:
            return
        try:
            record.score = await self.scorer.score_one(self.query, self._candidate(attempt), _ScoreContext(self))
        except Exception as exc:
            record.reason = f"unscored: {type(exc).__name__}: {exc}"
            return
        threshold = self.policy.accept_score
        if threshold is not None and record.score >= threshold and self.winner is None:
            self.winner = attempt
            record.reason = f"score {record.score:g} >= accept_score {threshold:g}"
            self._cancel_all()

    def _candidate(self, attempt: _Attempt) -> Candidate:
        assert attempt.response is not None
        latency = attempt.record.latency or 0.0
        return Candidate(attempt.state.name, attempt.response, latency, attempt.record.cost)

    # -- streams: the attempt body of a stream (the race loop is the same) ----------------------

    async def _stream_attempt(self, attempt: _Attempt) -> None:
        """Read one attempt's stream; commit it (first token / verified prefix / whole answer)
        and forward its text to the caller, or fail, reject or be cancelled before that."""
        record, health, policy = attempt.record, attempt.state.health, self.policy
        try:
            if self.winner is not None:  # launched just before another stream committed
                return
            with anyio.CancelScope() as attempt.scope:
                try:
                    done = await self._read_stream(attempt)
                except Exception as exc:
                    self._stream_failed(attempt, exc)
                    return
                if not done:
                    return
                response = attempt.response
                assert response is not None
                ended = self.now()
                record.ended = ended - self.t0
                if attempt is not self.winner:  # the whole answer decides (shorter than the prefix, or "complete")
                    verifiers = policy.verify_prefix if policy.commit == "first_token" else policy.verify
                    if not await self._stream_verdict(attempt, verifiers, response):
                        return
                    if not self._commit(attempt, "its whole answer passed" if verifiers else "it answered"):
                        return
                    await self._forward(attempt)
                elif policy.verify:
                    verdict = await check(policy.verify, self.query, response)
                    self._event(
                        "verified after commit", f"{record.backend}: {'ok' if verdict.accept else verdict.reason}"
                    )
                health.on_success(record.latency or 0.0, ended, None, response.model)
                attempt.state.throttle.on_success()
                record.outcome = "accepted"
        finally:
            self._ended(attempt)

    async def _read_stream(self, attempt: _Attempt) -> bool:
        """Read chunks to the end (True, ``attempt.response`` set), or stop early (False: rejected
        by the prefix verifiers, or another stream committed first)."""
        state, record, policy, parts = attempt.state, attempt.record, self.policy, attempt.parts
        usage: Usage | None = None
        model: str | None = None
        finish: str | None = None
        tool_calls: tuple[ToolCall, ...] = ()
        request_id: str | None = None
        first_token_commit = policy.commit == "first_token"
        size = 0
        async with _open_stream(state.backend, self.query) as chunks:
            while (chunk := await self._next_chunk(attempt, chunks)) is not None:
                usage = chunk.usage or usage
                model = chunk.model or model
                finish = chunk.finish_reason or finish
                tool_calls = chunk.tool_calls or tool_calls
                request_id = chunk.request_id or request_id
                if not chunk.text:
                    continue
                if not parts:
                    now = self.now()
                    record.ttft = now - attempt.started
                    state.health.on_first_token(record.ttft, now)
                parts.append(chunk.text)
                size += len(chunk.text)
                if attempt is self.winner:
                    await self._send(chunk.text)
                elif first_token_commit and size >= policy.prefix_chars:
                    prefix = Response("".join(parts), model=model, ttft=record.ttft)
                    if not await self._stream_verdict(attempt, policy.verify_prefix, prefix):
                        return False
                    why = "its prefix passed verify_prefix" if policy.verify_prefix else "first token"
                    if not self._commit(attempt, why):
                        return False
                    await self._forward(attempt)
        text = "".join(parts)
        if usage is None:
            usage = Usage(
                state.input_tokens(self.query, self.input_estimate),
                min(estimate_tokens(text), self.query.max_tokens),
                estimated=True,
            )
        attempt.response = Response(
            text,
            usage,
            model=model,
            ttft=record.ttft,
            finish_reason=finish,
            tool_calls=tool_calls,
            request_id=request_id,
        )
        record.latency, record.model = self.now() - attempt.started, model
        self._settle(attempt, attempt.response)
        return True

    async def _next_chunk(self, attempt: _Attempt, chunks: AsyncIterator[StreamChunk]) -> StreamChunk | None:
        """The next chunk, ``None`` at the end; ``Timeout`` when the first token (``attempt_timeout``)
        or the next one once begun (``stall_timeout``) is late."""
        policy = self.policy
        if attempt.parts:
            limit, what = policy.stall_timeout, f"stream stalled: no new text for {policy.stall_timeout}s"
        elif policy.attempt_timeout is not None:
            limit = attempt.started + policy.attempt_timeout - self.now()
            what = f"no first token within attempt_timeout={policy.attempt_timeout:g}s"
        else:
            limit, what = None, ""
        if limit is None:
            return await anext(chunks, None)
        with anyio.move_on_after(limit):
            return await anext(chunks, None)
        raise Timeout(what, backend=attempt.state.name)

    async def _stream_verdict(self, attempt: _Attempt, verifiers: Sequence[Any], response: Response) -> bool:
        """Apply ``verifiers`` to (a prefix of) a streamed answer; a rejection launches the next."""
        if not verifiers:
            return True
        verdict = await check(verifiers, self.query, response)
        if verdict.accept:
            return True
        record = attempt.record
        now = self.now()
        record.ended, record.outcome, record.reason = now - self.t0, "rejected", verdict.reason
        attempt.state.health.on_rejected(now - attempt.started, now)
        attempt.state.throttle.on_success()
        self._charge_received(attempt)
        self.owed += 1
        return False

    def _commit(self, attempt: _Attempt, why: str) -> bool:
        """Make ``attempt`` the stream the caller reads; cancel every other attempt. False if another
        stream committed first (this one is then cancelled)."""
        if self.winner is not None:
            if attempt.scope is not None:
                attempt.scope.cancel()
            return False
        self.winner = attempt
        self._event("commit", f"{attempt.record.backend}: {why}")
        for other in self.in_flight:
            if other is not attempt and other.scope is not None:
                other.scope.cancel()
        return True

    async def _forward(self, attempt: _Attempt) -> None:
        """Send what the committed attempt received before its commit."""
        for part in attempt.parts:
            await self._send(part)

    async def _send(self, text: str) -> None:
        """Hand ``text`` to the caller (a zero-buffer stream: this returns when the caller took it)."""
        assert self.sink is not None
        await self.sink.send(text)
        if self.first_delta is None:
            self.first_delta = self.now() - self.t0

    def _stream_failed(self, attempt: _Attempt, exc: Exception) -> None:
        """A stream failed: before commit like any failed attempt; after, the stream ends with it."""
        partial = attempt.parts and getattr(exc, "partial_usage", None) is None
        if attempt is self.winner:
            now = self.now()
            record = attempt.record
            record.ended, record.latency, record.outcome, record.error = (
                now - self.t0,
                now - attempt.started,
                "failed",
                exc,
            )
            self._record_failure(attempt, exc, now)
            self.stream_error = exc if isinstance(exc, BackendError) else _after_commit_error(exc, attempt.state.name)
        else:
            self._failed(attempt, exc)
        if partial:
            self._charge_received(attempt)

    def _charge_received(self, attempt: _Attempt) -> None:
        """A stream that stopped early is charged its input and the text it sent (the provider bills it)."""
        record, state = attempt.record, attempt.state
        output = min(estimate_tokens("".join(attempt.parts)), self.query.max_tokens)
        record.input_tokens = state.input_tokens(self.query, self.input_estimate)
        record.output_tokens, record.usage_estimated = output, True
        self._charge(attempt, (record.input_tokens * state.input_price + output * state.output_price) / 1e6)

    # -- the end -----------------------------------------------------------------------------

    async def _finish(self) -> Result:
        trace = self.trace
        trace.cost = self.committed
        if self.fatal is not None:
            trace.outcome = "fatal"
            raise self.fatal
        if self.stream_error is not None:
            trace.outcome = "stream_failed"
            raise self.stream_error
        winner = self.winner
        if winner is not None and winner.record.outcome != "accepted":  # a committed stream cut short
            return self._fail()
        if winner is None and self.accepted:
            winner = await self._best()
        if winner is None:
            return self._fail()
        for a in self.accepted:
            if a is not winner and a.record.reason == "":
                a.record.reason = f"not picked: {winner.record.backend} scored best"
        assert winner.response is not None
        latency = (winner.record.ended or 0.0) if not self.collect else self.now() - self.t0
        trace.outcome, trace.winner, trace.latency = "ok", winner.record.backend, latency
        if self.sink is not None:
            ttft = self.first_delta
        else:
            record = winner.record
            ttft = record.started + record.ttft if record.ttft is not None and record.started is not None else None
        return Result(
            winner.response, winner.record.backend, latency, self.committed, trace, winner.record.score, ttft=ttft
        )

    async def _best(self) -> _Attempt:
        """``pick``: the best-scored accepted response; ties → lower latency, then lower cost."""
        assert self.scorer is not None
        if not self.scorer.per_response:
            candidates = [self._candidate(a) for a in self.accepted]
            try:
                scores = await self.scorer.score_all(self.query, candidates, _ScoreContext(self))
            except Exception as exc:
                self._event("scorer failed", f"{type(exc).__name__}: {exc}")
                scores = [None] * len(candidates)  # type: ignore[list-item]
            for a, s in zip(self.accepted, scores, strict=True):
                a.record.score = s

        def rank(a: _Attempt) -> tuple[bool, float, float, float]:
            score = a.record.score
            return (score is not None, score if score is not None else 0.0, -(a.record.latency or 0.0), -a.record.cost)

        return max(self.accepted, key=rank)

    def _fail(self) -> Result:
        trace = self.trace
        summary = "; ".join(f"{a.backend}: {a.outcome} ({a.reason})" for a in trace.attempts) or "no candidates"
        if self.deadline_passed:
            trace.outcome = "deadline"
            raise DeadlineExceeded(
                f"deadline of {self.policy.deadline:g}s passed with no accepted response: {summary}", trace=trace
            )
        if self.launched == 0 and self.cost_skips:
            trace.outcome = "budget"
            raise BudgetExceeded(f"no candidate fits max_cost=${self.policy.max_cost}: {summary}", trace=trace)
        trace.outcome = "no_acceptable"
        raise NoAcceptableResponse(f"no acceptable response after {self.launched} attempt(s): {summary}", trace=trace)


def _after_commit_error(exc: Exception, backend: str) -> BackendError:
    """A non-``BackendError`` from a committed stream, as the typed error the caller sees."""
    from ._errors import BadResponse

    return BadResponse(f"stream failed after commit: {type(exc).__name__}: {exc}", backend=backend)


@asynccontextmanager
async def _open_stream(backend: Any, query: Query) -> AsyncIterator[AsyncIterator[StreamChunk]]:
    """The backend's ``stream(query)`` (closed on exit), or its ``complete`` as one chunk."""
    stream = getattr(backend, "stream", None)
    if stream is None:
        yield _whole(backend, query)
        return
    chunks = stream(query)
    try:
        yield chunks
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            await close()


async def _whole(backend: Any, query: Query) -> AsyncIterator[StreamChunk]:
    response: Response = await backend.complete(query)
    yield StreamChunk(response.text, response.usage, response.model, response.finish_reason)


class _ScoreContext:
    """Lets a scorer call a backend: through the same admission as attempts (breaker, limits,
    health, ``attempt_timeout``), its cost reserved against the run's ceiling and traced — but
    not a race attempt (it never wins and is never hedged)."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    async def complete(self, backend: Any, query: Query) -> Response:
        """Call ``backend`` (name or object) with ``query`` within ``max_cost`` and the backend's limits."""
        run = self.run
        state = run.rt.state_for(backend)
        worst = state.worst_case_cost(query)
        max_cost = run.policy.max_cost
        if max_cost is not None and run.committed + worst > max_cost + _EPSILON:
            raise BudgetExceeded(f"judge call to {state.name} (worst case ${worst:.6f}) does not fit max_cost")
        now = run.now()
        tokens = state.input_tokens(query) + query.max_tokens
        reason = state.health.never_admits(tokens) or state.health.acquire(now, tokens)
        if reason is not None:
            run._skip(state, f"judge call: {reason}")
            run.trace.attempts[-1].trigger = "judge"
            raise Unavailable(f"judge backend not admitted: {reason}", backend=state.name)
        record = AttemptRecord(
            backend=state.name,
            provider=state.provider,
            region=state.region,
            trigger="judge",
            why="scorer",
            started=now - run.t0,
            reserved=worst,
            cost=worst,
        )
        run.trace.attempts.append(record)
        attempt = _Attempt(state, record, worst, now)
        run.committed += worst
        try:
            response = await run._call(state, query)
        except Exception as exc:
            ended = run.now()
            record.outcome, record.ended, record.latency, record.error = "failed", ended - run.t0, ended - now, exc
            run._record_failure(attempt, exc, ended)
            raise
        except BaseException:
            ended = run.now()
            record.outcome, record.ended, record.reason = "cancelled", ended - run.t0, run._cancel_reason()
            state.health.on_cancelled(ended - now, ended)
            raise
        finally:
            state.health.release()
        ended = run.now()
        run._settle(attempt, response)
        state.health.on_success(ended - now, ended, response.ttft, response.model)
        state.throttle.on_success()
        record.outcome, record.ended, record.latency = "accepted", ended - run.t0, ended - now
        return response


def _is_count(value: object) -> bool:
    """A token count a provider may report: a non-negative integer."""
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


async def execute(
    runtime: Runtime,
    query: Query,
    policy: Policy,
    states: Sequence[BackendState],
    sink: MemoryObjectSendStream[str] | None = None,
) -> Result:
    """Run ``policy`` for ``query`` over the resolved backend ``states``; with a ``sink``, as a
    stream whose committed attempt's text is sent there (``PolicyError`` for a ``pick`` policy:
    see ``check_streamable``)."""
    if sink is not None:
        check_streamable(policy)
    return await _Run(runtime, query, policy, states, sink).execute()


def check_streamable(policy: Policy) -> None:
    """``PolicyError`` unless ``policy`` can stream: a stream commits to one attempt as it
    answers, while a scorer (``pick``) compares whole answers, so it would never be asked."""
    if policy.scorer is not None:
        raise PolicyError(
            f"policy {policy.name or '(unnamed)'!r} is mode {policy.mode!r} with a scorer, which compares whole "
            "answers; a stream commits to the first attempt that answers, so the scorer would be ignored: "
            "call run() for pick, or stream a hedge/race/failover/cascade policy",
            path="$.scorer",
        )
