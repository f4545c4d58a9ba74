"""``--sim`` as a discrete-event simulation: the engine's core (``specexec._core``) driven by a
heap of timed events, with no event loop at all.

The decisions are the library's own — the same ``Core`` the anyio driver runs, with the
runtime's health windows, breakers, limits and hedge budget, and ``SimulatedBackend.draw``
(the same seeded draws as ``complete``): only the I/O is replaced. A backend call is one event
at its drawn end; a hedge or retry timer is an event; cancelling an attempt forgets its
event. Events at the same instant run in the order they were scheduled, so a run and its
figures are a function of the seed.

Streaming backends (with ``ttft``) are drawn at once (``SimulatedBackend.draw_stream``): through
``run`` a call is one event at the end of its stream; through ``stream`` (``streamed=True``,
``_des_stream``) each piece of text is an event, with the engine's first-token and stall
timeouts, prefix verifiers and commits. Scorers run as coroutines stepped by hand, each judge
call they await (LLM judges) an event (``_des_judge``).

What it cannot drive (it says so, ``TypeError``): verifiers that really suspend (an async
verifier that awaits I/O) and scorers that await anything else than a judge call. The trio
virtual-time simulator (``_sim``) runs those and stays as the cross-check
(``tests/bench/test_des.py``, ``tests/bench/test_des_stream.py``).
"""

from __future__ import annotations

import gc
import heapq
import itertools
import math
from collections import deque
from collections.abc import Callable, Coroutine, Iterator, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from specexec import Policy, Query, Result, Runtime, SimulatedBackend
from specexec._core import CANCEL_ALL, DONE, SCORE, Attempt, Core, Launch, Poll, Wait
from specexec._query import Response
from specexec.verifiers import check

from ._des_draw import draw_call
from ._des_judge import DesJudge, Scoring
from ._driver import PROGRESS_EVERY, _winner_ttft, received_cost
from ._scenario import Scenario
from ._sim import build_sim_backends
from ._stats import PolicyStats
from ._workload import Request, requests

if TYPE_CHECKING:
    from specexec._runtime import BackendState

__all__ = ["EventLoop", "des_drive", "des_simulate_policy", "run_now"]

ProgressFn = Callable[[int], None]


def run_now(coro: Coroutine[Any, Any, Any], what: str) -> Any:
    """Run a coroutine that never suspends (a sync verifier behind ``check``) to its value."""
    try:
        coro.send(None)
    except StopIteration as stop:
        return stop.value
    coro.close()
    raise TypeError(f"{what} suspended: the discrete-event simulator runs only verifiers and scorers that do not await")


GC_YOUNG_THRESHOLD = 100_000
"""Allocations between young collections of the cyclic GC while a simulation runs (CPython's
default is 700): a run allocates a few short-lived objects per event and hardly any cycles, and
each full collection scans every object of the process. At the default, collections took
15–35 % of a simulated request's CPU (loaded 2-core machine: the spread is noise)."""


@contextmanager
def fewer_collections() -> Iterator[None]:
    """Run the block with the cyclic garbage collector's young threshold raised to
    ``GC_YOUNG_THRESHOLD`` (and hence its full collections far apart); restored after. Cycles
    (a failed run's exception and traceback) are still collected, less often."""
    old = gc.get_threshold()
    gc.set_threshold(max(old[0], GC_YOUNG_THRESHOLD), *old[1:])
    try:
        yield
    finally:
        gc.set_threshold(*old)


_Event = tuple[float, int, Callable[[Any], None], Any]


