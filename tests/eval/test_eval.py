"""specexec eval: thresholds, Wilson intervals, choice with ties, cache, --compare, routes, confirmation."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from specexec import PolicyError, Query, Router
from specexec.bench.eval import EXIT_REGRESSION, load_eval, main, wilson
from specexec.bench.eval._report import ModelRow, choose
from specexec.bench.eval._stats import at_least, at_most, percentile

STARTER = Path(__file__).parents[2] / "benchmarks" / "evals" / "starter.toml"


def write_eval(tmp: Path, *, mini: float = 0.9, bar: float = 0.9, n: int = 10, extra: str = "") -> Path:
    (tmp / "cases.jsonl").write_text(
        "".join(json.dumps({"prompt": f"What is {i} + 1?", "reference": str(i + 1)}) + "\n" for i in range(n))
    )
    path = tmp / "eval.toml"
    path.write_text(
        f"""
[eval]
name = "t"
seed = 3
{extra}
[[backends]]
kind = "simulated"
name = "mini"
latency = 0.1
input_price = 0.1
output_price = 0.1
[[backends]]
kind = "simulated"
name = "big"
latency = 0.5
input_price = 10.0
output_price = 10.0

[classes.sum]
dataset = "cases.jsonl"
scorer = {{ kind = "numeric" }}
min_pass_rate = {bar}
route = "math"

