"""Reports: the text table, ratios to the baseline, JSON, ``.hgrm`` files and the percentile plot.

The table shows, per policy: requests, success %, p50/p90/p99/p99.9/max latency (from the
intended send time, answered requests), mean cost per request and total, extra load
(attempts per request − 1), hedge rate (share of requests that fired a timed hedge), deadline
misses; then every latency figure as a ratio to the baseline, the wins per backend, and the
scenario's phases. ``write_outputs`` writes ``results.json``, one ``POLICY.hgrm`` per policy
(HdrHistogram's percentile-distribution format, in milliseconds, which its plotter reads) and
``latency.png`` — latency by percentile on a "nines" axis — when matplotlib is installed.
"""

from __future__ import annotations

import io
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import msgspec
from hdrh.histogram import HdrHistogram

from ._scenario import Phase, Scenario
from ._stats import PERCENTILES, PolicyStats, Stats, Summary

__all__ = [
    "PLOT_HINT",
    "BenchResult",
    "PhaseResult",
    "PolicyResult",
    "build_result",
    "plot_percentiles",
    "render",
    "to_json",
    "write_outputs",
]

PLOT_HINT = "no plot: matplotlib is not installed (pip install 'specexec[plot]')"
"""What a report says instead of drawing the plot."""

RATIO_KEYS = (*(label for label, _ in PERCENTILES), "max")
"""The latency figures compared with the baseline."""


class PhaseResult(msgspec.Struct, kw_only=True):
    """One phase of one policy's run: its window (seconds of intended send time) and figures."""

    name: str
    start: float
    end: float | None
    summary: Summary
    ratios: dict[str, float | None]


class PolicyResult(msgspec.Struct, kw_only=True):
    """One policy's figures: ``ratios`` are its latencies over the baseline's; ``max_cost`` is the
    policy's ceiling per request (``None``: none); ``histogram`` the answered requests' latency
    histogram (µs) in HdrHistogram's compressed encoding."""

    name: str
    mode: str
    summary: Summary
    ratios: dict[str, float | None]
    max_cost: float | None
    phases: list[PhaseResult]
    histogram: str
    steps: dict[str, Summary] = msgspec.field(default_factory=dict)


class BenchResult(msgspec.Struct, kw_only=True):
    """A whole run: what ``--json`` prints and ``results.json`` holds."""

    scenario: str
    description: str
    mode: str
    seed: int
    baseline: str
    workload: dict[str, Any]
    policies: list[PolicyResult]
    elapsed: float
    requests_per_second: float
    jobs: int = 1
    notes: list[str] = msgspec.field(default_factory=list)


def _ratios(summary: Summary, base: Summary | None) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for key in RATIO_KEYS:
        mine = summary.latency.get(key)
        theirs = base.latency.get(key) if base is not None else None
        out[key] = mine / theirs if mine is not None and theirs else None
    return out


def build_result(
    scenario: Scenario,
    mode: str,
    stats: Mapping[str, PolicyStats],
    *,
    elapsed: float,
    jobs: int = 1,
    notes: Sequence[str] = (),
) -> BenchResult:
    """Summaries, ratios to the baseline (overall and per phase), and the run's metadata."""
    summaries = {name: s.total.summary() for name, s in stats.items()}
    base = summaries.get(scenario.baseline)
    base_stats = stats.get(scenario.baseline)
    base_phases = [s.summary() for s in base_stats.phase_stats] if base_stats is not None else []
    policies = []
    for name, st in stats.items():
        policy = scenario.policies[name]
        phases = []
        for i, (phase, pst) in enumerate(zip(scenario.phases, st.phase_stats, strict=True)):
            summary = pst.summary()
            phases.append(
                PhaseResult(
                    name=phase.name,
                    start=phase.start,
                    end=phase.end if math.isfinite(phase.end) else None,
                    summary=summary,
                    ratios=_ratios(summary, base_phases[i] if i < len(base_phases) else None),
                )
            )
        policies.append(
            PolicyResult(
                name=name,
                mode=policy.mode,
                summary=summaries[name],
                ratios=_ratios(summaries[name], base),
                max_cost=policy.max_cost,
                phases=phases,
                histogram=st.total.latency.encode().decode("ascii"),
                steps={k: v.summary() for k, v in sorted(st.step_stats.items())},
            )
        )
    total = sum(s.total.requests for s in stats.values())
    workload = msgspec.to_builtins(scenario.workload)
    return BenchResult(
        scenario=scenario.name,
        description=scenario.description,
        mode=mode,
        seed=scenario.seed,
        baseline=scenario.baseline,
        workload=workload,
        policies=policies,
        elapsed=elapsed,
        requests_per_second=total / elapsed if elapsed > 0 else 0.0,
        jobs=jobs,
        notes=list(notes),
    )


def to_json(result: BenchResult) -> bytes:
    """The result as indented JSON (infinite numbers as ``null``)."""
    return msgspec.json.format(msgspec.json.encode(result), indent=2)


# --------------------------------------------------------------------------- text


def _ms(seconds: float | None) -> str:
    if seconds is None:
        return "—"
    ms = seconds * 1000.0
    return f"{ms:.1f}" if ms < 1000 else f"{ms:,.0f}"


