"""The report: per class × model pass rate (95 % Wilson interval), latency, cost per case and
per passing case, the verdict against the file's bars, and the cheapest passing model per class."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec

from ._file import EvalSpec
from ._run import CaseResult
from ._stats import at_least, at_most, percentile, wilson

__all__ = ["ClassReport", "EvalReport", "ModelRow", "build_report", "choose", "plot", "render", "to_json"]


class ModelRow(msgspec.Struct, kw_only=True):
    """One class × model. Latencies in seconds, costs in USD; ``cost_per_pass`` is ``None``
    when no case passed; ``failures`` says which bars were missed."""

    model: str
    cases: int
    passed: int
    pass_rate: float
    ci_low: float
    ci_high: float
    latency_mean: float | None
    latency_p95: float | None
    cost_mean: float
    cost_per_pass: float | None
    verdict: str
    failures: list[str]
    sent: int
    skipped: int


class ClassReport(msgspec.Struct, kw_only=True):
    """One class: its bars, route, a row per model, and the chosen (cheapest passing) model."""

    route: str
    min_pass_rate: float
    max_p95_latency: float | None
    max_cost_per_case: float | None
    models: list[ModelRow]
    chosen: str | None
    passing: list[str]


class EvalReport(msgspec.Struct, kw_only=True):
    """A whole eval (what ``--json`` prints and ``--compare`` reads)."""

    name: str
    mode: str
    classes: dict[str, ClassReport]
    nothing_passes: list[str]
    sent: int
    cost_total: float
    routing: dict[str, object] | None = None


def _row(model: str, results: Sequence[CaseResult], spec: EvalSpec, cls: str) -> ModelRow:
    bar = spec.file.classes[cls]
    n = len(results)
    passed = sum(r.passed for r in results)
    answered = [r.latency for r in results if not r.skipped]
    total_cost = sum(r.cost for r in results)
    low, high = wilson(passed, n)
    p95 = percentile(answered, 95.0)
    mean_latency = sum(answered) / len(answered) if answered else None
    cost_mean = total_cost / n if n else 0.0
    failures = []
    if not at_least(passed, n, bar.min_pass_rate):
        failures.append(f"pass rate {passed}/{n} < {bar.min_pass_rate:g}")
    if bar.max_p95_latency is not None and (p95 is None or not at_most(p95, bar.max_p95_latency)):
        failures.append(f"p95 {p95 if p95 is not None else float('nan'):.3f} s > {bar.max_p95_latency:g} s")
    if bar.max_cost_per_case is not None and not at_most(cost_mean, bar.max_cost_per_case):
        failures.append(f"cost/case ${cost_mean:.6f} > ${bar.max_cost_per_case:g}")
    return ModelRow(
        model=model,
        cases=n,
        passed=passed,
        pass_rate=passed / n if n else 0.0,
        ci_low=low,
        ci_high=high,
        latency_mean=mean_latency,
        latency_p95=p95,
        cost_mean=cost_mean,
        cost_per_pass=total_cost / passed if passed else None,
        verdict="pass" if not failures else "fail",
        failures=failures,
        sent=sum(not r.cached and not r.skipped for r in results),
        skipped=sum(r.skipped for r in results),
    )


def choose(rows: Sequence[ModelRow]) -> list[ModelRow]:
    """The passing rows, best first: cheaper per passing case (the downstream cost), then lower
    p95 latency, then lower mean latency, then the name."""
    passing = [r for r in rows if r.verdict == "pass"]
    return sorted(
        passing,
        key=lambda r: (
            r.cost_per_pass if r.cost_per_pass is not None else float("inf"),
            r.latency_p95 if r.latency_p95 is not None else float("inf"),
            r.latency_mean if r.latency_mean is not None else float("inf"),
            r.model,
        ),
    )


def build_report(spec: EvalSpec, mode: str, results: Sequence[CaseResult]) -> EvalReport:
    """Summarise ``results`` per class × model against the file's bars."""
    classes: dict[str, ClassReport] = {}
    for cls, bar in spec.file.classes.items():
        rows = [
            _row(m, [r for r in results if r.cls == cls and r.backend == m], spec, cls) for m in spec.candidates(cls)
        ]
        ranked = choose(rows)
        classes[cls] = ClassReport(
            route=spec.route(cls),
            min_pass_rate=bar.min_pass_rate,
            max_p95_latency=bar.max_p95_latency,
            max_cost_per_case=bar.max_cost_per_case,
            models=rows,
            chosen=ranked[0].model if ranked else None,
            passing=[r.model for r in ranked],
        )
    return EvalReport(
        name=spec.name,
        mode=mode,
        classes=classes,
        nothing_passes=[c for c, r in classes.items() if r.chosen is None],
        sent=sum(not r.cached and not r.skipped for r in results),
        cost_total=sum(r.judge_cost if r.cached else r.cost for r in results),  # a cached answer's judge is paid again
    )


