"""The engine's native asyncio driver: the core's decisions carried out on loop tasks and timers.

The core's decisions are the same; what differs is how they are carried out:

- the schedule runs in callbacks, not in a waiting host task: between two events every action
  the core can ask for (launch, arm a timer, finish) is synchronous, so the core is asked again
  where its events happen — an attempt's end (its task's ``finally``) and a timer (an entry in
  the loop's timer heap, ``_loop_timers``: one ``loop.call_at`` per loop, not per run). The
  host (the caller's task) makes the first attempt itself; a hedge whose timer never fires
  costs no task, no task group, no future and no wake-up;
- the other attempts are loop tasks spawned from those callbacks, where no ``asyncio.TaskGroup``
  can be entered: the host supervises them as a task group would (``AsyncioRun._group``) —
  none outlives the run, whatever ends it;
- asyncio has no cancel scopes: "cancel every attempt" cancels each attempt's task and the
  host's own attempt through a ``TaskScope`` (``_task_scope``), which cancels its task once and,
  on leaving, swallows that one cancellation only (``Task.uncancel``, counted as
  ``asyncio.timeout`` counts): a caller's cancellation still propagates; a cancellation the body
  swallowed is taken off the task's count all the same. A stream attempt's own scope is one
  too. Cancellation stays asyncio's: edge-triggered (once), where trio's and anyio's scopes
  cancel every later wait too;
- ``attempt_timeout`` and the deadline are ``asyncio.timeout`` (its ``expired()`` tells its
  own timeout from a backend's ``TimeoutError``).

Picked by ``_engine.execute`` when asyncio (or uvloop) runs.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any, Literal

from ._core import DONE, Launch, Poll, Wait
from ._engine import _Run
from ._loop_timers import LoopTimer, call_at
from ._task_scope import TaskScope, cancel_task

if TYPE_CHECKING:
    from ._core import Attempt
    from ._query import Query, Response, StreamChunk
    from ._runtime import BackendState

__all__ = ["AsyncioRun"]


class AsyncioRun(_Run):
    """``_Run`` on loop tasks, loop timers and ``asyncio.timeout``; the schedule in callbacks and
    the first attempt in the host task (see the module docstring)."""

    __slots__ = (
        "advancing", "cancelled_all", "crashes", "done", "ends_advance", "error", "host", "inline", "joined", "live",
        "loop", "next", "running", "tasks",
    )  # fmt: skip

    def _begin(self) -> Callable[[], float]:
        self.tasks: list[asyncio.Task[None]] | None = None  # the spawned attempts
        self.running = 0  # spawned attempts not yet done
        self.joined: asyncio.Future[None] | None = None  # the host waits on it for `running` to reach 0
        self.crashes: list[BaseException] | None = None  # what spawned attempts raised (not a backend failure)
        self.host: asyncio.Task[Any] | None = None
        self.inline: TaskScope | None = None  # the host's own attempt, while it runs
        self.next: asyncio.Handle | LoopTimer | None = None  # the schedule's next step: a timer, or its continuation
        self.advancing = False  # in `_advance` (an end inside it is seen by its loop)
        self.done: asyncio.Future[None] | None = None  # what the host waits on once its attempt is over
        self.live = False  # the schedule runs: an end or a timer may still launch
        self.ends_advance = False  # a `Wait` is armed (a `Poll` is woken by its timer alone)
        self.error: Exception | None = None  # what the schedule itself raised (raised by the host)
        self.cancelled_all = False  # `_cancel_all` has run: nothing more is launched, everything is cancelled
        self.loop = asyncio.get_running_loop()
        return self.loop.time

    async def _run_within(self, deadline: float) -> bool:
        try:
            async with asyncio.timeout_at(deadline) as timeout:
                await self._run_and_score()
        except TimeoutError:
            if not timeout.expired():
                raise
            return True
        return False

    async def _group(self) -> None:
        """The schedule, the host's own attempt, then every spawned attempt's end.

        ``asyncio.TaskGroup``'s contract, by hand: the attempts are spawned from loop callbacks
        (a timer, another attempt's end), where no group can be entered, and a hedge that never
        fires then costs no group at all. Whatever ends the host's part — the core done, the
        caller's cancellation or the deadline, an error — every spawned attempt is cancelled
        (once, if still needed: ``_cancel_all``) and waited for before this returns or raises; a
        cancellation that comes while waiting is raised after. A spawned attempt
        that raised (a ``BaseException`` from a backend, not a failure the core can report)
        cancels the rest and is raised here — as itself when it is the only one, in an exception
        group when the host's own attempt or another raised too — ahead of a cancellation, as
        ``TaskGroup`` gives errors priority."""
        self.host = host = asyncio.current_task()
        assert host is not None
        self.live = True
        cancelled: asyncio.CancelledError | None = None
        own: BaseException | None = None  # what the host's own attempt raised
        try:
            first = self._advance(host_free=True)
            if first is not None:
                with TaskScope(task=host) as self.inline:
                    await self._attempt(first)
                self.inline = None
            if self.live:
                self.done = done = self.loop.create_future()
                await done
        except asyncio.CancelledError as exc:  # the caller's or the deadline's: raised once all have ended
            cancelled = exc
            self._cancel_all()
        except BaseException as exc:
            own = exc
            self._cancel_all()
        finally:
            self.live = False
            if self.next is not None:
                self.next.cancel()
            while self.running:
                self.joined = joined = self.loop.create_future()
                try:
                    await joined
                except asyncio.CancelledError as exc:
                    cancelled = cancelled or exc
                    self._cancel_all()
            # A cancelled task keeps its CancelledError, whose traceback holds the attempt's
            # frame, which holds this run: dropping the tasks here leaves no cycle, so the run
            # is freed when it ends, not by the cyclic collector.
            self.tasks = None
        if own is not None or self.crashes:  # ahead of a cancellation, as `asyncio.TaskGroup` gives errors priority
            crashes = [own] if own is not None else []
            crashes += self.crashes or ()
            self.crashes = None
            if len(crashes) == 1:
                raise crashes[0]
            raise BaseExceptionGroup("unhandled errors in a specexec run's attempts", crashes)
        if cancelled is not None:
            raise cancelled
        if self.error is not None:
            raise self.error

    def _spawn(self, attempt: Attempt) -> None:
        task = self.loop.create_task(self._attempt(attempt))
        if self.tasks is None:
            self.tasks = []
        self.tasks.append(task)
        self.running += 1
        task.add_done_callback(self._spawned_done)

    def _spawned_done(self, task: asyncio.Task[None]) -> None:
        """A spawned attempt is done: a crash cancels the rest; the last one wakes the host."""
        self.running -= 1
        if not task.cancelled() and (crash := task.exception()) is not None:
            if self.crashes is None:
                self.crashes = []
            self.crashes.append(crash)
            self._cancel_all()
        joined = self.joined
        if not self.running and joined is not None and not joined.done():
            joined.set_result(None)

    def _advance(self, host_free: bool = False) -> Attempt | None:
        """Carry out the core's schedule at the loop's now until it waits (a timer armed) or is
        done; the first launch is returned for the host to make itself when ``host_free``.

        When launches follow at once (a race: no delay), the rest of the schedule goes on once
        the host's attempt has begun (``call_soon``), so it starts before the next launch as a
        spawned one would (an eager task factory runs a task inside ``create_task``). A hedge's
        next step is a timer: it is armed now. An exception stops the run: it is kept for the
        host to raise after the group (not wrapped in an exception group)."""
        core, now = self.core, self.now
        if self.next is not None:
            self.next.cancel()
            self.next = None
        self.advancing = True  # an attempt that ends inside `create_task` (eager tasks): the loop asks again
        own: Attempt | None = None
        try:
            while True:
                action = core.next_action(now())
                if isinstance(action, Launch):
                    if host_free and own is None:
                        own = action.attempt
                        if core.plan.delay == 0.0:
                            self.next = self.loop.call_soon(self._resume)
                            return own
                        continue
                    self._spawn(action.attempt)
                elif isinstance(action, Wait):
                    self.ends_advance = True
                    if action.until != math.inf:
                        self.next = call_at(self.loop, action.until, self._resume)
                    return own
                elif isinstance(action, Poll):
                    self.ends_advance = False
                    self.next = call_at(self.loop, action.until, self._resume)
                    return own
                else:
                    assert action is DONE
                    self._finish()
                    return own
        except Exception as exc:
            self.error = exc
            self._cancel_all()
            if own is not None:
                self._ended(own)  # booked for the host, never started: its slot back
            return None
        finally:
            self.advancing = False

    def _resume(self) -> None:
        """The schedule's timer (or its continuation after the host's own launch)."""
        self.next = None
        if self.live:
            self._advance()

    def _finish(self) -> None:
        """The core is done: no more launches; the host stops waiting (what is in flight ends)."""
        self.live = False
        done = self.done
        if done is not None and not done.done():
            done.set_result(None)

    async def _sleep_until(self, until: float) -> None:
        await asyncio.sleep(max(until - self.loop.time(), 0.0))

    def _cancel_all(self) -> None:
        """Once per run (as ``asyncio.TaskGroup`` aborts once): a caller whose cancellation is
        level-triggered (anyio's scopes, Starlette's) cancels the host on every loop turn, and
        cancelling the attempts again would cut their own clean-up short."""
        if self.cancelled_all:
            return
        self.cancelled_all = True
        for task in self.tasks or ():
            cancel_task(task)  # a finished task ignores it; one in an anyio shield is cancelled after it
        inline = self.inline
        if inline is not None and asyncio.current_task() is not self.host:
            inline.cancel()  # the host's attempt (not when it is the one deciding)
        if self.next is not None:
            self.next.cancel()
            self.next = None
        self._finish()

    def _ended(self, attempt: Attempt) -> None:
        self.core.ended(attempt, self.now())
        # A cancelled attempt means the run is over (a winner, a commit, the caller): no launch.
        if self.live and self.ends_advance and not self.advancing and attempt.record.outcome != "cancelled":
            self._advance()

    def _scope(self) -> Any:
        return TaskScope()

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
