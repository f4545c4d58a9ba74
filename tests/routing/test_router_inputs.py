"""A router's inputs, checked when it is built (or by ``check``), and odd values at run time that
must never fail a run: downgrade rules naming unknown routes, an LLM selector's bad settings or
backend, a NaN confidence, unhashable metadata under speculation, a float in a rule's metadata."""

from __future__ import annotations

from typing import Any

import pytest

import specexec
from specexec import Budget, Policy, PolicyError, Query, Runtime, routing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio

ROUTES = {"simple": Policy.single("m"), "hard": Policy.single("m")}


def _toml(extra: str) -> str:
    return (
        'default = "simple"\n[routes.simple]\nmode = "single"\ncandidates = ["m"]\n'
        '[routes.hard]\nmode = "single"\ncandidates = ["m"]\n' + extra
    )


# -- 4, 5: a downgrade rule names only routes the router has -----------------------------------


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        (routing.downgrade(0.5, {"hard": "simpel"}), "'simpel'"),  # before: accepted, then every run failed late
        (routing.downgrade(0.5, {"hardd": "simple"}), "'hardd'"),  # before: accepted, and never applied
        (routing.downgrade(0.5, to="simpel"), "'simpel'"),
    ],
)
def test_a_code_built_downgrade_naming_an_unknown_route_is_refused_when_the_router_is_built(
    rule: routing.Downgrade, words: str
) -> None:
    with pytest.raises(PolicyError, match=words) as info:
        specexec.Router(ROUTES, default="simple", budget=Budget(1.0, downgrade=[rule]))
    assert info.value.path.startswith("$.budget.downgrade[0]")
    assert "below=0.5" in str(info.value)


def test_a_toml_downgrade_from_an_unknown_route_names_the_key() -> None:
    text = _toml('[budget]\nlimit_usd = 1.0\n[[budget.downgrade]]\nbelow = 0.9\nroutes = { hardd = "simple" }\n')
    with pytest.raises(PolicyError, match="'hardd'") as info:
        specexec.Router.from_toml(text)
    assert info.value.path == "$.budget.downgrade[0].routes.hardd"


# -- 6: an LLM selector's settings and its backend ----------------------------------------------


@pytest.mark.parametrize(
    ("knobs", "path"),
    [({"max_tokens": 0}, "$.max_tokens"), ({"threshold": 5.0}, "$.threshold"), ({"threshold": -0.1}, "$.threshold")],
)
def test_an_llm_selectors_bad_settings_are_refused(knobs: dict[str, Any], path: str) -> None:
    with pytest.raises(PolicyError) as info:
        routing.llm("rl", labels=["simple", "hard"], **knobs)
    assert info.value.path == path


def test_an_llm_selectors_bad_settings_in_toml_name_the_select_entry() -> None:
    text = _toml('[[select]]\nkind = "llm"\nbackend = "rl"\nlabels = ["simple", "hard"]\nmax_tokens = 0\n')
    with pytest.raises(PolicyError) as info:
        specexec.Router.from_toml(text)
    assert info.value.path == "$.select[0].max_tokens"


def test_check_resolves_an_llm_selectors_backend() -> None:
    router = specexec.Router(ROUTES, [routing.llm("router-llmm", labels=["simple", "hard"])], default="simple")
    with pytest.raises(PolicyError, match="router-llmm") as info:
        router.check(Runtime([Scripted("m", 0.01), Scripted("router-llm", 0.01)]))
    assert info.value.path.startswith("$.select[0]")


# -- 7: a NaN confidence is below every threshold ----------------------------------------------


async def test_a_nan_confidence_passes_the_selector() -> None:
    async def nan_answer(q: Query) -> str:
        return '{"route": "hard", "confidence": NaN}'

    rt = Runtime([specexec.CallableBackend("rl", nan_answer), Scripted("m", 0.01)])
    for selector in (
        routing.llm("rl", labels=["simple", "hard"], threshold=0.9),
        routing.classifier(lambda q: ("hard", float("nan")), threshold=0.9),
        routing.classifier(lambda q: ("hard", float("nan"))),  # no threshold: still no decision
    ):
        decision = await routing.decide(specexec.Router(ROUTES, [selector], default="simple"), Query("hi"), rt)
        assert (decision.name, decision.selector) == ("simple", "default"), decision.passed


