"""The eval loop's pieces on trio (virtual time) and asyncio+uvloop: scorers, the runner's
bounded concurrency and limits, routing quality, and a run over the loopback fleet."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest

from specexec import Limits, Query, Router, Runtime, SimulatedBackend
from specexec.bench.eval import load_eval, main, routing_quality
from specexec.bench.eval._cache import Cache
from specexec.bench.eval._report import build_report, plot
from specexec.bench.eval._run import fingerprints, plan, run_eval
from specexec.bench.eval._sim import sim_backends

from .test_eval import write_eval

pytestmark = pytest.mark.anyio


def _eval_with(tmp: Path, cases: list[dict[str, object]], scorer: str, backends: str = "") -> Path:
    (tmp / "cases.jsonl").write_text("".join(json.dumps(c) + "\n" for c in cases))
    path = tmp / "eval.toml"
    path.write_text(
        f"""
[[backends]]
kind = "simulated"
name = "m"
latency = 0.1
{backends}
[classes.c]
dataset = "cases.jsonl"
scorer = {scorer}
min_pass_rate = 0.5
"""
    )
    return path


async def _score_all(path: Path, backends: list[object] | None = None) -> list[tuple[str, bool, str]]:
    spec = load_eval(path)
    bs = backends if backends is not None else sim_backends(spec)
    async with Runtime(bs) as rt:  # type: ignore[arg-type]
        results = await run_eval(spec, rt, plan(spec, {}), Cache(None), concurrency=4)
    return [(r.case, r.passed, r.reason) for r in results]


async def test_regex_verifier_and_per_case_check(tmp_path: Path) -> None:
    cases = [
        {"id": "a", "prompt": "p1", "reference": "4"},
        {"id": "b", "prompt": "p2", "reference": "x", "check": {"kind": "regex", "pattern": "^o"}},
        {"id": "c", "prompt": "p3", "check": {"kind": "verifier", "verify": [{"kind": "json_valid"}]}},
    ]
    path = _eval_with(tmp_path, cases, '{ kind = "regex", pattern = "^\\\\d$" }')
    reply = SimulatedBackend("m", 0.1, reply=lambda q: {"p1": "4", "p2": "ok", "p3": "not json"}[q.text])
    out = await _score_all(path, [reply])
    assert [(c, ok) for c, ok, _ in out] == [("a", True), ("b", True), ("c", False)]
    assert "not valid JSON" in out[2][2]


async def test_llm_judge_scores_and_charges_the_case(tmp_path: Path) -> None:
    cases = [{"id": "a", "prompt": "good?", "reference": "yes"}, {"id": "b", "prompt": "bad?", "reference": "yes"}]
    path = _eval_with(
        tmp_path,
        cases,
        '{ kind = "llm_judge", backend = "judge", rubric = "Is it {right}?", min_score = 0.7 }',
        '[[backends]]\nkind = "simulated"\nname = "judge"\nlatency = 0.01\n',
    )
    path.write_text(path.read_text() + 'candidates = ["m"]\n')
    m = SimulatedBackend("m", 0.1, reply=lambda q: "fine" if q.text == "good?" else "awful")
    judge = SimulatedBackend(
        "judge", 0.01, reply=lambda q: "9" if "fine" in q.text else "2", input_price=1.0, output_price=1.0
    )
    spec = load_eval(path)
    async with Runtime([m, judge]) as rt:
        results = await run_eval(spec, rt, plan(spec, {}), Cache(None), concurrency=2)
    assert [(r.case, r.passed) for r in results] == [("a", True), ("b", False)]
    assert all(r.cost > 0 for r in results)  # the judge's call is charged to the case
    assert "judge rated 0.20" in results[1].reason
    assert judge.calls == 2


async def test_concurrency_bounded_and_limits_respected(tmp_path: Path, timing: object) -> None:
    (tmp_path / "cases.jsonl").write_text(
        "".join(json.dumps({"prompt": f"q{i}", "reference": "ok"}) + "\n" for i in range(8))
    )
    (tmp_path / "eval.toml").write_text(
        '[[backends]]\nkind = "simulated"\nname = "m"\n[classes.c]\ndataset = "cases.jsonl"\nmin_pass_rate = 1.0\n'
    )
    spec = load_eval(tmp_path / "eval.toml")
    in_flight = peak = 0

    backend = SimulatedBackend("m", 1.0, reply="ok", limits=Limits(max_concurrency=3))
    original = backend.complete

    async def counting(q: Query):  # type: ignore[no-untyped-def]
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        try:
            return await original(q)
        finally:
            in_flight -= 1

    backend.complete = counting  # type: ignore[method-assign]
    start = anyio.current_time()
    async with Runtime([backend]) as rt:
        results = await run_eval(spec, rt, plan(spec, {}), Cache(None), concurrency=4)
    assert all(r.passed for r in results) and len(results) == 8
    assert peak == 3  # the backend's max_concurrency, under the eval's 4 jobs
    assert anyio.current_time() - start == timing.approx(3.0)  # type: ignore[attr-defined]  # 8 calls, 3 at a time


async def test_routing_quality_cascade_escalates(tmp_path: Path) -> None:
    spec = load_eval(write_eval(tmp_path, mini=0.5))
    async with Runtime(sim_backends(spec)) as rt:
        results = await run_eval(
            spec, rt, plan(spec, fingerprints(spec, spec.file.backends)), Cache(None), concurrency=8
        )
        router = Router.from_toml('default = "math"\n[routes.math]\nmode = "cascade"\ncandidates = ["mini", "big"]\n')
        q = await routing_quality(router, spec, results, rt)
        single = Router.from_toml('default = "math"\n[routes.math]\nmode = "single"\ncandidates = ["mini"]\n')
        q1 = await routing_quality(single, spec, results, rt)
    assert q["accuracy"] == 1.0 and q["escalation_rate"] == 0.5
    assert q1["accuracy"] == 0.5 and q1["escalation_rate"] == 0.0
    assert q["cost_per_request"] > q1["cost_per_request"]


def test_plot_written(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    spec = load_eval(write_eval(tmp_path))
    report = build_report(spec, "sim", [])
    assert plot(report, tmp_path / "q.png").stat().st_size > 1000


@pytest.mark.parametrize("anyio_backend", ["trio"])
def test_live_over_the_fleet_matches_sim(tmp_path: Path, anyio_backend: str) -> None:
    path = write_eval(tmp_path, mini=0.8)
    path.write_text(
        path.read_text().replace("latency = 0.1", "latency = 0.002").replace("latency = 0.5", "latency = 0.004")
    )
    import io

    reports = {}
    for mode in ("--sim", "--live"):
        out = io.StringIO()
        assert main([str(path), mode, "--json"], stdout=out, stderr=io.StringIO()) == 0
        reports[mode] = json.loads(out.getvalue())
    for mode, report in reports.items():
        rows = {r["model"]: r["passed"] for r in report["classes"]["sum"]["models"]}
        assert rows == {"mini": 8, "big": 10}, mode
        assert report["classes"]["sum"]["chosen"] == "big"


async def test_a_failed_call_is_sent_again_on_the_next_run(tmp_path: Path) -> None:
    from specexec import CallableBackend, Response, Unavailable

    spec = load_eval(write_eval(tmp_path, n=2))
    calls = {"n": 0}

    async def flaky(q: Query) -> Response:
        calls["n"] += 1
        if calls["n"] == 1:
            raise Unavailable("503 from the provider")
        return Response(q.text.split()[2] and str(int(q.text.split()[2]) + 1))

    backends = [CallableBackend("mini", flaky), CallableBackend("big", flaky)]
    cache = Cache(tmp_path / "cache.jsonl")
    jobs = plan(spec, {})
    async with Runtime(backends) as rt:
        first = await run_eval(spec, rt, jobs, cache, concurrency=1)
    assert sum(not r.passed for r in first) == 1
    sent = calls["n"]
    async with Runtime(backends) as rt:
        second = await run_eval(spec, rt, jobs, Cache(tmp_path / "cache.jsonl"), concurrency=1)
    assert calls["n"] == sent + 1  # only the failed case is sent again
    assert all(r.passed for r in second)


@pytest.mark.parametrize("anyio_backend", ["trio"])
def test_starter_eval_over_the_fleet(anyio_backend: str) -> None:
    """The shipped 100-case eval over real HTTP to the loopback fleet: the same pass counts and
    choices as --sim (the fleet's answers carry the same quality model)."""
    import io

    starter = str(Path(__file__).parents[2] / "benchmarks" / "evals" / "starter.toml")
    reports = {}
    for mode in ("--sim", "--live"):
        out = io.StringIO()
        assert main([starter, mode, "--json", "--jobs", "64"], stdout=out, stderr=io.StringIO()) == 0
        reports[mode] = json.loads(out.getvalue())
    for mode, report in reports.items():
        passed = {(c, r["model"]): r["passed"] for c, v in report["classes"].items() for r in v["models"]}
        assert passed[("arithmetic", "mini")] == 32 and passed[("extraction", "frontier")] == 30, mode
    sim, live = reports["--sim"], reports["--live"]
    assert {c: v["models"][0]["passed"] for c, v in sim["classes"].items()} == {
        c: v["models"][0]["passed"] for c, v in live["classes"].items()
    }
    assert live["classes"]["arithmetic"]["chosen"] == "mid"


def test_rpm_limit_waits_instead_of_failing(tmp_path: Path) -> None:
    """A quota of 2 requests/min: the eval waits for it (a minute of virtual time) rather than failing cases."""
    import trio
    import trio.testing

    trio.run(_rpm_case, tmp_path, clock=trio.testing.MockClock(autojump_threshold=0))


async def _rpm_case(tmp_path: Path) -> None:
    import trio

    (tmp_path / "cases.jsonl").write_text(
        "".join(json.dumps({"prompt": f"q{i}", "reference": "ok"}) + "\n" for i in range(4))
    )
    (tmp_path / "eval.toml").write_text(
        '[[backends]]\nkind = "simulated"\nname = "m"\n[classes.c]\ndataset = "cases.jsonl"\nmin_pass_rate = 1.0\n'
    )
    spec = load_eval(tmp_path / "eval.toml")
    backend = SimulatedBackend("m", 0.1, reply="ok", limits=Limits(rpm=2))
    async with Runtime([backend]) as rt:
        results = await run_eval(spec, rt, plan(spec, {}), Cache(None), concurrency=4)
    assert [r.passed for r in results] == [True] * 4, [r.reason for r in results]
    assert all(r.latency < 1.0 for r in results)  # the model's time, not the wait for the quota
    assert trio.current_time() >= 60.0  # the quota's minute passed
