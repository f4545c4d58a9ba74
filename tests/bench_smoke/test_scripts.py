"""Smoke tests of the benchmark scripts: they run with tiny counts and print a table or valid JSON.

Correctness only — never timing: the figures of a few dozen calls on a shared machine mean nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from specexec.bench import http, memory, overhead

ROOT = Path(__file__).resolve().parents[2]


def run_json(module: str, *args: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-m", module, *args, "--json"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    doc: dict[str, Any] = json.loads(done.stdout)
    return doc


def test_overhead_json_has_every_scenario_on_both_loops() -> None:
    doc = run_json("specexec.bench.overhead", "--iterations", "40", "--chunk", "10", "--warmup", "5")
    assert doc["benchmark"] == "overhead" and doc["iterations"] == 40
    assert set(doc["loops"]) == {"trio", "asyncio+uvloop"}
    for label, loop in doc["loops"].items():
        rows = loop["scenarios"]
        targets = [
            (r["scenario"], r["reference"]) for r in rows if r["met"] is not None and r["variant"] != "hedge_anyio"
        ]
        assert targets[:4] == [
            ("single", "bare await"),
            ("hedge-not-fired", "native floor"),
            ("race-of-3", "native floor"),
            ("per extra race candidate", "native floor's increment"),
        ]
        for r in rows:
            assert r["run"]["median_us"] > 0 and r["ref"]["median_us"] > 0
            if "n" in r["run"]:
                assert r["run"]["n"] == 40 and r["ref"]["n"] == 40
        expected = {"bare", "single", "hedge", "race2", "race3", "race4", "hedge_anyio", "race3_anyio"}
        expected |= {"native_hedge", "native_race2", "native_race3", "native_race4", "anyio_hedge", "anyio_race3"}
        if label != "trio":  # asyncio without structured concurrency, for comparison
            expected |= {"wait_hedge", "wait_race3"}
        assert set(loop["variants"]) >= expected


def test_overhead_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert overhead.main(["--backend", "trio", "--iterations", "20", "--chunk", "10", "--warmup", "2"]) == 0
    out = capsys.readouterr().out
    assert "## trio" in out and "## asyncio" not in out
    for row in ("| single", "| hedge-not-fired", "| race-of-3", "| per extra race candidate"):
        assert row in out


def test_overhead_evicts_the_caches_before_every_timed_call(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    copies: list[int] = []
    real = overhead._evicter

    def counting(megabytes: int) -> Callable[[], None]:
        evict = real(megabytes)

        def counted() -> None:
            copies.append(megabytes)
            evict()

        return counted

    monkeypatch.setattr(overhead, "_evicter", counting)
    args = ["--backend", "trio", "--iterations", "6", "--chunk", "3", "--warmup", "1", "--evict-mb", "1", "--json"]
    assert overhead.main(args) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["evict_mb"] == 1
    variants = doc["loops"]["trio"]["variants"]
    assert copies == [1] * (6 * len(variants))  # once before each timed call, never in the warm-up
    with pytest.raises(SystemExit):
        overhead.parse_args(["--evict-mb", "-1"])


def test_http_json_compares_both_variants_without_errors() -> None:
    doc = run_json("specexec.bench.http", "--requests", "20", "--rounds", "2", "--concurrency", "1,4", "--breakdown")
    assert doc["benchmark"] == "http"
    assert set(doc["loops"]) == {"trio", "asyncio+uvloop"}
    for rows in doc["loops"].values():
        assert [r["concurrency"] for r in rows] == [1, 4]
        for r in rows:
            for name in ("raw", "specexec"):
                assert r[name]["requests"] == 20 and r[name]["errors"] == 0
                assert r[name]["req_per_s"] > 0
            assert r["throughput_ratio"] > 0
    assert set(doc["fleet"]["by_status"]) == {"200"}
    for split in doc["breakdown"].values():
        assert split["requests"] == 20
        assert set(split["median_us"]) == {"raw", "complete", "run", "before", "inside", "after"}


def test_http_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert http.main(["--backend", "asyncio", "--requests", "10", "--rounds", "1", "--concurrency", "2"]) == 0
    out = capsys.readouterr().out
    assert "## asyncio+uvloop" in out and "## trio" not in out
    rows = [line.split("|")[1:3] for line in out.splitlines() if line.startswith("| 2 ")]
    assert [variant.strip() for _, variant in rows] == ["raw", "specexec"]


@pytest.mark.slow
def test_import_time_compares_a_baseline_tree_with_this_one() -> None:
    doc = run_json("specexec.bench.import_time", "--runs", "1", "--baseline", str(ROOT))
    assert doc["benchmark"] == "import_time" and doc["runs"] == 1
    assert len(doc["results"]) == 2  # the baseline (here the same tree) and this tree
    for result in doc["results"]:
        assert result["import_ms"] > 0 and result["trio_imported"] is False
        assert result["packages_ms"]["specexec"] > 0
        assert set(result["first_run"]) == {"trio", "trio warm-up", "asyncio", "asyncio warm-up"}
        warm = result["first_run"]["asyncio warm-up"]
        assert warm["warm_up_ms"] > 0 and warm["first_imports"] == 0


def test_import_time_prints_tables(capsys: pytest.CaptureFixture[str]) -> None:
    from specexec.bench import import_time

    assert import_time.main(["--runs", "1"]) == 0
    out = capsys.readouterr().out
    assert "| import specexec (ms, -X importtime) |" in out and "| trio imported" in out
    assert "asyncio warm-up: modules the first run imported" in out
    assert import_time.main(["--runs", "0"]) == 2


def test_memory_json_has_every_state_and_both_targets() -> None:
    doc = run_json("specexec.bench.memory", "--backends", "20", "--runs", "50", "--builds", "2")
    assert doc["benchmark"] == "memory" and doc["backends"] == 20 and doc["runs"] == 50
    states = {s["state"]: s for s in doc["states"]}
    assert list(states) == ["idle", "after 1 run", "after streaming", "after 50 runs"]
    assert states["idle"]["histograms_per_backend"] == 0
    assert states["after 1 run"]["histograms_per_backend"] == 1  # one observed latency histogram
    assert states["after streaming"]["histograms_per_backend"] == 2  # and one TTFT histogram
    for s in states.values():
        assert 0 < s["bytes_per_backend"] < s["eager_bytes_per_backend"]
    assert len(doc["build"]["builds_s"]) == 2 and doc["build"]["median_s"] > 0
    assert set(doc["targets"]) == {"idle_kib", "build_s"}
    assert all(isinstance(t["met"], bool) for t in doc["targets"].values())


def test_memory_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    assert memory.main(["--backends", "5", "--runs", "10", "--builds", "1"]) == 0
    out = capsys.readouterr().out
    for row in ("| idle", "| after 1 run", "| after streaming", "| after 10 runs"):
        assert row in out
    assert "build Runtime of 5 backends" in out and "targets:" in out


def test_http_paced_json_has_a_row_per_latency_and_mode() -> None:
    doc = run_json("specexec.bench.http_paced", "--latency-ms", "0,5", "--requests", "10", "--rate", "200")
    assert doc["benchmark"] == "http_paced" and doc["requests"] == 10
    assert [(r["latency_ms"], r["streamed"]) for r in doc["rows"]] == [(0, False), (0, True), (5, False), (5, True)]
    for r in doc["rows"]:
        assert r["p50_ms"] <= r["p90_ms"] <= r["p99_ms"] <= r["max_ms"] and r["client_cpu_us"] > 0
        assert r["raw_p50_ms"] <= r["raw_p90_ms"] <= r["raw_p99_ms"]
