"""What a selector may use while it decides: the engine (through the runtime) and the clock.

``_Capture`` stands in for the runtime inside routed runs: it forwards everything to the real
runtime but holds back the traces the engine emits, so the router can add its decision to
each before the sinks see them (``flush``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

from .._engine import Result, execute
from .._query import Query
from .._trace import Trace

if TYPE_CHECKING:
    from .._policy import Policy
    from .._runtime import Runtime


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
    to ``cost`` and counts against the request's ``max_cost``); ``now`` is the loop clock."""

    def __init__(self, capture: _Capture, now: Callable[[], float]) -> None:
        self.capture = capture
        self.now = now
        self.cost = 0.0

    @property
    def runtime(self) -> Runtime:
        """The runtime the routed request runs in."""
        return self.capture.runtime

    async def execute(self, query: Query, policy: Policy) -> Result:
        """Run ``policy`` for ``query`` on the engine; its cost (also on failure) is counted."""
        run = self.capture.child()
        try:
            return await execute(cast("Runtime", run), query, policy, self.runtime.resolve(policy))
        finally:
            self.cost += run.cost
