"""``python -m specexec.bench.tail_at_scale``: the exact figures, the target checks, a quick run."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest

from specexec.bench.bench._scenario import Brownout, load_scenario
from specexec.bench.bench._stats import Summary
from specexec.bench.bench._tail import brownout_scenario, fixed_delay_analysis, main, quantile, targets

DIST = load_scenario("tail-at-scale").backends[0].latency  # type: ignore[union-attr]


def test_exact_figures() -> None:
    assert quantile(DIST, 0.95) == pytest.approx(0.13656, rel=1e-3)
    assert quantile(DIST, 0.99) == pytest.approx(0.4937, rel=1e-3)
    exact = fixed_delay_analysis(DIST, 0.080)
    assert 1 - exact["p99"] / quantile(DIST, 0.99) == pytest.approx(0.734, abs=0.005)
    assert 1 - exact["p99.9"] / quantile(DIST, 0.999) == pytest.approx(0.696, abs=0.005)
    assert exact["extra_load"] == pytest.approx(0.0553, abs=0.0005)


def _summary(p99: float, p999: float, extra: float) -> Summary:
    return Summary(
        requests=100, ok=100, success=1.0, latency={"p50": 0.04, "p99": p99, "p99.9": p999},
        cost_mean=0.0, cost_total=0.0, cost_max=0.0, attempts=100, extra_load=extra, hedges=0,
        hedge_rate=0.0, wins={}, failures={}, deadline_misses=0, quality=None,
    )  # fmt: skip


def test_targets() -> None:
    found = targets(
        {
            "single": _summary(0.5, 0.7, 0.0),
            "adaptive-p95": _summary(0.15, 0.25, 0.055),
            "fixed-80ms": _summary(0.13, 0.2, 0.0553),
            "fixed-60ms": _summary(0.10, 0.15, 0.10),
        },
        ["fixed-80ms", "fixed-60ms"],
    )
    by_what = {t.what: t for t in found}
    assert by_what["p99 ≥ 65 % below single"].met and by_what["p99.9 ≥ 60 % below single"].met
    assert by_what["extra load ≤ 6 %"].met
    hindsight = by_what["p99 within 10 % of the best fixed delay at equal extra load"]
    assert not hindsight.met and "fixed-80ms" in hindsight.value  # 0.15 / 0.13 = 1.15; 60 ms costs more load


def test_brownout_scenario() -> None:
    b = brownout_scenario(load_scenario("tail-at-scale"))
    (ev,) = b.events
    assert isinstance(ev, Brownout)
    assert (ev.start, ev.end, ev.factor, ev.backends, ev.region) == (120.0, 180.0, 5.0, None, None)
    assert [p.name for p in b.phases][1:3] == ["brownout, first 30 s", "brownout, last 30 s"]


def test_quick_run_json() -> None:
    out = io.StringIO()
    assert main(["--requests", "800", "--sweep", "80,137", "--no-brownout", "--json", "--jobs", "1"], stdout=out) == 0
    doc = json.loads(out.getvalue())
    steady = doc["steady"]
    assert set(steady["sweep"]) == {"fixed-80ms", "fixed-137ms"}
    assert {t["policy"] for t in steady["targets"]} == {"adaptive-p95", "adaptive-budget", "auto"}
    assert steady["requests"] == 800 * 7


def test_limit_at_load_inverts_the_extra_load() -> None:
    from specexec.bench.bench._tail_seeds import limit_at_load

    exact = fixed_delay_analysis(DIST, 0.080)
    limit = limit_at_load(DIST, exact["extra_load"])
    assert limit["delay"] == pytest.approx(0.080, rel=1e-6)
    assert limit["p99"] == pytest.approx(exact["p99"], rel=1e-6)


def test_a_x5_brownout_is_relearnt_within_10_s_of_its_start_and_of_its_end() -> None:
    """Issue 14 §2 (seed 1): from 10 s into the fleet-wide ×5 brownout to its end, and from 10 s
    to 60 s after it, the adaptive p95's p99 is at most 0.35× single's; the steady phases'
    extra load stays ≤ 6 %. Before the recent window (a 60 s window alone) the p99 in the
    minute after was only 23 % below single's."""
    from specexec.bench.bench import simulate

    b = brownout_scenario(load_scenario("tail-at-scale").with_options(seed=1, policies=["single", "adaptive-p95"]))
    stats = simulate(b, jobs=1)
    names = [p.name for p in b.phases]

    def phase(policy: str, name: str) -> Summary:
        return stats[policy].phase_stats[names.index(name)].summary()

    for name in ("brownout, 10 s on", "after, 10–60 s"):
        assert phase("adaptive-p95", name).latency["p99"] <= 0.35 * phase("single", name).latency["p99"]
    for name in ("steady", "after, 60 s on"):
        assert (phase("adaptive-p95", name).extra_load or 0.0) <= 0.06


