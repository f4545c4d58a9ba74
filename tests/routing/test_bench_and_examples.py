"""The routing benchmark scenario and the examples run, and say what they should."""

from __future__ import annotations

import io
import runpy
import sys
from pathlib import Path

import pytest

from specexec.bench.bench import _cli
from specexec.bench.bench._routing import CONFIGS, render, run_routing

ROOT = Path(__file__).resolve().parents[2]


def test_routing_scenario_compares_every_configuration() -> None:
    report = run_routing(requests=400, seed=3)
    assert set(report.configs) | set(report.skipped) == set(CONFIGS)
    frontier, mini = report.configs["frontier-only"]["all"], report.configs["mini-only"]["all"]
    oracle = report.configs["oracle"]["all"]
    assert frontier.quality > mini.quality + 0.2
    assert oracle.quality >= 0.97 * frontier.quality and oracle.cost_mean <= 0.4 * frontier.cost_mean
    assert report.configs["llm-router"]["all"].routing_mean == pytest.approx(0.25, rel=0.2)
    spec = report.configs["llm-router+speculate"]["all"]
    assert spec.p50 < report.configs["llm-router"]["all"].p50  # speculation hides the router's latency
    assert report.configs["cascade"]["all"].escalation > 0
    accuracy = {name: stats["all"].accuracy for name, stats in report.configs.items()}  # routing accuracy
    assert accuracy["oracle"] == 1.0 and accuracy["frontier-only"] is None and accuracy["cascade"] is None
    assert 0.85 < accuracy["rules"] < 1.0  # type: ignore[operator]
    assert accuracy["llm-router"] == pytest.approx(0.92, abs=0.04)
    assert accuracy["llm-router+speculate"] == accuracy["llm-router"]  # speculation does not change the decision
    text = render(report)
    assert "speculative routing: p50" in text and "per class" in text


def test_bench_cli_runs_the_routing_scenario() -> None:
    out, err = io.StringIO(), io.StringIO()
    assert (
        _cli.main(["routing", "--sim", "--requests", "60", "--policies", "frontier-only,rules"], stdout=out, stderr=err)
        == 0
    )
    assert "frontier-only" in out.getvalue() and "rules" in out.getvalue()
    assert _cli.main(["routing", "--policies", "nope"], stdout=out, stderr=err) == 2
    listing = io.StringIO()
    assert _cli.main(["--list"], stdout=listing) == 0
    assert "routing\n    Routing:" in listing.getvalue()


@pytest.mark.parametrize("name", ["support_workflow.py", "speculative_routing.py"])
def test_examples_run(name: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sys, "argv", [name])
    runpy.run_path(str(ROOT / "examples" / name), run_name="__main__")
    out = capsys.readouterr().out
    if name == "support_workflow.py":
        assert out.count("triage   → triage") == 2 and "respond-hard  frontier" in out
    else:
        assert "guessed simple (hit)" in out and "guessed simple (miss)" in out and "rule:code; no guess" in out
