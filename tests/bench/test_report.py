"""Reports: the table, ratios to the baseline, JSON, .hgrm files and the plot (or the hint)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specexec import AttemptRecord, Trace
from specexec.bench.bench import build_result, load_scenario, render, simulate, to_json, write_outputs
from specexec.bench.bench._report import PLOT_HINT, percentile_curve
from specexec.bench.bench._stats import PolicyStats, Stats, mean_value, new_histogram

from .conftest import SMALL

PHASED = SMALL + '\n[[phases]]\nname = "first"\nend = 2.0\n\n[[phases]]\nname = "rest"\nstart = 2.0\n'


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> tuple[object, dict[str, PolicyStats]]:
    path = tmp_path_factory.mktemp("report") / "s.toml"
    path.write_text(PHASED, encoding="utf-8")
    scenario = load_scenario(path)
    return scenario, simulate(scenario, jobs=1)


def test_table_has_every_column_and_the_ratios(run: tuple[object, dict[str, PolicyStats]]) -> None:
    scenario, stats = run
    result = build_result(scenario, "sim", stats, elapsed=2.0)  # type: ignore[arg-type]
    text = render(result)
    for word in ("requests", "ok", "p50", "p90", "p99", "p99.9", "max", "$/req", "$ total", "extra load", "hedged"):
        assert word in text
    assert "single *" in text and "latency vs baseline (single)" in text
    assert "phase 'first' (intended send time 0–2 s)" in text and "phase 'rest' (intended send time 2–end s)" in text
    assert "800 simulated requests in 2.0 s wall (400 simulated requests/s)" in text
    single, hedge = (msgspec.to_builtins(p) for p in result.policies)
    assert single["ratios"] == dict.fromkeys(("p50", "p90", "p99", "p99.9", "max"), 1.0)
    h, s = hedge["summary"], single["summary"]
    assert hedge["ratios"]["p99"] == pytest.approx(h["latency"]["p99"] / s["latency"]["p99"])
    assert h["extra_load"] == pytest.approx(h["attempts"] / 400 - 1)
    assert 0 < h["hedge_rate"] <= 0.2
    assert sum(p["summary"]["requests"] for p in hedge["phases"]) == 400


def test_json_round_trip(run: tuple[object, dict[str, PolicyStats]]) -> None:
    scenario, stats = run
    doc = json.loads(to_json(build_result(scenario, "sim", stats, elapsed=2.0)))  # type: ignore[arg-type]
    assert doc["scenario"] == "s" and doc["mode"] == "sim" and doc["baseline"] == "single"
    p = doc["policies"][1]
    assert p["name"] == "hedge" and set(p["summary"]["latency"]) == {"p50", "p90", "p99", "p99.9", "max", "mean"}
    assert [ph["name"] for ph in p["phases"]] == ["first", "rest"] and p["phases"][1]["end"] is None
    assert p["histogram"]  # HdrHistogram's compressed encoding


def test_files(run: tuple[object, dict[str, PolicyStats]], tmp_path: Path) -> None:
    scenario, stats = run
    lines = write_outputs(build_result(scenario, "sim", stats, elapsed=1.0), stats, tmp_path / "out")  # type: ignore[arg-type]
    names = sorted(p.name for p in (tmp_path / "out").iterdir())
    assert names == ["hedge.hgrm", "latency.png", "results.json", "single.hgrm"]
    assert len(lines) == 4
    hgrm = (tmp_path / "out" / "single.hgrm").read_text()
    assert "Value     Percentile TotalCount 1/(1-Percentile)" in hgrm and "#[Mean" in hgrm
    assert (tmp_path / "out" / "latency.png").read_bytes()[:4] == b"\x89PNG"


def test_without_matplotlib_the_report_says_how_to_get_the_plot(
    run: tuple[object, dict[str, PolicyStats]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scenario, stats = run
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    lines = write_outputs(build_result(scenario, "sim", stats, elapsed=1.0), stats, tmp_path)  # type: ignore[arg-type]
    assert lines[-1] == PLOT_HINT and "pip install 'specexec[plot]'" in PLOT_HINT
    assert not (tmp_path / "latency.png").exists()


def test_percentile_curve_uses_nines() -> None:
    h = new_histogram()
    for v in range(1, 1001):
        h.record_value(v * 1000)
    xs, ys = percentile_curve(h)
    assert xs[0] == 0 and xs[-1] == pytest.approx(3.0)  # 1000 samples: up to 99.9 %
    assert ys[0] == pytest.approx(1.0, rel=0.01) and ys[-1] == pytest.approx(1000.0, rel=0.01)


def test_stats_record_counts_attempts_hedges_wins_and_failures() -> None:
    s = Stats()
    trace = Trace(mode="hedge", winner="b", cost=0.5)
    trace.attempts = [
        AttemptRecord("a", trigger="primary", outcome="cancelled"),
        AttemptRecord("c", outcome="skipped"),
        AttemptRecord("b", trigger="hedge", outcome="accepted", started=0.085),
        AttemptRecord("d", trigger="hedge", outcome="cancelled", started=0.17),  # not the first hedge
    ]
    s.record(0.1, trace, None, True)
    s.record(
        2.0, Trace(mode="hedge", cost=0.25, attempts=[AttemptRecord("a", outcome="failed")]), "DeadlineExceeded", None
    )
    summary = s.summary()
    assert (summary.requests, summary.ok, summary.attempts, summary.hedges) == (2, 1, 4, 2)
    assert summary.extra_load == 1.0 and summary.hedge_rate == 0.5 and summary.wins == {"b": 1.0}
    assert summary.hedge_delay is not None  # the delay used: the first hedge's start, not the second's
    assert summary.hedge_delay["p50"] == summary.hedge_delay["p90"] == pytest.approx(0.085, rel=1e-3)
    assert Stats().summary().hedge_delay is None  # no hedge fired
    assert summary.failures == {"DeadlineExceeded": 1} and summary.deadline_misses == 1
    assert summary.cost_total == 0.75 and summary.cost_max == 0.5 and summary.quality == 1.0
    assert summary.latency["max"] == pytest.approx(0.1, rel=1e-3)
    copy = Stats.from_builtins(msgspec.json.decode(msgspec.json.encode(s.to_builtins())))
    assert copy.summary() == summary


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3_600_000_000), st.integers(1, 5)), max_size=300))
def test_the_mean_is_hdrhs_own_figure_bucket_for_bucket(records: list[tuple[int, int]]) -> None:
    """``mean_value`` reads only the non-zero buckets; hdrh's ``get_mean_value`` walks them all."""
    h = new_histogram()
    for value, count in records:
        h.record_value(value, count)
    assert mean_value(h) == h.get_mean_value()
