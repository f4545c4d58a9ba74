"""Invariants of the engine over random latencies, failures, verdicts, prices and policies.

Each example is one ``trio.run`` in virtual time (``MockClock(autojump_threshold=0)``), so
hundreds of runs with latencies up to seconds take milliseconds.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specexec
from specexec import Policy, Runtime, verifiers
from tests.helpers import Scripted

BEHAVIOURS = ["ok", "ok", "fail", "reject", "fatal"]

backend_spec = st.fixed_dictionaries(
    {
        "latency": st.integers(1, 2000).map(lambda ms: ms / 1000),
        "behaviour": st.sampled_from(BEHAVIOURS),
        "price": st.sampled_from([0.0, 0.5, 2.0, 15.0]),
        "region": st.sampled_from(["us", "eu"]),
    }
)


def make_backend(i: int, spec: dict[str, Any]) -> Scripted:
    behaviour = spec["behaviour"]
    error: Exception | None = None
    if behaviour == "fail":
        error = specexec.Unavailable("down")
    elif behaviour == "fatal":
        error = specexec.BadRequest("bad")
    return Scripted(
        f"b{i}",
        spec["latency"],
        text="not json" if behaviour == "reject" else '{"ok": 1}',
        error=error,
        input_price=spec["price"],
        output_price=spec["price"] * 4,
        region=spec["region"],
        provider=f"p{i % 2}",
    )


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    specs = draw(st.lists(backend_spec, min_size=1, max_size=4))
    n = len(specs)
    mode = draw(st.sampled_from(["hedge", "race", "failover", "cascade", "pick"]))
    knobs: dict[str, Any] = {
        "max_attempts": draw(st.integers(1, n)),
        "verify": [verifiers.json_valid()],
        "max_cost": draw(st.one_of(st.none(), st.sampled_from([1e-5, 1e-4, 5e-4, 2e-3]))),
        "deadline": draw(st.one_of(st.none(), st.sampled_from([0.1, 0.5, 1.5]))),
        "attempt_timeout": draw(st.one_of(st.none(), st.sampled_from([0.3, 1.0]))),
        "max_parallel": draw(st.one_of(st.none(), st.integers(1, n))),
    }
    if mode == "hedge":
        knobs["delay"] = draw(st.sampled_from([0.0, 0.05, 0.2, "p95"]))
    if mode == "pick":
        knobs["scorer"] = specexec.scorers.majority()
    knobs["mode"] = mode
    return specs, knobs


def _setup(specs: list[dict[str, Any]], knobs: dict[str, Any]) -> dict[str, Any]:
    """The scenario's backends and policy, in the dict a run fills in."""
    backends = [make_backend(i, s) for i, s in enumerate(specs)]
    policy = Policy(candidates=tuple(b.name for b in backends), **knobs)
    return {"backends": backends, "policy": policy, "knobs": knobs, "traces": []}


async def _run(out: dict[str, Any], now: Callable[[], float]) -> None:
    """One run of ``out``'s policy on the running loop: its result or error, and the times (``now``)."""
    async with Runtime(out["backends"], sinks=[out["traces"].append]) as rt:
        out["t0"] = now()
        try:
            out["result"] = await rt.run(specexec.Query("q", max_tokens=50), out["policy"])
        except (specexec.SpecExecError, specexec.BackendError) as exc:
            out["error"] = exc
        out["t1"] = now()
    out["trace"] = out["traces"][0]


def run_scenario(specs: list[dict[str, Any]], knobs: dict[str, Any]) -> dict[str, Any]:
    out = _setup(specs, dict(knobs))
    trio.run(_run, out, trio.current_time, clock=trio.testing.MockClock(autojump_threshold=0))
    return out


SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@SETTINGS
@given(scenarios())
def test_cost_ceiling_is_never_crossed(scenario: tuple[list[dict[str, Any]], dict[str, Any]]) -> None:
    out = run_scenario(*scenario)
    max_cost = scenario[1]["max_cost"]
    trace = out["trace"]
    assert trace.cost == pytest.approx(sum(a.cost for a in trace.attempts), abs=1e-12)
    if max_cost is not None:
        assert trace.cost <= max_cost + 1e-12


@SETTINGS
@given(scenarios())
def test_never_more_than_max_attempts_nor_max_parallel(scenario: tuple[list[dict[str, Any]], dict[str, Any]]) -> None:
    out = run_scenario(*scenario)
    launched = [a for a in out["trace"].attempts if a.outcome != "skipped"]
    assert len(launched) <= scenario[1]["max_attempts"]
    assert sum(b.calls for b in out["backends"]) == len(launched)
    limit = scenario[1]["max_parallel"]
    if limit is not None:
        events = sorted([(a.started, 1) for a in launched] + [(a.ended, -1) for a in launched], key=lambda e: e[:2])
        level = peak = 0
        for _, step in events:
            level += step
            peak = max(peak, level)
        assert peak <= limit


