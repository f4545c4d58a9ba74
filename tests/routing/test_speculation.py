"""Speculative routing in virtual time (trio: exact) and on asyncio+uvloop (within tolerance):
classifier 300 ms, route 500 ms → 500 ms when the guess is right, 800 ms when wrong, and the
wrong attempt cancelled at 300 ms."""

from __future__ import annotations

import anyio
import pytest

import specexec
from specexec import Policy, Query, Runtime, routing
from tests.conftest import Timing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio


def _classifier(seconds: float = 0.3) -> routing.Classifier:
    async def classify(q: Query) -> tuple[str, float]:
        await anyio.sleep(seconds)
        return ("hard" if "prove" in q.text else "simple", 0.9)

    return routing.classifier(classify, name="slow")


def _setup(price: float = 0.0) -> tuple[specexec.Router, Scripted, Scripted]:
    simple = Scripted("mini", 0.5, output_price=price)
    hard = Scripted("frontier", 0.5)
    router = specexec.Router(
        {"simple": Policy.single("mini"), "hard": Policy.single("frontier")},
        [_classifier()],
        default="simple",
        speculate=True,
    )
    return router, simple, hard


async def test_right_guess_adds_no_latency(timing: Timing) -> None:
    router, simple, hard = _setup()
    async with Runtime([simple, hard]) as rt:
        result = await rt.run("hello", router)
    assert (result.route, result.backend) == ("simple", "mini")
    assert result.latency == timing.approx(0.5)
    route = result.trace.route
    assert route is not None
    assert (route.speculated, route.speculation, route.started) == ("simple", "hit", 0.0)
    assert route.latency == timing.approx(0.3)
    assert simple.calls == 1 and hard.calls == 0


async def test_wrong_guess_is_cancelled_at_the_decision_and_the_chosen_route_starts(timing: Timing) -> None:
    router, simple, hard = _setup(price=1.0)
    traces: list[specexec.Trace] = []
    async with Runtime([simple, hard], sinks=[traces.append]) as rt:
        t0 = anyio.current_time()
        result = await rt.run("prove it", router)
    assert (result.route, result.backend) == ("hard", "frontier")
    assert result.latency == timing.approx(0.8)
    assert hard.started_at[0] - t0 == timing.approx(0.3)
    assert simple.cancelled == 1 and simple.active == 0
    guess, chosen = traces
    assert guess.outcome == "cancelled" and guess.attempts[0].outcome == "cancelled"
    assert guess.attempts[0].ended == timing.approx(0.3)
    route = result.trace.route
    assert route is not None and guess.route is route
    assert (route.speculated, route.speculation) == ("simple", "miss")
    assert route.started == timing.approx(0.3)
    # the guess is charged its reservation (256 output tokens at $1/M): counted, and in the result's cost
    assert route.speculation_cost == pytest.approx(256e-6)
    assert result.cost == pytest.approx(chosen.cost + 256e-6)


async def test_the_guess_follows_the_last_decision_for_similar_traffic(timing: Timing) -> None:
    router, simple, hard = _setup()
    async with Runtime([simple, hard]) as rt:
        first = await rt.run(Query("prove a", tenant="t"), router)
        second = await rt.run(Query("prove b", tenant="t"), router)
        other = await rt.run(Query("prove c", tenant="u"), router)
    assert first.trace.route is not None and first.trace.route.speculation == "miss"
    assert second.trace.route is not None and second.trace.route.speculation == "hit"
    assert second.latency == timing.approx(0.5)
    assert other.trace.route is not None and other.trace.route.speculation == "miss"


async def test_a_guess_that_finishes_first_waits_for_the_decision(timing: Timing) -> None:
    fast = Scripted("mini", 0.1)
    router = specexec.Router(
        {"simple": Policy.single("mini"), "hard": Policy.single("frontier")},
        [_classifier()],
        default="simple",
        speculate=True,
    )
    async with Runtime([fast, Scripted("frontier", 0.5)]) as rt:
        result = await rt.run("hello", router)
    assert result.route == "simple" and result.latency == timing.approx(0.3)


