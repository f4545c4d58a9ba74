"""Budgets that steer routing: calendar periods in UTC (fake clock), downgrades by remaining
fraction, priority exemptions, BudgetExceeded naming key and reset, store outages, and the
no-overshoot property under concurrency (hypothesis, trio virtual time)."""

from __future__ import annotations

import contextlib
import datetime as dt
import math
from typing import Any

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specexec
from specexec import Budget, Policy, Query, Runtime, routing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio


def _ts(text: str) -> float:
    return dt.datetime.fromisoformat(text).replace(tzinfo=dt.UTC).timestamp()


class FakeClock:
    def __init__(self, text: str) -> None:
        self.now = _ts(text)

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize(
    ("period", "now", "start", "reset"),
    [
        ("hour", "2026-12-01T22:59:59", "2026-12-01T22:00:00", "2026-12-01T23:00:00"),
        ("day", "2026-12-31T23:59:59", "2026-12-31T00:00:00", "2027-01-01T00:00:00"),
        ("month", "2026-12-15T10:00:00", "2026-12-01T00:00:00", "2027-01-01T00:00:00"),
        ("month", "2028-02-29T12:00:00", "2028-02-01T00:00:00", "2028-03-01T00:00:00"),
        (600, "2026-12-01T22:17:00", "2026-12-01T22:10:00", "2026-12-01T22:20:00"),
    ],
)
def test_periods_are_calendar_windows_in_utc(period: Any, now: str, start: str, reset: str) -> None:
    budget = Budget(1.0, period)
    assert budget.window(_ts(now)) == (int(_ts(start)), _ts(reset))


# prices: 1 $/M output tokens, max_tokens 256 → a frontier run's worst case $0.000256·4, a mini's ·1
def _setup(limit: float, clock: FakeClock, **budget_kw: Any) -> tuple[specexec.Router, Runtime]:
    frontier = Scripted("frontier", 0.1, output_price=4.0, usage=(0, 256))
    mini = Scripted("mini", 0.1, output_price=1.0, usage=(0, 256))
    budget = Budget(
        limit,
        "day",
        "tenant",
        downgrade=[routing.downgrade(0.5, {"hard": "simple"}), routing.downgrade(0.2, to="cheapest")],
        clock=clock,
        **budget_kw,
    )
    router = specexec.Router(
        {"hard": Policy.single("frontier"), "simple": Policy.single("mini"), "mid": Policy.single("frontier")},
        [routing.rule("hard", regex="prove"), routing.rule("mid", regex="explain")],
        default="simple",
        budget=budget,
    )
    return router, Runtime([frontier, mini])


async def test_downgrades_by_remaining_fraction_and_the_trace_says_so() -> None:
    clock = FakeClock("2026-12-01T10:00:00")
    router, rt = _setup(0.004096, clock)  # 4 frontier runs or 16 mini runs
    routes, remaining = [], []
    async with rt:
        for _ in range(4):
            result = await rt.run(Query("prove it", tenant="acme"), router)
            assert result.trace.route is not None
            routes.append(result.route)
            remaining.append(result.trace.route.budget_remaining)
        mid = await rt.run(Query("explain", tenant="acme"), router)
        explain = await rt.run(Query("explain", tenant="acme"), router)
    assert routes == ["hard", "hard", "simple", "simple"]  # > 0.5 left: as routed; 0.2-0.5: hard → simple
    assert remaining == pytest.approx([1.0, 0.75, 0.5, 0.4375])
    assert mid.route == "mid"  # not in the 0.5 rule's map
    third = explain.trace.route
    assert third is not None
    # below 0.2 everything non-critical goes to the cheapest route, whatever the map says
    assert (explain.route, third.requested, third.budget_key) == ("simple", "mid", "acme")


async def test_priority_exempts_from_downgrade() -> None:
    clock = FakeClock("2026-12-01T10:00:00")
    router, rt = _setup(0.004096, clock, exempt_priority=5)
    async with rt:
        await rt.run(Query("prove", tenant="acme"), router)
        await rt.run(Query("prove", tenant="acme"), router)
        normal = await rt.run(Query("prove", tenant="acme"), router)
        urgent = await rt.run(Query("prove", tenant="acme", priority=5), router)
    assert (normal.route, urgent.route) == ("simple", "hard")