def _pct(x: float | None, digits: int = 1) -> str:
    return "—" if x is None else f"{100.0 * x:.{digits}f}%"


def _money(x: float) -> str:
    if x == 0:
        return "0"
    return f"{x:.2e}" if x < 0.01 else f"{x:,.2f}"


def _ratio(x: float | None) -> str:
    if x is None:
        return "—"
    change = (x - 1.0) * 100.0
    return f"{x:.2f}× ({change:+.0f}%)"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1, right_until: int | None = None) -> str:
    """A plain text table: the first ``left`` columns left-aligned, then right-aligned ones up to
    column ``right_until`` (default: all the rest), then left-aligned again."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        last = len(widths) if right_until is None else right_until
        parts = [
            c.rjust(w) if left <= i < last else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))
        ]
        return "  ".join(parts).rstrip()

    rule = "  ".join("-" * w for w in widths)
    return "\n".join([line(headers), rule, *(line(r) for r in rows)])


def _wins(wins: Mapping[str, float], top: int = 4) -> str:
    items = list(wins.items())
    text = ", ".join(f"{k} {100 * v:.1f}%" for k, v in items[:top])
    if len(items) > top:
        text += f", +{len(items) - top} more"
    return text or "—"


def render(result: BenchResult) -> str:
    """The report as text: the main table, ratios to the baseline, wins, phases, notes."""
    out = io.StringIO()
    w = result.workload
    count = f"{w['requests']:,} requests" if w.get("requests") else f"{w['duration']:g} s"
    out.write(
        f"specexec bench {result.scenario} — {result.mode}, seed {result.seed}, {count} per policy at "
        f"{w['rate']:g}/s ({w['arrivals']}, open loop); latency in ms from the intended send time\n\n"
    )
    policies = result.policies
    quality = any(p.summary.quality is not None for p in policies)
    ceilings = any(p.max_cost is not None for p in policies)
    headers = ["policy", "requests", "ok", "p50", "p90", "p99", "p99.9", "max", "$/req", "$ total", "extra load"]
    headers += ["hedged", "misses"]
    if quality:
        headers.append("quality")
    if ceilings:
        headers += ["max $/req", "ceiling"]
    rows = []
    for p in policies:
        s = p.summary
        lat = s.latency
        row = [
            p.name + (" *" if p.name == result.baseline else ""),
            f"{s.requests:,}",
            _pct(s.success, 2),
            *(_ms(lat[k]) for k in ("p50", "p90", "p99", "p99.9", "max")),
            _money(s.cost_mean),
            _money(s.cost_total),
            _pct(s.extra_load),
            _pct(s.hedge_rate),
            f"{s.deadline_misses:,}",
        ]
        if quality:
            row.append(_pct(s.quality))
        if ceilings:
            row.append(_money(s.cost_max))
            if p.max_cost is None:
                row.append("—")
            else:
                row.append(f"{_money(p.max_cost)} {'ok' if s.cost_max <= p.max_cost * (1 + 1e-9) else 'CROSSED'}")
        rows.append(row)
    out.write(_table(headers, rows) + "\n")
    out.write("* baseline. ok = answered; hedged = requests that fired a timed hedge; misses = deadline/timeout\n\n")

    out.write(f"latency vs baseline ({result.baseline})\n")
    ratio_rows = [[p.name, *(_ratio(p.ratios.get(k)) for k in RATIO_KEYS)] for p in policies]
    out.write(_table(["policy", *RATIO_KEYS], ratio_rows) + "\n\n")

    out.write("wins (share of answered requests)\n")
    out.write(_table(["policy", "backends"], [[p.name, _wins(p.summary.wins)] for p in policies], left=2) + "\n")
    failures = [(p.name, p.summary.failures) for p in policies if p.summary.failures]
    if failures:
        out.write("\nfailures\n")
        out.write(
            _table(["policy", "errors"], [[n, ", ".join(f"{k} {v:,}" for k, v in f.items())] for n, f in failures], 2)
            + "\n"
        )
    phase_names = [ph.name for ph in policies[0].phases] if policies else []
    for i, name in enumerate(phase_names):
        ph0 = policies[0].phases[i]
        end = f"{ph0.end:g}" if ph0.end is not None else "end"
        out.write(f"\nphase {name!r} (intended send time {ph0.start:g}–{end} s)\n")
        rows = []
        for p in policies:
            ph = p.phases[i]
            s = ph.summary
            rows.append(
                [
                    p.name,
                    f"{s.requests:,}",
                    _pct(s.success, 2),
                    *(_ms(s.latency[k]) for k in ("p50", "p99", "p99.9")),
                    _ratio(ph.ratios.get("p99")),
                    _pct(s.extra_load),
                    _pct(s.hedge_rate),
                    _wins(s.wins, 3),
                ]
            )
        headers = ["policy", "requests", "ok", "p50", "p99", "p99.9", "p99 vs base", "extra load", "hedged", "wins"]
        out.write(_table(headers, rows, right_until=9) + "\n")
    steps = sorted({k for p in policies for k in p.steps})
    if steps:
        out.write("\nper workflow step (Query.metadata['step'])\n")
        rows = []
        for p in policies:
            for step in steps:
                st = p.steps.get(step)
                if st is None:
                    continue
                row = [
                    p.name,
                    step,
                    f"{st.requests:,}",
                    _pct(st.success, 2),
                    *(_ms(st.latency[k]) for k in ("p50", "p99")),
                    _money(st.cost_mean),
                    _pct(st.extra_load),
                    _wins(st.wins, 3),
                ]
                if quality:
                    row.insert(-1, _pct(st.quality))
                rows.append(row)
        headers = ["policy", "step", "requests", "ok", "p50", "p99", "$/req", "extra load"]
        headers += ["quality", "wins"] if quality else ["wins"]
        out.write(_table(headers, rows, left=2, right_until=len(headers) - 1) + "\n")
    total = round(result.requests_per_second * result.elapsed)
    jobs = f", {result.jobs} worker processes" if result.jobs > 1 else ""
    kind = "simulated requests" if result.mode == "sim" else "requests"
    out.write(f"\n{total:,} {kind} in {result.elapsed:.1f} s wall ({result.requests_per_second:,.0f} {kind}/s{jobs})\n")
    for note in result.notes:
        out.write(f"note: {note}\n")
    return out.getvalue()


# --------------------------------------------------------------------------- files


def _file_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "_", name) or "policy"


def write_outputs(result: BenchResult, stats: Mapping[str, PolicyStats], out_dir: str | Path) -> list[str]:
    """Write ``results.json``, one ``.hgrm`` per policy and ``latency.png`` into ``out_dir``
    (created if needed); returns one line per file written (or the hint when there is no plot)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    lines = []
    (out / "results.json").write_bytes(to_json(result) + b"\n")
    lines.append(f"wrote {out / 'results.json'}")
    for name, st in stats.items():
        path = out / f"{_file_name(name)}.hgrm"
        write_hgrm(st.total, path)
        lines.append(f"wrote {path}")
    try:
        png = plot_percentiles(
            {name: st.total.latency for name, st in stats.items()},
            out / "latency.png",
            title=f"{result.scenario} ({result.mode}): latency by percentile",
            baseline=result.baseline,
        )
    except ImportError:
        lines.append(PLOT_HINT)
    else:
        lines.append(f"wrote {png}")
    return lines


