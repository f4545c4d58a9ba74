"""``GET /metrics``: the daemon's state in the Prometheus text exposition format, version 0.0.4.

Written by hand (the format is simple): each metric family has one ``# HELP`` and one
``# TYPE`` line followed by its samples; label values escape ``\\``, ``"`` and line feeds;
HELP text escapes ``\\`` and line feeds; values are Go-style floats (``+Inf``, ``-Inf``,
``NaN``); every line ends with ``\\n``. Families:

- ``specexec_probe_latency_seconds{backend,query}`` (summary, one per probe query: ``ping``,
  ``canary``): quantiles 0.5/0.9/0.99 over the daemon's window, ``_sum``/``_count`` of every
  successful probe's latency; ``specexec_probe_ttft_seconds`` likewise for streamed probes.
- ``specexec_probe_success_total``, ``specexec_probe_errors_total{kind}``,
  ``specexec_probe_skipped_total`` (counters); ``specexec_probe_success_rate`` (gauge, window).
- ``specexec_probe_state{state}``, ``specexec_probe_circuit_state{state}`` (one-hot gauges),
  ``specexec_probe_model_drift``, ``specexec_probe_canary_failed``,
  ``specexec_probe_age_seconds``, ``specexec_probe_last_success_timestamp_seconds``,
  ``specexec_probe_backend_info{provider,region,model,reported_model}``.
- ``specexec_probe_cost_usd_total``, ``specexec_probe_budget_usd``,
  ``specexec_probe_budget_spent_usd``, ``specexec_probe_budget_exhausted``, ``specexec_probe_up``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

from ._snapshot import HealthReport

__all__ = ["CONTENT_TYPE", "escape_help", "escape_label_value", "format_value", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
"""The ``Content-Type`` of the 0.0.4 text format."""

_STATES = ("healthy", "degraded", "unhealthy", "unknown")
_CIRCUITS = ("closed", "open", "half_open")

Labels = Sequence[tuple[str, str]]


def escape_label_value(value: str) -> str:
    """A label value escaped for the text format (``\\``, ``"`` and line feed)."""
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def escape_help(text: str) -> str:
    """HELP text escaped for the text format (``\\`` and line feed)."""
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def format_value(value: float) -> str:
    """A sample value as the text format writes it (``+Inf``, ``-Inf``, ``NaN``, else Python's repr)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer() and abs(value) < 2**53:
        return str(int(value))
    return repr(float(value))


class _Family:
    def __init__(self, name: str, kind: str, help_: str) -> None:
        self.name = name
        self.kind = kind
        self.help = help_
        self.samples: list[str] = []

    def add(self, value: float, labels: Labels = (), suffix: str = "") -> None:
        label_text = ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels)
        braces = f"{{{label_text}}}" if label_text else ""
        self.samples.append(f"{self.name}{suffix}{braces} {format_value(value)}")

    def lines(self) -> Iterable[str]:
        yield f"# HELP {self.name} {escape_help(self.help)}"
        yield f"# TYPE {self.name} {self.kind}"
        yield from self.samples


def render(report: HealthReport) -> str:
    """The whole exposition for a health report."""
    f = {
        name: _Family(name, kind, help_)
        for name, kind, help_ in (
            ("specexec_probe_up", "gauge", "1 while the probe daemon runs."),
            (
                "specexec_probe_latency_seconds",
                "summary",
                "Probe latency per probe query: quantiles over the window, sum and count of successful probes.",
            ),
            ("specexec_probe_ttft_seconds", "summary", "Time to first token of streamed probes, per probe query."),
            ("specexec_probe_success_total", "counter", "Successful probes."),
            ("specexec_probe_errors_total", "counter", "Failed probes by error kind."),
            ("specexec_probe_skipped_total", "counter", "Probes not sent because the daily budget was spent."),
            ("specexec_probe_success_rate", "gauge", "Share of successful probes over the window (NaN: none)."),
            (
                "specexec_probe_state",
                "gauge",
                "1 for the backend's current state (healthy, degraded, unhealthy, unknown).",
            ),
            (
                "specexec_probe_circuit_state",
                "gauge",
                "1 for the probes' circuit breaker state (closed, open, half_open).",
            ),
            ("specexec_probe_model_drift", "gauge", "1 when the reported model id differs from the pinned one."),
            ("specexec_probe_canary_failed", "gauge", "1 when the last canary got a wrong answer."),
            ("specexec_probe_age_seconds", "gauge", "Seconds since the last finished probe (NaN: none yet)."),
            ("specexec_probe_last_success_timestamp_seconds", "gauge", "Unix time of the last successful probe."),
            ("specexec_probe_backend_info", "gauge", "Backend identity and the model id last reported."),
            ("specexec_probe_cost_usd_total", "counter", "USD spent on probes."),
            ("specexec_probe_budget_usd", "gauge", "Daily probe budget in USD (NaN: unlimited)."),
            ("specexec_probe_budget_spent_usd", "gauge", "USD spent on probes this UTC day."),
            ("specexec_probe_budget_exhausted", "gauge", "1 while probing is stopped for the day (budget spent)."),
        )
    }
    f["specexec_probe_up"].add(1)
    for name, b in sorted(report.backends.items()):
        lb: Labels = (("backend", name),)
        lat = f["specexec_probe_latency_seconds"]
        ttft = f["specexec_probe_ttft_seconds"]
        for query, qv in b.queries.items():
            lq: Labels = (*lb, ("query", query))
            for q, v in (("0.5", qv.p50), ("0.9", qv.p90), ("0.99", qv.p99)):
                lat.add(v if v is not None else math.nan, (*lq, ("quantile", q)))
            lat.add(qv.latency_sum, lq, "_sum")
            lat.add(qv.latency_count, lq, "_count")
            ttft.add(qv.ttft_p50 if qv.ttft_p50 is not None else math.nan, (*lq, ("quantile", "0.5")))
            ttft.add(qv.ttft_sum, lq, "_sum")
            ttft.add(qv.ttft_count, lq, "_count")
        f["specexec_probe_success_total"].add(b.successes, lb)
        for kind, count in sorted(b.errors.items()):
            f["specexec_probe_errors_total"].add(count, (*lb, ("kind", kind)))
        f["specexec_probe_skipped_total"].add(b.skipped, lb)
        f["specexec_probe_success_rate"].add(b.success_rate if b.success_rate is not None else math.nan, lb)
        for state in _STATES:
            f["specexec_probe_state"].add(1 if b.state == state else 0, (*lb, ("state", state)))
        for circuit in _CIRCUITS:
            f["specexec_probe_circuit_state"].add(1 if b.circuit == circuit else 0, (*lb, ("state", circuit)))
        f["specexec_probe_model_drift"].add(1 if b.drift else 0, lb)
        f["specexec_probe_canary_failed"].add(1 if b.canary == "failed" else 0, lb)
        f["specexec_probe_age_seconds"].add(b.age if b.age is not None else math.nan, lb)
        if b.last_success_at is not None:
            f["specexec_probe_last_success_timestamp_seconds"].add(b.last_success_at, lb)
        info = (
            *lb,
            ("provider", b.provider),
            ("region", b.region),
            ("model", b.model or ""),
            ("reported_model", b.reported_model or ""),
        )
        f["specexec_probe_backend_info"].add(1, info)
        f["specexec_probe_cost_usd_total"].add(b.cost, lb)
    budget = report.budget
    f["specexec_probe_budget_usd"].add(budget.limit if budget.limit is not None else math.nan)
    f["specexec_probe_budget_spent_usd"].add(budget.spent)
    f["specexec_probe_budget_exhausted"].add(1 if budget.exhausted else 0)
    lines = [line for family in f.values() if family.samples for line in family.lines()]
    return "\n".join(lines) + "\n"