async def test_exhausted_budget_names_key_and_reset_and_the_period_resets() -> None:
    clock = FakeClock("2026-12-01T23:00:00")
    router, rt = _setup(0.0005, clock)  # one mini run ($0.000256) fits, two do not
    async with rt:
        await rt.run(Query("hi", tenant="acme"), router)
        with pytest.raises(specexec.BudgetExceeded) as info:
            await rt.run(Query("hi", tenant="acme"), router)
        message = str(info.value)
        assert "tenant 'acme' exhausted" in message and "resets at 2026-12-02T00:00:00Z" in message
        other = await rt.run(Query("hi", tenant="other"), router)  # another key has its own budget
        clock.now = _ts("2026-12-02T00:00:00")
        fresh = await rt.run(Query("hi", tenant="acme"), router)
    assert other.route == fresh.route == "simple"
    assert fresh.trace.route is not None and fresh.trace.route.budget_remaining == 1.0


async def test_settles_actual_cost_not_the_reservation() -> None:
    store = routing.InMemoryBudgetStore()
    clock = FakeClock("2026-12-01T10:00:00")
    cheap = Scripted("mini", 0.1, output_price=1.0, usage=(0, 10))
    budget = Budget(1.0, "hour", "tenant", store=store, clock=clock)
    router = specexec.Router({"simple": Policy.single("mini")}, default="simple", budget=budget)
    async with Runtime([cheap]) as rt:
        await rt.run(Query("hi", tenant="t"), router)
    window, _ = budget.window(clock())
    assert await store.usage("t", window) == (pytest.approx(10e-6), 0.0)


class BrokenStore:
    async def reserve(self, key: str, window: int, amount: float, limit: float) -> bool:
        raise ConnectionError("store down")

    async def settle(self, key: str, window: int, reserved: float, actual: float) -> None:
        raise ConnectionError("store down")

    async def usage(self, key: str, window: int) -> tuple[float, float]:
        raise ConnectionError("store down")


async def test_a_store_outage_never_fails_a_run() -> None:
    budget = Budget(1e-9, "day", store=BrokenStore())
    router = specexec.Router({"simple": Policy.single("mini")}, default="simple", budget=budget)
    async with Runtime([Scripted("mini", 0.1, output_price=1.0)]) as rt:
        result = await rt.run("hi", router)
    assert result.route == "simple"
    assert result.trace.route is not None and result.trace.route.budget_key is None


