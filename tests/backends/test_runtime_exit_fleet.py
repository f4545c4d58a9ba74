"""Exiting an entered ``Runtime`` while runs over real loopback HTTP are still in flight: its
clients close under them, so they fail — with an error that says so, stopping at once, and
without blaming the healthy backends (their breakers and failure counts are untouched)."""

from __future__ import annotations

import anyio
import pytest

from specexec import Policy, Runtime
from specexec.backends import OpenAICompatible
from specexec.bench.fleet import FleetProcess

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    "policy",
    [Policy.hedge(["slow-a", "slow-b"], delay=5.0, budget=None), Policy.race(["slow-a", "slow-b"])],
    ids=["hedge", "race"],
)
@pytest.mark.parametrize("via_stream", [False, True], ids=["run", "stream"])
async def test_runs_in_flight_when_the_runtime_exits_fail_clearly_and_blame_no_backend(
    fleet: FleetProcess, policy: Policy, via_stream: bool
) -> None:
    model = fleet.config.deployment("alpha-us").model
    url = fleet.base_url("slow-us")  # answers after ~0.5 s
    rt = Runtime([OpenAICompatible(name, base_url=url, model=model, region=name) for name in ("slow-a", "slow-b")])
    errors: list[Exception] = []

    async def one() -> None:
        try:
            if via_stream:
                async with rt.stream("q", policy) as stream:
                    async for _ in stream:
                        pass
            else:
                await rt.run("q", policy)
        except Exception as exc:
            errors.append(exc)

    async with anyio.create_task_group() as tg, rt:
        for _ in range(3):
            tg.start_soon(one)
        on_the_wire = 3 * (2 if policy.mode == "race" else 1)
        for _ in range(400):  # until the fleet has every request (bounded)
            if fleet.stats()["deployments"]["slow-us"]["in_flight"] == on_the_wire:
                break
            await anyio.sleep(0.005)
        assert fleet.stats()["deployments"]["slow-us"]["in_flight"] == on_the_wire
    assert len(errors) == 3
    for error in errors:
        assert type(error).__name__ == "RuntimeClosed" and isinstance(error, RuntimeError)
        assert "the Runtime was exited while this run was in flight" in str(error)
    for name in ("slow-a", "slow-b"):
        health = rt.health(name)
        assert (health.failures, health.last_error_kind, health.concurrency.in_use) == (0, None, 0)
        assert health.breaker.state(anyio.current_time()) == "closed"