def test_seeds_mode_prints_each_seed_against_the_limit(tmp_path: Path) -> None:
    out = io.StringIO()
    args = ["--seeds", "2", "--requests", "400", "--policies", "adaptive-p95", "--no-brownout", "--jobs", "1"]
    assert main([*args, "--json"], stdout=out) == 0
    rows = json.loads(out.getvalue())
    assert [(r["seed"], r["policy"]) for r in rows] == [(1, "adaptive-p95"), (2, "adaptive-p95")]
    for r in rows:
        assert r["p99_ratio"] == pytest.approx(r["p99"] / r["limit"]["p99"])
        assert r["limit"]["extra_load"] == pytest.approx(r["extra_load"], abs=1e-6)
    text = io.StringIO()
    assert main([*args, "--out", str(tmp_path)], stdout=text) == 0
    assert "worst of 2 seeds, adaptive-p95" in text.getvalue()
    written = json.loads((tmp_path / "seeds.json").read_text())  # --out is written, not ignored
    assert [(r["seed"], r["p99"]) for r in written] == [(r["seed"], r["p99"]) for r in rows]
    assert f"wrote {tmp_path / 'seeds.json'}" in text.getvalue()


def test_live_mode_prints_each_hedged_policy_next_to_the_limit_at_its_load(tmp_path: Path) -> None:
    """Over loopback HTTP (the mock fleet, real clock; 60 requests a policy): the baseline is
    left out of the limits, the adaptive policy's limit is the fixed delay of its extra load."""
    out = io.StringIO()
    assert main(["--live", "--requests", "60", "--json"], stdout=out, stderr=io.StringIO()) == 0
    doc = json.loads(out.getvalue())
    assert [p["name"] for p in doc["result"]["policies"]] == ["single", "adaptive-p95"]
    (row,) = doc["limits"]
    assert row["policy"] == "adaptive-p95"
    assert row["limit"]["extra_load"] == pytest.approx(row["extra_load"], abs=1e-6)
    assert row["met"] == (row["p99"] <= 0.140 and row["p999"] <= 0.230 and row["extra_load"] <= 0.06)
    hedged = next(p["summary"] for p in doc["result"]["policies"] if p["name"] == "adaptive-p95")
    assert row["delay_used"] == (hedged["hedge_delay"]["p50"] if hedged["hedge_delay"] else None)
    text = io.StringIO()
    args = ["--live", "--requests", "30", "--policies", "adaptive-p95", "--out", str(tmp_path)]
    assert main(args, stdout=text, stderr=io.StringIO()) == 0
    assert "live figures vs the fixed-delay limit" in text.getvalue() and "adaptive-p95" in text.getvalue()
    assert "delay used (p50)" in text.getvalue()
    assert json.loads((tmp_path / "results.json").read_text())["mode"] == "live"  # --out is written, not ignored


def test_live_mode_runs_the_client_on_asyncio_with_uvloop() -> None:
    out = io.StringIO()
    args = ["--live", "--requests", "40", "--policies", "adaptive-p95", "--loop", "asyncio", "--json"]
    assert main(args, stdout=out, stderr=io.StringIO()) == 0
    doc = json.loads(out.getvalue())
    assert doc["loop"] == "asyncio+uvloop"
    policies = [(p["name"], p["summary"]["requests"], p["summary"]["ok"]) for p in doc["result"]["policies"]]
    assert policies == [("single", 40, 40), ("adaptive-p95", 40, 40)]


def test_loop_without_live_is_refused_with_why() -> None:
    err = io.StringIO()
    assert main(["--loop", "asyncio"], stdout=io.StringIO(), stderr=err) == 2
    assert "--loop applies to --live only" in err.getvalue()


def test_live_and_seeds_together_are_refused_with_why() -> None:
    err = io.StringIO()
    assert main(["--live", "--seeds", "2"], stdout=io.StringIO(), stderr=err) == 2
    assert "--live and --seeds" in err.getvalue()
