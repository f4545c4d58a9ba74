"""Scenario loading: the built-ins, the shape, and errors that name the file and key path."""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from specexec import PolicyError
from specexec.bench.bench import builtin_scenarios, load_scenario, resolve_scenario
from specexec.bench.bench._scenario import Brownout, leading_comment

from .conftest import SMALL

Write = Callable[..., Path]

BUILTINS = ["tail-at-scale", "regional-brownout", "rate-limit-storm", "provider-outage", "cost-ceiling", "demo"]


def test_every_builtin_loads_and_is_documented() -> None:
    assert set(BUILTINS) <= set(builtin_scenarios())
    for name in builtin_scenarios():
        s = load_scenario(name)
        assert s.name == name
        assert len(s.description) > 200, name  # a one-paragraph comment
        assert s.baseline in s.policies
        assert s.simulated == (name != "demo")


def test_tail_at_scale_is_the_issue_setup() -> None:
    s = load_scenario("tail-at-scale")
    assert s.workload.rate == 100.0 and s.workload.arrivals == "poisson"
    assert [b.name for b in s.backends] == ["a", "b", "c"]
    assert len({(b.provider, b.region) for b in s.backends}) == 3
    hedge = s.policies["adaptive-p95"]
    assert hedge.mode == "hedge" and hedge.delay == "p95" and hedge.max_attempts == 3 and hedge.budget is None
    assert s.policies["adaptive-budget"].budget is not None
    assert s.policies["adaptive-budget"].budget.max_extra_load == 0.05
    assert s.policies["auto"].delay == "auto"


def test_policies_keep_file_order_and_get_their_table_name(write: Write) -> None:
    s = load_scenario(write(SMALL))
    assert list(s.policies) == ["single", "hedge"]
    assert s.policies["hedge"].name == "hedge"
    assert s.description == "A small scenario for tests: two simulated backends."


def test_demo_is_the_default_fleet_plus_its_events() -> None:
    s = load_scenario("demo")
    assert s.fleet is not None and not s.backends
    assert "alpha-us" in s.backend_names and "gamma-eu" in s.backend_names
    assert len(s.fleet.events) == 1 and s.fleet.events[0].deployments == ("alpha-us",)
    assert s.prices["alpha"] == (0.15, 0.60)


@pytest.fixture
def write(write_scenario: Callable[[str, str], Path]) -> Write:
    return write_scenario


def _error(write: Write, text: str) -> PolicyError:
    path = write(text)
    with pytest.raises(PolicyError) as info:
        load_scenario(path)
    assert str(path) in str(info.value)  # the file is named
    return info.value


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        (
            ("max_extra_load = 0.1 }", "max_extra_load = 0.1 }\nmax_attemps = 2"),
            "$.policies.hedge.max_attemps",
            "unknown key",
        ),
        (('delay = "p90"', 'delay = "p90"\nmax_attempts = 0'), "$.policies.hedge.max_attempts", ">= 1"),
        (('delay = "p90"', 'delay = "soon"'), "$.policies.hedge.delay", "does not parse"),
        (
            ('candidates = ["a", "b"]', 'candidates = ["a", "z"]'),
            "$.policies.hedge.candidates[1]",
            "unknown backend 'z'",
        ),
        (('mode = "single"', 'mode = "solo"'), "$.policies.single.mode", "solo"),
        (('baseline = "single"', 'baseline = "nope"'), "$.baseline", "not one of the policies"),
        (("requests = 400", "requests = 0"), "$.workload.requests", ">= 1"),
        (("requests = 400", "warmup = 1"), "$.workload", "requests"),
        (('arrivals = "poisson"', 'arrivals = "bursty"'), "$.workload.arrivals", "bursty"),
        (("median = 0.02", 'median = "fast"'), "$.backends[0].latency.median", "Expected"),
        (("seed = 1\nbaseline", "seed = 1\nbaseline_policy = 1\nbaseline"), "$.baseline_policy", "unknown key"),
    ],
)
def test_errors_name_the_key_path(write: Write, change: tuple[str, str], path: str, words: str) -> None:
    old, new = change
    assert old in SMALL
    err = _error(write, SMALL.replace(old, new, 1))
    assert err.path == path, str(err)
    assert words in str(err)


