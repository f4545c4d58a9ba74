"""A cancel scope over one block of the current asyncio task, with an optional deadline.

asyncio has no cancel scopes; ``TaskScope`` is the one the asyncio driver and the HTTP backends'
streams use instead. ``cancel()`` (or the deadline, an entry in the loop's timer heap,
``_loop_timers``) cancels the task **once**; leaving the block takes that cancellation back
(``Task.uncancel``) and swallows the ``CancelledError`` only if no other cancellation came
since the block was entered — the rule of ``asyncio.timeout``, which counts the cancellations
already pending at entry (``Task.cancelling``) as someone else's: a caller's cancellation
always propagates, and a task that once swallowed a cancellation without ``uncancel()`` can
still have its own blocks cancelled. A cancellation the body swallowed is taken off the task's
count all the same.

Cancellation stays asyncio's: edge-triggered (once), where trio's and anyio's scopes cancel
every later wait too.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType
from typing import Any

from ._loop_timers import call_at

__all__ = ["TaskScope"]

_NEVER = math.inf


class TaskScope:
    """Cancel the block of the current task once, by ``cancel()`` or when the loop's clock
    reaches ``deadline``; ``cancelled_caught`` tells afterwards whether leaving swallowed that."""

    __slots__ = ("active", "cancelled_caught", "deadline", "pending", "requested", "task", "timer")

    def __init__(self, deadline: float = math.inf, task: asyncio.Task[Any] | None = None) -> None:
        self.deadline = deadline
        self.task = task  # the current task (looked up on entry when not given)
        self.active = self.requested = self.cancelled_caught = False

    def __enter__(self) -> TaskScope:
        task = self.task
        if task is None:
            task = self.task = asyncio.current_task()
            if task is None:
                raise RuntimeError("a specexec task scope needs a running asyncio task")
        self.pending = task.cancelling()  # cancellations already pending are not ours to take back
        self.active = True
        self.timer = None if self.deadline == _NEVER else call_at(task.get_loop(), self.deadline, self._expire)
        return self

    def _expire(self) -> None:
        self.timer = None
        self.cancel()

    def cancel(self) -> None:
        """Cancel the task inside the block (once; nothing once it has left the block)."""
        if self.active and not self.requested:
            self.requested = True
            assert self.task is not None
            self.task.cancel()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self.active = False
        # Not kept past the block: a task that ends cancelled keeps its CancelledError, whose
        # traceback holds the frame that holds this scope — with the task here, a cycle that
        # only the cyclic collector frees (with everything the frames hold).
        task, self.task = self.task, None
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        if not self.requested:
            return False
        assert task is not None
        left = task.uncancel()  # ours is done with, whatever came of it
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError) and left <= self.pending:
            self.cancelled_caught = True
            return True  # ours alone: swallowed
        return False  # a caller's cancellation too (it propagates), or the body swallowed ours
