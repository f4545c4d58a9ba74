"""Continuous evaluation in virtual time: the schedule, the daily budget, and the drift flag."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest

from specexec import Query, Runtime, SimulatedBackend
from specexec.bench.eval import EvalHealth, load_eval, watch

from .test_eval import write_eval

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    """Hour-long schedules: virtual time only (trio's MockClock)."""
    import trio.testing

    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}


async def test_schedule_drift_and_model_change(tmp_path: Path, timing: object) -> None:
    spec = load_eval(write_eval(tmp_path, n=10))
    state = {"good": True}

    def reply(q: Query) -> str:
        n = int(q.text.split()[2])
        return str(n + 1) if state["good"] or n < 5 else "no idea"

    mini = SimulatedBackend("mini", 0.1, reply=reply, reported_model="mini-2025-01")
    health = EvalHealth()
    seen: list[float] = []

    def on_check(check: object) -> None:
        health.update(check)  # type: ignore[arg-type]
        seen.append(anyio.current_time())
        state["good"] = False  # the provider rotates weights after the first check
        mini.reported_model = "mini-2025-06"

    start = anyio.current_time()
    async with Runtime([mini]) as rt:
        checks = await watch(spec, rt, {"sum": "mini"}, every=3600.0, daily_budget=1.0, checks=2, on_check=on_check)
    assert [c.at - start for c in checks] == [timing.approx(0.0), timing.approx(3600.0)]  # type: ignore[attr-defined]
    assert checks[0].pass_rates == {"sum": 1.0} and not checks[0].drift
    assert checks[1].pass_rates == {"sum": 0.5}
    assert {d.kind for d in checks[1].drift} == {"below_bar", "model_changed"}
    assert health.drifting and health.pass_rates() == {"sum": 0.5}


async def test_daily_budget_bounds_the_checks(tmp_path: Path) -> None:
    spec = load_eval(write_eval(tmp_path, n=10))
    mini = SimulatedBackend("mini", 0.1, reply="1", input_price=1000.0, output_price=1000.0)
    one_call = (len(b"What is 0 + 1?") * 1000.0 + 256 * 1000.0) / 1e6  # input bytes bound + max_tokens
    async with Runtime([mini]) as rt:
        checks = await watch(
            spec, rt, {"sum": "mini"}, every=43200.0, daily_budget=one_call + 0.05, sample=2, checks=4, concurrency=1
        )
    # each call reserves its worst case (0.27 $) and settles to its real cost (0.037 $): two fit
    # at t = 0, nothing fits at 12 h, the budget is new at 24 h, nothing again at 36 h
    assert [c.skipped for c in checks] == [0, 2, 0, 2]
    assert mini.calls == 4 and sum(c.cost for c in checks) <= one_call + 0.05
