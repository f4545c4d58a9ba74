"""Prometheus metrics for specexec, from the traces runs emit (optional: ``pip install 'specexec[metrics]'``).

One line attaches them to a runtime, one more serves ``/metrics``::

    sink = specexec.metrics.instrument(rt)              # PrometheusSink on rt.sinks + a collector of rt
    tg.start_soon(specexec.metrics.serve, sink.registry, 9464)   # GET /metrics (anyio task)

or ``Runtime(sinks=[PrometheusSink(registry)])`` and ``sink.watch(rt)``; in an ASGI service,
``prometheus_client.make_asgi_app(registry=sink.registry)`` mounts the same exposition.
Metrics go to the ``CollectorRegistry`` given (default: a new one, never prometheus_client's
global ``REGISTRY`` unless you pass it), so two sinks — or two tests — never share series.

From each trace (``PrometheusSink.__call__``, on the run's task: counters and histograms in
memory, no I/O):

==========================================  ==========================================================
``specexec_runs_total``                      runs by ``mode``, ``policy``, ``route``, ``outcome``
``specexec_run_duration_seconds``            histogram of run latency (same labels; a run that ended
                                             without an answer: until its last attempt ended)
``specexec_attempts_total``                  attempts by ``policy``, ``route``, ``backend``, ``trigger``
                                             (primary, hedge, after failure, parallel, retry…), ``outcome``
                                             (accepted, rejected, failed, cancelled, skipped)
``specexec_attempt_duration_seconds``        histogram of attempt latency by ``backend``, ``outcome``
``specexec_attempt_ttft_seconds``            histogram of time to first token by ``backend`` (streams)
``specexec_hedges_total``                    hedges fired, by ``policy``, ``route``, ``backend``
``specexec_hedges_refused_total``            hedges the hedge budget refused, by ``policy``, ``route``
``specexec_run_events_total``                every trace event by ``policy``, ``route``, ``event``
                                             (``panic``, ``retry scheduled``, ``ceiling crossed``, …)
``specexec_cost_usd_total``                  USD charged, by ``policy``, ``route``, ``backend``
``specexec_tokens_total``                    tokens by ``backend``, ``kind`` (input, output)
``specexec_budget_spent_usd_total``          USD of routed runs by spend budget (``budget``: its name,
                                             ``tenant/day``; its key with ``budget_keys=True``)
``specexec_budget_remaining_ratio``          share of that budget left before its latest run (of any key)
==========================================  ==========================================================

From the runtime, read at each scrape (``watch``; a collector callback):
``specexec_breaker_state{backend,state}`` (1 for the breaker's state: closed, open,
half_open), ``specexec_backend_in_flight{backend}`` (attempts running) and
``specexec_hedge_budget_tokens{budget}`` (hedges the budget would allow now).

Histograms are real Prometheus histograms (cumulative buckets, ``_sum``, ``_count``): they
add up across workers and processes (``histogram_quantile(0.99, sum by (le, backend)
(rate(specexec_attempt_duration_seconds_bucket[5m])))``). Buckets follow the OpenTelemetry
GenAI conventions (``LATENCY_BUCKETS``, ``TTFT_BUCKETS``); pass your own if needed.

Multiprocess mode (gunicorn/uvicorn workers): set ``PROMETHEUS_MULTIPROC_DIR`` before
importing prometheus_client in every worker, give each worker's sink its own registry, and
serve a registry holding ``prometheus_client.multiprocess.MultiProcessCollector`` (see
prometheus_client's docs). Counters and histograms then add up across workers;
``specexec_budget_remaining_ratio`` keeps the most recent value. The runtime collector
(breaker state, in-flight, hedge budget) describes one process: it is not in the
multiprocess files; serve it per worker if you need it.

Label values come from names you chose (policies, routes, backends, budgets). No query text,
tenant id or error message is a label — unless you ask for one series per budget key
(``PrometheusSink(budget_keys=True)``): the ``budget`` label is then the key's value (a tenant
id, for a budget keyed by tenant), one series per value, which never go away.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

import sniffio

try:
    from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
    from prometheus_client.core import GaugeMetricFamily
    from prometheus_client.exposition import generate_latest
    from prometheus_client.registry import Collector
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "specexec.metrics needs prometheus_client: pip install 'specexec[metrics]' (prometheus_client>=0.20)"
    ) from exc

from ._buckets import LATENCY_BUCKETS as LATENCY_BUCKETS
from ._buckets import TEXT_CONTENT_TYPE
from ._buckets import TTFT_BUCKETS as TTFT_BUCKETS
from ._trace import Trace

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = [
    "CONTENT_TYPE",
    "LATENCY_BUCKETS",
    "TTFT_BUCKETS",
    "PrometheusSink",
    "RuntimeCollector",
    "exposition",
    "instrument",
    "serve",
]

CONTENT_TYPE: str = TEXT_CONTENT_TYPE
"""The ``Content-Type`` of the exposition ``exposition`` and ``serve`` return (text format 0.0.4)."""

_BREAKER_STATES = ("closed", "open", "half_open")
_PRB = ("policy", "route", "backend")
_HEDGE_REFUSED = "hedge budget"  # the detail of the engine's "skipped" event for a refused hedge


def _label(value: str | None) -> str:
    return value if value is not None else ""


class PrometheusSink:
    """A trace sink that counts runs, attempts, hedges, events, cost and tokens in ``registry``.

    ``registry``: where the metrics are registered (default: a new ``CollectorRegistry``).
    ``namespace``: the metric name prefix. ``latency_buckets`` / ``ttft_buckets``: histogram
    upper bounds in seconds. ``budget_keys``: label spend by the budget key's value (a tenant
    id: one series per tenant) instead of the budget's name. Calling the sink never blocks
    (in-memory updates only).
    """

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        namespace: str = "specexec",
        latency_buckets: Sequence[float] = LATENCY_BUCKETS,
        ttft_buckets: Sequence[float] = TTFT_BUCKETS,
        budget_keys: bool = False,
    ) -> None:
        self.budget_keys = budget_keys
        self.registry = registry if registry is not None else CollectorRegistry()
        self.namespace = namespace
        r, ns = self.registry, namespace
        run_labels = ("mode", "policy", "route", "outcome")
        self.runs = Counter("runs", "Runs by mode, policy, route and outcome.", run_labels, namespace=ns, registry=r)
        self.run_duration = Histogram(
            "run_duration_seconds",
            "Run latency in seconds (runs without an answer: until their last attempt ended).",
            run_labels,
            namespace=ns,
            registry=r,
            buckets=latency_buckets,
        )
        self.attempts = Counter(
            "attempts",
            "Attempts by policy, route, backend, trigger and outcome (skipped candidates included).",
            ("policy", "route", "backend", "trigger", "outcome"),
            namespace=ns,
            registry=r,
        )
        self.attempt_duration = Histogram(
            "attempt_duration_seconds",
            "Attempt latency in seconds, by backend and outcome.",
            ("backend", "outcome"),
            namespace=ns,
            registry=r,
            buckets=latency_buckets,
        )
        self.attempt_ttft = Histogram(
            "attempt_ttft_seconds",
            "Time to first token of streamed attempts in seconds, by backend.",
            ("backend",),
            namespace=ns,
            registry=r,
            buckets=ttft_buckets,
        )
        self.hedges = Counter(
            "hedges",
            "Hedges fired, by policy, route and backend.",
            ("policy", "route", "backend"),
            namespace=ns,
            registry=r,
        )
        self.hedges_refused = Counter(
            "hedges_refused",
            "Hedges the hedge budget refused, by policy and route.",
            ("policy", "route"),
            namespace=ns,
            registry=r,
        )
        self.events = Counter(
            "run_events",
            "Trace events (panic, retry scheduled, ceiling crossed, ...) by policy, route and event.",
            ("policy", "route", "event"),
            namespace=ns,
            registry=r,
        )
        self.cost = Counter(
            "cost_usd",
            "USD charged, by policy, route and backend.",
            ("policy", "route", "backend"),
            namespace=ns,
            registry=r,
        )
        self.tokens = Counter(
            "tokens", "Tokens by backend and kind (input, output).", ("backend", "kind"), namespace=ns, registry=r
        )
        self.budget_spent = Counter(
            "budget_spent_usd", "USD spent by routed runs, by spend budget.", ("budget",), namespace=ns, registry=r
        )
        self.budget_remaining = Gauge(
            "budget_remaining_ratio",
            "Share of the spend budget left before its latest run.",
            ("budget",),
            namespace=ns,
            registry=r,
            multiprocess_mode="mostrecent",
        )
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def __call__(self, trace: Trace) -> None:
        """Count one finished run."""
        child = self._child
        policy = _label(trace.policy)
        route = trace.route.name if trace.route is not None else ""
        run = (trace.mode, policy, route, trace.outcome)
        child(self.runs, *run).inc()
        duration = trace.latency
        if duration is None:
            ends = [a.ended for a in trace.attempts if a.ended is not None]
            duration = max(ends) if ends else None
        if duration is not None:
            child(self.run_duration, *run).observe(duration)
        for a in trace.attempts:
            outcome = a.outcome or "running"
            child(self.attempts, policy, route, a.backend, a.trigger, outcome).inc()
            if outcome == "skipped":
                continue
            if a.trigger == "hedge":
                child(self.hedges, policy, route, a.backend).inc()
            if a.latency is not None:
                child(self.attempt_duration, a.backend, outcome).observe(a.latency)
            if a.ttft is not None:
                child(self.attempt_ttft, a.backend).observe(a.ttft)
            if a.cost:
                child(self.cost, policy, route, a.backend).inc(a.cost)
            if a.input_tokens:
                child(self.tokens, a.backend, "input").inc(a.input_tokens)
            if a.output_tokens:
                child(self.tokens, a.backend, "output").inc(a.output_tokens)
        for e in trace.events:
            child(self.events, policy, route, e.what).inc()
            if e.what == "skipped" and e.detail.startswith(_HEDGE_REFUSED):
                child(self.hedges_refused, policy, route).inc()
        decision = trace.route
        budget = None if decision is None else decision.budget_key if self.budget_keys else decision.budget
        if decision is not None and budget is not None:
            if trace.cost:
                child(self.budget_spent, budget).inc(trace.cost)
            if decision.budget_remaining is not None:
                child(self.budget_remaining, budget).set(decision.budget_remaining)

    def watch(self, runtime: Runtime, *, clock: Callable[[], float] | None = None) -> RuntimeCollector:
        """Register a ``RuntimeCollector`` of ``runtime`` in this sink's registry (see its docs)."""
        collector = RuntimeCollector(runtime, clock=clock, namespace=self.namespace)
        self.registry.register(collector)
        return collector


