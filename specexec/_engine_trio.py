"""The engine's native trio driver: the anyio driver's primitives on a raw trio nursery.

Identical decisions (the core's) and identical semantics — trio's cancel scopes are what
anyio's wrap on trio — without anyio's layer: its task group, event and scope wrappers and
the backend lookup on every ``sleep_until``. Picked by ``_engine.execute`` when trio runs.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal

import trio

from ._engine import _Run

if TYPE_CHECKING:
    from ._core import Attempt
    from ._query import Query, Response, StreamChunk
    from ._runtime import BackendState

__all__ = ["TrioRun"]


class TrioRun(_Run):
    """``_Run`` on trio's own nursery, cancel scopes and task parking (``trio.lowlevel``)."""

    __slots__ = ("nursery",)

    def _begin(self) -> Callable[[], float]:
        self.nursery: trio.Nursery | None = None  # read by `_cancel_all` on the single path too
        return trio.lowlevel.current_clock().current_time  # one frame per read (trio.current_time: three)

    async def _run_within(self, deadline: float) -> bool:
        with trio.CancelScope(deadline=deadline) as scope:
            await self._run_and_score()
        return scope.cancelled_caught

    async def _group(self) -> None:
        # What the nursery raises (a group) leaves the run as ``_engine.unwrapped`` says.
        async with trio.open_nursery() as nursery:
            self.nursery = nursery
            await self._schedule()

    def _spawn(self, attempt: Attempt) -> None:
        assert self.nursery is not None
        self.nursery.start_soon(self._attempt, attempt)

    async def _wait(self, until: float) -> None:
        # trio's own parking (what trio.Event does inside, without the event and its task set):
        # `_wake` reschedules the host once; a cancellation (the timer, the caller) unparks it.
        self.wake = trio.lowlevel.current_task()
        if until == math.inf:
            await trio.lowlevel.wait_task_rescheduled(self._unpark)
        else:
            with trio.CancelScope(deadline=until):
                await trio.lowlevel.wait_task_rescheduled(self._unpark)

    def _unpark(self, _: object) -> trio.lowlevel.Abort:
        self.wake = None
        return trio.lowlevel.Abort.SUCCEEDED

    def _wake(self) -> None:
        task = self.wake
        if task is not None:
            self.wake = None
            trio.lowlevel.reschedule(task)

    async def _sleep_until(self, until: float) -> None:
        await trio.sleep_until(until)

    def _cancel_all(self) -> None:
        if self.nursery is not None:
            self.nursery.cancel_scope.cancel()

    def _scope(self) -> Any:
        return trio.CancelScope()

    async def _complete_within(self, state: BackendState, query: Query, timeout: float) -> Response | None:
        with trio.move_on_after(timeout):
            return await state.backend.complete(query)
        return None

    async def _next_within(
        self, chunks: AsyncIterator[StreamChunk], limit: float
    ) -> StreamChunk | Literal[False] | None:
        with trio.move_on_after(limit):
            return await anext(chunks, None)
        return False
