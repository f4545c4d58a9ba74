"""Multi-step workflows in bench reports: ``step`` of a query kind is ``Query.metadata["step"]``, and a
scenario with steps gets per-step figures (JSON) and a per-step table (text)."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from specexec import PolicyError
from specexec.bench.bench import _cli, build_result, load_scenario, render, simulate, to_json
from specexec.bench.bench._workload import requests

SCENARIO = """
seed = 1
baseline = "single"

[workload]
rate = 100.0
requests = 300

[[workload.queries]]
prompt = "Which team handles this ticket?"
step = "triage"
weight = 2.0

[[workload.queries]]
prompt = "Write the reply to the customer."
step = "respond"

[[backends]]
kind = "simulated"
name = "a"
provider = "pa"
region = "r1"
latency = { kind = "lognormal", median = 0.02, sigma = 0.3 }

[[backends]]
kind = "simulated"
name = "b"
provider = "pb"
region = "r2"
seed = 1
latency = { kind = "lognormal", median = 0.03, sigma = 0.3 }

[policies.single]
mode = "single"
candidates = ["a"]

[policies.hedge]
mode = "hedge"
candidates = ["a", "b"]
delay = "p90"
"""


@pytest.fixture
def scenario_path(tmp_path: Path) -> Path:
    path = tmp_path / "workflow.toml"
    path.write_text(SCENARIO, encoding="utf-8")
    return path


def test_the_step_is_query_metadata(scenario_path: Path) -> None:
    scenario = load_scenario(scenario_path)
    steps = [r.query.metadata.get("step") for r in requests(scenario.workload, scenario.seed)]
    assert set(steps) == {"triage", "respond"} and steps.count("triage") > steps.count("respond")


@pytest.mark.parametrize("jobs", [1, 2])
def test_report_has_per_step_figures_and_table(scenario_path: Path, jobs: int) -> None:
    scenario = load_scenario(scenario_path)
    stats = simulate(scenario, jobs=jobs)  # 2: the step figures cross the process boundary
    result = build_result(scenario, "sim", stats, elapsed=1.0)
    doc = json.loads(to_json(result))
    for p in doc["policies"]:
        steps = p["steps"]
        assert set(steps) == {"respond", "triage"}
        assert steps["respond"]["requests"] + steps["triage"]["requests"] == p["summary"]["requests"] == 300
    text = render(result)
    assert "per workflow step (Query.metadata['step'])" in text
    rows = [line.split() for line in text.split("per workflow step")[1].splitlines()[3:7]]
    assert [r[:3] for r in rows] == [
        ["single", "respond", str(doc["policies"][0]["steps"]["respond"]["requests"])],
        ["single", "triage", str(doc["policies"][0]["steps"]["triage"]["requests"])],
        ["hedge", "respond", str(doc["policies"][1]["steps"]["respond"]["requests"])],
        ["hedge", "triage", str(doc["policies"][1]["steps"]["triage"]["requests"])],
    ]


def test_no_steps_no_step_table() -> None:
    scenario = load_scenario(Path(__file__).resolve().parents[2] / "benchmarks" / "scenarios" / "cost-ceiling.toml")
    scenario = scenario.with_options(requests=50)
    result = build_result(scenario, "sim", simulate(scenario, jobs=1), elapsed=1.0)
    assert all(p.steps == {} for p in result.policies)
    assert "per workflow step" not in render(result)


def test_bench_cli_prints_the_step_table(scenario_path: Path) -> None:
    out, err = io.StringIO(), io.StringIO()
    assert _cli.main([str(scenario_path), "--sim", "--requests", "60"], stdout=out, stderr=err) == 0, err.getvalue()
    assert "per workflow step" in out.getvalue() and "triage" in out.getvalue()


def test_an_empty_step_is_a_path_precise_error(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(SCENARIO.replace('step = "respond"', 'step = ""'), encoding="utf-8")
    with pytest.raises(PolicyError, match=r"workload\.queries\[1\]\.step"):
        load_scenario(path)
