"""The LLM router's own calls under a budget: reserved before they are sent like any route run, so
concurrent runs never spend past the budget (hypothesis, trio virtual time), and an exhausted
budget pays for no router call."""

from __future__ import annotations

import contextlib
import datetime as dt

import pytest
import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specexec
from specexec import Budget, Policy, Query, Runtime, routing
from tests.helpers import Scripted

WINDOW = int(dt.datetime(2026, 12, 1, tzinfo=dt.UTC).timestamp())
NOW = WINDOW + 10 * 3600.0


def _router(budget: Budget, *, speculate: bool = False) -> specexec.Router:
    return specexec.Router(
        {"hard": Policy.single("frontier"), "simple": Policy.single("mini")},
        [routing.llm("router-llm", ["hard", "simple"], max_tokens=32)],
        default="simple",
        budget=budget,
        speculate=speculate,
    )


def _backends() -> tuple[Scripted, Scripted, Scripted]:
    frontier = Scripted("frontier", 0.2, output_price=4.0)
    mini = Scripted("mini", 0.05, output_price=1.0)
    llm = Scripted(
        "router-llm",
        0.03,
        text=lambda q: '{"route": "hard"}' if "prove" in q.chat[-1].content else '{"route": "simple"}',
        usage=(0, 32),
        output_price=20.0,  # a dear router: $0.00064 worst case, as much as a mini answer of 640 tokens
    )
    return frontier, mini, llm


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    limit=st.sampled_from([0.001, 0.003, 0.01]),
    runs=st.lists(
        st.tuples(st.integers(0, 300), st.integers(1, 256), st.sampled_from(["prove", "hi"])), min_size=1, max_size=30
    ),
    speculate=st.booleans(),
)
def test_concurrent_llm_routed_runs_never_spend_past_the_budget(
    limit: float, runs: list[tuple[int, int, str]], speculate: bool
) -> None:
    store = routing.InMemoryBudgetStore()
    spent: list[float] = []

    async def main() -> None:
        frontier, mini, llm = _backends()
        router = _router(Budget(limit, "day", "tenant", store=store, clock=lambda: NOW), speculate=speculate)

        async def one(delay_ms: int, tokens: int, text: str) -> None:
            await trio.sleep(delay_ms / 1000)
            frontier.usage = mini.usage = (0, tokens)
            with contextlib.suppress(specexec.BudgetExceeded):
                await rt.run(Query(text, tenant="t"), router)

        rt = Runtime([frontier, mini, llm], sinks=[lambda t: spent.append(t.cost)])
        async with rt, trio.open_nursery() as nursery:
            for run in runs:
                nursery.start_soon(one, *run)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    total, reserved = trio.run(store.usage, "t", WINDOW)
    assert reserved == pytest.approx(0.0, abs=1e-12)
    assert total == pytest.approx(sum(spent))  # every call is booked: the router's own included
    assert total <= limit + 1e-12


def test_an_exhausted_budget_sends_no_router_call() -> None:
    store = routing.InMemoryBudgetStore()
    frontier, mini, llm = _backends()

    async def main() -> None:
        await store.settle("t", WINDOW, 0.0, 0.001)  # all of the budget spent
        router = _router(Budget(0.001, "day", "tenant", store=store, clock=lambda: NOW))
        async with Runtime([frontier, mini, llm]) as rt:
            with pytest.raises(specexec.BudgetExceeded, match="exhausted"):
                await rt.run(Query("prove it", tenant="t"), router)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert llm.calls == 0
    assert trio.run(store.usage, "t", WINDOW) == pytest.approx((0.001, 0.0))


def test_a_router_call_that_does_not_fit_passes_and_the_default_route_runs() -> None:
    store = routing.InMemoryBudgetStore()
    frontier, mini, llm = _backends()

    async def main() -> specexec.Result:
        await store.settle("t", WINDOW, 0.0, 0.0007)  # $0.0003 left: the mini route fits, the router call not
        router = _router(Budget(0.001, "day", "tenant", store=store, clock=lambda: NOW))
        async with Runtime([frontier, mini, llm]) as rt:
            return await rt.run(Query("prove it", tenant="t"), router)

    result = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert llm.calls == 0 and result.route == "simple"
    route = result.trace.route
    assert route is not None and route.selector == "default"
    assert route.passed[0].startswith("llm: BudgetExceeded: budget for tenant 't' exhausted")


def test_a_dry_run_books_the_router_call() -> None:
    store = routing.InMemoryBudgetStore()
    frontier, mini, llm = _backends()

    async def main() -> str:
        router = _router(Budget(0.01, "day", "tenant", store=store, clock=lambda: NOW))
        async with Runtime([frontier, mini, llm]) as rt:
            decision = await routing.decide(router, Query("prove it", tenant="t"), rt)
        return decision.name

    assert trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0)) == "hard"
    assert trio.run(store.usage, "t", WINDOW) == pytest.approx((32 * 20.0 / 1e6, 0.0))
