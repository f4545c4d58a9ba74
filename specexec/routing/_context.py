"""What a selector may use while it decides: the engine (through the runtime) and the clock.

``_Capture`` stands in for the runtime inside routed runs: it forwards everything to the real
runtime but holds back the traces the engine emits, so the router can add its decision to
each before the sinks see them (``flush``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import anyio
import msgspec

from .._core import EPSILON
from .._engine import Result, execute
from .._policy import Policy
from .._query import Query
from .._trace import Trace

if TYPE_CHECKING:
    from .._runtime import Runtime
    from ._budget import Budget, BudgetState


def held_to(policy: Policy, reserved: float) -> Policy:
    """``policy`` whose ``max_cost`` is at most ``reserved`` (what a budget reserved for the run),
    so that the engine — which never crosses ``max_cost`` silently — cannot spend past the
    reservation, whatever the bound left out (a custom scorer's calls)."""
    if policy.max_cost is not None and policy.max_cost <= reserved:
        return policy
    # a free run's reservation is 0; a ceiling must be positive, and within the engine's float slack
    return msgspec.structs.replace(policy, max_cost=max(reserved, EPSILON))


class _Capture:
    """A runtime whose ``emit`` collects traces instead of sending them (the rest is forwarded).

    ``child()`` is a capture for one engine run: it holds that run's trace (so its cost is
    known exactly, whatever else runs at the same time) and passes it up to its parent.
    """

    def __init__(self, runtime: Runtime, parent: _Capture | None = None) -> None:
        self.runtime = runtime
        self.parent = parent
        self.traces: list[Trace] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)

    def emit(self, trace: Trace) -> None:
        """Hold ``trace`` until the router's decision is final."""
        self.traces.append(trace)
        if self.parent is not None:
            self.parent.emit(trace)

    def child(self) -> _Capture:
        """A capture for one run, reporting to this one."""
        return _Capture(self.runtime, self)

    @property
    def cost(self) -> float:
        """What the runs whose traces this capture holds cost."""
        return sum(t.cost for t in self.traces)

    def flush(self, decorate: Callable[[Trace], None]) -> None:
        """Decorate every held trace and send it to the real runtime's sinks."""
        traces, self.traces = self.traces, []
        for trace in traces:
            decorate(trace)
            self.runtime.emit(trace)


class SelectContext:
    """Handed to every selector: ``execute`` runs a policy on the one engine (its cost is added
    to ``cost`` and counts against the request's ``max_cost``); ``now`` is the loop clock.

    Under a router's budget (``attach_budget``) each such run reserves its worst case first,
    like a route run, and settles to what it cost: one that does not fit raises
    ``BudgetExceeded`` before anything is sent (the selector passes). ``unbooked`` is what ran
    without a reservation (no budget, or the store failed), for the router to book afterwards.
    """

    def __init__(self, capture: _Capture, now: Callable[[], float]) -> None:
        self.capture = capture
        self.now = now
        self.cost = 0.0
        self.unbooked = 0.0
        self._budget: Budget | None = None
        self._state: BudgetState | None = None
        self._bound: Callable[[Policy, Query], float] | None = None

    def attach_budget(
        self, budget: Budget | None, state: BudgetState | None, bound: Callable[[Policy, Query], float]
    ) -> None:
        """Reserve every selector run in ``budget`` (for ``state``'s key and window); ``bound``
        gives a run's worst-case cost."""
        self._budget, self._state, self._bound = budget, state, bound

    @property
    def runtime(self) -> Runtime:
        """The runtime the routed request runs in."""
        return self.capture.runtime

    async def execute(self, query: Query, policy: Policy) -> Result:
        """Run ``policy`` for ``query`` on the engine; its cost (also on failure) is counted, and
        reserved first under a budget (``BudgetExceeded`` when it does not fit)."""
        budget, state, reserved, booked = self._budget, self._state, 0.0, False
        if budget is not None and state is not None and self._bound is not None:
            reserved = self._bound(policy, query)
            booked = await budget.reserve(state, reserved)
        states = self.runtime.resolve(policy)
        if booked:
            policy = held_to(policy, reserved)  # the same states: a plan does not depend on max_cost
        run = self.capture.child()
        try:
            return await execute(cast("Runtime", run), query, policy, states)
        finally:
            self.cost += run.cost
            if booked and budget is not None and state is not None:
                with anyio.CancelScope(shield=True):
                    await budget.settle(state, reserved, run.cost)
            else:
                self.unbooked += run.cost
