"""``ProbeState``: what the daemon knows about one backend, built on ``specexec``'s ``BackendHealth``.

Probe results go into a ``BackendHealth`` exactly as live attempts do in a service: a success
records latency (and TTFT when streamed) into its rotating HDR histograms and the model id
the provider reported; a failure counts by kind and feeds the circuit breaker; a probe cut at
its timeout is a censored latency sample (the answer would have taken longer). Latency is kept
per probe query (``QueryStats``): the ``ping``'s windows are the ``BackendHealth``'s own, the
``canary``'s are separate (it is a longer question; mixed in, it would make a fast backend
look slow), while every probe's outcome feeds the counters and the breaker. On top of it:
success/failure counts over the window, the drift flag (reported model ≠ pinned), the canary
verdict, the state, and the cost. Times: ``now`` is the event loop's clock (for the windows),
``wall`` Unix time (for what is published).
"""

from __future__ import annotations

from typing import Any, Literal

from specexec import Response
from specexec._health import BackendHealth, HealthConfig, LatencyWindow
from specexec._health._rolling import RollingSums

from ._config import TargetSettings
from ._metrics import latency_buckets, ttft_buckets
from ._snapshot import (
    CANARY,
    PING,
    BackendSnapshot,
    BackendView,
    EncodedHistogram,
    QuerySnapshot,
    QueryView,
    State,
)

__all__ = ["ProbeState", "QueryStats"]

_Quantiles = tuple[float | None, float | None, float | None, float | None]  # p50, p90, p99, ttft p50
_Published = tuple[_Quantiles, EncodedHistogram, EncodedHistogram]


class QueryStats:
    """One probe query's latency and TTFT windows, its sums and counts since the first start, and its
    ``/metrics`` histogram tallies since this daemon started (``latency_buckets``, ``ttft_buckets``)."""

    def __init__(self, latency: LatencyWindow, ttft: LatencyWindow) -> None:
        self.latency = latency
        self.ttft = ttft
        self.latency_buckets = latency_buckets()
        self.ttft_buckets = ttft_buckets()
        self.latency_sum = 0.0
        self.latency_count = 0
        self.ttft_sum = 0.0
        self.ttft_count = 0

    def record(self, latency: float, ttft: float | None) -> None:
        """Count a successful probe's latency (its windows are recorded by the caller)."""
        self.latency_sum += latency
        self.latency_count += 1
        self.latency_buckets.observe(latency)
        if ttft is not None:
            self.ttft_sum += ttft
            self.ttft_count += 1
            self.ttft_buckets.observe(ttft)

    def publish(self, now: float) -> _Published:
        """Quantiles and encoded windows at ``now``."""
        self.latency.refresh(now)
        self.ttft.refresh(now)
        quantiles = (
            self.latency.quantile(0.5, now),
            self.latency.quantile(0.9, now),
            self.latency.quantile(0.99, now),
            self.ttft.quantile(0.5, now),
        )
        return quantiles, EncodedHistogram(*self.latency.encode(now)), EncodedHistogram(*self.ttft.encode(now))

    def view_fields(self, quantiles: _Quantiles, now: float) -> dict[str, Any]:
        """The ``QueryView`` fields."""
        p50, p90, p99, ttft_p50 = quantiles
        return {
            "p50": p50,
            "p90": p90,
            "p99": p99,
            "ttft_p50": ttft_p50,
            "samples": self.latency.count(now),
            "latency_sum": self.latency_sum,
            "latency_count": self.latency_count,
            "ttft_sum": self.ttft_sum,
            "ttft_count": self.ttft_count,
        }


_BUCKETS = 10  # time buckets of the success-rate window
_SUCCESSES, _FAILURES = 0, 1
_MESSAGE_CHARS = 200  # longest error message and reported model id kept (already redacted by the caller)


