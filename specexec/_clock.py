"""The running event loop's clock as a plain function, looked up once per run.

``anyio.current_time()`` finds the running backend on every call (≈ 1 µs); the engine reads
the clock several times per attempt, so it looks the clock up once per run instead: on trio
the run's clock object's own ``current_time`` (one frame; ``trio.current_time`` is three, via
the runner), on asyncio ``loop.time``. Same clock, so trio's ``MockClock`` virtual time is honoured.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import sniffio


def running_library() -> str:
    """The async library running this task, for picking a driver: sniffio's answer, cheaper.

    trio sets sniffio's thread-local; a library running on top of another sets sniffio's
    context variable; otherwise it is asyncio. sniffio's own test for asyncio (a running task:
    ≈ 0.9 µs per call, an import inside it) is left to the caller, whose next step —
    ``asyncio.get_running_loop()`` — raises ``RuntimeError`` when no loop runs.
    """
    return sniffio.thread_local.name or sniffio.current_async_library_cvar.get() or "asyncio"


def loop_clock() -> Callable[[], float]:
    """A function returning the running loop's time in seconds (what ``anyio.current_time`` returns)."""
    if running_library() == "trio":
        import trio

        return trio.lowlevel.current_clock().current_time
    return asyncio.get_running_loop().time
