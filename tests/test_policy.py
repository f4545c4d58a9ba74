"""Policy: presets, validation with paths, TOML loading."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest

import specexec
from specexec import Policy, PolicyError, scorers, verifiers
from specexec._policy import parse_delay


def test_presets_set_the_mode_knobs() -> None:
    assert Policy.single("a").effective_max_attempts == 1
    assert Policy.failover(["a", "b"]).effective_delay == math.inf
    assert Policy.cascade(["a", "b"]).effective_order == "cost"
    assert Policy.hedge(["a", "b"]).effective_delay == ("quantile", 0.95)
    assert Policy.hedge(["a", "b"]).budget == specexec.HedgeBudgetConfig()
    assert Policy.race(["a", "b", "c"]).effective_delay == 0.0
    assert Policy.race(["a", "b", "c"]).effective_max_attempts == 3
    pick = Policy.pick(["a", "b"], scorer=scorers.majority(), max_cost=0.02)
    assert pick.mode == "pick" and pick.max_cost == 0.02


def test_issue_signature_example() -> None:
    policy = Policy.hedge(
        ["fast", "slow"], delay="p95", max_attempts=2, verify=[verifiers.json_valid()], max_cost=0.01, deadline=2.0
    )
    assert policy.verify == (verifiers.json_valid(),)
    assert hash(policy) == hash(policy)


@pytest.mark.parametrize(
    ("value", "parsed"),
    [
        (0.2, 0.2),
        (0, 0.0),
        ("200ms", 0.2),
        ("1.5s", 1.5),
        ("p95", ("quantile", 0.95)),
        ("p99.9", ("quantile", 0.999)),
        ("P50", ("quantile", 0.5)),
        ("auto", ("auto", 0.0)),
    ],
)
def test_delay_parses(value: float | str, parsed: object) -> None:
    got = parse_delay(value)
    if isinstance(parsed, tuple):
        assert isinstance(got, tuple) and got[0] == parsed[0] and got[1] == pytest.approx(parsed[1])
    else:
        assert got == pytest.approx(parsed)


@pytest.mark.parametrize(
    ("build", "path", "words"),
    [
        (lambda: Policy.hedge(["a"], max_attempts=0), "$.max_attempts", "max_attempts must be an integer >= 1"),
        (lambda: Policy.hedge(["a", "b"], max_attempts=3), "$.max_attempts", "exceeds the 2 candidates"),
        (lambda: Policy.hedge(["a"], delay=-1), "$.delay", "delay must be >= 0"),
        (lambda: Policy.hedge(["a"], delay="p95x"), "$.delay", "does not parse"),
        (lambda: Policy.hedge(["a"], delay="p0"), "$.delay", "between p0 and p100"),
        (lambda: Policy(candidates=("a",), mode="pick"), "$.scorer", "pick mode needs a scorer"),
        (lambda: Policy.race([]), "$.candidates", "at least one backend"),
        (lambda: Policy.race(["a", 3]), "$.candidates[1]", "backend name or a Backend"),
        (lambda: Policy.single("a", max_cost=-1), "$.max_cost", "positive number"),
        (lambda: Policy.single("a", deadline=0), "$.deadline", "positive number"),
        (lambda: Policy.race(["a"], verify=[42]), "$.verify[0]", "must be callable"),
        (lambda: Policy.hedge(["a"], delay="auto", budget=None), "$.delay", "set budget"),
        (lambda: Policy.race(["a"], accept_score=0.5), "$.accept_score", "needs a scorer"),
        (lambda: Policy.hedge(["a"], delay="p100"), "$.delay", "between p0 and p100"),
        # what a run only found out before, as a bare AttributeError / KeyError / unknown backend 'f'
        (lambda: Policy.hedge(["a", "b"], budget="none"), "$.budget", "in Python pass budget=None"),
        (lambda: Policy.hedge(["a", "b"], budget=5), "$.budget", "HedgeBudgetConfig or None"),
        (lambda: Policy.hedge(["a", "b"], order="fastest"), "$.order", "as_listed, latency, cost, weighted, p2c"),
        (lambda: Policy.hedge("fast"), "$.candidates", "a list of backend names, got the string 'fast'"),
        (lambda: Policy.race("ab"), "$.candidates", "a list of backend names"),
        (lambda: Policy.race(["a"], name=5), "$.name", "name must be a string"),
        (lambda: Policy.race(["a"], commit="eventually"), "$.commit", "'first_token' or 'complete'"),
    ],
)
def test_bad_policies_fail_at_construction_with_a_path(build: object, path: str, words: str) -> None:
    with pytest.raises(PolicyError) as info:
        build()  # type: ignore[operator]
    assert info.value.path == path
    assert words in str(info.value)


def test_from_toml_text() -> None:
    policy = Policy.from_toml(
        """
mode = "hedge"
candidates = ["fast", "slow"]
delay = "p95"
max_attempts = 2
max_cost = 0.01
verify = [{kind = "json_valid"}, {kind = "length", max = 100}]

