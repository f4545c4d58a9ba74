"""A hedge through a runtime over real loopback HTTP: the fast deployment wins, the slow one
sees its request cancelled (a client disconnect), TTFT and usage land in the trace and cost."""

from __future__ import annotations

import anyio
import pytest

from specexec import Policy, Runtime
from specexec.backends import OpenAICompatible
from specexec.bench.fleet import FleetProcess
from specexec.bench.fleet.pytest_fixtures import CANARY_ANSWER, CANARY_QUESTION
from tests.backends.test_e2e_fleet import settled_stats

pytestmark = pytest.mark.anyio


async def test_hedge_across_two_deployments_returns_the_fast_one(fleet: FleetProcess) -> None:
    model = fleet.config.deployment("alpha-us").model
    slow = OpenAICompatible(
        "slow-us", base_url=fleet.base_url("slow-us"), model=model, region="us-west", input_price=1.0, output_price=2.0
    )
    fast = OpenAICompatible(
        "alpha-us", base_url=fleet.base_url("alpha-us"), model=model, stream=True, input_price=1.0, output_price=2.0
    )
    before = fleet.deployment_stats("slow-us")
    async with Runtime([slow, fast]) as rt:
        t0 = anyio.current_time()
        result = await rt.run(CANARY_QUESTION, Policy.hedge(["slow-us", "alpha-us"], delay=0.05))
        elapsed = anyio.current_time() - t0
    assert (result.backend, result.response.text) == ("alpha-us", CANARY_ANSWER)
    primary, hedge = result.trace.attempts
    assert (primary.backend, primary.outcome, hedge.trigger, hedge.outcome) == (
        "slow-us",
        "cancelled",
        "hedge",
        "accepted",
    )
    # uvloop timers have 1 ms resolution: a timer may fire a hair early
    assert hedge.started is not None and hedge.started >= 0.05 - 0.002
    assert elapsed < 0.5  # slow-us answers after 500 ms; the hedge did not wait for it
    assert hedge.ttft is not None and 0 < hedge.ttft <= (hedge.latency or 0)
    usage = result.response.usage
    assert not usage.estimated and usage.output_tokens > 0
    settled = (usage.input_tokens * 1.0 + usage.output_tokens * 2.0) / 1e6
    assert hedge.cost == pytest.approx(settled)
    assert result.cost == pytest.approx(settled + primary.cost)  # the cancelled primary stays charged
    after = await settled_stats(fleet, "slow-us")
    assert after["disconnected"] - before["disconnected"] == 1
