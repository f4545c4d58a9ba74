"""Issue 9.1 as a property: whatever is cancelled when, every slot an attempt took is given back.

Slots: the half-open breaker's single trial, concurrency slots (of race attempts, judge calls
and retries). Several runs share one runtime and are cancelled at random times (the caller,
the deadline, a winner) — while calling, while verifying, while scoring. After every run has
ended, no slot is in use and no breaker holds a trial for an attempt that is gone.
"""

from __future__ import annotations

import contextlib
from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specexec
from specexec import BreakerConfig, HealthConfig, Policy, Query, Response, Runtime
from tests.helpers import Scripted


class Sometimes(Scripted):
    """Fails on the calls listed, else answers (after ``latency``)."""

    def __init__(self, name: str, latency: float, failing: frozenset[int], **kw: Any) -> None:
        super().__init__(name, latency, **kw)
        self.failing = failing

    async def complete(self, query: Query) -> Response:
        self.error = specexec.Unavailable("blip") if self.calls in self.failing else None
        return await super().complete(query)


def verifier_sleeping(seconds: float) -> Any:
    async def verify(query: Query, response: Response) -> bool:
        await trio.sleep(seconds)
        return True

    return verify


backend = st.fixed_dictionaries(
    {
        "latency": st.integers(1, 100).map(lambda ms: ms / 1000),
        "failing": st.frozensets(st.integers(0, 8), max_size=5),
        "max_concurrency": st.one_of(st.none(), st.integers(1, 3)),
    }
)
run_spec = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(["single", "hedge", "race", "failover", "pick"]),
        "verify_sleep": st.one_of(st.none(), st.integers(1, 200).map(lambda ms: ms / 1000)),
        "deadline": st.one_of(st.none(), st.integers(10, 200).map(lambda ms: ms / 1000)),
        "cancel_at": st.one_of(st.none(), st.integers(0, 200).map(lambda ms: ms / 1000)),
        "start_at": st.integers(0, 600).map(lambda ms: ms / 1000),
        "retries": st.integers(0, 2),
        "judge": st.booleans(),
    }
)


def policy_for(spec: dict[str, Any], names: list[str]) -> Policy:
    knobs: dict[str, Any] = {"deadline": spec["deadline"], "retries": spec["retries"], "jitter": False}
    if spec["verify_sleep"] is not None:
        knobs["verify"] = [verifier_sleeping(spec["verify_sleep"])]
    mode = spec["mode"]
    if mode == "single":
        return Policy.single(names[0], **knobs)
    if mode == "hedge":
        return Policy.hedge(names, delay=0.05, **knobs)
    if mode == "race":
        return Policy.race(names, **knobs)
    if mode == "failover":
        return Policy.failover(names, **knobs)
    scorer = specexec.scorers.llm_judge("judge") if spec["judge"] else specexec.scorers.majority()
    return Policy.pick(names, scorer=scorer, **knobs)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(backend, min_size=1, max_size=3), st.lists(run_spec, min_size=1, max_size=10))
def test_slots_in_use_match_attempts_in_flight(backends: list[dict[str, Any]], runs: list[dict[str, Any]]) -> None:
    made = [
        Sometimes(f"b{i}", b["latency"], b["failing"], limits=specexec.Limits(max_concurrency=b["max_concurrency"]))
        for i, b in enumerate(backends)
    ]
    judge = Sometimes("judge", 0.05, frozenset({1}), text="7", limits=specexec.Limits(max_concurrency=1))
    names = [b.name for b in made]
    health = HealthConfig(breaker=BreakerConfig(failure_threshold=1, cooldown=0.05))
    everyone = [*made, judge]

    async def main() -> None:
        async with Runtime(everyone, health=health) as rt:

            async def one(spec: dict[str, Any]) -> None:
                await trio.sleep(spec["start_at"])
                with trio.move_on_after(spec["cancel_at"] if spec["cancel_at"] is not None else 1e9):
                    with contextlib.suppress(specexec.SpecExecError, specexec.BackendError):
                        await rt.run("q", policy_for(spec, names))

            async with trio.open_nursery() as nursery:
                for spec in runs:
                    nursery.start_soon(one, spec)
            now = trio.current_time()
            for b in everyone:
                h = rt.health(b.name)
                assert h.concurrency.in_use == 0, b.name
                assert b.active == 0
                assert not h.breaker._trial_out or h.breaker.state(now) != "half_open", b.name
            await trio.sleep(1.0)  # every cooldown over: each backend admits a run again
            for b in everyone:
                assert rt.health(b.name).breaker.would_allow(trio.current_time()), b.name

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
