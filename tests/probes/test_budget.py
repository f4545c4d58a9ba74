"""The daily probe budget: reservation, exhaustion, the reset at UTC midnight."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import pytest

from specexec import SimulatedBackend
from specexec.probes import DailyBudget
from specexec.probes._budget import day_label, utc_day

from ._support import WALL0, running, sim_config, virtual_time_backend

MIDNIGHT = WALL0 + 86_400.0


def test_reservations_never_cross_the_limit() -> None:
    budget = DailyBudget(0.10)
    assert budget.try_reserve(0.04, WALL0) and budget.try_reserve(0.04, WALL0)
    assert not budget.try_reserve(0.04, WALL0)  # 0.12 > 0.10 with both in flight
    assert budget.exhausted(WALL0)
    budget.settle(0.04, 0.01, WALL0)
    assert not budget.try_reserve(0.001, WALL0)  # exhausted stays exhausted for the day
    assert budget.spent == pytest.approx(0.01) and budget.reserved == pytest.approx(0.04)


def test_the_budget_resets_at_utc_midnight() -> None:
    budget = DailyBudget(0.05)
    assert budget.try_reserve(0.05, MIDNIGHT - 1)
    budget.settle(0.05, 0.05, MIDNIGHT - 1)
    assert not budget.try_reserve(0.01, MIDNIGHT - 0.001)
    assert budget.resets_at(MIDNIGHT - 0.001) == MIDNIGHT
    assert not budget.exhausted(MIDNIGHT) and budget.spent == 0.0
    assert budget.try_reserve(0.05, MIDNIGHT)
    assert budget.total == pytest.approx(0.05)
    assert (utc_day(WALL0), day_label(utc_day(WALL0))) == (19_700, "2023-12-09")


def test_unlimited_still_counts() -> None:
    budget = DailyBudget(None)
    assert all(budget.try_reserve(1.0, WALL0) for _ in range(100))
    budget.settle(1.0, 0.5, WALL0)
    assert budget.spent == 0.5 and not budget.exhausted(WALL0)


def test_restore_carries_today_only() -> None:
    budget = DailyBudget(1.0)
    budget.restore(utc_day(WALL0), 1.0, 3.0, WALL0 + 10)
    assert budget.exhausted(WALL0 + 10) and budget.total == 3.0
    other = DailyBudget(1.0)
    other.restore(utc_day(WALL0) - 1, 1.0, 3.0, WALL0 + 10)
    assert not other.exhausted(WALL0 + 10) and other.spent == 0.0


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return virtual_time_backend()


@pytest.mark.anyio
async def test_the_probe_budget_stops_probing_and_says_so(caplog: pytest.LogCaptureFixture) -> None:
    # "ping" is 11 input tokens (estimate) + 1 output token at $1000 per 1M: $0.012 a probe.
    config = sim_config(
        'name = "a"\ninput_price = 1000.0\noutput_price = 1000.0',
        probe="interval = 10.0\njitter = 0.0\ntimeout = 1.0\ndaily_budget = 0.04",
    )
    backend = SimulatedBackend("a", 0.05, input_price=1000.0, output_price=1000.0)
    caplog.set_level(logging.INFO, logger="specexec.probes")
    start = MIDNIGHT - 100.0  # the loop clock's 0 is 100 s before UTC midnight

    def wall() -> float:
        return start + anyio.current_time()

    async with running(config, [backend], wall_clock=wall) as daemon:
        await anyio.sleep_until(25.0)
        assert backend.calls == 2 + 1  # probes at 0, 10, 20: $0.036
        await anyio.sleep_until(35.0)
        report = daemon.health_report()
        assert backend.calls == 3  # the probe at 30 would make $0.048 > $0.04
        assert report.budget.exhausted and report.budget.spent == pytest.approx(0.036)
        assert report.budget.resets_at == MIDNIGHT and report.budget.limit == 0.04
        assert report.backends["a"].skipped == 1
        assert report.backends["a"].cost == pytest.approx(0.036)
        assert "specexec_probe_budget_exhausted 1.0\n" in daemon.metrics()  # prometheus_client writes floats
        # No probe for stale_after (3 x 10 + 1 s) since the last one (20.05): unknown, not "healthy".
        await anyio.sleep_until(20.05 + 31.0 - 1e-6)
        assert daemon.health_report().backends["a"].state == "healthy"
        await anyio.sleep_until(20.05 + 31.0 + 1e-6)
        assert daemon.health_report().backends["a"].state == "unknown"
        await anyio.sleep_until(99.0)
        assert backend.calls == 3
        # UTC midnight at 100: the probe at 100 runs again.
        await anyio.sleep_until(100.0 + 1.0)
        report = daemon.health_report()
        assert backend.calls == 4 and not report.budget.exhausted
        assert report.budget.spent == pytest.approx(0.012) and report.budget.total == pytest.approx(0.048)
        assert report.backends["a"].state == "healthy"
    messages = [r.getMessage() for r in caplog.records]
    spent = [m for m in messages if "budget" in m and "spent" in m]
    assert len(spent) == 1 and "probing stops until UTC midnight" in spent[0]
    assert any("probing resumes" in m for m in messages)


@pytest.mark.parametrize("cost", [-5e6, float("nan"), -0.0])
def test_a_negative_cost_gives_no_budget_back(cost: float) -> None:
    budget = DailyBudget(0.10)
    assert budget.try_reserve(0.04, WALL0)
    budget.settle(0.04, 0.03, WALL0)
    assert budget.try_reserve(0.04, WALL0)
    budget.settle(0.04, cost, WALL0)
    assert (budget.spent, budget.total, budget.reserved) == (pytest.approx(0.03), pytest.approx(0.03), 0.0)
    assert budget.try_reserve(0.07, WALL0) and not budget.try_reserve(0.001, WALL0)
