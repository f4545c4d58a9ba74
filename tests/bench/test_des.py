"""The discrete-event ``--sim`` driver: the same figures as the trio virtual-time simulator."""

from __future__ import annotations

from collections.abc import Callable, Generator
from pathlib import Path

import pytest

from specexec import Query, SimulatedBackend
from specexec.bench.bench import builtin_scenarios, load_scenario
from specexec.bench.bench._des import EventLoop, des_simulate_policy, run_now
from specexec.bench.bench._sim import simulate_policy

Write = Callable[..., Path]

CROSS_CHECK_REQUESTS = 500

FEATURES = """
# What the built-ins do not use: faults and stalls, attempt timeouts, limits (and the primary
# waiting for a slot), breakers, retries with backoff, deadlines, max_in_flight and the
# workload's timeout, answer quality with verifiers.
seed = 3
baseline = "single"

[workload]
arrivals = "poisson"
rate = 200.0
requests = 500
max_in_flight = 6
timeout = 0.6

[quality]
verify = [{ kind = "regex", pattern = "^ok$", fullmatch = true }]
pass_rate = { a = 0.9 }

[[backends]]
kind = "simulated"
name = "a"
provider = "pa"
region = "r1"
latency = { kind = "lognormal", median = 0.02, sigma = 0.5 }
errors = { unavailable = 0.05, rate_limited = 0.02 }
stall = 0.01
limits = { max_concurrency = 3, rpm = 9000 }

[[backends]]
kind = "simulated"
name = "b"
provider = "pb"
region = "r2"
seed = 1
latency = { kind = "lognormal", median = 0.03, sigma = 0.4 }
errors = { timeout = 0.03 }
breaker = { failure_threshold = 3, min_requests = 5, window = 2.0 }

[[backends]]
kind = "simulated"
name = "c"
provider = "pc"
region = "r3"
seed = 2
latency = 0.05
limits = { max_concurrency = 2 }

[policies.single]
mode = "single"
candidates = ["a"]
limit_wait = 0.02
attempt_timeout = 0.2

[policies.retry]
mode = "failover"
candidates = ["a", "b"]
retries = 2
backoff = 0.01
jitter = false
deadline = 0.3

[policies.hedge]
mode = "hedge"
candidates = ["a", "b", "c"]
delay = "p90"
max_attempts = 3
verify = [{ kind = "regex", pattern = "^ok$", fullmatch = true }]
attempt_timeout = 0.25
budget = { max_extra_load = 0.1 }

[policies.race]
mode = "race"
candidates = ["a", "b", "c"]
deadline = 0.1
"""


def _simulated_builtins() -> list[tuple[str, str]]:
    out = []
    for name in builtin_scenarios():
        scenario = load_scenario(name)
        if scenario.simulated:
            out.extend((name, policy) for policy in scenario.policies)
    return out


@pytest.mark.parametrize(("scenario_name", "policy"), _simulated_builtins())
def test_every_builtin_scenario_gives_identical_figures_on_both_simulators(scenario_name: str, policy: str) -> None:
    scenario = load_scenario(scenario_name).with_options(requests=CROSS_CHECK_REQUESTS)
    trio_stats = simulate_policy(scenario, policy).to_builtins()
    des_stats = des_simulate_policy(scenario, policy).to_builtins()
    assert des_stats == trio_stats


@pytest.mark.parametrize("policy", ["single", "retry", "hedge", "race"])
def test_faults_limits_breakers_retries_and_deadlines_agree(write_scenario: Write, policy: str) -> None:
    scenario = load_scenario(write_scenario(FEATURES))
    trio_stats = simulate_policy(scenario, policy)
    des_stats = des_simulate_policy(scenario, policy)
    assert des_stats.to_builtins() == trio_stats.to_builtins()
    summary = des_stats.total.summary()
    if policy == "hedge":  # attempt timeouts (stalls) and rejections launch the next; verified answers only
        assert summary.extra_load > 0 and summary.quality == 1.0
    else:  # slots refused after limit_wait, deadlines
        expected = {"single": "NoAcceptableResponse", "retry": "DeadlineExceeded", "race": "DeadlineExceeded"}
        assert summary.failures.get(expected[policy], 0) > 0


