"""Streams on the discrete-event ``--sim`` driver: the same figures as the trio virtual-time one.

The built-in ``specexec bench ttft --sim`` runs (first-token hedges and races through
``stream``, ``run`` over streaming backends), and what they do not use: prefix verifiers and
rejections, ``commit="complete"``, verification after commit, faults and stalls before the
first token, first-token and stall timeouts, short replies (token steps without text), whole
answers streamed as one piece, deadlines, fatal errors, the workload's timeout.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import trio
import trio.testing

from specexec import (
    HealthConfig,
    HedgeBudgetConfig,
    LogNormal,
    Policy,
    Query,
    Runtime,
    SimulatedBackend,
    Slowdown,
    slow_tail,
)
from specexec.bench.bench._des import des_drive
from specexec.bench.bench._driver import LastTrace, drive
from specexec.bench.bench._scenario import Scenario, Workload
from specexec.bench.bench._sim import _seed_trio_scheduler
from specexec.bench.bench._stats import PolicyStats
from specexec.bench.bench._ttft import scenario as ttft_scenario
from specexec.bench.bench._ttft import simulate_ttft
from specexec.verifiers import Regex

CROSS_CHECK_REQUESTS = 1_000


@pytest.mark.parametrize("policy", ["single", "hedge-total", "hedge-ttft", "race"])
def test_the_builtin_ttft_runs_give_identical_figures_on_both_simulators(policy: str) -> None:
    sc = ttft_scenario(CROSS_CHECK_REQUESTS)
    trio_stats = simulate_ttft(sc, policy, engine="trio").to_builtins()
    des_stats = simulate_ttft(sc, policy, engine="des").to_builtins()
    assert des_stats == trio_stats


def _reply(query: Query) -> str:
    key = query.metadata.get("seed_key")
    return "bad answer" if isinstance(key, int) and key % 7 == 0 else "ok, the answer"


def _backends(seed: int) -> list[SimulatedBackend]:
    return [
        SimulatedBackend(
            "a",
            0.0,
            ttft=slow_tail(LogNormal(0.04, 0.4), 0.05, 6.0),
            token_time=LogNormal(0.006, 1.2),  # now and then a gap past stall_timeout
            output_tokens=8,
            reply=_reply,
            errors={"unavailable": 0.04},
            stall=0.02,
            seed=seed,
            provider="pa",
            region="r1",
            slowdowns=[Slowdown(1.0, 2.0, 3.0)],
        ),
        SimulatedBackend(
            "b",
            0.0,
            ttft=LogNormal(0.05, 0.3),
            token_time=0.004,
            output_tokens=6,
            reply="ok",  # shorter than its tokens: steps without text
            errors={"timeout": 0.03, "bad_request": 0.01},
            seed=seed + 1,
            provider="pb",
            region="r2",
        ),
        SimulatedBackend(  # no ttft: its whole answer streams as one piece
            "c", LogNormal(0.07, 0.3), reply="ok, whole", seed=seed + 2, provider="pc", region="r3"
        ),
    ]


OK = [Regex(pattern="^ok")]
POLICIES = {
    "hedge-prefix": Policy.hedge(
        ["a", "b", "c"],
        delay="p90",
        max_attempts=3,
        budget=HedgeBudgetConfig(max_extra_load=0.2),
        verify_prefix=OK,
        prefix_chars=2,
        verify=[Regex(pattern="answer")],
        attempt_timeout=0.15,
        stall_timeout=0.03,
    ),
    "race-complete": Policy.race(["a", "b", "c"], commit="complete", verify=OK, stall_timeout=0.03),
    "single-deadline": Policy.single("a", deadline=0.12, stall_timeout=0.05),
    "failover-fatal": Policy.failover(["b", "a", "c"], fatal=["bad_request"], attempt_timeout=0.1),
}


def _scenario() -> Scenario:
    return Scenario(
        name="streams",
        description="stream features",
        source=None,
        seed=5,
        baseline="single-deadline",
        workload=Workload(rate=150.0, requests=CROSS_CHECK_REQUESTS, timeout=0.4, max_in_flight=20),
        backends=(),
        fleet=None,
        prices={},
        health=HealthConfig(),
        events=(),
        phases=(),
        quality=None,
        policies=POLICIES,
    )


def _on_trio(sc: Scenario, policy: Policy, make: Callable[[int], list[SimulatedBackend]]) -> PolicyStats:
    stats = PolicyStats()
    _seed_trio_scheduler(sc.seed)

    async def go() -> None:
        sink = LastTrace()
        async with Runtime(make(sc.seed), health=sc.health, sinks=[sink]) as rt:
            await drive(sc, policy, rt, sink, stats, streamed=True)

    trio.run(go, clock=trio.testing.MockClock(autojump_threshold=0))
    return stats


def _on_des(sc: Scenario, policy: Policy, make: Callable[[int], list[SimulatedBackend]]) -> PolicyStats:
    stats = PolicyStats()
    des_drive(sc, policy, Runtime(make(sc.seed), health=sc.health), stats, streamed=True)
    return stats


@pytest.mark.parametrize("name", list(POLICIES))
def test_stream_features_agree(name: str) -> None:
    sc = _scenario()
    trio_stats, des_stats = _on_trio(sc, POLICIES[name], _backends), _on_des(sc, POLICIES[name], _backends)
    assert des_stats.to_builtins() == trio_stats.to_builtins()
    summary = des_stats.total.summary()
    assert summary.ok > 0 and summary.failures  # answered, and failed in some way
