"""``GET /metrics``: the daemon's health in the Prometheus text format 0.0.4, through ``prometheus_client``.

Needs the ``metrics`` extra (``pip install 'specexec[metrics]'``); without it ``/metrics``
answers 501 with that hint, and every other endpoint works. Each scrape builds the families
from the health report (a custom collector in a registry of its own: nothing is shared with
the process's default registry). Families:

- ``specexec_probe_latency_seconds{backend,query}`` (histogram, one per probe query: ``ping``,
  ``canary``): every successful probe's latency since the daemon started, in cumulative
  buckets (the GenAI conventions' bounds, ``specexec.metrics.LATENCY_BUCKETS``), with
  ``_sum``/``_count``; ``specexec_probe_ttft_seconds`` likewise for streamed probes
  (``TTFT_BUCKETS``). Being real histograms they add up across daemons
  (``histogram_quantile(0.99, sum by (le, backend) (rate(specexec_probe_latency_seconds_bucket[5m])))``).
  They count from the daemon's start (a restart resets them, as Prometheus expects of
  counters); the ``/v1/health`` ``latency_sum``/``latency_count`` resume from the snapshot.
- ``specexec_probe_window_latency_seconds{backend,query,quantile}`` (gauge): the 0.5/0.9/0.99
  quantiles over the daemon's window (NaN below ``min_samples``), what the old summary
  published; per daemon, not aggregatable.
- ``specexec_probe_success_total``, ``specexec_probe_errors_total{kind}``,
  ``specexec_probe_skipped_total`` (counters); ``specexec_probe_success_rate`` (gauge, window).
- ``specexec_probe_state{state}``, ``specexec_probe_circuit_state{state}`` (one-hot gauges),
  ``specexec_probe_model_drift``, ``specexec_probe_canary_failed``,
  ``specexec_probe_age_seconds``, ``specexec_probe_last_success_timestamp_seconds``,
  ``specexec_probe_backend_info{provider,region,model,reported_model}``.
- ``specexec_probe_cost_usd_total``, ``specexec_probe_budget_usd``,
  ``specexec_probe_budget_spent_usd``, ``specexec_probe_budget_exhausted``, ``specexec_probe_up``.
- With ``[eval]``, per ``task_class`` and ``backend`` (gauges, from the last run that answered a
  case): ``specexec_eval_pass_rate``, ``specexec_eval_pass_rate_low`` / ``_high`` (the 95 %
  Wilson interval), ``specexec_eval_bar``, ``specexec_eval_cases``, ``specexec_eval_below_bar``,
  ``specexec_eval_model_changed``, ``specexec_eval_last_run_timestamp_seconds``; and
  ``specexec_eval_runs_total``, ``specexec_eval_skipped_total`` (calls not sent: budget),
  ``specexec_eval_cost_usd_total``, ``specexec_eval_budget_usd``,
  ``specexec_eval_budget_spent_usd``, ``specexec_eval_budget_exhausted``.
  ``specexec_probe_model_drift`` is the backend's drift flag: probes or eval.
"""

from __future__ import annotations

import bisect
import math
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from specexec._buckets import LATENCY_BUCKETS, TEXT_CONTENT_TYPE, TTFT_BUCKETS

from ._http import HttpError
from ._snapshot import EvalView, HealthReport

if TYPE_CHECKING:
    from ._state import ProbeState

__all__ = ["CONTENT_TYPE", "MISSING", "Buckets", "MetricsUnavailable", "render"]

CONTENT_TYPE = TEXT_CONTENT_TYPE
"""The ``Content-Type`` of the 0.0.4 text format."""
MISSING = "prometheus_client is not installed: /metrics needs pip install 'specexec[metrics]'\n"
"""The 501 body ``/metrics`` answers without the ``metrics`` extra."""

_STATES = ("healthy", "degraded", "unhealthy", "unknown")
_CIRCUITS = ("closed", "open", "half_open")


class MetricsUnavailable(HttpError):
    """``/metrics`` cannot be rendered: prometheus_client is not installed (answered 501)."""

    status = 501


class Buckets:
    """Cumulative-histogram tallies (counts per upper bound, sum, count): no dependency, O(log n) per sample."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Sequence[float]) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)  # the last one: above every bound
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        """Count one sample (a value equal to a bound falls in that bound's bucket, as Prometheus does)."""
        self.counts[bisect.bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, float]]:
        """``[(le, cumulative count)]`` ending with ``+Inf``, as ``HistogramMetricFamily`` takes them."""
        out: list[tuple[str, float]] = []
        running = 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += n
            out.append(("+Inf" if math.isinf(bound) else repr(float(bound)), float(running)))
        return out