class EventLoop:
    """A heap of ``(time, seq, callback, arg)``: ``run`` pops them in time order (ties: first
    scheduled first) and calls ``callback(arg)`` with ``now`` set to the event's time.

    Events that are scheduled in time order anyway (every request's timeout: its arrival plus
    a constant) go into a ``lane`` instead, a FIFO merged with the heap by ``(time, seq)``: the
    same order, and the heap stays small (at 100 req/s and a 60 s timeout it would otherwise
    hold ≈ 6,000 timeouts, and every push and pop would sift through 13 levels)."""

    __slots__ = ("_heap", "_lanes", "_seq", "now")

    def __init__(self) -> None:
        self._heap: list[_Event] = []
        self._lanes: list[deque[_Event]] = []
        self._seq = itertools.count()
        self.now = 0.0

    def at(self, when: float, callback: Callable[[Any], None], arg: Any = None) -> None:
        """Call ``callback(arg)`` at ``when`` (never before now)."""
        heapq.heappush(self._heap, (max(when, self.now), next(self._seq), callback, arg))

    def lane(self) -> Callable[[float, Callable[[Any], None], Any], None]:
        """A new lane: its ``at(when, callback, arg)`` takes events in time order (one out of order
        goes to the heap: the order of the events never depends on the lane)."""
        lane: deque[_Event] = deque()
        self._lanes.append(lane)
        heap, seq = self._heap, self._seq

        def at(when: float, callback: Callable[[Any], None], arg: Any = None) -> None:
            when = max(when, self.now)
            event = (when, next(seq), callback, arg)
            if lane and when < lane[-1][0]:
                heapq.heappush(heap, event)
            else:
                lane.append(event)

        return at

    def soon(self, callback: Callable[[Any], None], arg: Any = None) -> None:
        """Call ``callback(arg)`` at now, after what is already due now (at once when nothing is)."""
        heap, now = self._heap, self.now
        if (heap and heap[0][0] <= now) or any(lane and lane[0][0] <= now for lane in self._lanes):
            heapq.heappush(heap, (now, next(self._seq), callback, arg))
        else:
            callback(arg)

    def run(self) -> None:
        """Run every event (the caller bounds the work: every request ends by its timeout)."""
        heap, lanes, pop = self._heap, self._lanes, heapq.heappop
        while True:
            event: _Event | None = heap[0] if heap else None
            source: deque[_Event] | None = None
            for lane in lanes:
                if lane and (event is None or lane[0] < event):
                    event, source = lane[0], lane
            if event is None:
                return
            if source is None:
                pop(heap)
            else:
                source.popleft()
            self.now = event[0]
            event[2](event[3])


_RUNNING, _WAITING, _POLLING, _DONE = range(4)


