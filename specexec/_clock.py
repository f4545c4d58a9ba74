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


def loop_clock() -> Callable[[], float]:
    """A function returning the running loop's time in seconds (what ``anyio.current_time`` returns)."""
    if sniffio.current_async_library() == "trio":
        import trio

        return trio.lowlevel.current_clock().current_time
    return asyncio.get_running_loop().time
