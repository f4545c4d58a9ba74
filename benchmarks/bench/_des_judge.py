"""Scorers in the discrete-event ``--sim`` driver, LLM judges included: a scorer's coroutine is
stepped by hand, and each judge call it awaits (``ScoreContext.complete``) is drawn as an event
at its end, then the coroutine resumes with the answer (or the error thrown in). The judge call
goes through the run's core as in the engine's ``_ScoreContext``: admitted and reserved against
``max_cost`` (``judge_admit``), traced, charged, recorded in the judge backend's health, its
slot released; cancelled with its run (``judge_cancelled``).

A scorer that awaits anything else than a judge call cannot be drawn as events: ``TypeError``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Coroutine, Generator
from typing import TYPE_CHECKING, Any, Protocol

from specexec import Query
from specexec._query import Response

from ._des_draw import Outcome, draw_call

if TYPE_CHECKING:
    from specexec._core import Core
    from specexec._policy import Policy
    from specexec._runtime import BackendState

__all__ = ["DesJudge", "Scoring"]


class _Loop(Protocol):
    now: float

    def at(self, when: float, callback: Callable[[Any], None], arg: Any = None) -> None: ...


class _Run(Protocol):
    @property
    def core(self) -> Core: ...
    @property
    def loop(self) -> _Loop: ...
    @property
    def policy(self) -> Policy: ...


class _Cancelled(BaseException):
    """Thrown into a scorer whose judge call is cancelled with its run (like the engine's cancellation)."""


class _JudgeCall:
    """What a scorer's coroutine yields to the driver: one judge call to draw."""

    __slots__ = ("query", "run", "state")

    def __init__(self, run: _Run, state: BackendState, query: Query) -> None:
        self.run, self.state, self.query = run, state, query

    def __await__(self) -> Generator[_JudgeCall, Any, Response]:
        response: Response = yield self
        return response


class DesJudge:
    """The scorers' context of one discrete-event run (``_engine._ScoreContext``'s twin)."""

    __slots__ = ("run",)

    def __init__(self, run: _Run) -> None:
        self.run = run

    async def complete(self, backend: Any, query: Query) -> Response:
        """Call ``backend`` (name or object) with ``query`` within ``max_cost`` and its limits."""
        run = self.run
        core, loop = run.core, run.loop
        state = core.rt.state_for(backend)
        admitted = core.judge_admit(state, query, loop.now)
        if isinstance(admitted, BaseException):
            raise admitted
        attempt = admitted
        try:
            response = await _JudgeCall(run, state, query)
        except Exception as exc:
            core.judge_failed(attempt, exc, loop.now)
            raise
        except BaseException:
            core.judge_cancelled(attempt, loop.now)
            raise
        finally:
            state.health.release()
        core.judge_done(attempt, response, loop.now)
        return response


class Scoring:
    """A scorer's coroutine in progress: ``step`` runs it to its next judge call (drawn as an
    event) or to its end, then ``done(score)`` — the score, or the exception it raised."""

    __slots__ = ("coro", "done", "live", "loop", "pending")

    def __init__(self, loop: _Loop, coro: Coroutine[Any, Any, Any], done: Callable[[Any], None]) -> None:
        self.loop = loop
        self.coro = coro
        self.done = done
        self.live = True
        self.pending: list[Outcome] | None = None  # the judge call in flight (a box: its event's token)

    def step(self, value: Any = None, error: BaseException | None = None) -> None:
        """Resume the scorer with ``value`` (or ``error`` thrown in)."""
        try:
            call = self.coro.throw(error) if error is not None else self.coro.send(value)
        except StopIteration as stop:
            self.live = False
            self.done(stop.value)
            return
        except Exception as exc:
            self.live = False
            self.done(exc)
            return
        if not isinstance(call, _JudgeCall):
            self.live = False
            self.coro.close()
            raise TypeError(
                "the scorer suspended on something other than a judge call (ScoreContext.complete): "
                "the discrete-event simulator cannot run it; use --sim-engine trio"
            )
        end, outcome = draw_call(call.state.backend, call.query, self.loop.now, call.run.policy.attempt_timeout)
        box = self.pending = [outcome]
        if end != math.inf:
            self.loop.at(end, self._call_ends, box)

    def _call_ends(self, box: list[Outcome]) -> None:
        if not self.live or box is not self.pending:
            return
        self.pending = None
        outcome = box[0]
        if isinstance(outcome, Response):
            self.step(outcome)
        else:
            assert outcome is not None
            self.step(error=outcome)

    def cancel(self) -> None:
        """The run is cancelled: so is the judge call in flight (the scorer sees the cancellation)."""
        if not self.live:
            return
        self.live = False
        self.pending = None
        try:
            self.coro.throw(_Cancelled())
        except (_Cancelled, StopIteration):
            pass
        else:
            self.coro.close()
