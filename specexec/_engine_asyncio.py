"""The engine's native asyncio driver: the anyio driver's primitives on ``asyncio.TaskGroup``.

The core's decisions are the same; what differs is how they are carried out. asyncio has no
cancel scopes, so:

- "cancel every attempt" cancels each attempt's task and wakes the schedule, which the core
  then ends (it only cancels all once a winner or a fatal error is decided);
- a stream attempt's own scope (``_TaskScope``) cancels its task once and, on leaving, swallows
  that one cancellation only (``Task.uncancel``): a caller's cancellation still propagates;
- timers are ``loop.call_at`` on a future; ``attempt_timeout`` and the deadline are
  ``asyncio.timeout`` (its ``expired()`` tells its own timeout from a backend's ``TimeoutError``).

Picked by ``_engine.execute`` when asyncio (or uvloop) runs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from types import TracebackType
from typing import TYPE_CHECKING, Any, Literal

from ._engine import _Run

if TYPE_CHECKING:
    from ._core import Attempt
    from ._query import Query, Response, StreamChunk
    from ._runtime import BackendState

__all__ = ["AsyncioRun"]


def _resolve(future: asyncio.Future[None]) -> None:
    if not future.done():
        future.set_result(None)


class _TaskScope:
    """A cancel scope over the current task: ``cancel()`` cancels it once; leaving the scope
    swallows that cancellation and no other."""

    __slots__ = ("active", "requested", "task")

    def __enter__(self) -> _TaskScope:
        task = asyncio.current_task()
        assert task is not None
        self.task, self.requested, self.active = task, False, True
        return self

    def cancel(self) -> None:
        """Cancel the task inside the scope (nothing once it has left the scope)."""
        if self.active and not self.requested:
            self.requested = True
            self.task.cancel()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        self.active = False
        if self.requested and exc_type is not None and issubclass(exc_type, asyncio.CancelledError):
            return self.task.uncancel() == 0  # ours alone: swallowed; a caller's too: propagates
        return False


class AsyncioRun(_Run):
    """``_Run`` on ``asyncio.TaskGroup``, futures and ``asyncio.timeout``."""

    group: asyncio.TaskGroup | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.tasks: list[asyncio.Task[None]] = []
        super().__init__(*args, **kwargs)

    def _clock(self) -> Callable[[], float]:
        self.loop = asyncio.get_running_loop()
        return self.loop.time

    async def _run_within(self, deadline: float) -> bool:
        try:
            async with asyncio.timeout_at(deadline) as timeout:
                await self._run_attempts()
        except TimeoutError:
            if not timeout.expired():
                raise
            return True
        return False

    async def _group(self) -> None:
        async with asyncio.TaskGroup() as group:
            self.group = group
            await self._schedule()

    def _spawn(self, attempt: Attempt) -> None:
        assert self.group is not None
        self.tasks.append(self.group.create_task(self._attempt(attempt)))

    async def _wait(self, until: float) -> None:
        self.wake = wake = self.loop.create_future()
        if until == math.inf:
            await wake
            return
        timer = self.loop.call_at(until, _resolve, wake)
        try:
            await wake
        finally:
            timer.cancel()

    async def _sleep_until(self, until: float) -> None:
        await asyncio.sleep(max(until - self.loop.time(), 0.0))

    def _cancel_all(self) -> None:
        for task in self.tasks:
            task.cancel()  # a finished task ignores it
        self._wake()

    def _wake(self) -> None:
        wake = self.wake
        if wake is not None and not wake.done():
            wake.set_result(None)

    def _scope(self) -> Any:
        return _TaskScope()

    async def _complete_within(self, state: BackendState, query: Query, timeout: float) -> Response | None:
        try:
            async with asyncio.timeout(timeout) as scope:
                return await state.backend.complete(query)
        except TimeoutError:
            if scope.expired():
                return None
            raise  # the backend's own TimeoutError: a failure like any other

    async def _next_within(
        self, chunks: AsyncIterator[StreamChunk], limit: float
    ) -> StreamChunk | Literal[False] | None:
        try:
            async with asyncio.timeout(limit) as scope:
                return await anext(chunks, None)
        except TimeoutError:
            if scope.expired():
                return False
            raise
