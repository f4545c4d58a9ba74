"""The one engine: a staggered race (trio's happy-eyeballs loop, grown up).

Launch attempt 1; launch the next when the delay passes — or at once when an attempt fails or
is rejected; each attempt runs, then is verified (and, in ``pick``, scored) in its own task;
the first accepted response cancels every other attempt. Every mode is this loop with other
knobs (see ``_policy``). A run with one possible attempt takes a path without a task group.

Cancellation: when ``execute`` returns or raises, every attempt it started has finished or
been cancelled; the caller's cancellation propagates through it unchanged.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import anyio
import msgspec
from anyio.abc import TaskGroup

from ._clock import loop_clock
from ._errors import BackendError, BudgetExceeded, DeadlineExceeded, NoAcceptableResponse, Timeout
from ._query import Query, Response, estimate_input_tokens
from ._trace import AttemptRecord, Trace, TraceEvent
from .scorers import Candidate, Scorer, as_scorer
from .verifiers import check

if TYPE_CHECKING:
    from ._policy import Policy
    from ._runtime import BackendState, Runtime

_EPSILON = 1e-12  # float slack when comparing money against the ceiling
_ORDER_LABELS = {"as_listed": "as listed", "cost": "by worst-case cost", "latency": "by predicted latency"}
_LIMIT_POLL = 0.005  # seconds between checks while the primary waits for a rate/concurrency slot


class Result(msgspec.Struct):
    """What ``run`` returns: the winning ``response``, its ``backend`` name, the run's ``latency``
    (seconds from start to acceptance), the total ``cost`` of every attempt, and the ``trace``;
    ``score`` in ``pick``; ``route`` the router's route when a ``Router`` chose the policy."""

    response: Response
    backend: str
    latency: float
    cost: float
    trace: Trace
    score: float | None = None
    route: str | None = None


class _Attempt:
    """Book-keeping of one launched attempt (the public face is its ``AttemptRecord``)."""

    __slots__ = ("record", "reserved", "response", "started", "state")

    def __init__(self, state: BackendState, record: AttemptRecord, reserved: float, started: float) -> None:
        self.state = state
        self.record = record
        self.reserved = reserved
        self.started = started
        self.response: Response | None = None