def write_hgrm(stats: Stats, path: Path) -> None:
    """The answered requests' latency distribution in HdrHistogram's ``.hgrm`` text format (ms)."""
    with path.open("wb") as f:
        stats.latency.output_percentile_distribution(f, 1000.0)


_NINES_TICKS = ((0.0, "0%"), (math.log10(2), "50%"), (1.0, "90%"), (2.0, "99%"), (3.0, "99.9%"), (4.0, "99.99%"))


def _nines(percentile: float) -> float:
    return -math.log10(1.0 - percentile / 100.0)


def percentile_curve(histogram: HdrHistogram, points_per_nine: int = 40) -> tuple[list[float], list[float]]:
    """``(x, y)``: x in nines (``-log10(1 - p)``), y the latency in ms, up to the last sample."""
    n = histogram.get_total_count()
    if not n:
        return [], []
    top = math.log10(n) if n > 1 else 1.0
    steps = max(2, int(top * points_per_nine))
    xs = [top * i / steps for i in range(steps + 1)]
    percentiles = [100.0 * (1.0 - 10.0**-x) for x in xs]
    values = histogram.get_percentile_to_value_dict(percentiles)
    return xs, [values[p] / 1000.0 for p in percentiles]


def plot_percentiles(
    histograms: Mapping[str, HdrHistogram], path: str | Path, *, title: str = "", baseline: str | None = None
) -> Path:
    """Draw latency by percentile (x: 50 %, 90 %, 99 %, 99.9 % … evenly spaced) for each policy.

    Raises ``ImportError`` when matplotlib is not installed (``pip install 'specexec[plot]'``).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    fig, ax = plt.subplots(figsize=(9, 5.5), dpi=110)
    top = 1.0
    for name, histogram in histograms.items():
        xs, ys = percentile_curve(histogram)
        if not xs:
            continue
        top = max(top, xs[-1])
        style = {"linewidth": 2.4, "color": "black"} if name == baseline else {"linewidth": 1.6}
        ax.plot(xs, ys, label=name + (" (baseline)" if name == baseline else ""), **style)
    ticks = [(x, label) for x, label in _NINES_TICKS if x <= top + 1e-9]
    ax.set_xticks([x for x, _ in ticks], [label for _, label in ticks])
    ax.set_xlim(0, top)
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(matplotlib.ticker.LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    plain = matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}")
    ax.yaxis.set_major_formatter(plain)
    ax.yaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
    ax.set_xlabel("percentile")
    ax.set_ylabel("latency (ms, log scale)")
    ax.grid(True, which="both", alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="upper left")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out


def phase_label(phase: Phase) -> str:
    """``name (start–end s)``."""
    end = f"{phase.end:g}" if math.isfinite(phase.end) else "end"
    return f"{phase.name} ({phase.start:g}–{end} s)"
