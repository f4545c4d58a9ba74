"""Over real loopback HTTP, a run's objects — httpx's request and response, the connection
pool's bookkeeping, a cancelled loser's traceback through the HTTP stack — are freed by
reference counting when the run ends, never left for the cyclic garbage collector (whose
passes pause the whole process; its young-generation passes are triggered by what is left)."""

from __future__ import annotations

import gc

import pytest

from specexec import Backend, Policy, Result, Runtime
from specexec.backends import Anthropic, OpenAICompatible
from specexec.bench.fleet import FleetProcess
from specexec.bench.fleet.pytest_fixtures import CANARY_QUESTION, TEST_API_KEY, TEST_API_KEY_ENV
from tests.helpers import cyclic_collector_off

pytestmark = pytest.mark.anyio


def _backends(fleet: FleetProcess, api: str, streamed: bool) -> list[Backend]:
    alpha = fleet.config.deployment("alpha-us").model
    slow = OpenAICompatible("slow", base_url=fleet.base_url("slow-us"), model=alpha, region="us-west", stream=streamed)
    if api == "anthropic":
        model = fleet.config.deployment("gamma-eu").model
        url = fleet.base_url("gamma-eu")
        return [Anthropic("fast", base_url=url, model=model, api_key_env=TEST_API_KEY_ENV, stream=streamed), slow]
    return [OpenAICompatible("fast", base_url=fleet.base_url("alpha-us"), model=alpha, stream=streamed), slow]


async def _call(rt: Runtime, policy: Policy, via_stream: bool) -> Result:
    if not via_stream:
        return await rt.run(CANARY_QUESTION, policy)
    async with rt.stream(CANARY_QUESTION, policy) as stream:
        async for _ in stream:
            pass
    return stream.result


@pytest.mark.parametrize("api", ["openai", "anthropic"])
@pytest.mark.parametrize("streamed", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("via_stream", [False, True], ids=["run", "stream"])
@pytest.mark.parametrize(
    "policy",
    [Policy.single("fast"), Policy.race(["slow", "fast"]), Policy.race(["fast", "slow"])],
    ids=["single", "race", "race-loser-spawned"],  # the first candidate runs in the run's own task on asyncio
)
async def test_an_http_run_leaves_nothing_for_the_cyclic_collector(
    fleet: FleetProcess, api: str, streamed: bool, via_stream: bool, policy: Policy, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TEST_API_KEY_ENV, TEST_API_KEY)
    async with Runtime(_backends(fleet, api, streamed)) as rt:
        for _ in range(2):  # warm: connections open, first-use imports and caches
            await _call(rt, policy, via_stream)
        with cyclic_collector_off():
            for _ in range(3):
                result = await _call(rt, policy, via_stream)
                assert result.backend == "fast"
            del result
            assert gc.collect() == 0