def test_budget_arguments_are_checked() -> None:
    with pytest.raises(specexec.PolicyError, match=r"limit_usd must be a positive number.*\$\.limit_usd"):
        Budget(0)
    with pytest.raises(specexec.PolicyError, match=r"period must be hour, day, month"):
        Budget(1, "week")  # type: ignore[arg-type]
    with pytest.raises(specexec.PolicyError, match=r"exactly one"):
        routing.downgrade(0.5)
    # Before: accepted — an infinite limit that never holds anything, and periods under a second
    # or of a fraction of one, whose windows (whole Unix seconds) ran into each other.
    for limit in (math.inf, math.nan):
        with pytest.raises(specexec.PolicyError, match=r"limit_usd must be a positive number"):
            Budget(limit)
    for period in (0.5, 90.5, math.inf):
        with pytest.raises(specexec.PolicyError, match=r"whole number of seconds") as info:
            Budget(1.0, period)
        assert info.value.path == "$.period"
    assert Budget(1.0, 90.0).window(100.0) == (90, 180.0)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.sampled_from([0.001, 0.003, 0.01]),
    runs=st.lists(
        st.tuples(st.integers(0, 300), st.integers(1, 256), st.sampled_from(["prove", "hi"])), min_size=1, max_size=30
    ),
    speculate=st.booleans(),
)
def test_concurrent_runs_never_spend_past_the_budget(
    limit: float, runs: list[tuple[int, int, str]], speculate: bool
) -> None:
    store = routing.InMemoryBudgetStore()
    clock = FakeClock("2026-12-01T10:00:00")
    spent: list[float] = []

    async def main() -> None:
        frontier = Scripted("frontier", 0.2, output_price=4.0)
        mini = Scripted("mini", 0.05, output_price=1.0)
        budget = Budget(limit, "day", "tenant", store=store, clock=clock)

        async def classify(q: Query) -> str:
            await trio.sleep(0.03)
            return "hard" if "prove" in q.text else "simple"

        select = [routing.classifier(classify)] if speculate else [routing.rule("hard", regex="prove")]
        router = specexec.Router(
            {"hard": Policy.single("frontier"), "simple": Policy.single("mini")},
            select,
            default="simple",
            budget=budget,
            speculate=speculate,
        )

        async def one(delay_ms: int, tokens: int, text: str) -> None:
            await trio.sleep(delay_ms / 1000)
            frontier.usage = mini.usage = (0, tokens)
            with contextlib.suppress(specexec.BudgetExceeded):
                await rt.run(Query(text, tenant="t"), router)

        # every run's spend, refused ones too (a cancelled speculative guess is charged its reservation)
        sink = lambda trace: spent.append(trace.cost)  # noqa: E731
        async with Runtime([frontier, mini], sinks=[sink]) as rt, trio.open_nursery() as nursery:
            for run in runs:
                nursery.start_soon(one, *run)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    window = int(_ts("2026-12-01T00:00:00"))
    total, reserved = trio.run(store.usage, "t", window)
    assert reserved == pytest.approx(0.0, abs=1e-12)
    assert total == pytest.approx(sum(spent))
    assert total <= limit + 1e-12


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.sampled_from([0.002, 0.005, 0.02]),
    runs=st.lists(
        st.tuples(st.integers(0, 300), st.integers(1, 256), st.sampled_from(["judge it", "retry it", "hi"])),
        min_size=1,
        max_size=20,
    ),
)
def test_routes_with_retries_and_a_judge_never_spend_past_the_budget(
    limit: float, runs: list[tuple[int, int, str]]
) -> None:
    # Before: a route's reservation was its dearest max_attempts candidates only — not the retries
    # of an attempt (a timed-out one is charged its worst case, then its retry), nor the judge's
    # calls of a pick — so the budget was overspent by whatever those cost.
    store = routing.InMemoryBudgetStore()
    clock = FakeClock("2026-12-01T10:00:00")
    spent: list[float] = []

    async def main() -> None:
        frontier = Scripted("frontier", 0.2, output_price=4.0)
        mini = Scripted("mini", 0.05, output_price=1.0)
        judge = Scripted("judge", 0.01, text="7", input_price=40.0, usage=(30, 1))
        stuck = Scripted("stuck", 10.0, output_price=4.0)  # never within attempt_timeout
        budget = Budget(limit, "day", "tenant", store=store, clock=clock)
        router = specexec.Router(
            {
                "judged": Policy.pick(["frontier", "mini"], scorer=specexec.scorers.llm_judge("judge")),
                "retried": Policy.single("stuck", retries=2, attempt_timeout=0.1),
                "simple": Policy.single("mini"),
            },
            [routing.rule("judged", regex="judge"), routing.rule("retried", regex="retry")],
            default="simple",
            budget=budget,
        )

        async def one(delay_ms: int, tokens: int, text: str) -> None:
            await trio.sleep(delay_ms / 1000)
            frontier.usage = mini.usage = (0, tokens)
            with contextlib.suppress(specexec.BudgetExceeded, specexec.NoAcceptableResponse):
                await rt.run(Query(text, tenant="t"), router)

        sink = lambda trace: spent.append(trace.cost)  # noqa: E731
        async with Runtime([frontier, mini, judge, stuck], sinks=[sink]) as rt, trio.open_nursery() as nursery:
            for run in runs:
                nursery.start_soon(one, *run)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    window = int(_ts("2026-12-01T00:00:00"))
    total, reserved = trio.run(store.usage, "t", window)
    assert reserved == pytest.approx(0.0, abs=1e-12)
    assert total == pytest.approx(sum(spent))
    assert total <= limit + 1e-12