def test_event_errors(write: Write) -> None:
    err = _error(write, SMALL + '\n[[events]]\nkind = "brownout"\nregion = "mars"\nstart = 1.0\nend = 2.0\n')
    assert err.path == "$.events[0].region" and "mars" in str(err)
    err = _error(write, SMALL + '\n[[events]]\nkind = "outage"\nbackends = ["a", "q"]\n')
    assert err.path == "$.events[0].backends[1]"
    err = _error(write, SMALL + '\n[[events]]\nkind = "brownout"\nstart = 5.0\nend = 2.0\n')
    assert err.path == "$.events[0]" and "after its start" in str(err)
    err = _error(write, SMALL + '\n[[events]]\nkind = "flood"\n')
    assert err.path == "$.events[0]" or err.path.startswith("$.events[0]")


def test_other_checks(write: Write) -> None:
    assert _error(write, SMALL + "\n[quality]\npass_rate = { zz = 0.5 }\n").path == "$.quality.pass_rate.zz"
    assert _error(write, SMALL + "\n[quality]\npass_rate = { a = 1.5 }\n").path == "$.quality.pass_rate.a"
    assert _error(write, SMALL.replace('name = "b"', 'name = "a"')).path == "$.backends[1].name"
    tenants = SMALL.replace("requests = 400", "requests = 400\ntenants = { x = 1.0, y = 0.0 }")
    assert _error(write, tenants).path == "$.workload.tenants.y"
    assert _error(write, SMALL + '\n[fleet]\nconfig = "default"\n').path == "$.fleet"
    no_policies = SMALL[: SMALL.index("[policies.single]")].replace('baseline = "single"', "")
    assert _error(write, no_policies).path == "$.policies"
    assert _error(write, "this is = = not toml").path == "$"


def test_events_parse_and_target(write: Write) -> None:
    s = load_scenario(write(SMALL + '\n[[events]]\nkind = "brownout"\nprovider = "pb"\nstart = 1.0\nend = 3.0\n'))
    (ev,) = s.events
    assert isinstance(ev, Brownout) and ev.factor == 5.0
    assert ev.targets(s.backend_identities) == ["b"]
    s = load_scenario(write(SMALL + '\n[[events]]\nkind = "rate_limit"\nretry_after = 2.0\n'))
    assert s.events[0].targets(s.backend_identities) == ["a", "b"] and math.isinf(s.events[0].end)


def test_with_options(write: Write) -> None:
    s = load_scenario(write(SMALL))
    t = s.with_options(duration=5.0, rate=50.0, seed=9, policies=["hedge"])
    assert t.workload.duration == 5.0 and t.workload.requests is None and t.workload.rate == 50.0
    assert t.seed == 9 and list(t.policies) == ["hedge"] and t.baseline == "hedge"  # the baseline was left out
    assert s.with_options(requests=10).workload.duration is None
    with pytest.raises(PolicyError, match="unknown policy 'x'") as info:
        s.with_options(policies=["x"])
    assert info.value.path == "--policies"
    with pytest.raises(PolicyError, match="not among the policies run"):
        s.with_options(policies=["hedge"], baseline="single")
    with pytest.raises(PolicyError, match="--rate"):
        s.with_options(rate=0.0)


def test_target_only_scenario_skips_the_candidate_check(write: Write) -> None:
    text = SMALL[SMALL.index("[policies.single]") :]
    s = load_scenario(write("[workload]\nrequests = 5\n" + text.replace('"a"', '"mine"')))
    assert not s.simulated and s.backend_names == [] and s.policies["single"].candidates == ("mine",)


def test_resolve() -> None:
    assert resolve_scenario("tail-at-scale").name == "tail-at-scale.toml"
    with pytest.raises(PolicyError, match="not a built-in"):
        resolve_scenario("no-such-scenario")


def test_leading_comment() -> None:
    assert leading_comment("#\n# One\n# two.\n#\n# Not this.\nx = 1\n") == "One two."
    assert leading_comment("x = 1\n# late\n") == ""


@pytest.mark.parametrize(
    ("extra", "path"),
    [
        ('\n[[events]]\nkind = "brownout"\nfactor = inf\n', "$.events[0].factor"),
        ('\n[[events]]\nkind = "rate_limit"\nretry_after = inf\n', "$.events[0].retry_after"),
        ('\n[[events]]\nkind = "outage"\nstart = inf\n', "$.events[0].start"),
    ],
)
def test_an_infinite_number_is_refused_where_the_file_says_it(write: Write, extra: str, path: str) -> None:
    # Before: accepted at load; a brownout of factor inf failed the run later ("the run failed:
    # PolicyError ... (at $.factor)", no file and no event), a retry_after of inf failed every request.
    err = _error(write, SMALL + extra)
    assert err.path == path, str(err)