def latency_buckets() -> Buckets:
    """Empty tallies with the latency bounds."""
    return Buckets(LATENCY_BUCKETS)


def ttft_buckets() -> Buckets:
    """Empty tallies with the TTFT bounds."""
    return Buckets(TTFT_BUCKETS)


def _nan(value: float | None) -> float:
    return value if value is not None else math.nan


def _families(report: HealthReport, states: Mapping[str, ProbeState]) -> Iterable[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily

    def gauge(name: str, help_: str, labels: Sequence[str] = ()) -> GaugeMetricFamily:
        return GaugeMetricFamily(name, help_, labels=labels)

    def counter(name: str, help_: str, labels: Sequence[str] = ()) -> CounterMetricFamily:
        return CounterMetricFamily(name, help_, labels=labels)

    b_, bq = ("backend",), ("backend", "query")
    up = gauge("specexec_probe_up", "1 while the probe daemon runs.")
    up.add_metric((), 1.0)
    latency = HistogramMetricFamily(
        "specexec_probe_latency_seconds",
        "Latency of successful probes per probe query since the daemon started.",
        labels=bq,
    )
    ttft = HistogramMetricFamily(
        "specexec_probe_ttft_seconds", "Time to first token of streamed probes, per probe query.", labels=bq
    )
    window = gauge(
        "specexec_probe_window_latency_seconds",
        "Probe latency quantiles over the daemon's window, per probe query (NaN: too few samples).",
        (*bq, "quantile"),
    )
    success = counter("specexec_probe_success", "Successful probes.", b_)
    errors = counter("specexec_probe_errors", "Failed probes by error kind.", (*b_, "kind"))
    skipped = counter("specexec_probe_skipped", "Probes not sent because the daily budget was spent.", b_)
    rate = gauge("specexec_probe_success_rate", "Share of successful probes over the window (NaN: none).", b_)
    state = gauge(
        "specexec_probe_state",
        "1 for the backend's current state (healthy, degraded, unhealthy, unknown).",
        (*b_, "state"),
    )
    circuit = gauge(
        "specexec_probe_circuit_state",
        "1 for the probes' circuit breaker state (closed, open, half_open).",
        (*b_, "state"),
    )
    drift = gauge(
        "specexec_probe_model_drift",
        "1 when the drift flag is up: the reported model id differs from the pinned one, or the continuous eval"
        " found the backend below a bar.",
        b_,
    )
    canary = gauge("specexec_probe_canary_failed", "1 when the last canary got a wrong answer.", b_)
    age = gauge("specexec_probe_age_seconds", "Seconds since the last finished probe (NaN: none yet).", b_)
    last = gauge("specexec_probe_last_success_timestamp_seconds", "Unix time of the last successful probe.", b_)
    info = gauge(
        "specexec_probe_backend_info",
        "Backend identity and the model id last reported.",
        (*b_, "provider", "region", "model", "reported_model"),
    )
    cost = counter("specexec_probe_cost_usd", "USD spent on probes.", b_)
    for name, b in sorted(report.backends.items()):
        probe_state = states.get(name)
        for query, qv in b.queries.items():
            stats = probe_state.queries.get(query) if probe_state is not None else None
            if stats is not None:
                h, t = stats.latency_buckets, stats.ttft_buckets
                latency.add_metric((name, query), h.cumulative(), h.sum)
                ttft.add_metric((name, query), t.cumulative(), t.sum)
            for q, v in (("0.5", qv.p50), ("0.9", qv.p90), ("0.99", qv.p99)):
                window.add_metric((name, query, q), _nan(v))
        success.add_metric((name,), b.successes)
        for kind, count in sorted(b.errors.items()):
            errors.add_metric((name, kind), count)
        skipped.add_metric((name,), b.skipped)
        rate.add_metric((name,), _nan(b.success_rate))
        for s in _STATES:
            state.add_metric((name, s), 1.0 if b.state == s else 0.0)
        for c in _CIRCUITS:
            circuit.add_metric((name, c), 1.0 if b.circuit == c else 0.0)
        drift.add_metric((name,), 1.0 if b.drift else 0.0)
        canary.add_metric((name,), 1.0 if b.canary == "failed" else 0.0)
        age.add_metric((name,), _nan(b.age))
        if b.last_success_at is not None:
            last.add_metric((name,), b.last_success_at)
        info.add_metric((name, b.provider, b.region, b.model or "", b.reported_model or ""), 1.0)
        cost.add_metric((name,), b.cost)
    budget = report.budget
    limit = gauge("specexec_probe_budget_usd", "Daily probe budget in USD (NaN: unlimited).")
    limit.add_metric((), _nan(budget.limit))
    spent = gauge("specexec_probe_budget_spent_usd", "USD spent on probes this UTC day.")
    spent.add_metric((), budget.spent)
    exhausted = gauge("specexec_probe_budget_exhausted", "1 while probing is stopped for the day (budget spent).")
    exhausted.add_metric((), 1.0 if budget.exhausted else 0.0)
    families = (up, latency, ttft, window, success, errors, skipped, rate, state, circuit, drift, canary, age, last)
    evals = _eval_families(report.eval) if report.eval is not None else []
    return [f for f in (*families, info, cost, limit, spent, exhausted, *evals) if f.samples]


def _eval_families(view: EvalView) -> list[Any]:
    from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

    cb = ("task_class", "backend")
    per_pair = {
        "pass_rate": GaugeMetricFamily(
            "specexec_eval_pass_rate", "Share of eval cases passed in the last run (NaN: none answered).", labels=cb
        ),
        "low": GaugeMetricFamily("specexec_eval_pass_rate_low", "Lower end of the 95 % Wilson interval.", labels=cb),
        "high": GaugeMetricFamily("specexec_eval_pass_rate_high", "Upper end of the 95 % Wilson interval.", labels=cb),
        "bar": GaugeMetricFamily("specexec_eval_bar", "The task class's min_pass_rate.", labels=cb),
        "cases": GaugeMetricFamily("specexec_eval_cases", "Cases answered in the last run.", labels=cb),
        "below_bar": GaugeMetricFamily("specexec_eval_below_bar", "1 when the pass rate is below the bar.", labels=cb),
        "model_changed": GaugeMetricFamily(
            "specexec_eval_model_changed", "1 when the reported model id differs from the pinned one.", labels=cb
        ),
        "last_run_at": GaugeMetricFamily(
            "specexec_eval_last_run_timestamp_seconds", "Unix time of the last run that answered a case.", labels=cb
        ),
    }
    for cls, per_backend in sorted(view.results.items()):
        for backend, r in sorted(per_backend.items()):
            values = {
                "pass_rate": _nan(r.pass_rate),
                "low": r.low,
                "high": r.high,
                "bar": r.bar,
                "cases": float(r.cases),
                "below_bar": 1.0 if r.below_bar else 0.0,
                "model_changed": 1.0 if r.model_changed else 0.0,
                "last_run_at": r.last_run_at,
            }
            for key, family in per_pair.items():
                family.add_metric((cls, backend), values[key])
    runs = CounterMetricFamily("specexec_eval_runs", "Continuous-eval runs started.")
    runs.add_metric((), view.runs)
    skipped = CounterMetricFamily("specexec_eval_skipped", "Eval calls not sent because the daily budget was spent.")
    skipped.add_metric((), view.skipped)
    cost = CounterMetricFamily("specexec_eval_cost_usd", "USD spent on eval calls.")
    cost.add_metric((), view.cost)
    limit = GaugeMetricFamily("specexec_eval_budget_usd", "Daily eval budget in USD.")
    limit.add_metric((), _nan(view.budget.limit))
    spent = GaugeMetricFamily("specexec_eval_budget_spent_usd", "USD spent on eval calls this UTC day.")
    spent.add_metric((), view.budget.spent)
    exhausted = GaugeMetricFamily(
        "specexec_eval_budget_exhausted", "1 while the continuous eval is stopped for the day (budget spent)."
    )
    exhausted.add_metric((), 1.0 if view.budget.exhausted else 0.0)
    return [*per_pair.values(), runs, skipped, cost, limit, spent, exhausted]


def render(report: HealthReport, states: Mapping[str, ProbeState] | None = None) -> str:
    """The whole exposition for a health report; histograms from ``states`` (each backend's probe state).

    Raises ``MetricsUnavailable`` when prometheus_client is not installed.
    """
    try:
        from prometheus_client import CollectorRegistry
        from prometheus_client.exposition import generate_latest
        from prometheus_client.registry import Collector
    except ImportError:
        raise MetricsUnavailable(MISSING.strip()) from None

    class _Report(Collector):
        def collect(self) -> Iterable[Any]:
            return _families(report, states or {})

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Report())
    return generate_latest(registry).decode("utf-8")
