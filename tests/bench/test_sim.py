"""``--sim``: determinism for a seed, the tail-at-scale expectation, open-loop accounting, events."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest

from specexec.bench.bench import build_result, load_scenario, simulate
from specexec.bench.bench._tail import fixed_delay_analysis, sweep_scenario

from .conftest import SMALL

Write = Callable[..., Path]


def _figures(scenario: Any, jobs: int = 1) -> Any:
    result = build_result(scenario, "sim", simulate(scenario, jobs=jobs), elapsed=1.0)
    return msgspec.to_builtins(result)


# --------------------------------------------------------------------------- determinism

BUSY = (
    SMALL.replace("requests = 400", "requests = 800")
    + """
[[events]]
kind = "brownout"
backends = ["a"]
start = 5.0
end = 9.0
factor = 4.0

[[events]]
kind = "outage"
backends = ["b"]
start = 8.0
end = 10.0

[policies.race]
mode = "race"
candidates = ["a", "b"]
"""
)


def test_same_seed_same_figures(write_scenario: Write) -> None:
    scenario = load_scenario(write_scenario(BUSY))
    first, second = _figures(scenario), _figures(scenario)
    assert first == second
    assert first["policies"][1]["summary"]["hedges"] > 0  # hedges, cancellations and an outage happened
    other = _figures(scenario.with_options(seed=2))
    assert other["policies"][0]["summary"]["latency"] != first["policies"][0]["summary"]["latency"]


def test_worker_processes_give_the_same_figures(write_scenario: Write) -> None:
    scenario = load_scenario(write_scenario(BUSY)).with_options(requests=300)
    assert _figures(scenario, jobs=2) == _figures(scenario, jobs=1)


def test_policies_see_the_same_draws(write_scenario: Write) -> None:
    """Common random numbers: request i's primary draw is the same under every policy, so a
    hedge policy with a delay longer than any latency behaves exactly like single."""
    text = SMALL.replace('delay = "p90"', "delay = 10.0").replace("budget = { max_extra_load = 0.1 }\n", "")
    figures = _figures(load_scenario(write_scenario(text)))
    single, hedge = (p["summary"] for p in figures["policies"])
    assert single["latency"] == hedge["latency"] and hedge["extra_load"] == 0.0


# --------------------------------------------------------------------------- tail at scale

TAIL_REQUESTS = 10_000


@pytest.fixture(scope="module")
def tail() -> dict[str, Any]:
    """single, adaptive p95 and a fixed 80 ms delay on the tail-at-scale scenario (seed 1)."""
    scenario = sweep_scenario(load_scenario("tail-at-scale"), [80]).with_options(
        requests=TAIL_REQUESTS, seed=1, policies=["single", "adaptive-p95", "fixed-80ms"]
    )
    stats = simulate(scenario, jobs=1)
    return {name: s.total.summary() for name, s in stats.items()}


def test_tail_at_scale_adaptive_p95_meets_the_issue_target(tail: dict[str, Any]) -> None:
    single, adaptive = tail["single"], tail["adaptive-p95"]
    assert adaptive.latency["p99"] <= 0.35 * single.latency["p99"]
    assert adaptive.latency["p99.9"] <= 0.40 * single.latency["p99.9"]
    assert adaptive.extra_load <= 0.06


def test_tail_at_scale_adaptive_p95_extra_load_and_some_cut(tail: dict[str, Any]) -> None:
    """A regression guard beside the target test above: measured 5.93 % extra load, −69.6 % p99
    and −66.6 % p99.9 on this run (6.12 %, −71 %, −67 % before the long window's margin cap);
    the guard allows a little noise around them."""
    single, adaptive = tail["single"], tail["adaptive-p95"]
    assert adaptive.requests == single.requests == TAIL_REQUESTS and adaptive.success == 1.0
    assert adaptive.extra_load <= 0.065
    assert adaptive.latency["p99"] <= 0.32 * single.latency["p99"]
    assert adaptive.latency["p99.9"] <= 0.40 * single.latency["p99.9"]
    assert adaptive.latency["p50"] == single.latency["p50"]


def test_tail_at_scale_fixed_delay_matches_the_exact_figures(tail: dict[str, Any]) -> None:
    """The simulation (and the engine's hedge loop) reproduce the closed-form figures."""
    single, fixed = tail["single"], tail["fixed-80ms"]
    dist = load_scenario("tail-at-scale").backends[0].latency  # type: ignore[union-attr]
    exact = fixed_delay_analysis(dist, 0.080)
    assert fixed.latency["p99"] == pytest.approx(exact["p99"], rel=0.05)
    assert fixed.extra_load == pytest.approx(exact["extra_load"], abs=0.005)
    assert 1 - exact["p99"] / 0.4937 == pytest.approx(0.73, abs=0.01)  # the issue's "analytic limit"
    assert fixed.latency["p99"] <= 0.32 * single.latency["p99"]


# --------------------------------------------------------------------------- open loop


STALL = """
seed = 1
[workload]
arrivals = "constant"
rate = 100.0
duration = 6.0
max_in_flight = 1

[[backends]]
kind = "simulated"
name = "a"
latency = 0.005

[[events]]
kind = "brownout"
backends = ["a"]
start = 1.0
end = 1.001
factor = 200.0

[policies.single]
mode = "single"
candidates = ["a"]
"""


def test_a_stalled_backend_shows_in_the_tail(write_scenario: Write) -> None:
    """One call stalls for 1 s while the client holds one request at a time: the ~100 requests
    that should have gone out meanwhile are sent late (and the backlog takes another second to
    drain at 5 ms a request against 10 ms arrivals); their latency counts from their intended
    send time, so ~150 requests show ≥ 250 ms where a closed-loop measurement would show one."""
    stats = simulate(load_scenario(write_scenario(STALL)), jobs=1)["single"].total
    h = stats.latency
    assert stats.requests == 600 and stats.ok == 600
    slow = sum(count for value, count in _counts(h) if value >= 250_000)
    assert 130 <= slow <= 170
    assert h.get_value_at_percentile(99.0) >= 900_000
    assert h.get_value_at_percentile(50.0) < 20_000


def _counts(h: Any) -> list[tuple[int, int]]:
    return [(it.value_iterated_to, it.count_at_value_iterated_to) for it in h.get_recorded_iterator()]


def test_timeout_bounds_a_stalled_request(write_scenario: Write) -> None:
    text = STALL.replace("latency = 0.005", "latency = 0.005\nstall = 0.1").replace(
        "max_in_flight = 1", "timeout = 0.5"
    )
    stats = simulate(load_scenario(write_scenario(text)), jobs=1)["single"].total.summary()
    assert stats.failures == {"timeout": stats.requests - stats.ok}
    assert 30 <= stats.deadline_misses <= 90


# --------------------------------------------------------------------------- events and quality


def test_outage_failover_keeps_everything(write_scenario: Write) -> None:
    scenario = load_scenario("provider-outage").with_options(
        duration=40.0, rate=50.0, policies=["single", "failover", "hedge"]
    )
    figures = {name: s.total.summary() for name, s in simulate(scenario, jobs=1).items()}
    assert figures["single"].failures.get("NoAcceptableResponse", 0) == pytest.approx(500, rel=0.1)
    for name in ("failover", "hedge"):
        assert figures[name].success == 1.0, name


def test_rate_limit_storm_moves_traffic() -> None:
    scenario = load_scenario("rate-limit-storm").with_options(
        duration=40.0, rate=50.0, policies=["single", "failover", "hedge"]
    )
    stats = simulate(scenario, jobs=1)
    storm = {name: s.phase_stats[1].summary() for name, s in stats.items()}
    assert storm["single"].success is not None and storm["single"].success < 0.05
    for name in ("failover", "hedge"):
        assert storm[name].success == 1.0, name
    assert storm["failover"].wins.get("beta-us", 0) > 0.9


def test_cost_ceiling_is_never_crossed_and_quality_is_measured() -> None:
    scenario = load_scenario("cost-ceiling").with_options(requests=1000)
    figures: dict[str, Any] = {name: s.total.summary() for name, s in simulate(scenario, jobs=1).items()}
    for name, policy in scenario.policies.items():
        if policy.max_cost is not None:
            assert figures[name].cost_max <= policy.max_cost, name
    assert figures["small"].quality == pytest.approx(0.70, abs=0.05)
    assert figures["large"].quality == pytest.approx(0.97, abs=0.02)
    assert figures["cascade"].quality == 1.0  # the verifier is the gate
    assert figures["pick-cheap"].wins.keys() <= {"small", "medium"}  # large does not fit $0.001
    assert figures["pick-cheap"].quality > figures["medium"].quality
    assert figures["cascade"].cost_mean < figures["large"].cost_mean


def test_sim_refuses_non_simulated_backends(write_scenario: Write) -> None:
    text = SMALL.replace('kind = "simulated"\nname = "b"', 'kind = "openai"\nname = "b"\nmodel = "m"')
    text = text.replace('seed = 1\nlatency = { kind = "lognormal", median = 0.03, sigma = 0.3 }\n', "")
    scenario = load_scenario(write_scenario(text))
    assert not scenario.simulated
    with pytest.raises(TypeError):
        simulate(scenario, jobs=1)