def to_json(report: EvalReport) -> bytes:
    """The report as indented JSON."""
    return msgspec.json.format(msgspec.json.encode(report), indent=2)


def from_json(data: bytes) -> EvalReport:
    """A report written by ``to_json``."""
    return msgspec.json.decode(data, type=EvalReport)


def _ms(x: float | None) -> str:
    return "–" if x is None else f"{x * 1000:.0f}"


def _usd(x: float | None) -> str:
    return "–" if x is None else f"{x:.6f}"


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(
            c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=False))
        ).rstrip()

    return "\n".join([line(headers), "  ".join("-" * w for w in widths), *(line(r) for r in rows)])


def render(report: EvalReport) -> str:
    """The report as a text table, then the choice per class."""
    headers = ["class", "model", "pass", "95% CI", "mean ms", "p95 ms", "$/case", "$/pass", "verdict"]
    rows = []
    for cls, c in report.classes.items():
        for r in c.models:
            mark = " *" if r.model == c.chosen else ""
            rows.append(
                [
                    cls,
                    r.model + mark,
                    f"{r.passed}/{r.cases} {r.pass_rate:.1%}",
                    f"{r.ci_low:.1%}–{r.ci_high:.1%}",
                    _ms(r.latency_mean),
                    _ms(r.latency_p95),
                    _usd(r.cost_mean),
                    _usd(r.cost_per_pass),
                    r.verdict if not r.failures else "fail: " + "; ".join(r.failures),
                ]
            )
    out = [f"eval {report.name} ({report.mode}): {report.sent} calls sent, ${report.cost_total:.6f}", ""]
    out.append(_table(headers, rows))
    out.append("")
    for cls, c in report.classes.items():
        bar = f"pass >= {c.min_pass_rate:g}"
        if c.max_p95_latency is not None:
            bar += f", p95 <= {c.max_p95_latency:g} s"
        if c.max_cost_per_case is not None:
            bar += f", $/case <= {c.max_cost_per_case:g}"
        chosen = c.chosen or "NOTHING PASSES"
        out.append(f"{cls} -> route {c.route}: {chosen}  ({bar})")
    if report.routing:
        out.append("")
        out.append(render_routing(report.routing))
    return "\n".join(out) + "\n"


def render_routing(routing: dict[str, object]) -> str:
    """The routing-quality lines."""
    lines = [
        f"routing: accuracy {routing['accuracy']:.1%} over {routing['requests']} cases, "
        f"escalation {routing['escalation_rate']:.1%}, ${routing['cost_per_request']:.6f}/request"
    ]
    by_route = routing.get("by_route", {})
    assert isinstance(by_route, dict)
    for route, r in by_route.items():
        lines.append(
            f"  {route}: {r['requests']} requests, accuracy {r['accuracy']:.1%}, ${r['cost_per_request']:.6f}/request"
        )
    return "\n".join(lines)


def plot(report: EvalReport, path: str | Path) -> Path:
    """Pass rate against cost per case, one panel per class, the chosen model marked and the bar
    drawn. Raises ``ImportError`` without matplotlib (``pip install 'specexec[plot]'``)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    n = len(report.classes)
    fig, axes = plt.subplots(1, n, figsize=(4.5 * n, 4), dpi=110, squeeze=False)
    for ax, (cls, c) in zip(axes[0], report.classes.items(), strict=False):
        for r in c.models:
            chosen = r.model == c.chosen
            ax.errorbar(
                [max(r.cost_mean, 1e-9)],
                [r.pass_rate],
                yerr=[[r.pass_rate - r.ci_low], [r.ci_high - r.pass_rate]],
                fmt="*" if chosen else "o",
                markersize=14 if chosen else 7,
                color="tab:green" if r.verdict == "pass" else "tab:red",
                capsize=3,
            )
            ax.annotate(
                r.model + (" (chosen)" if chosen else ""),
                (max(r.cost_mean, 1e-9), r.pass_rate),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize=8,
            )
        ax.axhline(c.min_pass_rate, linestyle="--", color="grey", linewidth=1)
        ax.set_xscale("log")
        ax.xaxis.set_minor_formatter(matplotlib.ticker.NullFormatter())
        ax.set_ylim(0, 1.05)
        ax.set_title(cls)
        ax.set_xlabel("mean cost per case (USD, log)")
        ax.set_ylabel("pass rate (95% CI)")
        ax.grid(True, alpha=0.3)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
