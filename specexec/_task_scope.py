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
every later wait too. It respects anyio's shields as anyio's own scopes do: a task inside a
shielded ``anyio.CancelScope`` (httpcore returns a connection to its pool in one) is cancelled
once it has left the shield (``cancel_task``), not in the middle of it.
"""

from __future__ import annotations

import asyncio
import math
from types import TracebackType
from typing import Any

from ._loop_timers import call_at

__all__ = ["TaskScope", "cancel_task"]

_NEVER = math.inf

try:  # anyio's per-task scope stack on asyncio (private: without it, shields are not seen)
    from anyio._backends._asyncio import _task_states
except ImportError:  # pragma: no cover - another anyio layout
    _task_states = None  # type: ignore[assignment]


def _shielded(task: asyncio.Task[Any]) -> bool:
    """Whether ``task`` is inside a shielded anyio cancel scope of its own now."""
    state = _task_states.get(task) if _task_states is not None else None
    scope = getattr(state, "cancel_scope", None)
    while scope is not None and getattr(scope, "_host_task", None) is task:
        if getattr(scope, "_shield", False):
            return True
        scope = getattr(scope, "_parent_scope", None)
    return False


def cancel_task(task: asyncio.Task[Any], still_wanted: Any = None) -> None:
    """``task.cancel()`` — at once, or, while the task is inside an anyio shield, on the first
    loop turn after it has left it (checked each turn, as anyio delivers its own cancellations);
    not at all once the task is done or ``still_wanted()`` says no."""
    if task.done() or (still_wanted is not None and not still_wanted()):
        return
    if _shielded(task):
        task.get_loop().call_soon(cancel_task, task, still_wanted)
        return
    task.cancel()


class TaskScope:
    """Cancel the block of the current task once, by ``cancel()`` or when the loop's clock
    reaches ``deadline``; ``cancelled_caught`` tells afterwards whether leaving swallowed that."""

    __slots__ = ("active", "cancelled_caught", "deadline", "delivered", "pending", "requested", "task", "timer")

    def __init__(self, deadline: float = math.inf, task: asyncio.Task[Any] | None = None) -> None:
        self.deadline = deadline
        self.task = task  # the current task (looked up on entry when not given)
        self.active = self.requested = self.delivered = self.cancelled_caught = False

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
            cancel_task(self.task, self._deliver)

    def _deliver(self) -> bool:
        """``cancel_task``'s last check: the block is still running (then the task is cancelled now)."""
        self.delivered = self.active
        return self.active

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
        if not self.delivered:
            return False  # never cancelled (not asked, or the block ended inside a shield)
        assert task is not None
        left = task.uncancel()  # ours is done with, whatever came of it
        if exc_type is not None and issubclass(exc_type, asyncio.CancelledError) and left <= self.pending:
            self.cancelled_caught = True
            return True  # ours alone: swallowed
        return False  # a caller's cancellation too (it propagates), or the body swallowed ours
