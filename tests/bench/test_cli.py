"""``specexec bench`` end to end: --sim, --live, --target, --json, --out, errors."""

from __future__ import annotations

import io
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import specexec
from specexec._cli import main as specexec_main
from specexec.bench.bench import main
from specexec.bench.fleet import FleetProcess

from .conftest import SMALL

Write = Callable[..., Path]


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_sim_json_end_to_end() -> None:
    code, out, err = _run(["tail-at-scale", "--requests", "300", "--policies", "single,adaptive-p95", "--json"])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["mode"] == "sim" and doc["scenario"] == "tail-at-scale" and doc["seed"] == 1
    assert [p["name"] for p in doc["policies"]] == ["single", "adaptive-p95"]
    single, hedge = (p["summary"] for p in doc["policies"])
    assert single["requests"] == hedge["requests"] == 300 and single["success"] == 1.0
    assert single["extra_load"] == 0.0 and 0 < hedge["extra_load"] < 0.2
    assert doc["policies"][0]["ratios"]["p99"] == 1.0
    assert err == ""  # no progress in --json mode


def test_sim_table_is_the_same_for_a_seed() -> None:
    argv = ["regional-brownout", "--duration", "5", "--seed", "3", "--policies", "single,hedge,race"]
    first, second = _run(argv), _run(argv)
    assert first[0] == second[0] == 0

    def strip(text: str) -> str:  # everything but the wall-time line
        return "\n".join(line for line in text.splitlines() if " s wall " not in line)

    assert strip(first[1]) == strip(second[1]) and "race" in first[1]
    assert strip(_run([*argv[:-4], "--seed", "4", *argv[-2:]])[1]) != strip(first[1])


def test_out_writes_files(tmp_path: Path) -> None:
    code, out, _ = _run(["cost-ceiling", "--requests", "200", "--out", str(tmp_path)])
    assert code == 0
    assert "quality" in out and "ceiling" in out and "5.00e-03 ok" in out
    assert {p.name for p in tmp_path.iterdir()} >= {"results.json", "large.hgrm", "pick-all.hgrm", "latency.png"}
    assert f"wrote {tmp_path / 'results.json'}" in out


def test_list_and_dispatch(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = _run(["--list"])
    assert code == 0
    for name in ("tail-at-scale", "regional-brownout", "rate-limit-storm", "provider-outage", "cost-ceiling", "demo"):
        assert f"\n{name}\n" in f"\n{out}"
    assert specexec_main(["bench", "--list"]) == 0
    assert "tail-at-scale" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "words"),
    [
        (["no-such-scenario"], "not a built-in"),
        (["tail-at-scale", "--policies", "single,nope"], "unknown policy 'nope'"),
        (["tail-at-scale", "--baseline", "nope"], "baseline 'nope'"),
        (["demo", "--sim"], "--sim needs simulated backends"),
        (["tail-at-scale", "--rate", "-1"], "--rate must be > 0"),
        ([], "give a scenario"),
    ],
)
def test_usage_errors(argv: list[str], words: str) -> None:
    code, out, err = _run(argv)
    assert code == 2 and words in err and out == ""