def _loop_clock() -> Callable[[], float]:
    """The running loop's clock as a function any thread may call (``time.monotonic`` outside a loop)."""
    try:
        library = sniffio.current_async_library()
    except sniffio.AsyncLibraryNotFoundError:
        return time.monotonic
    if library == "trio":
        import trio

        return trio.lowlevel.current_clock().current_time  # the clock object, not the run-local lookup
    return asyncio.get_running_loop().time


class RuntimeCollector(Collector):
    """Reads a runtime's live state at each scrape: breaker states, attempts in flight, hedge budgets.

    ``clock``: the runtime's loop clock (breakers and budgets are timed on it). By default
    the clock of the loop running when the collector is made (``instrument``/``watch`` inside
    ``async with Runtime(...)``), else ``time.monotonic`` (asyncio's clock); pass
    ``trio.lowlevel.current_clock().current_time`` if you make it outside a trio run.
    Collection only reads (breakers, concurrency counts and budgets are never changed by it),
    so a scrape from another thread (a WSGI server) is safe, if not atomic across backends.
    """

    def __init__(
        self, runtime: Runtime, *, clock: Callable[[], float] | None = None, namespace: str = "specexec"
    ) -> None:
        self.runtime = runtime
        self.clock = clock if clock is not None else _loop_clock()
        self.namespace = namespace

    def describe(self) -> Iterable[Any]:
        """No description up front: the families are built at collection (unchecked by the registry)."""
        return ()

    def collect(self) -> Iterable[Any]:
        """The families, read now."""
        ns, rt, now = self.namespace, self.runtime, self.clock()
        breaker = GaugeMetricFamily(
            f"{ns}_breaker_state", "1 for the backend's circuit breaker state.", labels=("backend", "state")
        )
        in_flight = GaugeMetricFamily(
            f"{ns}_backend_in_flight", "Attempts running on the backend.", labels=("backend",)
        )
        for name in sorted(rt.backends):
            health = rt.health(name)
            state = health.breaker.state(now)
            for s in _BREAKER_STATES:
                breaker.add_metric((name, s), 1.0 if s == state else 0.0)
            in_flight.add_metric((name,), float(health.concurrency.in_use))
        yield breaker
        yield in_flight
        budgets = GaugeMetricFamily(
            f"{ns}_hedge_budget_tokens",
            "Hedges the hedge budget would allow now (its token balance).",
            labels=("budget",),
        )
        # The runtime keeps one budget per HedgeBudgetConfig; there is no public accessor yet.
        for config, budget in sorted(getattr(rt, "_budgets", {}).items(), key=lambda kv: repr(kv[0])):
            key = (
                f"max_extra_load={config.max_extra_load:g},min_per_second={config.min_per_second:g},ttl={config.ttl:g}"
            )
            value = budget.balance(now)
            budgets.add_metric((key,), value if math.isfinite(value) else math.nan)
        yield budgets


