"""Helpers shared by the probe daemon's tests."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
import trio.testing

from specexec import Backend
from specexec.probes import ProbeConfig, ProbeDaemon

WALL0 = 19_700 * 86_400.0
"""A UTC midnight (2023-12-09): the wall clock of virtual-time tests is ``WALL0 + loop time``."""


def wall() -> float:
    """The injected wall clock: ``WALL0`` plus the event loop's (virtual) time."""
    return WALL0 + anyio.current_time()


def sim_config(*backends: str, probe: str = "", extra: str = "") -> ProbeConfig:
    """A config of simulated backends (``[[backends]]`` bodies) and a ``[probe]`` body (``min_samples = 1`` unless
    given, no HTTP)."""
    parts = [f'[[backends]]\nkind = "simulated"\n{body.strip()}\n' for body in backends]
    defaults = "" if "min_samples" in probe else "min_samples = 1\n"
    text = "\n".join(parts) + f"\n[probe]\nhttp = false\n{defaults}{probe.strip()}\n{extra}"
    return ProbeConfig.load(text)


@asynccontextmanager
async def running(
    config: ProbeConfig, backends: Sequence[Backend] | None = None, **options: Any
) -> AsyncIterator[ProbeDaemon]:
    """A daemon running in a task group for the ``async with`` block (cancelled at its end)."""
    options.setdefault("wall_clock", wall)
    daemon = ProbeDaemon(config, backends=backends, **options)
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)
        try:
            yield daemon
        finally:
            tg.cancel_scope.cancel()


async def eventually(predicate: Callable[[], bool], timeout: float = 5.0, step: float = 0.01) -> None:
    """Wait (real time, at most ``timeout`` s) until ``predicate()`` holds: for state in other processes."""
    with anyio.fail_after(timeout):
        while not predicate():  # noqa: ASYNC110 - polling another process's state; no event to wait on
            await anyio.sleep(step)


def virtual_time_backend() -> tuple[str, dict[str, Any]]:
    """trio with a ``MockClock`` that jumps whenever every task waits: timing is exact."""
    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}


REAL_BACKENDS = [
    pytest.param(("trio", {}), id="trio"),
    pytest.param(("asyncio", {"use_uvloop": True}), id="uvloop"),
]
"""Real-clock event loops, for tests over real sockets."""
