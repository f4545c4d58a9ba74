"""``tail_at_scale --live``: the adaptive policies over loopback HTTP, each figure next to its limit.

The scenario's backends become deployments of the loopback mock fleet (``_live``), with the
same latency distribution, and the policies run on the real clock. For each hedged policy the
report prints its p99, p99.9 and extra load next to the **limit**: the exact figures
(closed form, ``limit_at_load``) of the fixed delay whose extra load equals the policy's own —
what a delay that never moves could do at that load, without HTTP. The live targets (issue 14
§2): p99 ≤ 140 ms and p99.9 ≤ 230 ms at ≤ 6 % extra load.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

import msgspec

from specexec import Distribution

from .._timing import LOOP_LABELS
from ._live import live_notes, run_live
from ._progress import Progress
from ._report import build_result, render, write_outputs
from ._scenario import Scenario
from ._stats import PolicyStats
from ._tail_seeds import MAX_EXTRA, limit_at_load

__all__ = ["LIVE_P99", "LIVE_P999", "LIVE_REQUESTS", "LiveRow", "live_rows", "run_tail_live"]

LIVE_REQUESTS = 3_000
"""Measured requests per policy by default (30 s at the scenario's 100 req/s)."""
LIVE_POLICIES = ("single", "adaptive-p95")
"""The policies run by default: the baseline and the unrationed adaptive delay."""
LIVE_P99, LIVE_P999 = 0.140, 0.230
"""The live targets in seconds (at ≤ ``MAX_EXTRA`` extra load)."""


@dataclass(frozen=True)
class LiveRow:
    """One hedged policy's live figures and the limit at its extra load; ``delay_used`` is the
    median delay its hedged requests used (from the run's start to the first hedge; ``None``
    when none fired): the learnt delay, which carries the primary's HTTP time, next to the
    limit's."""

    policy: str
    p99: float
    p999: float
    extra_load: float
    limit: dict[str, float]
    delay_used: float | None = None

    def met(self) -> bool:
        """p99 ≤ 140 ms, p99.9 ≤ 230 ms and extra load ≤ 6 %."""
        return self.p99 <= LIVE_P99 and self.p999 <= LIVE_P999 and self.extra_load <= MAX_EXTRA


def live_rows(stats: dict[str, PolicyStats], dist: Distribution | float, baseline: str = "single") -> list[LiveRow]:
    """A row per policy other than ``baseline`` that answered requests."""
    rows = []
    for name, policy_stats in stats.items():
        summary = policy_stats.total.summary()
        p99, p999 = summary.latency.get("p99"), summary.latency.get("p99.9")
        if name == baseline or p99 is None or p999 is None:
            continue
        extra = summary.extra_load or 0.0
        used = summary.hedge_delay["p50"] if summary.hedge_delay else None
        rows.append(LiveRow(name, p99, p999, extra, limit_at_load(dist, extra), used))
    return rows


def _rows_text(rows: Sequence[LiveRow]) -> str:
    lines = [
        "live figures vs the fixed-delay limit at equal extra load (limit: exact, no HTTP; targets: "
        f"p99 ≤ {1000 * LIVE_P99:g} ms, p99.9 ≤ {1000 * LIVE_P999:g} ms, extra load ≤ {100 * MAX_EXTRA:g} %)",
        "  policy            p99 ms (limit)        p99.9 ms (limit)      extra load  (delay of that load)  "
        "delay used (p50)",
    ]
    for r in rows:
        lim = r.limit
        used = f"{1000 * r.delay_used:5.1f} ms" if r.delay_used is not None else "    -   "
        lines.append(
            f"  {r.policy:<16}  {1000 * r.p99:6.1f} ({1000 * lim['p99']:5.1f}) {r.p99 / lim['p99']:5.2f}×  "
            f"{1000 * r.p999:6.1f} ({1000 * lim['p99.9']:5.1f}) {r.p999 / lim['p99.9']:5.2f}×  "
            f"{100 * r.extra_load:8.2f} %  ({1000 * lim['delay']:5.1f} ms)           {used}  "
            f"{'met' if r.met() else 'MISSED'}"
        )
    return "\n".join(lines) + "\n"


def run_tail_live(
    scenario: Scenario,
    dist: Distribution | float,
    *,
    out: TextIO,
    err: TextIO,
    show: bool,
    as_json: bool,
    out_dir: str | None = None,
    loop: str = "trio",
) -> int:
    """Run ``scenario`` live (the client on ``loop``) and print the report and the limits (or
    one JSON document), and with ``out_dir`` write its ``results.json``, ``.hgrm`` files and
    plot there; 0."""
    expected = (scenario.workload.expected_requests() + scenario.workload.warmup) * len(scenario.policies)
    progress = Progress(f"tail-at-scale (live, {loop})", expected, enabled=show, stream=err)
    started = time.perf_counter()
    try:
        stats = run_live(scenario, on_progress=progress.update, loop=loop)
    finally:
        progress.close()
    elapsed = time.perf_counter() - started
    result = build_result(scenario, "live", stats, elapsed=elapsed, jobs=1, notes=live_notes(scenario))
    rows = live_rows(stats, dist, scenario.baseline)
    if out_dir:
        for line in write_outputs(result, stats, out_dir):
            err.write(line + "\n")
    if as_json:
        doc: dict[str, Any] = {
            "loop": LOOP_LABELS[loop],
            "result": msgspec.to_builtins(result),
            "limits": [{**r.__dict__, "met": r.met()} for r in rows],
        }
        out.write(msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n")
        return 0
    out.write(render(result))
    out.write(f"\nclient loop: {LOOP_LABELS[loop]}\n")
    out.write("\n" + _rows_text(rows))
    return 0