class _SimRun:
    """One request: the core's decisions carried out on the event loop (``_engine._Run``'s twin)."""

    __slots__ = (
        "_judge", "core", "done", "first_at", "loop", "on_done", "policy", "query", "result", "sched", "sched_token",
        "scoring", "stopping",
    )  # fmt: skip

    def __init__(
        self,
        loop: EventLoop,
        rt: Runtime,
        query: Query,
        policy: Policy,
        states: Sequence[BackendState],
        on_done: Callable[[_SimRun], None],
        *,
        streaming: bool = False,
    ) -> None:
        self.loop = loop
        self.query = query
        self.policy = policy
        self.on_done = on_done
        self.core = Core(rt, query, policy, states, loop.now, 0.0, streaming=streaming)
        self.first_at: float | None = None  # a stream: when the caller got its first piece
        self._judge: DesJudge | None = None  # the scorers' context (made on first use)
        self.scoring: Scoring | None = None  # ``pick``'s score_all, while it waits for judge calls
        self.done = False  # finished: stale events of this run are ignored
        self.stopping = False  # every attempt is being cancelled (a winner, a fatal error)
        self.sched = _RUNNING  # the scheduler's state (an attempt ending wakes it only while it waits)
        self.result: Result | Exception | None = None
        self.sched_token = 0  # invalidates a pending hedge/retry timer when the scheduler wakes otherwise
        if policy.deadline is not None:
            loop.at(self.core.t0 + policy.deadline, self._deadline)

    def start(self) -> None:
        """Begin the run at the loop's now."""
        if self.core.single:
            self._single(None)
        else:
            self._step(None)

    # -- the schedule ------------------------------------------------------------------------

    def _single(self, _: object) -> None:
        if self.done:
            return
        launched = self.core.launch_single(self.loop.now)
        if isinstance(launched, Poll):
            self.loop.at(launched.until, self._single)
        elif launched is None:
            self._finish()
        else:
            self.sched = _DONE
            self._start(launched)

    def _step(self, _: object) -> None:
        if self.done:
            return
        self.sched = _RUNNING
        self.sched_token += 1
        core, loop = self.core, self.loop
        while True:
            action = core.next_action(loop.now)
            if isinstance(action, Launch):
                self._start(action.attempt)
                continue
            if isinstance(action, Wait):
                self.sched = _WAITING
                if action.until != math.inf:
                    loop.at(action.until, self._timer, self.sched_token)
                return
            if isinstance(action, Poll):
                self.sched = _POLLING
                loop.at(action.until, self._step)
                return
            assert action is DONE
            self.sched = _DONE
            if not core.in_flight:
                self._finish()
            return

    def _timer(self, token: int) -> None:
        if not self.done and self.sched == _WAITING and token == self.sched_token:
            self._step(None)

    # -- attempts ----------------------------------------------------------------------------

    def _start(self, attempt: Attempt) -> None:
        backend = attempt.state.backend
        if not isinstance(backend, SimulatedBackend):
            raise TypeError(f"backend {attempt.state.name!r} is not simulated: the discrete-event driver draws calls")
        end, outcome = draw_call(backend, self.query, self.loop.now, self.policy.attempt_timeout)
        attempt.handle = outcome  # a cancelled attempt's handle is cleared: its event is then stale
        if end != math.inf:
            self.loop.at(end, self._attempt_ends, attempt)

    def _attempt_ends(self, attempt: Attempt) -> None:
        if self.done or attempt.handle is None:
            return
        core, now, outcome = self.core, self.loop.now, attempt.handle
        attempt.handle = None
        if isinstance(outcome, Response):
            core.answered(attempt, outcome, now)
            verdict = (
                run_now(check(self.policy.verify, self.query, outcome), "a verifier") if self.policy.verify else None
            )
            action = core.verdict(attempt, verdict, now)
            if action is SCORE:  # the attempt stays in flight until it is scored (judge calls take time)
                assert core.scorer is not None
                scoring = Scoring(
                    self.loop,
                    core.scorer.score_one(self.query, core.candidate(attempt), self.judge()),
                    lambda score: self._scored(attempt, score),
                )
                attempt.handle = scoring
                scoring.step()
                return
        else:
            action = core.failed(attempt, outcome, now)
        if action is CANCEL_ALL:
            self.stopping = True
        self._ended(attempt)

    def judge(self) -> DesJudge:
        """The scorers' context of this run: judge calls as events."""
        if self._judge is None:
            self._judge = DesJudge(self)
        return self._judge

    def _scored(self, attempt: Attempt, score: Any) -> None:
        attempt.handle = None
        if self.core.scored(attempt, score) is CANCEL_ALL:
            self.stopping = True
        self._ended(attempt)

    def _ended(self, attempt: Attempt) -> None:
        core, now = self.core, self.loop.now
        core.ended(attempt, now)
        if self.stopping:
            self._cancel_all()
            self._finish()
        elif self.sched == _WAITING:
            self.sched = _RUNNING
            self.loop.soon(self._step)  # the scheduler's turn comes after what is due now
        elif self.sched == _DONE and not core.in_flight:
            self._finish()

    def _cancel_all(self) -> None:
        now = self.loop.now
        for attempt in list(self.core.in_flight):
            handle, attempt.handle = attempt.handle, None
            if isinstance(handle, Scoring):  # its judge call is cancelled with it
                handle.cancel()
            self.core.ended(attempt, now)

    def _deadline(self, _: object) -> None:
        if self.done:
            return
        self.core.deadline_passed = True
        self._cancel_all()
        self._finish()

    # -- the end -----------------------------------------------------------------------------

    def _finish(self) -> None:
        if self.done:
            return
        self.done = True  # every attempt has ended: their stale events are ignored from here
        core = self.core
        if core.needs_scores:  # outside the deadline, as in the engine; the caller's timeout still applies
            assert core.scorer is not None
            self.scoring = Scoring(
                self.loop, core.scorer.score_all(self.query, core.candidates(), self.judge()), self._scores
            )
            self.scoring.step()
            return
        self._result()

    def _scores(self, scores: Any) -> None:
        self.scoring = None
        try:
            self.core.set_scores(scores, self.loop.now)
        except Exception as exc:
            self._result(exc)
            return
        self._result()

    def _result(self, error: Exception | None = None) -> None:
        core = self.core
        result: Result | Exception
        try:
            if error is not None:
                raise error
            result = core.result(self.loop.now)
        except Exception as exc:
            result = exc
        finally:
            core.trace.cost = core.committed
        self.result = result
        self.on_done(self)

    @property
    def over(self) -> bool:
        """The run has finished (or was cancelled): nothing of it is pending."""
        return self.done and self.scoring is None

    def cancel(self) -> None:
        """The caller's timeout: cancel every attempt (and a pending judge call); the trace says ``cancelled``."""
        if self.over:
            return
        if self.scoring is not None:
            self.scoring.cancel()
            self.scoring = None
        self._cancel_all()
        self.done = True
        trace = self.core.trace
        trace.outcome = "cancelled" if trace.outcome == "running" else trace.outcome
        trace.cost = self.core.committed