class _Run:
    """One call of ``run``: the scheduler state and the loop."""

    def __init__(self, runtime: Runtime, query: Query, policy: Policy, states: Sequence[BackendState]) -> None:
        self.rt = runtime
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
        if order == "latency":
            now = self.t0
            predicted = [s.health.predicted_latency(now) for s in states]
            known = sorted(p for p in predicted if p is not None)
            typical = known[len(known) // 2] if known else 0.0
            rank = {id(s): typical if p is None else p for s, p in zip(states, predicted, strict=True)}
            return sorted(states, key=lambda s: rank[id(s)])
        return list(states)

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
        if self.max_attempts == 1 and not self.collect:
            attempt = await self._launch("primary", waiting_allowed=True, now=self.t0)
            if attempt is not None:
                await self._attempt(attempt)
        else:
            async with anyio.create_task_group() as tg:
                self.tg = tg
                await self._schedule(tg)

    async def _schedule(self, tg: TaskGroup) -> None:
        next_at = -math.inf  # when the next timed launch is due
        zero_delay = self.policy.effective_delay == 0.0
        timed = True
        while self.winner is None and self.fatal is None:
            if not (self.launched < self.max_attempts and self.queue):
                return  # nothing more to launch: the task group waits for what is in flight
            now = self.now()
            room = len(self.in_flight) < self.max_parallel
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
        value = self.primary.health.quantile(q, now) if self.primary is not None else None
        if value is None:
            value = self.policy.fallback_delay
        return min(max(value, self.policy.min_delay), self.policy.max_delay)

    # -- launching ---------------------------------------------------------------------------

    async def _launch(self, trigger: str, *, waiting_allowed: bool, now: float) -> _Attempt | None:
        """Pick the next candidate that can run at ``now``, reserve its cost and book it; or None."""
        while self.queue:  # no await between `now` and a launch, except while waiting for a slot
            index, why = self._choose(now)
            state = self.queue[index]
            worst = state.worst_case_cost(self.query, self.input_estimate)
            if self.policy.max_cost is not None and self.committed + worst > self.policy.max_cost + _EPSILON:
                self.queue.pop(index)
                self.cost_skips += 1
                left = self.policy.max_cost - self.committed
                self._skip(state, f"cost ceiling: worst case ${worst:.6f} > ${max(left, 0.0):.6f} left")
                continue
            if trigger == "after failure" and not state.throttle.allow():
                self.queue.pop(index)
                self._skip(state, "failover throttle: this backend fails too often")
                continue
            tokens = self.tokens
            reason = state.health.acquire(now, tokens)
            if reason is not None and waiting_allowed and self.policy.limit_wait > 0 and reason != "circuit open":
                reason = await self._wait_for_slot(state, tokens, reason)
                now = self.now()
            if reason is not None:
                self.queue.pop(index)
                self._skip(state, reason)
                continue
            self.queue.pop(index)
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
            self.launched += 1
            self.in_flight.append(attempt)
            if self.primary is None:
                self.primary = state
            return attempt
        return None

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
        state, record = attempt.state, attempt.record
        health = state.health
        try:
            try:
                timeout = self.policy.attempt_timeout
                if timeout is None:
                    response = await state.backend.complete(self.query)
                else:
                    with anyio.move_on_after(timeout) as timer:
                        response = await state.backend.complete(self.query)
                    if timer.cancelled_caught:
                        raise Timeout(f"no answer within attempt_timeout={timeout:g}s", backend=state.name)
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

    def _failed(self, attempt: _Attempt, exc: Exception) -> None:
        now = self.now()
        record = attempt.record
        record.ended = now - self.t0
        record.latency = now - attempt.started
        record.outcome, record.error = "failed", exc
        kind = exc.kind if isinstance(exc, BackendError) else "error"
        record.reason = f"{kind}: {exc}" if isinstance(exc, BackendError) else f"{type(exc).__name__}: {exc}"
        retry_after = getattr(exc, "retry_after", None)
        attempt.state.health.on_failure(kind, now, retry_after, now - attempt.started)
        attempt.state.throttle.on_failure()
        if not isinstance(exc, Timeout):  # a refused request costs nothing; a timed-out one may have
            self._charge(attempt, 0.0)
        if isinstance(exc, BackendError) and exc.fatal:
            self.fatal = exc
            self._cancel_all()
        else:
            self.owed += 1

    def _ended(self, attempt: _Attempt) -> None:
        """Last words of every attempt (runs during cancellation too: no awaits here)."""
        record = attempt.record
        if record.outcome is None:
            now = self.now()
            record.outcome = "cancelled"
            record.ended = now - self.t0
            if attempt.response is None:
                attempt.state.health.on_cancelled(now - attempt.started, now)
            record.reason = self._cancel_reason()
        attempt.state.health.release()
        self.in_flight.remove(attempt)
        if self.wake is not None:
            self.wake.set()

    def _cancel_reason(self) -> str:
        if self.winner is not None:
            return f"{self.winner.record.backend} answered first"
        if self.fatal is not None:
            return "run stopped by a fatal error"
        if self.policy.deadline is not None and self.now() >= self.t0 + self.policy.deadline:
            return "deadline"
        return "caller cancelled"

    def _settle(self, attempt: _Attempt, response: Response) -> None:
        usage, record, state = response.usage, attempt.record, attempt.state
        record.input_tokens, record.output_tokens, record.usage_estimated = (
            usage.input_tokens,
            usage.output_tokens,
            usage.estimated,
        )
        actual = (
            usage.input_tokens * state.backend.input_price + usage.output_tokens * state.backend.output_price
        ) / 1e6
        self._charge(attempt, actual)

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

    # -- the end -----------------------------------------------------------------------------

    async def _finish(self) -> Result:
        trace = self.trace
        trace.cost = self.committed
        if self.fatal is not None:
            trace.outcome = "fatal"
            raise self.fatal
        winner = self.winner
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
        return Result(winner.response, winner.record.backend, latency, self.committed, trace, winner.record.score)

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


class _ScoreContext:
    """Lets a scorer call a backend, its cost reserved against the run's ceiling and traced."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    async def complete(self, backend: Any, query: Query) -> Response:
        """Call ``backend`` (name or object) with ``query`` within ``max_cost``."""
        run = self.run
        state = run.rt.state_for(backend)
        worst = state.worst_case_cost(query)
        max_cost = run.policy.max_cost
        if max_cost is not None and run.committed + worst > max_cost + _EPSILON:
            raise BudgetExceeded(f"judge call to {state.name} (worst case ${worst:.6f}) does not fit max_cost")
        now = run.now()
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
            response = await state.backend.complete(query)
        except BaseException as exc:
            record.outcome, record.ended = (
                ("failed" if isinstance(exc, Exception) else "cancelled"),
                run.now() - run.t0,
            )
            record.reason = f"{type(exc).__name__}: {exc}"
            raise
        run._settle(attempt, response)
        record.outcome, record.ended = "accepted", run.now() - run.t0
        record.latency = run.now() - now
        return response


async def execute(runtime: Runtime, query: Query, policy: Policy, states: Sequence[BackendState]) -> Result:
    """Run ``policy`` for ``query`` over the resolved backend ``states``."""
    return await _Run(runtime, query, policy, states).execute()
