"""Rules and the classifier hook: exact decisions, chain order, pass-through on low confidence."""

from __future__ import annotations

import anyio
import anyio.lowlevel
import pytest

import specexec
from specexec import Policy, Query, Runtime, routing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio


def _router(*select: routing.Selector, **kw: object) -> specexec.Router:
    routes = {name: Policy.single(name) for name in ("simple", "code", "hard")}
    return specexec.Router(routes, list(select), default="simple", **kw)  # type: ignore[arg-type]


def _runtime() -> Runtime:
    return Runtime([Scripted(n, 0.1, text=n) for n in ("simple", "code", "hard")])


@pytest.mark.parametrize(
    ("query", "route", "selector"),
    [
        (Query("fix this:\n```py\nprint(1)\n```"), "code", "rule:code"),
        (Query("def f(): pass"), "code", "rule:code"),
        (Query("SELECT * FROM t"), "code", "rule:code"),
        (Query("x" * 2000), "hard", "rule:hard"),
        (Query("hello"), "simple", "default"),
        (Query("hi", tenant="vip"), "hard", "rule:vip"),
        (Query("hi", priority=9), "hard", "rule:urgent"),
        (Query("hi", metadata={"step": "classify"}), "simple", "rule:classify"),
        (Query("hi", metadata={"feature": "search", "region": "eu"}), "code", "rule:eu-search"),
        (Query("hi", metadata={"feature": "search", "region": "us"}), "simple", "default"),
    ],
)
async def test_rules_decide_exactly(query: Query, route: str, selector: str) -> None:
    router = _router(
        routing.rule("code", regex=r"```|\bdef |\bclass |SELECT "),
        routing.rule("hard", min_tokens=2000),
        routing.rule("hard", tenant="vip", name="rule:vip"),
        routing.rule("hard", min_priority=5, name="rule:urgent"),
        routing.rule("simple", step="classify", name="rule:classify"),
        routing.rule("code", feature="search", metadata={"region": "eu"}, name="rule:eu-search"),
    )
    decision = await routing.decide(router, query, _runtime())
    assert (decision.name, decision.selector) == (route, selector)
    assert decision.confidence == (None if selector == "default" else 1.0)


async def test_rule_conditions_combine_and_say_why() -> None:
    router = _router(routing.rule("hard", min_tokens=50, max_tokens=100, regex=r"prove", tenant=["a", "b"]))
    rt = _runtime()
    hit = await routing.decide(router, Query("please prove " + "x" * 40, tenant="a"), rt)
    assert hit.name == "hard"
    assert hit.why == "tenant=a, input-token bound 60 >= 50, input-token bound 60 <= 100, regex matched 'prove'"
    for miss in (Query("prove " + "x" * 40, tenant="c"), Query("prove", tenant="a"), Query("x" * 60, tenant="a")):
        assert (await routing.decide(router, miss, rt)).name == "simple"


async def test_classifier_confidence_below_threshold_passes_to_next() -> None:
    seen: list[str] = []

    def unsure(q: Query) -> tuple[str, float]:
        seen.append("unsure")
        return ("hard", 0.3)

    async def sure(q: Query) -> tuple[str, float]:
        seen.append("sure")
        await anyio.lowlevel.checkpoint()
        return ("code", 0.9)

    router = _router(routing.classifier(unsure, threshold=0.5), routing.classifier(sure, threshold=0.5))
    decision = await routing.decide(router, "q", _runtime())
    assert seen == ["unsure", "sure"]
    assert (decision.name, decision.selector, decision.confidence) == ("code", "classifier:sure", 0.9)
    assert decision.passed == ["classifier:unsure: hard at confidence 0.3 < 0.5"]


async def test_classifier_none_unknown_route_and_errors_pass_then_default() -> None:
    def boom(q: Query) -> str:
        raise RuntimeError("model file missing")

    router = _router(
        routing.classifier(lambda q: None, name="none"),
        routing.classifier(lambda q: "nonsense", name="unknown"),
        routing.classifier(boom, name="boom"),
    )
    decision = await routing.decide(router, "q", _runtime())
    assert (decision.name, decision.selector) == ("simple", "default")
    assert decision.passed == [
        "none: no decision",
        "unknown: unknown route 'nonsense'",
        "boom: RuntimeError: model file missing",
    ]


async def test_first_confident_selector_wins_and_later_ones_are_not_asked() -> None:
    asked: list[str] = []

    def later(q: Query) -> str:
        asked.append("later")
        return "hard"

    router = _router(routing.rule("code", regex="def"), routing.classifier(later))
    assert (await routing.decide(router, "def x", _runtime())).name == "code"
    assert asked == []
    assert (await routing.decide(router, "plain", _runtime())).name == "hard"
    assert asked == ["later"]


def test_bad_router_definitions_say_where() -> None:
    with pytest.raises(specexec.PolicyError, match=r"default 'nope' is not a route.*\(at \$\.default\)"):
        specexec.Router({"a": Policy.single("a")}, default="nope")
    with pytest.raises(specexec.PolicyError, match=r"unknown route 'zzz' \(at \$\.select\[0\]\.route\)"):
        specexec.Router({"a": Policy.single("a")}, [routing.rule("zzz", regex="x")], default="a")
    with pytest.raises(specexec.PolicyError, match=r"does not compile.*\(at \$\.regex\)"):
        routing.rule("a", regex="(")
    with pytest.raises(specexec.PolicyError, match=r"no condition"):
        routing.rule("a")
    with pytest.raises(
        specexec.PolicyError, match=r"not a selector \(needs async .select, .name, .slow, .threshold\).*\$\.select\[0\]"
    ):
        specexec.Router({"a": Policy.single("a")}, [lambda q: "a"], default="a")  # type: ignore[list-item]
    with pytest.raises(specexec.PolicyError, match=r"must be a specexec.Policy.*\(at \$\.routes\.a\)"):
        specexec.Router({"a": "single"}, default="a")  # type: ignore[dict-item]