def test_the_event_loop_runs_in_time_order_and_ties_in_scheduling_order() -> None:
    loop = EventLoop()
    seen: list[tuple[float, str]] = []
    for when, what in [(2.0, "c"), (1.0, "a"), (1.0, "b")]:
        loop.at(when, lambda w: seen.append((loop.now, w)), what)
    loop.at(0.5, lambda _: loop.at(0.1, lambda w: seen.append((loop.now, w)), "late"))  # never in the past
    loop.run()
    assert seen == [(0.5, "late"), (1.0, "a"), (1.0, "b"), (2.0, "c")]


def test_a_verifier_that_suspends_is_refused_with_why() -> None:
    class Suspend:
        def __await__(self) -> Generator[None, None, None]:
            yield

    async def slow() -> bool:
        await Suspend()
        return True

    with pytest.raises(TypeError, match="a verifier suspended"):
        run_now(slow(), "a verifier")


def test_draw_refuses_a_streaming_backend_with_why() -> None:
    backend = SimulatedBackend("s", 0.05, ttft=0.01)
    with pytest.raises(TypeError, match="'s' streams"):
        backend.draw(Query("q"), 0.0)


def test_a_backlog_behind_max_in_flight_agrees(write_scenario: Write) -> None:
    """Constant arrivals and a stall behind ``max_in_flight = 1``: many events share an instant."""
    from .test_sim import STALL

    scenario = load_scenario(write_scenario(STALL))
    assert des_simulate_policy(scenario, "single").to_builtins() == simulate_policy(scenario, "single").to_builtins()


JUDGED = """
# pick with an LLM judge: judge calls as events (slow, failing and stalling now and then),
# reserved against max_cost, cancelled by the deadline and by an accept_score winner.
seed = 4
baseline = "judged"

[workload]
arrivals = "poisson"
rate = 100.0
requests = 400
timeout = 0.5

[[backends]]
kind = "simulated"
name = "a"
provider = "pa"
latency = { kind = "lognormal", median = 0.03, sigma = 0.5 }
input_price = 1.0
output_price = 2.0

[[backends]]
kind = "simulated"
name = "b"
provider = "pb"
seed = 1
latency = { kind = "lognormal", median = 0.04, sigma = 0.5 }
errors = { unavailable = 0.05 }

[[backends]]
kind = "simulated"
name = "judge"
provider = "pj"
seed = 2
reply = "7"
input_price = 1.0
latency = { kind = "lognormal", median = 0.02, sigma = 0.8 }
errors = { unavailable = 0.05 }
stall = 0.02

[policies.judged]
mode = "pick"
candidates = ["a", "b"]
scorer = { kind = "llm_judge", backend = "judge" }
deadline = 0.15
attempt_timeout = 0.2

[policies.early]
mode = "pick"
candidates = ["a", "b"]
scorer = { kind = "llm_judge", backend = "judge" }
accept_score = 0.7
max_cost = 0.0008
"""


@pytest.mark.parametrize("policy", ["judged", "early"])
def test_llm_judges_agree(write_scenario: Write, policy: str) -> None:
    scenario = load_scenario(write_scenario(JUDGED))
    trio_stats = simulate_policy(scenario, policy)
    des_stats = des_simulate_policy(scenario, policy)
    assert des_stats.to_builtins() == trio_stats.to_builtins()
    assert des_stats.total.summary().ok > 0


def test_a_scorer_that_awaits_anything_but_a_judge_call_is_refused_with_why(write_scenario: Write) -> None:
    from specexec import Policy, Runtime
    from specexec.bench.bench._des import des_drive
    from specexec.bench.bench._sim import build_sim_backends
    from specexec.bench.bench._stats import PolicyStats

    class Suspend:
        def __await__(self) -> Generator[None, None, None]:
            yield

    async def score(query: Query, response: object) -> float:
        await Suspend()
        return 1.0

    scenario = load_scenario(write_scenario(JUDGED))
    policy = Policy.pick(["a", "b"], scorer=score)
    with pytest.raises(TypeError, match="other than a judge call"):
        des_drive(scenario, policy, Runtime(build_sim_backends(scenario)), PolicyStats())
