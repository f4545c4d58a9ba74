"""Routers from TOML: routes are policy tables (or name one), selectors and budget; errors name
the file and key path; loading what ``to_toml`` wrote gives the same router."""

from __future__ import annotations

from pathlib import Path

import pytest

import specexec
from specexec import Query, Runtime, routing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio

ROUTER = """
default = "simple"
speculate = true
name = "support"

[routes]
hard = "frontier"

[routes.simple]
mode = "hedge"
candidates = ["mini-us", "mini-eu"]
delay = "p95"

[routes.code]
mode = "failover"
candidates = ["coder-a", "coder-b"]
verify = [{ kind = "regex", pattern = "def" }]

[policies.frontier]
mode = "cascade"
candidates = ["mid", "frontier"]
max_cost = 0.5

[[select]]
kind = "rule"
route = "code"
regex = '```|\\bdef |\\bclass |SELECT '

[[select]]
kind = "rule"
route = "hard"
min_tokens = 2000

[[select]]
kind = "rule"
route = "simple"
step = "classify"
metadata = { tier = ["free", "trial"] }

[[select]]
kind = "classifier"
name = "lengthy"
threshold = 0.7

[[select]]
kind = "llm"
backend = "router-llm"
labels = ["simple", "code", "hard"]
timeout = 0.5

[budget]
limit_usd = 10.0
period = "day"
key = "tenant"
exempt_priority = 5

[[budget.downgrade]]
below = 0.5
routes = { hard = "simple" }

[[budget.downgrade]]
below = 0.2
to = "cheapest"
"""

NAMES = ("mini-us", "mini-eu", "coder-a", "coder-b", "mid", "frontier", "router-llm")


def _lengthy(q: Query) -> tuple[str, float]:
    return ("hard", 0.9) if len(q.text) > 100 else ("simple", 0.5)


def test_loads_every_part() -> None:
    router = specexec.Router.from_toml(ROUTER, classifiers={"lengthy": _lengthy})
    assert router.default == "simple" and router.speculate and router.name == "support"
    assert router.routes["simple"].mode == "hedge" and router.routes["simple"].delay == "p95"
    assert router.routes["hard"].mode == "cascade" and router.routes["hard"].max_cost == 0.5
    assert [s.name for s in router.selectors] == ["rule:code", "rule:hard", "rule:simple", "lengthy", "llm"]
    assert router.budget is not None and router.budget.limit == 10.0 and router.budget.exempt_priority == 5
    assert [d.below for d in router.budget.downgrades] == [0.2, 0.5]


async def test_decisions_of_a_loaded_router() -> None:
    router = specexec.Router.from_toml(ROUTER, classifiers={"lengthy": _lengthy})
    rt = Runtime([Scripted(n, 0.1, text='{"route": "code"}') for n in NAMES])
    assert (await routing.decide(router, "def f(): pass", rt)).name == "code"
    assert (await routing.decide(router, Query("x" * 3000), rt)).name == "hard"
    assert (
        await routing.decide(router, Query("hi", metadata={"step": "classify", "tier": "free"}), rt)
    ).name == "simple"
    long = await routing.decide(router, "y" * 150, rt)
    assert (long.name, long.selector) == ("hard", "lengthy")
    asked = await routing.decide(router, "hello", rt)
    assert (asked.name, asked.selector) == ("code", "llm")
    assert asked.passed[-1] == "lengthy: simple at confidence 0.5 < 0.7"


def test_round_trip(tmp_path: Path) -> None:
    router = specexec.Router.from_toml(ROUTER, classifiers={"lengthy": _lengthy})
    text = router.to_toml()
    path = tmp_path / "router.toml"
    path.write_text(text)
    again = specexec.Router.from_toml(path, classifiers={"lengthy": _lengthy})
    assert again.source == router.source
    assert again.to_toml() == text
    assert again.routes == router.routes


def test_code_built_router_has_no_toml_form() -> None:
    router = specexec.Router({"a": specexec.Policy.single("a")}, default="a")
    with pytest.raises(specexec.PolicyError, match=r"only a router loaded with Router\.from_toml"):
        router.to_toml()


def _bad(replace: str, by: str) -> str:
    assert replace in ROUTER
    return ROUTER.replace(replace, by, 1)


