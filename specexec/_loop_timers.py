"""Cheap cancellable timers on an asyncio loop: one loop timer per loop over a heap of entries.

Every run of a hedge arms a timer for its next launch, and nearly every one is cancelled
(the primary answered first). On uvloop a ``loop.call_at`` is a libuv timer — started,
stopped and closed again per run — which costs more than the rest of the driver's schedule.
Here a run's timer is an entry in a per-loop heap and cancelling it only marks it (as
asyncio's own loop does with its ``TimerHandle``s); the loop has one timer armed, for the
earliest entry, re-armed only when an earlier one comes. Cancelled entries hold no reference
to what they would have called, and are dropped in bulk once they are most of the heap.

After the last run the loop's one timer may stay armed until the latest cancelled entry's
time; it then fires, finds nothing to call, and is not re-armed.
"""

from __future__ import annotations

import asyncio
import contextvars
import heapq
import math
import weakref
from collections.abc import Callable

__all__ = ["LoopTimer", "call_at"]

_COMPACT_AT = 64  # cancelled entries before the heap is rebuilt without them (if they are most of it)


class LoopTimer:
    """One entry: ``callback`` is called once the loop's clock reaches ``when``, unless cancelled,
    in the context that armed it (as ``loop.call_at`` calls it: a task spawned there inherits it)."""

    __slots__ = ("callback", "context", "timers", "when")

    def __init__(self, when: float, callback: Callable[[], object], timers: _Timers) -> None:
        self.when = when
        self.callback: Callable[[], object] | None = callback
        self.context: contextvars.Context | None = contextvars.copy_context()
        self.timers = timers

    def cancel(self) -> None:
        """Do not call back (nothing once it has been called or cancelled)."""
        if self.callback is not None:
            self.callback = self.context = None  # nothing of the run (nor its context) stays in the heap
            self.timers.cancelled_one()


class _Timers:
    """The entries of one loop and its one armed timer."""

    __slots__ = ("__weakref__", "armed_for", "cancelled", "handle", "heap", "loop", "seq")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.loop = weakref.ref(loop)  # the armed handle refers to this object: no cycle through the loop
        self.heap: list[tuple[float, int, LoopTimer]] = []
        self.seq = 0  # ties on `when` go by arming order, never by comparing entries
        self.cancelled = 0  # cancelled entries still in the heap
        self.handle: asyncio.TimerHandle | None = None
        self.armed_for = math.inf

    def add(self, loop: asyncio.AbstractEventLoop, when: float, callback: Callable[[], object]) -> LoopTimer:
        timer = LoopTimer(when, callback, self)
        self.seq += 1
        heapq.heappush(self.heap, (when, self.seq, timer))
        if when < self.armed_for:
            if self.handle is not None:
                self.handle.cancel()
            self.handle = loop.call_at(when, self._fire)
            self.armed_for = when
        return timer

    def cancelled_one(self) -> None:
        self.cancelled += 1
        heap = self.heap
        if self.cancelled >= _COMPACT_AT and self.cancelled * 2 >= len(heap):
            heap[:] = [entry for entry in heap if entry[2].callback is not None]
            heapq.heapify(heap)
            self.cancelled = 0

    def _fire(self) -> None:
        """The loop's timer: call every entry that is due (the loop says ``armed_for`` is), re-arm."""
        loop = self.loop()
        if loop is None:  # pragma: no cover - a loop's own handle outliving the loop
            return
        due = max(self.armed_for, loop.time())
        self.handle, self.armed_for = None, math.inf
        heap = self.heap
        try:
            while heap and heap[0][0] <= due:
                timer = heapq.heappop(heap)[2]
                callback = timer.callback
                if callback is None:
                    self.cancelled -= 1
                    continue
                context, timer.callback, timer.context = timer.context, None, None
                assert context is not None
                context.run(callback)
        finally:  # armed for the earliest entry left (a callback may have armed for a later one)
            if heap and heap[0][0] < self.armed_for:
                if self.handle is not None:
                    self.handle.cancel()
                self.armed_for = heap[0][0]
                self.handle = loop.call_at(self.armed_for, self._fire)


_by_loop: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Timers] = weakref.WeakKeyDictionary()
_last: tuple[weakref.ref[asyncio.AbstractEventLoop], _Timers] | None = None  # the last loop's, looked up first


def call_at(loop: asyncio.AbstractEventLoop, when: float, callback: Callable[[], object]) -> LoopTimer:
    """Call ``callback()`` on ``loop`` once its clock reaches ``when`` (``loop.call_at``'s
    contract), unless the returned timer is cancelled first."""
    global _last
    last = _last
    if last is not None and last[0]() is loop:
        timers = last[1]
    else:
        found = _by_loop.get(loop)
        if found is None:
            found = _by_loop[loop] = _Timers(loop)
        timers = found
        _last = (weakref.ref(loop), timers)
    return timers.add(loop, when, callback)