def test_requests_and_duration_are_exclusive(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = _run(["tail-at-scale", "--requests", "5", "--duration", "5"])
    assert code == 2
    assert "not allowed with argument" in capsys.readouterr().err


def test_scenario_errors_name_file_and_path(write_scenario: Write) -> None:
    path = write_scenario(SMALL.replace('delay = "p90"', 'delay = "p90"\nmax_attempts = 9'))
    code, _, err = _run([str(path)])
    assert code == 2 and str(path) in err and "$.policies.hedge.max_attempts" in err


@pytest.mark.parametrize("loop", ["trio", "asyncio"])
def test_live_end_to_end(write_scenario: Write, loop: str) -> None:
    text = SMALL.replace("requests = 400", "duration = 1.0\nwarmup = 5")
    code, out, err = _run([str(write_scenario(text)), "--live", "--json", "--rate", "40", "--loop", loop])
    assert code == 0, err
    doc = json.loads(out)
    assert doc["mode"] == "live"
    for p in doc["policies"]:
        s = p["summary"]
        assert 25 <= s["requests"] <= 55 and s["success"] == 1.0
        assert s["latency"]["p50"] > 0.015  # the fleet's 20 ms median plus HTTP


def test_loop_with_sim_is_refused_with_why(write_scenario: Write) -> None:
    code, _, err = _run([str(write_scenario(SMALL)), "--sim", "--loop", "asyncio"])
    assert code == 2
    assert "--loop applies to --live and --target" in err


# --------------------------------------------------------------------------- --target

TARGET_SCENARIO = """
# Target-only: policies over the user's endpoints "one" and "two".
[workload]
arrivals = "constant"
rate = 5.0
requests = 10

[policies.single]
mode = "single"
candidates = ["one"]

[policies.hedge]
mode = "hedge"
candidates = ["one", "two"]
delay = "p50"
"""


@pytest.fixture
def target(tmp_path: Path, fleet: FleetProcess, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SPECEXEC_BENCH_TEST_KEY", "sk-bench-test-1234567890")
    path = tmp_path / "endpoints.toml"
    path.write_text(
        f"""
[[backends]]
kind = "openai"
name = "one"
base_url = "{fleet.base_url("alpha-us")}"
model = "alpha-mini-2025-01-15"
input_price = 1.0
output_price = 2.0

[[backends]]
kind = "anthropic"
name = "two"
base_url = "{fleet.base_url("gamma-eu")}"
model = "gamma-haiku-20250101"
api_key_env = "SPECEXEC_BENCH_TEST_KEY"
input_price = 3.0
output_price = 4.0
""",
        encoding="utf-8",
    )
    return path


def _requests_seen(fleet: FleetProcess) -> int:
    stats: dict[str, Any] = fleet.stats()["deployments"]
    return int(stats["alpha-us"]["requests"]) + int(stats["gamma-eu"]["requests"])


def test_target_asks_first_and_sends_nothing_without_consent(
    target: Path, fleet: FleetProcess, write_scenario: Write
) -> None:
    before = _requests_seen(fleet)
    code, out, err = _run([str(write_scenario(TARGET_SCENARIO)), "--target", str(target)])
    assert code == 1 and out == ""
    assert "Cost estimate" in err and "worst case $" in err and "nothing sent" in err
    assert _requests_seen(fleet) == before


def test_target_with_yes(target: Path, fleet: FleetProcess, write_scenario: Write) -> None:
    before = _requests_seen(fleet)
    argv = [str(write_scenario(TARGET_SCENARIO)), "--target", str(target), "--yes", "--json", "--rate", "20"]
    code, out, err = _run([*argv, "--requests", "10"])  # --target's defaults: 20 requests at 1/s
    assert code == 0, err
    doc = json.loads(out)
    assert doc["mode"] == "target" and [p["summary"]["requests"] for p in doc["policies"]] == [10, 10]
    assert all(p["summary"]["success"] == 1.0 for p in doc["policies"])
    assert doc["policies"][0]["summary"]["cost_total"] > 0
    assert _requests_seen(fleet) - before >= 20
    assert "sk-bench-test" not in out + err


def test_target_checks_keys_names_and_bounds(
    target: Path, write_scenario: Write, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario = str(write_scenario(TARGET_SCENARIO))
    code, _, err = _run([scenario, "--target", str(target), "--requests", "5000", "--yes"])
    assert code == 2 and "at most 1000 requests" in err
    code, _, err = _run([scenario, "--target", str(target), "--policies", "single", "--rate", "500", "--yes"])
    assert code == 2 and "requests/s" in err
    monkeypatch.delenv("SPECEXEC_BENCH_TEST_KEY")
    code, _, err = _run([scenario, "--target", str(target), "--yes"])
    assert code == 2 and "SPECEXEC_BENCH_TEST_KEY" in err
    code, _, err = _run([scenario.replace("s.toml", "s.toml"), "--live"])
    assert code == 2 and "--target CONFIG" in err
    other = write_scenario(TARGET_SCENARIO.replace('"two"]', '"three"]'), "other")
    monkeypatch.setenv("SPECEXEC_BENCH_TEST_KEY", "x")
    code, _, err = _run([str(other), "--target", str(target), "--yes"])
    assert code == 2 and "'three'" in err and "$.policies.hedge.candidates[1]" in err


def test_the_target_estimate_counts_retries_and_a_judges_calls(tmp_path: Path) -> None:
    # Before: the worst case was one call per candidate launched: a policy with retries=3 showed
    # what it shows without, and a judged pick what an unjudged one shows.
    from specexec import Query
    from specexec.bench.bench import load_scenario
    from specexec.bench.bench._target import estimate_cost
    from specexec.scorers import llm_judge

    backends = "".join(
        f'[[backends]]\nkind = "simulated"\nname = "{n}"\nlatency = 0.01\ninput_price = 1.0\noutput_price = 1.0\n'
        for n in ("m1", "m2", "judge")
    )
    policies = (
        '[policies.noretry]\nmode = "single"\ncandidates = ["m1"]\n'
        '[policies.retrying]\nmode = "single"\ncandidates = ["m1"]\nretries = 3\n'
        '[policies.plainpick]\nmode = "pick"\ncandidates = ["m1", "m2"]\nscorer = { kind = "majority" }\n'
        '[policies.judged]\nmode = "pick"\ncandidates = ["m1", "m2"]\n'
        'scorer = { kind = "llm_judge", backend = "judge" }\n'
    )
    path = tmp_path / "s.toml"
    path.write_text("[workload]\nrequests = 5\nmax_tokens = 16\n" + backends + policies)
    scenario = load_scenario(str(path))
    built = [c.build() for c in scenario.backends]
    lines = {line.policy: line for line in estimate_cost(scenario, built)}
    assert lines["retrying"].worst == pytest.approx(4 * lines["noretry"].worst)
    judge_call = specexec.worst_case_cost(built[2], llm_judge("judge").worst_query(Query("x", max_tokens=16)))
    assert lines["judged"].worst > lines["plainpick"].worst + 2 * 5 * 0.9 * judge_call
