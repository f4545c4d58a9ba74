"""``specexec._deadline`` (on asyncio: ``specexec._task_scope``): the cheap per-wait deadline the
HTTP streams use, on trio (virtual time, exact) and asyncio + uvloop (real clock, within
``Timing.tolerance``)."""

from __future__ import annotations

import asyncio
import contextlib
import math

import anyio
import pytest
import uvloop

from specexec._deadline import deadline_scope
from specexec._task_scope import TaskScope
from tests.conftest import Timing

pytestmark = pytest.mark.anyio


async def test_the_block_is_cancelled_at_the_deadline_and_the_scope_says_so(timing: Timing) -> None:
    scope_at = deadline_scope()
    t0 = anyio.current_time()
    with scope_at(t0 + 0.2) as scope:
        await anyio.sleep(10)
    assert scope.cancelled_caught
    assert anyio.current_time() - t0 == timing.approx(0.2)


async def test_a_block_done_in_time_is_not_cancelled_later(timing: Timing) -> None:
    scope_at = deadline_scope()
    t0 = anyio.current_time()
    with scope_at(t0 + 0.1) as scope:
        await anyio.sleep(0.05)
    await anyio.sleep(0.2)  # past the deadline: nothing may fire now
    assert not scope.cancelled_caught
    assert anyio.current_time() - t0 == timing.approx(0.25)


async def test_a_deadline_already_passed_cancels_the_first_wait(timing: Timing) -> None:
    scope_at = deadline_scope()
    t0 = anyio.current_time()
    with scope_at(t0 - 1.0) as scope:
        await anyio.sleep(10)
    assert scope.cancelled_caught
    assert anyio.current_time() - t0 == timing.approx(0.0)


async def test_an_infinite_deadline_never_cancels(timing: Timing) -> None:
    scope_at = deadline_scope()
    with scope_at(math.inf) as scope:
        await anyio.sleep(0.1)
    assert not scope.cancelled_caught


async def test_the_callers_cancellation_propagates_through_a_later_deadline(timing: Timing) -> None:
    scope_at = deadline_scope()
    t0 = anyio.current_time()
    with anyio.move_on_after(0.1) as outer:
        with scope_at(t0 + 0.2) as inner:
            await anyio.sleep(10)
        pytest.fail("the caller's cancellation was swallowed")  # pragma: no cover
    assert outer.cancelled_caught and not inner.cancelled_caught
    assert anyio.current_time() - t0 == timing.approx(0.1)


# -- asyncio's own cancellation counting (the deadline is a task.cancel() taken back on exit)


def test_on_asyncio_a_caught_deadline_leaves_the_tasks_cancel_count_as_it_was() -> None:
    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        with TaskScope(loop.time() + 0.01) as scope:
            await asyncio.sleep(10)
        assert scope.cancelled_caught and task.cancelling() == 0
        async with asyncio.timeout(0.01):  # asyncio's own timeout still tells its expiry apart
            with TaskScope(loop.time() + 10):
                with pytest.raises(asyncio.CancelledError):
                    await asyncio.sleep(10)
                raise asyncio.CancelledError  # the timeout's cancellation goes on out
        pytest.fail("asyncio.timeout did not expire")  # pragma: no cover

    with pytest.raises(TimeoutError):
        uvloop.run(main())


def test_on_asyncio_a_cancellation_after_the_deadline_fired_still_propagates() -> None:
    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        with TaskScope(loop.time() + 0.01):
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.sleep(10)  # the deadline's cancellation, swallowed by the body ...
            task.cancel()  # ... then the caller's
            await asyncio.sleep(10)
        pytest.fail("the caller's cancellation was swallowed")  # pragma: no cover

    async def outer() -> bool:
        inner = asyncio.ensure_future(main())
        try:
            await inner
        except asyncio.CancelledError:
            return inner.cancelled()
        return False  # pragma: no cover

    assert uvloop.run(outer())


def test_on_asyncio_a_pending_cancellation_at_entry_is_not_taken_back() -> None:
    async def main() -> None:
        task = asyncio.current_task()
        assert task is not None
        task.cancel()  # pending before the block: the caller's, delivered at the first wait
        loop = asyncio.get_running_loop()
        with TaskScope(loop.time() + 10):
            await asyncio.sleep(10)
        pytest.fail("the pending cancellation was swallowed")  # pragma: no cover

    with pytest.raises(asyncio.CancelledError):
        uvloop.run(main())
