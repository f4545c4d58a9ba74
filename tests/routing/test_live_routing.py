"""``specexec bench routing --live``: the fleet's per-class quality model, and the comparison over loopback."""

from __future__ import annotations

import io
import json
from typing import Any

import httpx
import pytest

from specexec.bench.bench import _cli
from specexec.bench.bench._routing import CONFIGS
from specexec.bench.bench._routing_live import live_fleet_config, run_routing_live
from specexec.bench.fleet import Deployment, FleetConfig, FleetConfigError, start_fleet_process
from specexec.bench.fleet._quality import FAIL_MARKER, PASS_MARKER, QualityModel, class_of

CLASSES = {"easy": ("hello there",), "code": ("fix my python function",)}


def _dep(**kw: Any) -> Deployment:
    base = {"name": "m", "provider": "p", "region": "r", "model": "m-1", "output_tokens": 10}
    return FleetConfig.from_builtins(
        {"deployments": [{**base, **kw}], "classes": {k: list(v) for k, v in CLASSES.items()}}
    ).deployments[0]


def test_class_of_matches_exactly_then_by_the_longest_contained_prompt() -> None:
    classes = {"a": ("fix it",), "b": ("fix it in python",)}
    assert class_of("  fix it \n", classes) == "a"
    assert class_of("Route this: fix it in python please", classes) == "b"
    assert class_of("something else", classes) is None


def test_quality_model_draws_the_configured_pass_rate_per_class_and_reseeds() -> None:
    model = QualityModel(_dep(quality={"easy": 0.9, "code": 0.2}), CLASSES, seed=5)
    easy = [model.answer([("user", "hello there")]) for _ in range(2000)]
    code = [model.answer([("user", "fix my python function")]) for _ in range(2000)]
    assert all(a is not None and a.endswith(a.splitlines()[-1]) for a in easy)
    rate = {
        "easy": sum(a is not None and a.startswith(PASS_MARKER) for a in easy) / 2000,
        "code": sum(a is not None and a.startswith(PASS_MARKER) for a in code) / 2000,
    }
    assert rate["easy"] == pytest.approx(0.9, abs=0.03) and rate["code"] == pytest.approx(0.2, abs=0.03)
    assert all(a is not None and (a.startswith(PASS_MARKER) or a.startswith(FAIL_MARKER)) for a in code)
    first = easy[0]
    assert first is not None and len(first.split()) == 10 and first.splitlines()[-1].startswith("Confidence: ")
    assert model.answer([("user", "not a class prompt")]) is None
    model.reseed()
    assert model.answer([("user", "hello there")]) == first  # POST /reset gives the same draws again


def test_router_model_names_the_class_route_or_another_label() -> None:
    model = QualityModel(
        _dep(quality={"easy": 0.5, "code": 1.0}, labels={"easy": "simple", "code": "coder"}), CLASSES, 1
    )
    easy = [json.loads(model.answer([("user", "classify: hello there")]) or "") for _ in range(400)]
    assert {e["route"] for e in easy} == {"simple", "coder"}
    assert sum(e["route"] == "simple" for e in easy) / 400 == pytest.approx(0.5, abs=0.08)
    assert {json.loads(model.answer([("user", "fix my python function")]) or "")["route"] for _ in range(50)} == {
        "coder"
    }


def test_quality_for_an_unknown_class_is_a_config_error_naming_it() -> None:
    with pytest.raises(FleetConfigError, match=r"quality names class\(es\) \['maths'\]"):
        FleetConfig.from_builtins(
            {
                "deployments": [{"name": "m", "provider": "p", "region": "r", "model": "x", "quality": {"maths": 0.5}}],
                "classes": {"easy": ["hi"]},
            }
        )
    with pytest.raises(FleetConfigError, match=r"\$\.deployments\[0\]\.quality"):
        FleetConfig.from_builtins(
            {
                "deployments": [{"name": "m", "provider": "p", "region": "r", "model": "x", "quality": {"easy": 1.5}}],
                "classes": {"easy": ["hi"]},
            }
        )


def test_quality_config_round_trips_through_toml() -> None:
    config = live_fleet_config(seed=3, latency_scale=0.5)
    assert FleetConfig.loads(config.to_toml()) == config


def test_fleet_serves_marked_answers_over_http() -> None:
    config = FleetConfig(
        deployments=(
            _dep(name="good", quality={"easy": 1.0, "code": 1.0}),
            _dep(name="bad", quality={"easy": 0.0}),
            _dep(name="plain"),
        ),
        classes=CLASSES,
    ).validated()
    with start_fleet_process(config) as fleet, httpx.Client(timeout=5.0, trust_env=False) as http:

        def ask(name: str, text: str) -> str:
            r = http.post(
                fleet.base_url(name) + "/chat/completions",
                json={"model": "m-1", "messages": [{"role": "user", "content": text}]},
            )
            r.raise_for_status()
            content: str = r.json()["choices"][0]["message"]["content"]
            return content

        assert ask("good", "hello there").startswith("good ")
        assert ask("bad", "hello there").startswith("wrong ")
        assert ask("bad", "fix my python function").startswith("lorem")  # no rate for this class
        assert ask("plain", "hello there").startswith("lorem")


def test_live_routing_comparison_runs_end_to_end_over_loopback() -> None:
    report = run_routing_live(requests=24, seed=3, rate=200.0, latency_scale=0.02, measure=False)
    assert report.mode == "live"
    assert set(report.configs) | set(report.skipped) == set(CONFIGS)
    for name, stats in report.configs.items():
        assert stats["all"].requests == 24, name
    frontier, mini = report.configs["frontier-only"]["all"], report.configs["mini-only"]["all"]
    assert frontier.quality > mini.quality and frontier.cost_mean > 10 * mini.cost_mean
    assert report.configs["oracle"]["all"].accuracy == 1.0
    assert report.configs["llm-router"]["all"].routing_mean > 0  # the router's own HTTP call
    assert report.configs["cascade"]["all"].escalation > 0


def test_live_routing_is_bounded_by_duration() -> None:
    report = run_routing_live(
        requests=200, seed=3, configs=["mini-only"], rate=100.0, duration=0.1, latency_scale=0.02, measure=False
    )
    assert 0 < report.configs["mini-only"]["all"].requests < 30


def test_bench_cli_runs_routing_live() -> None:
    out, err = io.StringIO(), io.StringIO()
    argv = ["routing", "--live", "--requests", "8", "--rate", "200", "--latency-scale", "0.02"]
    assert _cli.main([*argv, "--policies", "frontier-only,rules", "--json"], stdout=out, stderr=err) == 0, (
        err.getvalue()
    )
    doc = json.loads(out.getvalue())
    assert doc["mode"] == "live" and set(doc["configs"]) == {"frontier-only", "rules"}
    assert _cli.main(["routing", "--sim", "--duration", "3"], stdout=out, stderr=err) == 2
    assert _cli.main(["routing", "--live", "--rate", "0"], stdout=out, stderr=err) == 2
