"""A Router wherever a Policy is: the route's policy runs on the one engine; the decision is traced."""

from __future__ import annotations

import io
import json

import anyio
import pytest

import specexec
from specexec import Policy, Query, Runtime, routing
from tests.conftest import Timing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio


def _slow_classifier(route: str, seconds: float) -> routing.Classifier:
    async def classify(q: Query) -> tuple[str, float]:
        await anyio.sleep(seconds)
        return (route, 0.9)

    return routing.classifier(classify, name="slow")


async def test_router_runs_the_routes_policy_and_traces_the_decision(timing: Timing) -> None:
    mini_us, mini_eu = Scripted("mini-us", 1.0, region="us"), Scripted("mini-eu", 0.1, region="eu")
    coder = Scripted("coder", 0.2)
    out = io.StringIO()
    router = specexec.Router(
        {
            "simple": Policy.hedge(["mini-us", "mini-eu"], delay=0.3),
            "code": Policy.single("coder"),
        },
        [routing.rule("code", regex=r"\bdef ")],
        default="simple",
    )
    async with Runtime([mini_us, mini_eu, coder], sinks=[specexec.JsonLinesSink(out)]) as rt:
        simple = await rt.run("hello", router)
        code = await specexec.run("def f(): ...", router, runtime=rt)
    assert (simple.route, simple.backend) == ("simple", "mini-eu")
    assert simple.latency == timing.approx(0.4)
    assert simple.trace.route is not None and simple.trace.route.selector == "default"
    assert [a.trigger for a in simple.trace.attempts] == ["primary", "hedge"]
    assert (code.route, code.backend, code.latency) == ("code", "coder", timing.approx(0.2))
    assert code.trace.route is not None
    assert (code.trace.route.name, code.trace.route.selector) == ("code", "rule:code")
    assert code.trace.route.why == "regex matched 'def '"
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["route"]["name"] for line in lines] == ["simple", "code"]
    assert lines[1]["route"]["selector"] == "rule:code"


async def test_slow_classifier_without_speculation_adds_its_latency(timing: Timing) -> None:
    router = specexec.Router(
        {"a": Policy.single("a"), "b": Policy.single("b")}, [_slow_classifier("b", 0.3)], default="a"
    )
    async with Runtime([Scripted("a", 0.5), Scripted("b", 0.5)]) as rt:
        result = await rt.run("q", router)
    assert result.route == "b" and result.latency == timing.approx(0.8)
    assert result.trace.route is not None
    assert result.trace.route.latency == timing.approx(0.3)
    assert result.trace.route.started == timing.approx(0.3)
    assert result.trace.route.speculation is None


async def test_a_policy_that_is_neither_is_a_type_error() -> None:
    with pytest.raises(TypeError, match="Policy or Router"):
        await Runtime().run("q", "hedge")  # type: ignore[arg-type]


async def test_route_errors_propagate_with_the_route_in_the_trace() -> None:
    broken = Scripted("broken", 0.1, error=specexec.Unavailable("down"))
    router = specexec.Router({"only": Policy.single("broken")}, default="only")
    async with Runtime([broken]) as rt:
        with pytest.raises(specexec.NoAcceptableResponse) as info:
            await rt.run("q", router)
    assert info.value.trace.route is not None and info.value.trace.route.name == "only"


async def test_caller_cancellation_propagates_and_cancels_the_route() -> None:
    slow = Scripted("slow", 5.0)
    router = specexec.Router({"a": Policy.single("slow")}, [_slow_classifier("a", 0.1)], default="a", speculate=True)
    async with Runtime([slow]) as rt:
        with anyio.move_on_after(1.0) as scope:
            await rt.run("q", router)
    assert scope.cancelled_caught
    assert slow.cancelled == 1 and slow.active == 0


async def test_specexec_run_takes_a_router_without_a_runtime(timing: Timing) -> None:
    fast = Scripted("objects-fast", 0.1)
    router = specexec.Router({"only": Policy.single(fast)}, [routing.rule("only", regex="x")], default="only")
    result = await specexec.run("x", router)
    assert (result.route, result.backend, result.latency) == ("only", "objects-fast", timing.approx(0.1))
    assert (await router.run("y")).trace.route is not None
