"""LLM-as-router: through the engine, cost and latency traced; every failure falls through."""

from __future__ import annotations

import anyio
import pytest

import specexec
from specexec import Policy, Query, Response, Runtime, Usage, routing
from tests.conftest import Timing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio


class Answering(specexec.BackendBase):
    """Answers ``text`` after ``latency``; remembers the queries it saw."""

    def __init__(self, text: str, latency: float = 0.2, price: float = 0.0) -> None:
        super().__init__("router-llm", input_price=price, output_price=price)
        self.text, self.latency = text, latency
        self.seen: list[Query] = []

    async def complete(self, query: Query) -> Response:
        self.seen.append(query)
        await anyio.sleep(self.latency)
        return Response(self.text, Usage(100, 10))


def _router(llm: routing.LlmRouter, **kw: object) -> specexec.Router:
    routes = {n: Policy.single(n) for n in ("simple", "code", "hard")}
    return specexec.Router(routes, [llm], default="simple", **kw)  # type: ignore[arg-type]


def _rt(llm: Answering) -> Runtime:
    return Runtime([llm, *(Scripted(n, 0.5, text=n) for n in ("simple", "code", "hard"))])


async def test_llm_router_decides_and_its_call_is_traced(timing: Timing) -> None:
    backend = Answering('{"route": "hard", "confidence": 0.8}', price=1.0)
    traces: list[specexec.Trace] = []
    rt = _rt(backend)
    rt.sinks.append(traces.append)
    async with rt:
        result = await rt.run(
            "prove the Riemann hypothesis", _router(routing.llm("router-llm", ["simple", "code", "hard"]))
        )
    assert result.route == "hard" and result.latency == timing.approx(0.7)
    route = result.trace.route
    assert route is not None
    assert (route.selector, route.confidence) == ("llm", 0.8)
    assert route.latency == timing.approx(0.2)
    assert route.cost == pytest.approx(110e-6)
    assert result.cost == pytest.approx(110e-6)  # the routes are free: all of it is the router's call
    router_trace, _ = traces
    assert router_trace.policy == "router:llm" and router_trace.route is route
    seen = backend.seen[0]
    assert seen.messages[0].role == "system" and '["simple","code","hard"]' in seen.messages[0].content
    assert seen.metadata["json_schema"]["properties"]["route"]["enum"] == ["simple", "code", "hard"]
    assert seen.messages[1].content == "prove the Riemann hypothesis"


@pytest.mark.parametrize(
    ("answer", "passed"),
    [
        ("I think it is hard", "llm: ValueError: no JSON object in the answer 'I think it is hard'"),
        ('{"route": hard}', "llm: ValueError: bad JSON '{\"route\": hard}'"),
        ('{"route": "frontier"}', "llm: ValueError: unknown label 'frontier'"),
    ],
)
async def test_bad_answers_fall_through_to_the_default(answer: str, passed: str) -> None:
    rt = _rt(Answering(answer))
    async with rt:
        result = await rt.run("q", _router(routing.llm("router-llm", ["simple", "code", "hard"])))
    assert result.route == "simple"
    assert result.trace.route is not None and result.trace.route.selector == "default"
    assert result.trace.route.passed[0].startswith(passed)


async def test_timeout_falls_through_and_cancels_the_router_call(timing: Timing) -> None:
    backend = Answering('{"route": "hard"}', latency=5.0)
    rt = _rt(backend)
    async with rt:
        result = await rt.run("q", _router(routing.llm("router-llm", ["simple", "hard"], timeout=0.25)))
    assert result.route == "simple" and result.latency == timing.approx(0.75)
    assert result.trace.route is not None
    assert result.trace.route.passed == ["llm: TimeoutError: no answer within 0.25s"]


async def test_router_backend_error_falls_through() -> None:
    broken = Scripted("router-llm", 0.1, error=specexec.Unavailable("down"))
    async with Runtime([broken, *(Scripted(n, 0.1) for n in ("simple", "hard"))]) as rt:
        router = specexec.Router(
            {"simple": Policy.single("simple"), "hard": Policy.single("hard")},
            [routing.llm("router-llm", ["simple", "hard"])],
            default="simple",
        )
        result = await rt.run("q", router)
    assert result.route == "simple"
    assert result.trace.route is not None and "NoAcceptableResponse" in result.trace.route.passed[0]


async def test_router_cost_counts_against_the_routes_max_cost() -> None:
    router_llm = Answering('{"route": "hard"}', price=1.0)  # 110 tokens at $1/M
    hard = Scripted("hard", 0.1, output_price=1.0)  # worst case 256 output tokens: $0.000256
    routes = {"simple": Policy.single("hard"), "hard": Policy.single("hard", max_cost=0.0003)}
    router = specexec.Router(routes, [routing.llm("router-llm", ["simple", "hard"])], default="simple")
    async with Runtime([router_llm, hard]) as rt:
        with pytest.raises(specexec.BudgetExceeded) as info:
            await rt.run("q", router)
    assert info.value.trace is not None and info.value.trace.route is not None
    assert info.value.trace.route.cost == pytest.approx(110e-6)


async def test_the_router_call_can_itself_be_hedged(timing: Timing) -> None:
    slow, fast = Answering('{"route": "hard"}', latency=2.0), Answering('{"route": "code"}', latency=0.1)
    slow.name, fast.name = "llm-a", "llm-b"
    llm = routing.llm(Policy.hedge(["llm-a", "llm-b"], delay=0.1, budget=None), ["simple", "code", "hard"])
    async with Runtime([slow, fast, *(Scripted(n, 0.5) for n in ("simple", "code", "hard"))]) as rt:
        result = await rt.run("q", _router(llm))
    assert result.route == "code" and result.latency == timing.approx(0.7)


@pytest.mark.parametrize(
    ("answer", "parsed"),
    [
        ('{"route": "hard", "why": {"signals": ["proof"]}}', ("hard", None)),  # a nested object
        ('{"reason": "uses {braces} in prose", "route": "code", "confidence": 0.6}', ("code", 0.6)),
        ('```json\n{"route": "code"}\n```', ("code", None)),
        ('Sure. {"route": "simple", "confidence": 0.4} Hope that helps {x}', ("simple", 0.4)),
        ('I considered {"a": 1}; my answer: {"route": "hard"}', ("hard", None)),  # the object that has a route
        ('{"route": "hard", "confidence": "high"}', ("hard", None)),  # a confidence that is no number is none
    ],
)
def test_the_route_is_read_from_the_json_object_in_the_answer(answer: str, parsed: tuple[str, float | None]) -> None:
    assert routing.llm("router-llm", ["simple", "code", "hard"]).parse(answer) == parsed


async def test_a_stated_confidence_below_the_threshold_passes_to_the_default() -> None:
    rt = _rt(Answering('{"route": "hard", "confidence": 0.3}'))
    async with rt:
        result = await rt.run("q", _router(routing.llm("router-llm", ["simple", "code", "hard"], threshold=0.5)))
    assert result.route == "simple"
    assert result.trace.route is not None and result.trace.route.passed == ["llm: hard at confidence 0.3 < 0.5"]
