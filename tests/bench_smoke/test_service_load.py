"""Smoke test of the service load benchmark: a tiny run answers every request of every target and
reports every figure. Correctness only — never timing."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_service_load_runs_tiny_and_reports_every_target() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "specexec.bench.service_load", "--requests", "30", "--concurrency", "4",
         "--warmup", "4", "--stream", "--json"],
        cwd=ROOT, capture_output=True, text=True, timeout=240, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    doc = json.loads(done.stdout)
    assert doc["benchmark"] == "service_load" and doc["requests"] == 30 and doc["concurrency"] == 4
    rows = {(r["target"], r["endpoint"]): r for r in doc["rows"]}
    assert set(rows) == {
        ("baseline", "fleet direct"),
        ("fastapi", "/v1/chat"),
        ("fastapi", "/v1/chat/stream"),
        ("trio", "/v1/chat"),
        ("trio", "/v1/chat/stream"),
    }
    for (target, _), r in rows.items():
        assert r["answered"] == r["sent"] == 30 and r["statuses"] == {"200": 30}
        assert r["requests_per_s"] > 0 and 0 < r["p50_ms"] <= r["p99_ms"]
        assert r["upstream_per_answer"] >= 1.0 and r["client_cpu_ms"] > 0
        assert (r["service_cpu_ms"] is None) == (target == "baseline")
    assert rows[("fastapi", "/v1/chat")]["service_cpu_ms"] > 0


def test_service_load_refuses_an_unknown_target() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "specexec.bench.service_load", "--targets", "flask"],
        cwd=ROOT, capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert done.returncode == 2 and "unknown --targets flask; known: fastapi, trio" in done.stderr