def des_simulate_policy(scenario: Scenario, name: str, on_progress: ProgressFn | None = None) -> PolicyStats:
    """Run policy ``name`` of ``scenario`` as a discrete-event simulation; its stats (the same
    figures as ``simulate_policy``'s trio virtual-time run, see the module docstring)."""
    stats = PolicyStats(scenario.phases)
    runtime = Runtime(build_sim_backends(scenario, 0.0), health=scenario.health)
    des_drive(scenario, scenario.policies[name], runtime, stats, on_progress)
    return stats


def des_drive(
    scenario: Scenario,
    policy: Policy,
    runtime: Runtime,
    stats: PolicyStats,
    on_progress: ProgressFn | None = None,
    *,
    streamed: bool = False,
) -> None:
    """``_driver.drive`` as a discrete-event simulation: the scenario's workload through
    ``runtime`` (simulated backends, time zero = the loop's 0) under ``policy``, recorded in
    ``stats``; ``streamed``: through ``stream`` (TTFT = when the caller got its first piece)."""
    loop = EventLoop()
    timeout_at = loop.lane()  # arrival + a constant: in time order
    states = runtime.resolve(policy)
    run_class: type[_SimRun] = _SimRun
    if streamed:
        from specexec._engine import check_streamable

        from ._des_stream import StreamRun

        check_streamable(policy)
        run_class = StreamRun
    workload = scenario.workload
    quality = scenario.quality
    verify = quality.verify if quality is not None and quality.verify else None
    timeout, max_in_flight = workload.timeout, workload.max_in_flight
    record = stats.record
    in_flight = 0
    done = 0
    waiting: deque[Request] = deque()
    pending = iter(requests(workload, scenario.seed))

    def finished(run: _SimRun, request: Request, error: str | None) -> None:
        nonlocal in_flight, done
        now = loop.now
        trace = run.core.trace
        good: bool | None = None
        ttft: float | None = None
        result = run.result if error is None else None
        if isinstance(result, Exception):
            error, result = type(result).__name__, None
        if result is not None:
            if streamed:
                ttft = (run.first_at if run.first_at is not None else now) - request.at
            else:
                ttft = _winner_ttft(result, run.core.t0 - request.at)
            if verify is not None:
                good = run_now(check(verify, request.query, result.response), "the quality check").accept
        if request.measured:
            received = received_cost(trace, runtime, request.query) if streamed or ttft is not None else None
            record(
                request.at,
                now - request.at,
                trace,
                error,
                good,
                request.query.metadata.get("step"),
                ttft if error is None else None,
                received,
            )
        in_flight -= 1
        done += 1
        if on_progress is not None and done % PROGRESS_EVERY == 0:
            on_progress(done)
        if waiting:  # the freed slot goes to the oldest waiting request at once (FIFO, never over the bound)
            launch(waiting.popleft())

    def launch(request: Request) -> None:
        nonlocal in_flight
        if request.measured:
            stats.sent(loop.now - request.at)  # late when it waited for a max_in_flight slot
        in_flight += 1
        run = run_class(
            loop, runtime, request.query, policy, states, lambda r: finished(r, request, None), streaming=streamed
        )
        timeout_at(request.at + timeout, timed_out, (run, request))
        run.start()

    def timed_out(pair: tuple[_SimRun, Request]) -> None:
        run, request = pair
        if not run.over:
            run.cancel()
            finished(run, request, "timeout")

    def arrive(request: Request) -> None:
        following = next(pending, None)
        if following is not None:
            loop.at(following.at, arrive, following)
        if in_flight >= max_in_flight or waiting:
            waiting.append(request)
        else:
            launch(request)

    first = next(pending, None)
    if first is not None:
        loop.at(first.at, arrive, first)
    with fewer_collections():
        loop.run()
    if on_progress is not None:
        on_progress(done)