async def test_a_failed_guess_is_ignored_when_the_decision_differs(timing: Timing) -> None:
    broken = Scripted("mini", 0.1, error=specexec.Unavailable("down"))
    router = specexec.Router(
        {"simple": Policy.single("mini"), "hard": Policy.single("frontier")},
        [_classifier()],
        default="simple",
        speculate=True,
    )
    async with Runtime([broken, Scripted("frontier", 0.5)]) as rt:
        result = await rt.run("prove", router)
        assert result.route == "hard" and result.latency == timing.approx(0.8)
        with pytest.raises(specexec.NoAcceptableResponse):
            await rt.run("hello", router)


async def test_rules_decide_before_speculation_starts(timing: Timing) -> None:
    simple, hard = Scripted("mini", 0.5), Scripted("frontier", 0.5)
    router = specexec.Router(
        {"simple": Policy.single("mini"), "hard": Policy.single("frontier")},
        [routing.rule("hard", regex="theorem"), _classifier()],
        default="simple",
        speculate=True,
    )
    async with Runtime([simple, hard]) as rt:
        result = await rt.run("a theorem", router)
    assert result.route == "hard" and result.latency == timing.approx(0.5)
    assert simple.calls == 0
    assert result.trace.route is not None and result.trace.route.speculation is None


async def test_the_guess_is_the_route_most_decided_lately_not_a_one_off() -> None:
    router, simple, hard = _setup()
    async with Runtime([simple, hard]) as rt:
        for text in ("prove a", "prove b", "hello"):  # hard, hard, then one simple
            await rt.run(text, router)
        result = await rt.run("prove c", router)
    assert result.trace.route is not None
    assert (result.trace.route.speculated, result.trace.route.speculation) == ("hard", "hit")


class PricedRouterModel(specexec.BackendBase):
    """An LLM router answering ``route`` after 300 ms; 100 input + 10 output tokens at $1/M."""

    def __init__(self, route: str) -> None:
        super().__init__("router-llm", input_price=1.0, output_price=1.0)
        self.route = route

    async def complete(self, query: Query) -> specexec.Response:
        await anyio.sleep(0.3)
        return specexec.Response(f'{{"route": "{self.route}"}}', specexec.Usage(100, 10))


@pytest.mark.parametrize("guess_latency", [0.1, 0.5])  # the guess ends before / after the router answers
async def test_costs_of_guess_router_and_route_are_each_counted_once(timing: Timing, guess_latency: float) -> None:
    mini = Scripted("mini", guess_latency, output_price=1.0, usage=(0, 50))
    frontier = Scripted("frontier", 0.5, output_price=2.0, usage=(0, 100))
    store = routing.InMemoryBudgetStore()
    budget = specexec.Budget(1.0, "day", store=store)
    router = specexec.Router(
        {"simple": Policy.single("mini"), "hard": Policy.single("frontier")},
        [routing.llm("router-llm", ["simple", "hard"])],
        default="simple",
        speculate=True,
        budget=budget,
    )
    traces: list[specexec.Trace] = []
    async with Runtime([mini, frontier, PricedRouterModel("hard")], sinks=[traces.append]) as rt:
        result = await rt.run("prove it", router)
    route = result.trace.route
    assert route is not None and route.speculation == "miss"
    guess_cost = 50e-6 if guess_latency < 0.3 else 256e-6  # settled, or charged its reservation when cancelled
    assert route.cost == pytest.approx(110e-6)  # the router's call alone
    assert route.speculation_cost == pytest.approx(guess_cost)  # the guess alone
    assert result.cost == pytest.approx(110e-6 + guess_cost + 200e-6)
    assert sum(t.cost for t in traces) == pytest.approx(result.cost)
    window, _ = budget.window(budget.clock())
    assert await store.usage("-", window) == (pytest.approx(result.cost), pytest.approx(0.0, abs=1e-12))