# -- 3: speculation on metadata that is not hashable ---------------------------------------------


@pytest.mark.parametrize("metadata", [{"feature": ["chat", "beta"]}, {"step": {"n": 1}}])
async def test_speculation_takes_unhashable_metadata(metadata: dict[str, Any]) -> None:
    router = specexec.Router(
        ROUTES, [routing.classifier(lambda q: "hard", slow=True)], default="simple", speculate=True
    )
    async with Runtime([Scripted("m", 0.01)]) as rt:
        for _ in range(2):  # remembered, then guessed from memory
            result = await rt.run(Query("hi", metadata=metadata), router)
            assert result.route == "hard"


async def test_a_similar_function_that_raises_never_fails_a_run() -> None:
    def broken(q: Query) -> Any:
        raise RuntimeError("no key")

    router = specexec.Router(
        ROUTES, [routing.classifier(lambda q: "hard", slow=True)], default="simple", speculate=True, similar=broken
    )
    async with Runtime([Scripted("m", 0.01)]) as rt:
        assert (await rt.run(Query("hi"), router)).route == "hard"


# -- 8: a rule's metadata value of any scalar type ---------------------------------------------


@pytest.mark.parametrize("value", [2.5, True])
async def test_a_rule_on_a_scalar_metadata_value_matches_it(value: object) -> None:
    rule = routing.rule("hard", metadata={"plan": value})
    router = specexec.Router(ROUTES, [rule], default="simple")
    rt = Runtime([Scripted("m", 0.01)])
    assert (await routing.decide(router, Query("hi", metadata={"plan": value}), rt)).name == "hard"
    assert (await routing.decide(router, Query("hi", metadata={"plan": "other"}), rt)).name == "simple"


def test_a_toml_rule_on_a_float_metadata_value_loads() -> None:
    router = specexec.Router.from_toml(_toml('[[select]]\nkind = "rule"\nroute = "hard"\nmetadata = { v = 2.5 }\n'))
    assert router.selectors[0].name == "rule:hard"


def test_a_rule_on_an_unhashable_metadata_value_is_a_policy_error() -> None:
    with pytest.raises(PolicyError) as info:
        routing.rule("hard", metadata={"plan": [{"a": 1}]})
    assert info.value.path == "$.metadata.plan"


# -- 2: speculation keeps the route's max_cost for the whole routed request --------------------


@pytest.mark.parametrize("guess", ["main", "other"], ids=["hit", "miss"])
async def test_a_speculative_run_stays_within_the_routes_max_cost(guess: str) -> None:
    # Before: the guess ran with the route's whole max_cost while the LLM router was paid beside
    # it (a hit cost router + route > max_cost); a miss's route did not count the guess's cost.
    async def router_llm(q: Query) -> str:
        return '{"route": "main"}'

    backends = [
        specexec.CallableBackend("rl", router_llm, input_price=100.0, output_price=100.0),
        Scripted("m1", 0.05, output_price=1000.0, usage=(0, 50)),
    ]
    max_cost = 0.1
    router = specexec.Router(
        {"main": Policy.single("m1", max_cost=max_cost), "other": Policy.single("m1", max_cost=max_cost)},
        [routing.llm("rl", labels=["main", "other"])],
        default=guess,
        speculate=True,
    )
    async with Runtime(backends) as rt:
        try:
            result = await rt.run(Query("hello " * 50, max_tokens=100), router)
        except specexec.BudgetExceeded:
            return  # refused for want of room: never paid past max_cost
        assert result.route == "main"
        decision = result.trace.route
        assert decision is not None and decision.speculation == ("hit" if guess == "main" else "miss")
        assert result.cost <= max_cost + 1e-12


async def test_speculation_with_an_llm_selector_on_an_unknown_backend_never_fails_the_run() -> None:
    # The room kept for the LLM router's call is 0 when it cannot be made: the selector passes.
    router = specexec.Router(
        {"main": Policy.single("m", max_cost=1.0), "other": Policy.single("m")},
        [routing.llm("no-such-backend", labels=["main", "other"])],
        default="main",
        speculate=True,
    )
    async with Runtime([Scripted("m", 0.01)]) as rt:
        result = await rt.run(Query("hi"), router)
    assert result.route == "main"