@SETTINGS
@given(scenarios())
def test_winner_passed_the_verifiers_and_nothing_outlives_run(
    scenario: tuple[list[dict[str, Any]], dict[str, Any]],
) -> None:
    out = run_scenario(*scenario)
    assert all(b.active == 0 for b in out["backends"])
    assert all(a.outcome is not None for a in out["trace"].attempts)
    result = out.get("result")
    if result is not None:
        assert verifiers.json_valid()(specexec.Query("q"), result.response).accept
        assert result.trace.winner == result.backend
        winner = [a for a in result.trace.attempts if a.outcome == "accepted" and a.backend == result.backend]
        assert winner
    deadline = scenario[1]["deadline"]
    if deadline is not None:
        assert out["t1"] - out["t0"] <= deadline + 1e-9


race_specs = st.lists(backend_spec.filter(lambda s: s["behaviour"] != "fatal"), min_size=1, max_size=4)


@SETTINGS
@given(race_specs)
def test_with_delay_zero_the_result_time_is_the_fastest_accepted(specs: list[dict[str, Any]]) -> None:
    out = run_scenario(specs, {"mode": "race", "verify": [verifiers.json_valid()]})
    accepted = [s["latency"] for s in specs if s["behaviour"] == "ok"]
    if accepted:
        # exact up to float rounding of the virtual clock's jumps
        assert out["result"].latency == pytest.approx(min(accepted), abs=1e-9)
        assert out["t1"] - out["t0"] == pytest.approx(min(accepted), abs=1e-9)
    else:
        assert isinstance(out["error"], specexec.NoAcceptableResponse)
        assert out["t1"] - out["t0"] == pytest.approx(max(s["latency"] for s in specs), abs=1e-9)


# -- the same invariants on asyncio + uvloop: the native asyncio driver (callbacks, the caller's task
# making the first attempt) on the real clock, every time scaled down 100x ---------------------------

SCALE = 0.01
"""Seconds on asyncio per virtual second of the scenarios (latencies 0.01-20 ms)."""
ASYNCIO_SETTINGS = settings(max_examples=120, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def run_scenario_on_asyncio(specs: list[dict[str, Any]], knobs: dict[str, Any], eager: bool = False) -> dict[str, Any]:
    """``run_scenario`` on asyncio + uvloop (the native driver), every duration times ``SCALE``
    (``eager``: under ``asyncio.eager_task_factory``, where a task runs inside ``create_task``, on
    plain asyncio);
    ``out["left"]``: the tasks other than the caller's alive right after the run."""
    import asyncio

    import anyio

    specs = [{**s, "latency": s["latency"] * SCALE} for s in specs]
    knobs = {k: v * SCALE if k in ("deadline", "attempt_timeout", "delay") and isinstance(v, float) else v
             for k, v in knobs.items()}  # fmt: skip
    out = _setup(specs, knobs)

    async def main() -> None:
        loop = asyncio.get_running_loop()
        if eager:
            loop.set_task_factory(asyncio.eager_task_factory)  # type: ignore[attr-defined]
        await _run(out, loop.time)
        out["left"] = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]

    # uvloop calls a task factory with arguments asyncio's eager one does not take: plain asyncio then
    anyio.run(main, backend="asyncio", backend_options={"use_uvloop": not eager})
    return out


@pytest.mark.parametrize(
    "eager",
    [False, pytest.param(True, marks=pytest.mark.skipif(sys.version_info < (3, 12), reason="Python 3.12+"))],
    ids=["tasks", "eager-tasks"],
)
@ASYNCIO_SETTINGS
@given(scenario=scenarios())
def test_on_asyncio_the_invariants_hold_and_nothing_outlives_run(
    eager: bool, scenario: tuple[list[dict[str, Any]], dict[str, Any]]
) -> None:
    out = run_scenario_on_asyncio(*scenario, eager=eager)
    knobs, trace = out["knobs"], out["trace"]
    assert out["left"] == []  # no attempt's task outlives the run
    assert all(b.active == 0 for b in out["backends"])
    assert all(a.outcome is not None for a in trace.attempts)
    assert trace.cost == pytest.approx(sum(a.cost for a in trace.attempts), abs=1e-12)
    if knobs["max_cost"] is not None:
        assert trace.cost <= knobs["max_cost"] + 1e-12
    launched = [a for a in trace.attempts if a.outcome != "skipped"]
    assert len(launched) <= knobs["max_attempts"]
    # on a real clock a launch can be cancelled before its task's first step (a sub-ms deadline,
    # a winner in the same loop turn): never called, and then traced as cancelled
    never_called = len(launched) - sum(b.calls for b in out["backends"])
    assert 0 <= never_called <= sum(a.outcome == "cancelled" for a in launched)
    result = out.get("result")
    if result is not None:
        assert verifiers.json_valid()(specexec.Query("q"), result.response).accept
        assert result.trace.winner == result.backend
    if knobs["deadline"] is not None:
        # A real clock on a shared VM, whose pauses reach 0.1 s (CI saw a 0.116 s run with a 5 ms
        # deadline): this bounds the run (no hang); the exact deadline is checked in virtual time
        # by the trio test above.
        assert out["t1"] - out["t0"] <= knobs["deadline"] + 1.0
