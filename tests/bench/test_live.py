"""``--live``: open-loop accounting on the real clock, and the scenario → fleet translation."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from specexec import CallableBackend, PolicyError, Query
from specexec.bench.bench import load_scenario, run_policy_live
from specexec.bench.bench._live import fleet_config
from specexec.bench.fleet import LogNormal, Mixture

from .conftest import SMALL

Write = Callable[..., Path]

CONSTANT = """
seed = 1
[workload]
arrivals = "constant"
rate = 100.0
duration = 1.0

[[backends]]
kind = "simulated"
name = "a"

[policies.single]
mode = "single"
candidates = ["a"]
"""


@pytest.mark.parametrize("loop", ["trio", "asyncio"])
def test_a_stalled_client_shows_in_the_tail(write_scenario: Write, loop: str) -> None:
    """Request 30 blocks the client's event loop for 0.3 s (a CPU stall, a GC pause): the ~30
    requests due meanwhile go out late, and their latency counts from their intended time —
    on either client loop."""

    async def complete(query: Query) -> str:
        if query.metadata["seed_key"] == 30:
            time.sleep(0.3)  # noqa: ASYNC251 - the point: the whole client stalls
        await anyio.sleep(0.002)
        return "ok"

    scenario = load_scenario(write_scenario(CONSTANT))
    stats = run_policy_live(scenario, "single", [CallableBackend("a", complete)], loop=loop).total
    assert stats.requests == 100 and stats.ok == 100
    late = sum(
        it.count_at_value_iterated_to for it in stats.latency.get_recorded_iterator() if it.value_iterated_to >= 100_000
    )
    assert 15 <= late <= 60  # ~30 were due during the stall; a loaded machine may add a few
    assert stats.latency.get_value_at_percentile(50.0) < 100_000


def test_an_unknown_loop_is_refused_with_the_choices(write_scenario: Write) -> None:
    scenario = load_scenario(write_scenario(CONSTANT))
    with pytest.raises(ValueError, match=r"trio, asyncio.*'curio'"):
        run_policy_live(scenario, "single", [], loop="curio")


def test_fleet_translation(write_scenario: Write) -> None:
    fast = '{ kind = "lognormal", median = 0.04 }'
    mixture = (
        f'{{ kind = "mixture", components = [{{ weight = 0.95, dist = {fast} }}, '
        f'{{ weight = 0.05, dist = {{ kind = "scaled", factor = 10.0, base = {fast} }} }}] }}'
    )
    text = (
        SMALL.replace(
            'latency = { kind = "lognormal", median = 0.02, sigma = 0.3 }',
            f"latency = {mixture}\nerrors = {{ unavailable = 0.01 }}",
        )
        + '\n[[events]]\nkind = "brownout"\nregion = "r2"\nstart = 1.0\nend = 2.0\n'
    )
    config = fleet_config(load_scenario(write_scenario(text)))
    a, b = config.deployments
    assert isinstance(a.latency, Mixture)
    (c1, c2) = a.latency.components
    assert c1.weight == pytest.approx(0.95) and c2.dist == LogNormal(median=0.4, sigma=0.25)
    assert a.faults.error_503 == 0.01 and b.latency == LogNormal(median=0.03, sigma=0.3)
    (ev,) = config.events
    assert ev.deployments == ("b",) and ev.start == 1.0


def test_fleet_cannot_serve_everything(write_scenario: Write) -> None:
    scenario = load_scenario(
        write_scenario(SMALL.replace("sigma = 0.3 }", "sigma = 0.3 }\nerrors = { rate_limited = 0.1 }", 1))
    )
    with pytest.raises(PolicyError) as info:
        fleet_config(scenario)
    assert info.value.path == "$.backends[0].errors.rate_limited" and "rate_limit" in str(info.value)
