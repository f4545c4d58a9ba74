"""``ProbeState``: what the daemon knows about one backend, built on ``specexec``'s ``BackendHealth``.

Probe results go into a ``BackendHealth`` exactly as live attempts do in a service: a success
records latency (and TTFT when streamed) into its rotating HDR histograms and the model id
the provider reported; a failure counts by kind and feeds the circuit breaker; a probe cut at
its timeout is a censored latency sample (the answer would have taken longer). On top of it:
success/failure counts over the window, the drift flag (reported model ≠ pinned), the canary
verdict, the state, and the cost. Times: ``now`` is the event loop's clock (for the windows),
``wall`` Unix time (for what is published).
"""

from __future__ import annotations

from typing import Any, Literal

from specexec import Response
from specexec._health import BackendHealth, HealthConfig
from specexec._health._rolling import RollingSums

from ._config import TargetSettings
from ._snapshot import BackendSnapshot, BackendView, EncodedHistogram, State

__all__ = ["ProbeState"]

_BUCKETS = 10  # time buckets of the success-rate window
_SUCCESSES, _FAILURES = 0, 1
_MESSAGE_CHARS = 200  # longest error message kept (already redacted by the caller)


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
        self.latency_sum = 0.0
        self.latency_count = 0
        self.ttft_sum = 0.0
        self.ttft_count = 0
        self.revision = 0
        self._cache_key: tuple[int, int, int] | None = None
        self._cache: (
            tuple[tuple[float | None, float | None, float | None, float | None], EncodedHistogram, EncodedHistogram]
            | None
        ) = None

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
    ) -> None:
        """A probe answered after ``latency`` seconds; ``canary``: ``(passed, reason)`` if it was the canary."""
        self.health.on_success(latency, now, ttft=response.ttft, model=response.model)
        self._outcomes.add(now, _SUCCESSES)
        self.consecutive_failures = 0
        if response.model:
            self.reported_model = response.model
        self.latency_sum += latency
        self.latency_count += 1
        if response.ttft is not None:
            self.ttft_sum += response.ttft
            self.ttft_count += 1
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
    ) -> None:
        """A probe failed with error ``kind`` (``message`` must already be free of secrets).

        A ``"timeout"`` after ``elapsed`` seconds is a censored latency sample.
        """
        self.health.on_failure(kind, now, retry_after=retry_after, elapsed=elapsed)
        self._outcomes.add(now, _FAILURES)
        self.consecutive_failures += 1
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.last_error = message[:_MESSAGE_CHARS]
        self.last_error_at = wall
        self._finished(wall, cost)

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

    def _latency_data(
        self, now: float
    ) -> tuple[tuple[float | None, float | None, float | None, float | None], EncodedHistogram, EncodedHistogram]:
        """Quantiles and encoded windows, recomputed only when a probe was recorded or data aged out."""
        latency, ttft = self.health.latency, self.health.ttft
        key = (self.revision, latency.count(now), ttft.count(now))
        if self._cache is None or key != self._cache_key:
            latency.refresh(now)
            ttft.refresh(now)
            quantiles = (
                latency.quantile(0.5, now),
                latency.quantile(0.9, now),
                latency.quantile(0.99, now),
                ttft.quantile(0.5, now),
            )
            self._cache = (quantiles, EncodedHistogram(*latency.encode(now)), EncodedHistogram(*ttft.encode(now)))
            self._cache_key = key
        return self._cache

    def _fields(self, now: float, wall: float) -> dict[str, Any]:
        (p50, p90, p99, ttft_p50), _, _ = self._latency_data(now)
        successes, failures = self._outcomes.totals(now)
        seen = successes + failures
        return {
            "provider": self.provider,
            "region": self.region,
            "model": self.settings.pinned_model,
            "state": self.state(wall),
            "circuit": self.health.breaker.state(now),
            "p50": p50,
            "p90": p90,
            "p99": p99,
            "ttft_p50": ttft_p50,
            "samples": self.health.latency.count(now),
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
            "drift": self.drift,
            "canary": self.canary,
            "canary_reason": self.canary_reason,
            "canary_at": self.canary_at,
            "probes": self.probes,
            "skipped": self.skipped,
            "cost": self.cost,
            "interval": self.settings.interval,
            "latency_sum": self.latency_sum,
            "latency_count": self.latency_count,
            "ttft_sum": self.ttft_sum,
            "ttft_count": self.ttft_count,
        }

    def view(self, now: float, wall: float) -> BackendView:
        """The ``/v1/health`` entry at loop time ``now`` / Unix time ``wall``."""
        return BackendView(**self._fields(now, wall))

    def snapshot(self, now: float, wall: float) -> BackendSnapshot:
        """The ``/v1/snapshot`` entry: the view plus the encoded latency and TTFT windows."""
        _, latency, ttft = self._latency_data(now)
        return BackendSnapshot(**self._fields(now, wall), latency=latency, ttft=ttft)

    # -- resuming --------------------------------------------------------------------------

    def restore(self, entry: BackendSnapshot, *, now: float, histograms: bool) -> None:
        """Resume from a snapshot entry of this backend: counters, last results, canary, model.

        With ``histograms`` the encoded windows are merged in (as if just recorded; they then
        age out with the window). The circuit breaker starts closed. Raises ``ValueError`` on a
        bad encoding (the counters are restored by then).
        """
        self.health.successes = entry.successes
        self.health.failures = entry.failures
        self.health.last_error_kind = entry.last_error_kind
        self.errors = dict(entry.errors)
        self.consecutive_failures = entry.consecutive_failures
        self.reported_model = entry.reported_model
        self.health.last_model = entry.reported_model
        self.canary, self.canary_reason, self.canary_at = entry.canary, entry.canary_reason, entry.canary_at
        self.last_error, self.last_error_at = entry.last_error, entry.last_error_at
        self.last_success_at, self.last_probe_at = entry.last_success_at, entry.last_probe_at
        self.probes, self.skipped, self.cost = entry.probes, entry.skipped, entry.cost
        self.latency_sum, self.latency_count = entry.latency_sum, entry.latency_count
        self.ttft_sum, self.ttft_count = entry.ttft_sum, entry.ttft_count
        self.revision += 1
        if histograms:
            self.health.latency.merge_encoded(entry.latency.observed, entry.latency.censored, now)
            self.health.ttft.merge_encoded(entry.ttft.observed, entry.ttft.censored, now)