[budget]
max_extra_load = 0.1
"""
    )
    assert policy.mode == "hedge" and policy.candidates == ("fast", "slow")
    assert policy.verify == (verifiers.json_valid(), verifiers.length(max=100))
    assert policy.budget == specexec.HedgeBudgetConfig(max_extra_load=0.1)
    assert type(policy) is Policy


def test_from_toml_pick_with_scorer(tmp_path: Path) -> None:
    path = tmp_path / "pick.toml"
    path.write_text('mode = "pick"\ncandidates = ["a", "b", "c"]\nscorer = {kind = "majority"}\n')
    assert Policy.from_toml(path).scorer == scorers.majority()
    assert Policy.from_toml(str(path)).scorer == scorers.majority()


def test_toml_unknown_key_says_which_and_where(tmp_path: Path) -> None:
    path = tmp_path / "p.toml"
    path.write_text('candidates = ["a"]\n[budget]\nmax_extra_lod = 0.1\n')
    with pytest.raises(PolicyError) as info:
        Policy.from_toml(path)
    message = str(info.value)
    assert "max_extra_lod" in message and "$.budget.max_extra_lod" in message and str(path) in message


def test_toml_bad_type_says_where() -> None:
    with pytest.raises(PolicyError, match=r"Expected `int \| null`, got `str`.*\$\.max_attempts"):
        Policy.from_toml('candidates = ["a"]\nmax_attempts = "two"\n')


def test_toml_cross_field_error_keeps_its_path() -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_toml('mode = "pick"\ncandidates = ["a"]\n')
    assert info.value.path == "$.scorer"


def test_toml_unknown_verifier_kind() -> None:
    with pytest.raises(PolicyError, match=r"verify\[0\]"):
        Policy.from_toml('candidates = ["a"]\nverify = [{kind = "psychic"}]\n')


def test_toml_missing_file() -> None:
    with pytest.raises(PolicyError, match="cannot read config file"):
        Policy.from_toml("/nonexistent/policy.toml")


def test_toml_syntax_error() -> None:
    with pytest.raises(PolicyError, match="not valid TOML"):
        Policy.from_toml("candidates = [\n")


def test_toml_error_in_a_nested_table_keeps_the_full_path() -> None:
    with pytest.raises(PolicyError) as info:
        Policy.from_toml('candidates = ["a"]\n[budget]\nmax_extra_load = -1\n')
    assert info.value.path == "$.budget.max_extra_load"


def test_runtime_config_refuses_secrets_in_files() -> None:
    with pytest.raises(PolicyError, match="secrets are not read from files") as info:
        specexec.config.RuntimeConfig.load('[[backends]]\nkind = "openai"\nname = "x"\napi_key = "sk-abcdefgh"\n')
    assert "sk-abcdefgh" not in str(info.value)
    assert info.value.path == "$.backends[0].api_key"


def test_toml_hedge_gets_the_same_default_budget_as_the_preset() -> None:
    loaded = Policy.from_toml('mode = "hedge"\ncandidates = ["a", "b"]')
    assert loaded.budget == Policy.hedge(["a", "b"]).budget == specexec.HedgeBudgetConfig()
    unrationed = Policy.from_toml('mode = "hedge"\ncandidates = ["a", "b"]\nbudget = "none"')
    assert unrationed.budget is None


@pytest.mark.parametrize(
    ("knobs", "path"),
    [
        ({"min_delay": math.inf}, "$.min_delay"),
        ({"fallback_delay": math.inf}, "$.fallback_delay"),
        ({"deadline": math.inf}, "$.deadline"),
        ({"max_cost": math.inf}, "$.max_cost"),
        ({"retries": -1}, "$.retries"),
        ({"backoff": math.nan}, "$.backoff"),
    ],
)
def test_non_finite_knobs_are_rejected_with_their_path(knobs: dict[str, object], path: str) -> None:
    with pytest.raises(specexec.PolicyError) as info:
        Policy.hedge(["a", "b"], **knobs)  # type: ignore[arg-type]
    assert info.value.path == path


@pytest.mark.parametrize("ttl", [1e-300, math.inf, math.nan])
def test_budget_ttl_must_be_sane(ttl: float) -> None:
    with pytest.raises(specexec.PolicyError, match=r"\$\.ttl"):
        specexec.HedgeBudgetConfig(ttl=ttl)
    with pytest.raises(specexec.PolicyError, match=r"\$\.budget\.ttl"):
        Policy.from_toml(f'mode = "hedge"\ncandidates = ["a"]\nbudget = {{ ttl = {ttl!r} }}')


def test_presets_have_real_keyword_signatures_for_the_type_checker(tmp_path: Path) -> None:
    pytest.importorskip("mypy.api")
    sample = tmp_path / "sample.py"
    sample.write_text(
        'import specexec\nspecexec.Policy.hedge(["a"], max_atempts=2)\nspecexec.Policy.single("a", deadline=1.0)\n'
    )
    # In a process of its own: mypy.api.run raises this process's recursion limit for good, which
    # changes what later tests of deeply nested configs see.
    argv = [sys.executable, "-m", "mypy", "--strict", "--no-incremental", "--cache-dir=/dev/null", str(sample)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=300, check=False)
    out = done.stdout
    assert done.returncode == 1 and "max_atempts" in out and out.count("error:") == 1, out