def instrument(runtime: Runtime, registry: CollectorRegistry | None = None, **options: Any) -> PrometheusSink:
    """Attach metrics to ``runtime`` in one line: a ``PrometheusSink`` appended to ``runtime.sinks``
    and its ``RuntimeCollector``, both in ``registry`` (default: a new one). ``options`` go to
    ``PrometheusSink``. Returns the sink (``sink.registry`` is what to serve)."""
    sink = PrometheusSink(registry, **options)
    runtime.sinks.append(sink)
    sink.watch(runtime)
    return sink


def exposition(registry: CollectorRegistry) -> tuple[str, bytes]:
    """``(content type, body)`` of the text exposition of ``registry``, for any web framework."""
    return CONTENT_TYPE, generate_latest(registry)


async def serve(
    registry: CollectorRegistry,
    port: int = 9464,
    *,
    host: str = "127.0.0.1",
    task_status: Any = None,
) -> None:
    """Serve ``GET /metrics`` (the exposition of ``registry``) over HTTP/1.1 until cancelled.

    An anyio task (trio or asyncio): start it in your task group, ``await tg.start(serve,
    registry, 0)`` reports the bound port. ``host`` defaults to loopback; bind a public
    address on purpose only. Other paths get 404, other methods 405.
    """
    from ._metrics_http import serve_metrics

    await serve_metrics(lambda: exposition(registry), host=host, port=port, task_status=task_status)