async def test_a_judged_route_under_a_budget_is_scored_within_its_reservation() -> None:
    clock = FakeClock("2026-12-01T10:00:00")
    budget = Budget(1.0, "day", "tenant", clock=clock)
    backends = [
        Scripted("a", 0.01, text="an answer", output_price=4.0),
        Scripted("b", 0.02, text="another", output_price=4.0),
        Scripted("judge", 0.01, text="7", input_price=40.0, usage=(30, 1)),
    ]
    policy = Policy.pick(["a", "b"], scorer=specexec.scorers.llm_judge("judge"))
    router = specexec.Router({"judged": policy}, default="judged", budget=budget)
    async with Runtime(backends) as rt:
        q = Query("hi", tenant="t")
        reserved = router._bound(policy, q, rt)
        result = await rt.run(q, router)
    judged = [a for a in result.trace.attempts if a.trigger == "judge"]
    assert [a.outcome for a in judged] == ["accepted", "accepted"]  # each response scored: the bound fits both
    assert result.cost <= reserved
    spent, _ = await budget.store.usage("t", budget.window(clock())[0])
    assert spent == pytest.approx(result.cost)


async def test_a_custom_scorers_calls_past_the_reservation_are_refused_not_overspent() -> None:
    # The bound cannot know what a custom scorer calls: the run is held to its reservation.
    clock = FakeClock("2026-12-01T10:00:00")
    budget = Budget(1.0, "day", "tenant", clock=clock)
    judge = Scripted("judge", 0.01, text="7", input_price=1000.0, usage=(100, 1))
    refused: list[str] = []

    class Greedy:
        per_response = False

        async def score_one(self, query: Query, candidate: Any, ctx: Any) -> float:
            raise NotImplementedError

        async def score_all(self, query: Query, candidates: Any, ctx: Any) -> list[float]:
            for _ in range(50):  # 50 calls of up to ~$0.1 each: far past the reservation
                try:
                    await ctx.complete("judge", Query("rate it"))
                except specexec.BudgetExceeded as exc:
                    refused.append(str(exc))
                    break
            return [1.0 for _ in candidates]

    policy = Policy.pick(["a"], scorer=Greedy())
    router = specexec.Router({"r": policy}, default="r", budget=budget)
    async with Runtime([Scripted("a", 0.01, output_price=4.0), judge]) as rt:
        q = Query("hi", tenant="t")
        reserved = router._bound(policy, q, rt)
        result = await rt.run(q, router)
    assert refused and "does not fit max_cost" in refused[0]
    assert result.cost <= reserved + 1e-12
    spent, _ = await budget.store.usage("t", budget.window(clock())[0])
    assert spent <= reserved + 1e-12


@pytest.mark.parametrize(
    ("key", "queries", "keys"),
    [
        ("feature", [Query("hi", metadata={"feature": "chat"}), Query("hi")], ["chat", "-"]),
        ("tenant", [Query("hi", tenant="acme"), Query("hi")], ["acme", "-"]),
        (lambda q: f"{q.tenant}/{q.metadata.get('step')}", [Query("hi", tenant="a", metadata={"step": "x"})], ["a/x"]),
    ],
)
async def test_spend_is_tracked_per_key(key: Any, queries: list[Query], keys: list[str]) -> None:
    store = routing.InMemoryBudgetStore()
    clock = FakeClock("2026-12-01T10:00:00")
    budget = Budget(1.0, "day", key, store=store, clock=clock)
    router = specexec.Router({"simple": Policy.single("mini")}, [], default="simple", budget=budget)
    async with Runtime([Scripted("mini", 0.1, output_price=1.0, usage=(0, 100))]) as rt:
        for q in queries:
            result = await rt.run(q, router)
            assert result.trace.route is not None and result.trace.route.budget_key == keys[queries.index(q)]
    window = int(_ts("2026-12-01T00:00:00"))
    for k in keys:
        assert await store.usage(k, window) == pytest.approx((100e-6, 0.0))
