"""Histograms and counters add up across worker processes (prometheus_client's multiprocess mode)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from prometheus_client import CollectorRegistry
from prometheus_client.multiprocess import MultiProcessCollector

_WORKER = textwrap.dedent(
    """
    import sys
    from specexec import AttemptRecord, RouteDecision, Trace
    from specexec.metrics import PrometheusSink

    sink = PrometheusSink()
    latency = float(sys.argv[1])
    for _ in range(3):
        sink(Trace(mode="single", policy="p", outcome="ok", latency=latency,
                   route=RouteDecision("r", budget_key="t1", budget_remaining=latency, budget="k"),
                   attempts=[AttemptRecord("a", trigger="primary", outcome="accepted", latency=latency)]))
    """
)


def test_two_workers_histograms_add_up(tmp_path: Path) -> None:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    for latency in ("0.05", "3.0"):  # two worker processes, one after the other
        subprocess.run([sys.executable, "-c", _WORKER, latency], env=env, check=True, cwd=Path(__file__).parents[2])
    registry = CollectorRegistry()
    MultiProcessCollector(registry, path=str(tmp_path))
    labels = {"backend": "a", "outcome": "accepted"}
    get = registry.get_sample_value
    assert get("specexec_attempt_duration_seconds_count", labels) == 6
    assert get("specexec_attempt_duration_seconds_bucket", {**labels, "le": "0.08"}) == 3
    assert get("specexec_attempt_duration_seconds_bucket", {**labels, "le": "5.12"}) == 6
    assert get("specexec_runs_total", {"mode": "single", "policy": "p", "route": "r", "outcome": "ok"}) == 6
    assert get("specexec_budget_remaining_ratio", {"budget": "k"}) == 3.0  # the most recent worker's value
