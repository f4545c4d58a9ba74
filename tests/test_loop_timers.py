"""The asyncio driver's timers (``specexec._loop_timers``): one loop timer per loop over a heap.

Driven by a fake loop whose clock and timers the test moves by hand (exact, no waiting), and
once on a real uvloop loop."""

from __future__ import annotations

import asyncio
import contextvars
import gc
import weakref
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

from specexec import _loop_timers
from specexec._loop_timers import call_at


class FakeHandle:
    def __init__(self, loop: FakeLoop, when: float, callback: Callable[[], object]) -> None:
        self.loop, self.when, self.callback, self.cancelled = loop, when, callback, False

    def cancel(self) -> None:
        self.cancelled = True


class FakeLoop:
    """``time()`` and ``call_at()`` only; ``advance(to)`` runs what is due, in time order."""

    def __init__(self) -> None:
        self.now = 0.0
        self.handles: list[FakeHandle] = []

    def time(self) -> float:
        return self.now

    def call_at(self, when: float, callback: Callable[[], object]) -> FakeHandle:
        handle = FakeHandle(self, when, callback)
        self.handles.append(handle)
        return handle

    def armed(self) -> list[float]:
        return sorted(h.when for h in self.handles if not h.cancelled)

    def advance(self, to: float) -> None:
        while True:
            due = [h for h in self.handles if not h.cancelled and h.when <= to]
            if not due:
                break
            handle = min(due, key=lambda h: h.when)
            self.handles.remove(handle)
            self.now = handle.when
            handle.callback()
        self.now = to


def _fake() -> Any:
    return FakeLoop()


def test_timers_fire_in_time_order_with_one_loop_timer_armed() -> None:
    loop = _fake()
    fired: list[tuple[str, float]] = []

    def firing(name: str) -> Callable[[], None]:
        return lambda: fired.append((name, loop.time()))

    for name, when in (("c", 3.0), ("a", 1.0), ("b", 2.0), ("b2", 2.0)):
        call_at(loop, when, firing(name))
    assert loop.armed() == [1.0]  # one loop timer: the earliest entry's
    loop.advance(10.0)
    assert fired == [("a", 1.0), ("b", 2.0), ("b2", 2.0), ("c", 3.0)]  # ties in arming order
    assert loop.armed() == []


def test_an_earlier_timer_rearms_the_loop_timer_and_a_later_one_does_not() -> None:
    loop = _fake()
    call_at(loop, 5.0, lambda: None)
    call_at(loop, 7.0, lambda: None)
    assert loop.armed() == [5.0]
    call_at(loop, 2.0, lambda: None)
    assert loop.armed() == [2.0]


def test_a_cancelled_timer_is_not_called_and_keeps_no_reference_to_its_callback() -> None:
    loop = _fake()

    class Owner:
        def callback(self) -> None:
            raise AssertionError("cancelled: never called")

    owner = Owner()
    gone = weakref.ref(owner)
    request: contextvars.ContextVar[Owner] = contextvars.ContextVar("request")
    request.set(owner)  # the context that armed the timer holds the owner too
    timer = call_at(loop, 1.0, owner.callback)
    request.set(Owner())
    timer.cancel()
    timer.cancel()  # twice is harmless
    del owner
    gc.collect()
    assert gone() is None
    loop.advance(2.0)  # the loop timer fires, finds nothing to call, and is not re-armed
    assert loop.armed() == []


def test_a_timer_armed_by_a_callback_for_later_leaves_an_earlier_entry_on_time() -> None:
    # While the loop timer fires, a callback arms a later timer: the loop timer must still be
    # armed for the earliest entry left, not for the callback's.
    loop = _fake()
    fired: list[tuple[str, float]] = []
    call_at(loop, 1.0, lambda: call_at(loop, 10.0, lambda: fired.append(("late", loop.time()))))
    call_at(loop, 5.0, lambda: fired.append(("five", loop.time())))
    loop.advance(20.0)
    assert fired == [("five", 5.0), ("late", 10.0)]


def test_a_callback_may_cancel_another_due_timer() -> None:
    loop = _fake()
    fired: list[str] = []
    second = call_at(loop, 1.0, lambda: fired.append("second"))
    call_at(loop, 0.5, second.cancel)
    call_at(loop, 1.0, lambda: fired.append("third"))
    loop.advance(2.0)
    assert fired == ["third"]


def test_cancelled_entries_are_dropped_in_bulk_once_they_are_most_of_the_heap() -> None:
    loop = _fake()
    keep = call_at(loop, 1e9, lambda: None)
    timers = _loop_timers._by_loop[loop]
    for _ in range(1000):
        call_at(loop, 100.0, lambda: None).cancel()
        assert len(timers.heap) <= 2 * _loop_timers._COMPACT_AT + 1  # bounded by the live ones, not the history
    fired: list[int] = []
    call_at(loop, 50.0, lambda: fired.append(1))
    loop.advance(200.0)
    assert fired == [1]
    assert [e[2] for e in timers.heap] == [keep]


def test_a_timer_that_raises_leaves_the_rest_armed() -> None:
    loop = _fake()
    fired: list[str] = []

    def boom() -> None:
        raise RuntimeError("boom")

    call_at(loop, 1.0, boom)
    call_at(loop, 2.0, lambda: fired.append("after"))
    with pytest.raises(RuntimeError, match="boom"):  # the loop's exception handler would get it
        loop.advance(1.5)
    assert loop.armed() == [2.0]
    loop.advance(3.0)
    assert fired == ["after"]


def test_on_uvloop_timers_fire_in_order_and_each_loop_has_its_own() -> None:
    async def main() -> list[str]:
        loop = asyncio.get_running_loop()
        fired: list[str] = []
        done = loop.create_future()
        now = loop.time()

        def last() -> None:
            fired.append("b")
            done.set_result(None)

        call_at(loop, now + 0.02, last)
        call_at(loop, now + 0.01, lambda: fired.append("a"))
        call_at(loop, now + 0.005, lambda: fired.append("never")).cancel()
        await asyncio.wait_for(done, 5.0)
        # uvloop's clock counts whole milliseconds: `now + 0.02` in floating point can exceed the
        # millisecond it names by a rounding error (69479.403 + 0.02 > 69479.423)
        assert loop.time() >= now + 0.02 - 1e-9
        return fired

    assert uvloop.run(main()) == ["a", "b"]
    assert uvloop.run(main()) == ["a", "b"]  # a new loop: its own timers, not the closed loop's
