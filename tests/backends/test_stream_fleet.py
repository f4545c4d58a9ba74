"""Issue 10 over real loopback HTTP: ``specexec.stream`` through the HTTP backends' ``stream``
against the mock fleet, on trio and asyncio+uvloop: a hedge on the first token commits the
fast deployment and the slow one sees the disconnect; the deltas are the answer's text."""

from __future__ import annotations

import anyio
import pytest

import specexec
from specexec import Policy, Query, Runtime
from specexec.backends import Anthropic, OpenAICompatible
from specexec.bench.fleet import FleetProcess
from specexec.bench.fleet.pytest_fixtures import CANARY_ANSWER, CANARY_QUESTION
from tests.backends.test_e2e_fleet import _keys as _keys  # the API key variables
from tests.backends.test_e2e_fleet import faults_fleet as faults_fleet
from tests.backends.test_e2e_fleet import make, settled_stats

pytestmark = pytest.mark.anyio


async def test_ttft_hedge_commits_the_fast_deployment_and_the_slow_one_sees_the_disconnect(
    fleet: FleetProcess,
) -> None:
    model = fleet.config.deployment("alpha-us").model
    slow = OpenAICompatible("slow-us", base_url=fleet.base_url("slow-us"), model=model, stream=False)
    fast = OpenAICompatible("alpha-us", base_url=fleet.base_url("alpha-us"), model=model, stream=False)
    before = fleet.deployment_stats("slow-us")
    deltas: list[str] = []
    async with Runtime([slow, fast]) as rt:
        t0 = anyio.current_time()
        policy = Policy.hedge(["slow-us", "alpha-us"], delay=0.05, budget=None)
        async with specexec.stream(CANARY_QUESTION, policy, runtime=rt) as s:
            async for delta in s:
                deltas.append(delta)
        elapsed = anyio.current_time() - t0
    result = s.result
    assert (result.backend, result.response.text) == ("alpha-us", CANARY_ANSWER)
    assert "".join(deltas) == result.response.text
    primary, hedge = result.trace.attempts
    assert (primary.backend, primary.outcome, hedge.backend, hedge.outcome) == (
        "slow-us",
        "cancelled",
        "alpha-us",
        "accepted",
    )
    assert elapsed < 0.45  # slow-us sends its first token after 500 ms; the hedge did not wait for it
    assert hedge.ttft is not None and 0 < hedge.ttft <= (hedge.latency or 0)
    usage = result.response.usage
    assert not usage.estimated and usage.output_tokens > 0 and result.response.finish_reason == "stop"
    after = await settled_stats(fleet, "slow-us")
    assert after["disconnected"] - before["disconnected"] == 1


@pytest.mark.parametrize("name", ["ttft", "a-ttft"])
async def test_stream_deltas_arrive_one_by_one_and_equal_the_text(faults_fleet: FleetProcess, name: str) -> None:
    backend = make(faults_fleet, name)
    async with Runtime([backend]) as rt, rt.stream(Query("Say something.", max_tokens=10), Policy.single(name)) as s:
        deltas = [d async for d in s]
    assert len(deltas) == 10  # 10 output tokens, 10 ms apart: one delta each
    assert "".join(deltas) == s.result.response.text
    assert not s.result.response.usage.estimated


@pytest.mark.parametrize("name", ["held", "a-held"])
async def test_the_backend_stream_closed_early_disconnects(faults_fleet: FleetProcess, name: str) -> None:
    backend = make(faults_fleet, name)
    assert isinstance(backend, (OpenAICompatible, Anthropic))
    before = (await settled_stats(faults_fleet, name))["disconnected"]
    async with Runtime([backend]) as rt, rt.stream(Query("Say something.", max_tokens=10), Policy.single(name)) as s:
        async for _ in s:
            break  # the caller leaves after the first delta: the attempt is cancelled
    # The deployment holds its stream open after two tokens, so only the client closing its
    # connection ends the request (with 10 paced tokens a slow machine let the stream finish).
    after = await settled_stats(faults_fleet, name)
    assert after["disconnected"] - before == 1