[quality.mini]
sum = {mini}
"""
    )
    return path


def run(*args: str, stdin: io.StringIO | None = None) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(list(args), stdout=out, stderr=err, stdin=stdin)
    return code, out.getvalue(), err.getvalue()


# -- 1. the file -----------------------------------------------------------------------------


def test_starter_eval_loads_100_cases() -> None:
    spec = load_eval(STARTER)
    assert sum(len(c) for c in spec.cases.values()) == 100


def test_bad_threshold_names_the_key_path(tmp_path: Path) -> None:
    path = write_eval(tmp_path, bar=1.5)
    with pytest.raises(PolicyError) as e:
        load_eval(path)
    assert "min_pass_rate" in str(e.value) and e.value.path == "$.classes.sum.min_pass_rate"
    assert str(path) in str(e.value)


def test_bad_dataset_line_names_file_and_line(tmp_path: Path) -> None:
    path = write_eval(tmp_path)
    (tmp_path / "cases.jsonl").write_text('{"prompt": "a", "reference": "1"}\n{"prompt": "b", "refrence": "2"}\n')
    with pytest.raises(PolicyError) as e:
        load_eval(path)
    assert "cases.jsonl:2" in str(e.value) and "refrence" in str(e.value)


def test_a_bad_enum_in_a_dataset_line_lists_the_allowed_values(tmp_path: Path) -> None:
    path = write_eval(tmp_path)
    line = '{"prompt": "a", "reference": "1", "check": {"kind": "exactt"}}'
    (tmp_path / "cases.jsonl").write_text(line + "\n")
    with pytest.raises(PolicyError) as e:
        load_eval(path)
    assert "cases.jsonl:1" in str(e.value) and e.value.path == "$.check.kind"
    assert "expected one of" in str(e.value) and "did you mean 'exact'?" in str(e.value)


def test_unknown_candidate_is_refused(tmp_path: Path) -> None:
    path = write_eval(tmp_path)
    path.write_text(path.read_text().replace('route = "math"', 'route = "math"\ncandidates = ["nope"]'))
    with pytest.raises(PolicyError) as e:
        load_eval(path)
    assert e.value.path == "$.classes.sum.candidates[0]"


# -- 2. statistics and bars -----------------------------------------------------------------------


def test_wilson_against_known_values() -> None:
    # Wilson 95 % intervals (z = 1.959964): 8/10 -> [0.4902, 0.9433]; 0/10 -> [0, 0.2775]; 50/100 -> [0.4038, 0.5962]
    assert wilson(8, 10) == pytest.approx((0.490162, 0.943318), abs=1e-6)
    assert wilson(0, 10) == pytest.approx((0.0, 0.277533), abs=1e-6)
    assert wilson(50, 100) == pytest.approx((0.403832, 0.596168), abs=1e-6)
    assert wilson(0, 0) == (0.0, 1.0)


def test_thresholds_apply_exactly() -> None:
    assert not at_least(899, 1000, 0.9)
    assert at_least(900, 1000, 0.9)
    assert at_least(9, 10, 0.9)  # 9/10 is 0.9 as written, not below the binary 0.9
    assert at_most(0.1 + 0.2, 0.3)
    assert not at_most(0.30001, 0.3)
    assert percentile([1.0, 2.0, 3.0, 4.0], 95.0) == 4.0
    assert percentile([float(i) for i in range(1, 101)], 95.0) == 95.0


def _row(model: str, cost: float, p95: float, mean: float = 0.1, verdict: str = "pass") -> ModelRow:
    return ModelRow(
        model=model,
        cases=10,
        passed=10,
        pass_rate=1.0,
        ci_low=0.7,
        ci_high=1.0,
        latency_mean=mean,
        latency_p95=p95,
        cost_mean=cost,
        cost_per_pass=cost,
        verdict=verdict,
        failures=[],
        sent=10,
        skipped=0,
    )


def test_cheapest_passing_with_ties() -> None:
    rows = [_row("a", 0.002, 0.1), _row("b", 0.001, 0.9), _row("c", 0.001, 0.5), _row("d", 0.0001, 0.1, verdict="fail")]
    assert [r.model for r in choose(rows)] == ["c", "b", "a"]


def test_model_at_0_899_fails_a_0_9_bar(tmp_path: Path) -> None:
    path = write_eval(tmp_path, mini=0.899, bar=0.9, n=1000)
    _code, out, _ = run(str(path), "--sim", "--json")
    report = json.loads(out)
    mini = next(r for r in report["classes"]["sum"]["models"] if r["model"] == "mini")
    assert (mini["passed"], mini["verdict"]) == (899, "fail")
    assert report["classes"]["sum"]["chosen"] == "big"


def test_report_pass_rates_latency_and_choice(tmp_path: Path) -> None:
    code, out, _ = run(str(write_eval(tmp_path, mini=0.9)), "--sim", "--json")
    assert code == 0
    report = json.loads(out)
    rows = {r["model"]: r for r in report["classes"]["sum"]["models"]}
    assert rows["mini"]["passed"] == 9 and rows["big"]["passed"] == 10
    assert rows["mini"]["latency_p95"] == pytest.approx(0.1, abs=1e-9)  # virtual time, exact
    assert report["classes"]["sum"]["chosen"] == "mini"
    assert rows["mini"]["cost_per_pass"] == pytest.approx(rows["mini"]["cost_mean"] * 10 / 9)


# -- 3. the cache ----------------------------------------------------------------------------------


def test_second_run_sends_nothing(tmp_path: Path) -> None:
    path = write_eval(tmp_path)
    out_dir = tmp_path / "out"
    _, out, _ = run(str(path), "--sim", "--json", "--out", str(out_dir))
    assert json.loads(out)["sent"] == 20
    _, out, _ = run(str(path), "--sim", "--json", "--out", str(out_dir))
    again = json.loads(out)
    assert again["sent"] == 0 and again["classes"]["sum"]["chosen"] == "mini"
    # a changed prompt resends only that case, on both models
    lines = (tmp_path / "cases.jsonl").read_text().splitlines()
    lines[0] = json.dumps({"prompt": "What is 0 + 1? Number only.", "reference": "1"})
    (tmp_path / "cases.jsonl").write_text("\n".join(lines) + "\n")
    _code, out, _ = run(str(path), "--sim", "--json", "--out", str(out_dir))
    assert json.loads(out)["sent"] == 2


# -- 4. routes and compare -------------------------------------------------------------------------


def test_written_routes_load_and_route_as_decided(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    code, _, _ = run(str(write_eval(tmp_path)), "--sim", "--write-routes", str(routes))
    assert code == 0
    router = Router.from_toml(routes)
    assert router.routes["math"].candidates[0] == "mini"
    import trio

    decision = trio.run(router.decide, Query(prompt="x", metadata={"task_class": "sum"}))
    assert decision.name == "math"


def test_starter_routes_rewrite_the_base_router(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    code, out, _ = run(str(STARTER), "--sim", "--write-routes", str(routes))
    assert code == 0
    router = Router.from_toml(routes)
    assert [router.routes[r].candidates[0] for r in ("math", "extract", "classify")] == ["mid", "mini", "mini"]
    assert len(router.selectors) == 2  # the base router's rules are kept
    assert "routing: accuracy 93.0% over 100 cases" in out


def test_compare_exit_codes(tmp_path: Path) -> None:
    path = write_eval(tmp_path, mini=0.9)
    prev = tmp_path / "prev.json"
    _, out, _ = run(str(path), "--sim", "--json")
    prev.write_text(out)
    code, _, err = run(str(path), "--sim", "--compare", str(prev))
    assert code == 0 and "REGRESSION" not in err
    write_eval(tmp_path, mini=0.8)  # mini falls below its bar
    code, _, err = run(str(path), "--sim", "--compare", str(prev))
    assert code == EXIT_REGRESSION
    assert "REGRESSION: sum/mini: fell below its bar" in err


# -- 5. cost confirmation ---------------------------------------------------------------------------


def test_target_refuses_without_yes_and_no_terminal(tmp_path: Path) -> None:
    path = write_eval(tmp_path)
    target = tmp_path / "target.toml"
    target.write_text(
        '[[backends]]\nkind = "openai"\nname = "mini"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
        "input_price = 1.0\noutput_price = 2.0\n"
        '[[backends]]\nkind = "openai"\nname = "big"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
    )
    code, _, err = run(str(path), "--target", str(target), stdin=io.StringIO(""))
    assert code == 1
    assert "worst case" in err and "not confirmed" in err and "nothing sent" in err


def test_max_cost_stops_sending(tmp_path: Path) -> None:
    path = write_eval(tmp_path)
    _code, out, _ = run(str(path), "--sim", "--json", "--max-cost", "0")
    report = json.loads(out)
    assert report["sent"] == 0
    assert all(r["skipped"] == 10 for r in report["classes"]["sum"]["models"])


def test_cli_registers_eval() -> None:
    from specexec._cli import COMMANDS

    assert COMMANDS["eval"][0] == "specexec.bench.eval"


def test_written_routes_are_minimal_and_keep_the_base_policies(tmp_path: Path) -> None:
    routes = tmp_path / "routes.toml"
    base = tmp_path / "base.toml"
    base.write_text(
        'default = "math"\n[routes.math]\nmode = "single"\ncandidates = ["big"]\n'
        '[routes.other]\nmode = "hedge"\ncandidates = ["mini", "big"]\ndelay = 0.25\n'
    )
    path = write_eval(tmp_path, extra='router = "base.toml"')
    assert run(str(path), "--sim", "--write-routes", str(routes))[0] == 0
    text = routes.read_text()
    assert '[routes.math]\nmode = "failover"\ncandidates = ["mini", "big"]\norder = "as_listed"\n' in text
    assert "stall_timeout" not in text
    written, original = Router.from_toml(routes), Router.from_toml(base)
    assert written.routes["other"] == original.routes["other"]


def test_target_with_yes_sends_over_http(tmp_path: Path, fleet: object) -> None:
    from specexec.bench.fleet.pytest_fixtures import CANARY_ANSWER, CANARY_QUESTION

    (tmp_path / "cases.jsonl").write_text(
        json.dumps({"prompt": CANARY_QUESTION, "reference": CANARY_ANSWER})
        + "\n"
        + json.dumps({"prompt": "Say hello", "reference": "Say hello"})
        + "\n"
    )
    (tmp_path / "eval.toml").write_text(
        '[classes.c]\ndataset = "cases.jsonl"\nscorer = { kind = "normalised" }\nmin_pass_rate = 1.0\n'
        'candidates = ["alpha-us", "echo-us"]\n'
    )
    target = tmp_path / "target.toml"
    target.write_text(
        "".join(
            f'[[backends]]\nkind = "openai"\nname = "{n}"\nbase_url = "{fleet.base_url(n)}"\n'  # type: ignore[attr-defined]
            f'model = "alpha-mini-2025-01-01"\ninput_price = 1.0\noutput_price = 2.0\nhttp = {{ trust_env = false }}\n'
            for n in ("alpha-us", "echo-us")
        )
    )
    code, out, err = run(str(tmp_path / "eval.toml"), "--target", str(target), "--yes", "--json", "--max-cost", "1")
    assert code == 0, err
    assert "worst case" in err and "--max-cost: at most $1.0000" in err
    rows = {r["model"]: r for r in json.loads(out)["classes"]["c"]["models"]}
    assert rows["echo-us"]["passed"] == 2 and rows["echo-us"]["verdict"] == "pass"
    assert rows["alpha-us"]["passed"] == 1 and rows["alpha-us"]["verdict"] == "fail"
    assert rows["echo-us"]["cost_mean"] > 0


def test_wilson_holds_the_observed_rate() -> None:
    for n in range(1, 201):
        for k in range(n + 1):
            low, high = wilson(k, n)
            assert low <= k / n <= high, (k, n)
    assert wilson(40, 40)[1] == 1.0 and wilson(0, 40)[0] == 0.0


def test_out_writes_report_plot_and_cache(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out_dir = tmp_path / "out"
    code, _, err = run(str(write_eval(tmp_path, mini=1.0)), "--sim", "--out", str(out_dir))
    assert code == 0, err
    assert {p.name for p in out_dir.iterdir()} == {"report.json", "quality.png", "cache.jsonl"}


def test_sim_is_deterministic_for_a_seed() -> None:
    first = run(str(STARTER), "--sim", "--json")[1]
    for _ in range(3):
        assert run(str(STARTER), "--sim", "--json")[1] == first


def test_unknown_scorer_kind_lists_the_kinds(tmp_path: Path) -> None:
    path = write_eval(tmp_path)
    path.write_text(path.read_text().replace('kind = "numeric"', 'kind = "numerc"'))
    with pytest.raises(PolicyError) as e:
        load_eval(path)
    assert e.value.path == "$.classes.sum.scorer.kind"
    assert "exact, normalised, numeric, regex, verifier, llm_judge" in str(e.value)


def test_an_answer_appended_after_a_torn_cache_line_is_kept(tmp_path: Path) -> None:
    # Before: the next run's first answer was appended to the torn bytes, so it was lost too
    # (and paid for again by the run after).
    from specexec.bench.eval._cache import Answer, Cache

    path = tmp_path / "cache.jsonl"
    cache = Cache(path)
    cache.put(Answer("k1", "a", 0.1, 0.0))
    cache.put(Answer("k2", "b", 0.1, 0.0))
    path.write_bytes(path.read_bytes()[:-10])  # the run was interrupted while writing k2's line
    resumed = Cache(path)
    assert sorted(resumed.answers) == ["k1"]  # k2 is sent again
    resumed.put(Answer("k2", "b", 0.1, 0.0))
    resumed.put(Answer("k3", "c", 0.1, 0.0))
    assert sorted(Cache(path).answers) == ["k1", "k2", "k3"]


@pytest.mark.parametrize("flag", ["--out", "--write-routes"])
def test_an_output_that_cannot_be_written_is_refused_before_anything_is_sent(tmp_path: Path, flag: str) -> None:
    # Before: a traceback (FileExistsError during the run; FileNotFoundError after every call was sent).
    path = write_eval(tmp_path)
    (tmp_path / "a-file").write_text("x")
    bad = tmp_path / "a-file" if flag == "--out" else tmp_path / "missing" / "routes.toml"
    code, out, err = run(str(path), "--sim", flag, str(bad))
    assert code == 2 and out == ""
    assert err.startswith("specexec eval: ") and flag in err and "Traceback" not in err


def test_a_class_with_no_candidates_is_refused(tmp_path: Path) -> None:
    # Before: no [[backends]] and no candidates evaluated nothing and exited 0.
    path = write_eval(tmp_path)
    text = path.read_text()
    start = text.index("[[backends]]")
    path.write_text(text[:start] + text[text.index("[classes", start) :])
    (tmp_path / "target.toml").write_text('[[backends]]\nkind = "simulated"\nname = "mini"\n')
    code, out, err = run(str(path), "--target", str(tmp_path / "target.toml"), "--yes")
    assert code == 2 and out == ""
    assert "class 'sum' has no candidates" in err and "$.classes.sum.candidates" in err


JUDGED = """
[eval]
name = "judged"
jobs = 1
[classes.c]
dataset = "c.jsonl"
scorer = { kind = "llm_judge", backend = "judge" }
candidates = ["cand"]
min_pass_rate = 0.5
max_tokens = 4
"""
JUDGE_BACKENDS = """
[[backends]]
kind = "simulated"
name = "cand"
reply = "hello"
latency = 0.01
input_price = 1.0
output_price = 1.0
[[backends]]
kind = "simulated"
name = "judge"
reply = "9"
latency = 0.01
input_price = 1000.0
output_price = 1000.0
"""


def _judged(tmp_path: Path, *, backends_in_file: bool) -> Path:
    path = tmp_path / "ev.toml"
    path.write_text(JUDGED + (JUDGE_BACKENDS if backends_in_file else ""))
    (tmp_path / "c.jsonl").write_text("".join(f'{{"id": "c{i}", "prompt": "say hello {i}"}}\n' for i in range(20)))
    return path


def test_max_cost_holds_with_a_judge(tmp_path: Path) -> None:
    # Before: the judge's calls were settled after the fact, never reserved: 19x the ceiling.
    path = _judged(tmp_path, backends_in_file=True)
    _, out, _ = run(str(path), "--sim", "--max-cost", "1.0", "--json")
    report = json.loads(out)
    (row,) = report["classes"]["c"]["models"]
    assert 0 < row["skipped"] < 20  # some fitted, the rest did not
    assert 0 < report["cost_total"] <= 1.0


def test_a_cached_rerun_with_a_judge_asks_before_paying_the_judge_again(tmp_path: Path) -> None:
    # Before: a rerun whose answers were all cached judged them again without asking, and its
    # report said it cost nothing.
    path = _judged(tmp_path, backends_in_file=False)
    target = tmp_path / "target.toml"
    target.write_text(JUDGE_BACKENDS)
    out_dir = tmp_path / "out"
    first = run(str(path), "--target", str(target), "--out", str(out_dir), "--yes", "--json")
    assert first[0] == 0 and json.loads(first[1])["cost_total"] > 0.1
    code, out, err = run(str(path), "--target", str(target), "--out", str(out_dir), stdin=io.StringIO(""))
    assert code == 1 and "judge (judge)" in err and "nothing sent" in err
    code, out, _ = run(str(path), "--target", str(target), "--out", str(out_dir), "--yes", "--json")
    report = json.loads(out)
    assert report["sent"] == 0 and report["cost_total"] > 0.1  # the judge's calls, paid again