class ProbeState:
    """One probed backend: its ``BackendHealth`` (``health``), counters, drift, canary and state.

    ``record_success`` / ``record_failure`` / ``record_skip`` take each probe's outcome; ``view``
    and ``snapshot`` publish it; ``restore`` resumes from a snapshot entry.
    """

    def __init__(self, settings: TargetSettings, health: HealthConfig, *, provider: str = "", region: str = "") -> None:
        self.name = settings.name
        self.settings = settings
        self.provider = provider
        self.region = region
        self.health = BackendHealth(settings.name, health)
        self._health_config = health
        self.queries: dict[str, QueryStats] = {PING: QueryStats(self.health.latency, self.health.ttft)}
        """Latency per probe query: ``ping`` (the ``BackendHealth``'s windows) and ``canary`` if configured."""
        if settings.canary is not None:
            self.query_stats(CANARY)
        self._outcomes = RollingSums(health.window, _BUCKETS, 2)
        self.errors: dict[str, int] = {}
        self.consecutive_failures = 0
        self.reported_model: str | None = None
        self.canary: Literal["passed", "failed"] | None = None
        self.canary_reason: str | None = None
        self.canary_at: float | None = None
        self.last_error: str | None = None
        self.last_error_at: float | None = None
        self.last_success_at: float | None = None
        self.last_probe_at: float | None = None
        self.probes = 0
        self.skipped = 0
        self.cost = 0.0
        self.revision = 0
        self.eval_drift: tuple[str, ...] = ()
        """Why the continuous eval flags this backend (below a bar, another model), set by the daemon."""
        self._cache_key: tuple[object, ...] | None = None
        self._cache: dict[str, _Published] = {}

    def query_stats(self, query: str) -> QueryStats:
        """The ``QueryStats`` of probe query ``query`` (made on first use)."""
        stats = self.queries.get(query)
        if stats is None:
            h = self._health_config
            stats = QueryStats(
                LatencyWindow(h.window, h.slices, h.min_samples), LatencyWindow(h.window, h.slices, h.min_samples)
            )
            self.queries[query] = stats
        return stats

    # -- recording -------------------------------------------------------------------------

    @property
    def successes(self) -> int:
        """Successful probes since the first start."""
        return self.health.successes

    @property
    def failures(self) -> int:
        """Failed probes since the first start."""
        return self.health.failures

    @property
    def drift(self) -> bool:
        """Whether the last model id the provider reported differs from the pinned one."""
        pinned = self.settings.pinned_model
        return pinned is not None and self.reported_model is not None and self.reported_model != pinned

    def record_success(
        self,
        latency: float,
        response: Response,
        *,
        now: float,
        wall: float,
        cost: float = 0.0,
        canary: tuple[bool, str] | None = None,
        query: str | None = None,
    ) -> None:
        """A probe answered after ``latency`` seconds; ``canary``: ``(passed, reason)`` if it was the canary.

        ``query``: which probe query it was (default: ``canary`` when a verdict is given, else ``ping``).
        """
        query = query if query is not None else (CANARY if canary is not None else PING)
        stats = self.query_stats(query)
        if query == PING:
            self.health.on_success(latency, now, ttft=response.ttft, model=response.model)
        else:  # the breaker and counters as on_success does, the latency in this query's own windows
            self.health.successes += 1
            if response.model is not None:
                self.health.last_model = response.model
            self.health.breaker.on_success(now)
            stats.latency.record(latency, now)
            if response.ttft is not None:
                stats.ttft.record(response.ttft, now)
        stats.record(latency, response.ttft)
        self._outcomes.add(now, _SUCCESSES)
        self.consecutive_failures = 0
        if response.model:  # redacted by the caller (as error messages are), bounded here
            self.reported_model = str(response.model)[:_MESSAGE_CHARS]
        if canary is not None:
            passed, reason = canary
            self.canary = "passed" if passed else "failed"
            self.canary_reason = None if passed else reason[:_MESSAGE_CHARS]
            self.canary_at = wall
        self.last_success_at = wall
        self._finished(wall, cost)

    def record_failure(
        self,
        kind: str,
        message: str,
        *,
        now: float,
        wall: float,
        elapsed: float | None = None,
        retry_after: float | None = None,
        cost: float = 0.0,
        query: str = PING,
    ) -> None:
        """Probe query ``query`` failed with error ``kind`` (``message`` must already be free of secrets).

        A ``"timeout"`` after ``elapsed`` seconds is a censored latency sample of that query.
        """
        if query == PING:
            self.health.on_failure(kind, now, retry_after=retry_after, elapsed=elapsed)
        else:
            self.health.on_failure(kind, now, retry_after=retry_after)
            if kind == "timeout" and elapsed is not None:
                self.query_stats(query).latency.record_censored(elapsed, now)
        self._outcomes.add(now, _FAILURES)
        self.consecutive_failures += 1
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = message[:_MESSAGE_CHARS]
        self.last_error_at = wall
        self._finished(wall, cost)

    def set_eval_drift(self, reasons: tuple[str, ...]) -> bool:
        """The continuous eval's drift reasons for this backend (``()``: none); ``True`` if they changed."""
        if reasons == self.eval_drift:
            return False
        self.eval_drift = reasons
        self.revision += 1
        return True

    def drift_reasons(self) -> tuple[str, ...]:
        """Why the drift flag is up: the probes' reported model, then the eval's reasons."""
        probe = (f"probes: reported model {self.reported_model!r}, pinned {self.settings.pinned_model!r}",)
        return (*(probe if self.drift else ()), *self.eval_drift)

    def record_skip(self) -> None:
        """A probe was due but not sent (the daily budget is spent)."""
        self.skipped += 1
        self.revision += 1

    def _finished(self, wall: float, cost: float) -> None:
        self.probes += 1
        self.cost += cost
        self.last_probe_at = wall
        self.revision += 1

    # -- reading ---------------------------------------------------------------------------

    def state(self, wall: float) -> State:
        """``unknown`` / ``unhealthy`` / ``degraded`` / ``healthy`` at Unix time ``wall`` (see ``BackendView``)."""
        if self.last_probe_at is None or wall - self.last_probe_at >= self.settings.stale_after:
            return "unknown"
        if self.consecutive_failures >= self.settings.unhealthy_after:
            return "unhealthy"
        if self.canary == "failed":
            return "degraded"
        return "healthy"

    def _latency_data(self, now: float) -> dict[str, _Published]:
        """Each query's quantiles and encoded windows, recomputed only when a probe was recorded or data aged out."""
        key = (self.revision, *((name, q.latency.count(now), q.ttft.count(now)) for name, q in self.queries.items()))
        if key != self._cache_key:
            self._cache = {name: stats.publish(now) for name, stats in self.queries.items()}
            self._cache_key = key
        return self._cache

    def _fields(self, now: float, wall: float) -> dict[str, Any]:
        published = self._latency_data(now)
        ping = self.queries[PING].view_fields(published[PING][0], now)
        successes, failures = self._outcomes.totals(now)
        seen = successes + failures
        return {
            **ping,
            "provider": self.provider,
            "region": self.region,
            "model": self.settings.pinned_model,
            "state": self.state(wall),
            "circuit": self.health.breaker.state(now),
            "success_rate": successes / seen if seen else None,
            "successes": self.successes,
            "failures": self.failures,
            "errors": dict(self.errors),
            "consecutive_failures": self.consecutive_failures,
            "last_error_kind": self.health.last_error_kind,
            "last_error": self.last_error,
            "last_error_at": self.last_error_at,
            "last_success_at": self.last_success_at,
            "last_probe_at": self.last_probe_at,
            "age": max(0.0, wall - self.last_probe_at) if self.last_probe_at is not None else None,
            "reported_model": self.reported_model,
            "drift": self.drift or bool(self.eval_drift),
            "drift_reasons": self.drift_reasons(),
            "canary": self.canary,
            "canary_reason": self.canary_reason,
            "canary_at": self.canary_at,
            "probes": self.probes,
            "skipped": self.skipped,
            "cost": self.cost,
            "interval": self.settings.interval,
        }

    def view(self, now: float, wall: float) -> BackendView:
        """The ``/v1/health`` entry at loop time ``now`` / Unix time ``wall``."""
        published = self._latency_data(now)
        queries = {name: QueryView(**q.view_fields(published[name][0], now)) for name, q in self.queries.items()}
        return BackendView(**self._fields(now, wall), queries=queries)

    def snapshot(self, now: float, wall: float) -> BackendSnapshot:
        """The ``/v1/snapshot`` entry: the view plus each query's encoded latency and TTFT windows."""
        published = self._latency_data(now)
        queries = {
            name: QuerySnapshot(
                **q.view_fields(published[name][0], now), latency=published[name][1], ttft=published[name][2]
            )
            for name, q in self.queries.items()
        }
        return BackendSnapshot(**self._fields(now, wall), queries=queries)

    # -- resuming --------------------------------------------------------------------------

    def restore(self, entry: BackendSnapshot, *, now: float, histograms: bool) -> None:
        """Resume from a snapshot entry of this backend: counters, last results, canary, model.

        With ``histograms`` each query's encoded windows are merged in (as if just recorded; they
        then age out with the window); queries this backend no longer sends are dropped. The
        circuit breaker starts closed. Raises ``ValueError`` on a bad encoding (the counters
        are restored by then).
        """
        self.health.successes = entry.successes
        self.health.failures = entry.failures
        self.health.last_error_kind = entry.last_error_kind
        self.errors = dict(entry.errors)
        self.consecutive_failures = entry.consecutive_failures
        self.reported_model = entry.reported_model[:_MESSAGE_CHARS] if entry.reported_model is not None else None
        self.health.last_model = self.reported_model
        self.canary, self.canary_reason, self.canary_at = entry.canary, entry.canary_reason, entry.canary_at
        self.last_error, self.last_error_at = entry.last_error, entry.last_error_at
        self.last_success_at, self.last_probe_at = entry.last_success_at, entry.last_probe_at
        self.probes, self.skipped = entry.probes, entry.skipped
        self.cost = entry.cost if entry.cost > 0.0 else 0.0  # a file from before costs were checked may hold < 0
        self.revision += 1
        for name, saved in entry.queries.items():
            if name not in self.queries:
                continue
            stats = self.queries[name]
            stats.latency_sum, stats.latency_count = saved.latency_sum, saved.latency_count
            stats.ttft_sum, stats.ttft_count = saved.ttft_sum, saved.ttft_count
        if histograms:
            for name, saved in entry.queries.items():
                if name in self.queries:
                    stats = self.queries[name]
                    stats.latency.merge_encoded(saved.latency.observed, saved.latency.censored, now)
                    stats.ttft.merge_encoded(saved.ttft.observed, saved.ttft.censored, now)