@pytest.mark.parametrize(
    ("text", "message", "path"),
    [
        (_bad('default = "simple"', 'default = "nope"'), "default 'nope' is not a route", "$.default"),
        (_bad('delay = "p95"', 'delay = "soon"'), "delay 'soon' does not parse", "$.routes.simple.delay"),
        (_bad('candidates = ["coder-a", "coder-b"]', "candidates = []"), "at least one", "$.routes.code.candidates"),
        (_bad('hard = "frontier"', 'hard = "frontierz"'), "names policy 'frontierz'", "$.routes.hard"),
        (
            _bad("max_cost = 0.5", "max_cost = -1"),
            "max_cost must be a finite positive number",
            "$.policies.frontier.max_cost",
        ),
        (_bad("regex = '```", "regex = '(```"), "does not compile", "$.select[0].regex"),
        (_bad("min_tokens = 2000", "min_tokens = -3"), "min_tokens must be an integer >= 0", "$.select[1].min_tokens"),
        (_bad('kind = "classifier"', 'kind = "oracle"'), "Invalid value 'oracle'", "$.select[3].kind"),
        (_bad('name = "lengthy"', 'name = "other"'), "classifier 'other' is not among", "$.select[3].name"),
        (
            _bad('labels = ["simple", "code", "hard"]', "labels = []"),
            "labels must be a non-empty",
            "$.select[4].labels",
        ),
        (_bad("timeout = 0.5", "timeot = 0.5"), "unknown key 'timeot'", "$.select[4].timeot"),
        (_bad("limit_usd = 10.0", "limit_usd = 0"), "limit_usd must be a positive", "$.budget.limit_usd"),
        (_bad('period = "day"', 'period = "week"'), "Invalid enum value 'week'", "$.budget.period"),
        (_bad("below = 0.5", "below = 2"), "below must be a fraction", "$.budget.downgrade[0].below"),
        (_bad('to = "cheapest"', 'to = "gold"'), "downgrades to unknown route 'gold'", "$.budget.downgrade[1].to"),
        (_bad('route = "hard"', 'route = "hardest"'), "unknown route 'hardest'", "$.select[1].route"),
    ],
)
def test_errors_name_the_key_path(tmp_path: Path, text: str, message: str, path: str) -> None:
    file = tmp_path / "router.toml"
    file.write_text(text)
    with pytest.raises(specexec.PolicyError) as info:
        specexec.Router.from_toml(file, classifiers={"lengthy": _lengthy})
    assert message in str(info.value)
    assert info.value.path == path
    assert str(info.value).startswith(f"{file}: ")


def test_semantic_and_trained_selectors_from_toml(tmp_path: Path) -> None:
    import numpy as np

    def embed(texts: list[str]) -> np.ndarray:
        return np.array([[("code" in t) + 0.01, ("math" in t) + 0.01] for t in texts], dtype=np.float32)

    clf = routing.trained({"code": ["code a", "code b"], "hard": ["math a", "math b"]}, embedder=embed)
    clf.save(tmp_path / "clf.json")
    text = f'''
default = "simple"
[routes.simple]
mode = "single"
candidates = ["a"]
[routes.code]
mode = "single"
candidates = ["a"]
[routes.hard]
mode = "single"
candidates = ["a"]
[[select]]
kind = "semantic"
exemplars = {{ code = ["code x"], hard = ["math y"] }}
threshold = 0.9
method = "centroid"
[[select]]
kind = "trained"
path = "{tmp_path / "clf.json"}"
threshold = 0.6
'''
    router = specexec.Router.from_toml(text, embedder=embed)
    sem, trained = router.selectors
    assert isinstance(sem, routing.Semantic) and sem.method == "centroid" and sem.threshold == 0.9
    assert isinstance(trained, routing.TrainedClassifier) and trained.labels == ["code", "hard"]
    assert sem.classify("some code").route == "code"
    assert trained.classify("math question").route == "hard"
    again = specexec.Router.from_toml(router.to_toml(), embedder=embed)
    assert again.source == router.source
    with pytest.raises(specexec.PolicyError) as info:
        specexec.Router.from_toml(text.replace("clf.json", "missing.json"), embedder=embed)
    assert info.value.path == "$.select[1].path" and "cannot read trained classifier" in str(info.value)


def test_similar_traffic_keys_from_toml(tmp_path: Path) -> None:
    text = ROUTER.replace("speculate = true\n", 'speculate = true\nsimilar = ["feature", "priority"]\n')
    router = specexec.Router.from_toml(text, classifiers={"lengthy": _lengthy})
    a = Query("x", tenant="t1", priority=2, metadata={"feature": "chat", "step": "one"})
    b = Query("y", tenant="t2", priority=2, metadata={"feature": "chat", "step": "two"})
    assert router.similar(a) == router.similar(b) == ("chat", 2)  # tenant and step no longer matter
    assert router.similar(Query("z")) == (None, 0)
    assert "similar = [" in router.to_toml()
    assert specexec.Router.from_toml(router.to_toml(), classifiers={"lengthy": _lengthy}).source == router.source
    assert routing.similar_by(["tenant", "step"])(a) == ("t1", "one")
    with pytest.raises(specexec.PolicyError, match=r"\$\.similar"):
        specexec.Router.from_toml(text.replace('["feature", "priority"]', "[]"), classifiers={"lengthy": _lengthy})


def test_a_hedge_route_from_toml_gets_the_hedge_presets_budget() -> None:
    """A route (or [policies] table) without a ``budget`` key has the mode's default budget, as
    ``Policy.from_toml`` gives it: the file's "unset" sentinel (a budget that allows no hedge at
    all) must never reach the policy, and ``budget = "none"`` means unrationed."""
    router = specexec.Router.from_toml(
        """
        default = "chat"
        [routes.chat]
        mode = "hedge"
        candidates = ["a", "b"]
        [routes.free]
        mode = "hedge"
        candidates = ["a", "b"]
        budget = "none"
        [routes]
        named = "shared"
        [policies.shared]
        mode = "hedge"
        candidates = ["a", "b"]
        """
    )
    alone = specexec.Policy.from_toml('mode = "hedge"\ncandidates = ["a", "b"]')
    assert router.routes["chat"].budget == alone.budget == specexec.HedgeBudgetConfig()
    assert router.routes["named"].budget == specexec.HedgeBudgetConfig()
    assert router.routes["free"].budget is None
