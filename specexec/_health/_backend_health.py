"""``BackendHealth``: everything a runtime knows about one backend's health, in one object."""

from __future__ import annotations

import logging
import math
from collections.abc import Callable

import msgspec

from .._checks import check_int, check_number
from .._errors import PolicyError
from ._breaker import BreakerConfig, CircuitBreaker
from ._delay import HedgeDelay
from ._latency import LatencyWindow
from ._limits import Concurrency, ConcurrencyLimit, RateLimit, RateLimiter

_log = logging.getLogger("specexec")
_NEUTRAL_KINDS = frozenset({"context_window"})
"""Failures that are about the request, not the backend's health: the breaker does not count them."""

SHIFT_Z = 4.0
"""Standard errors by which the recent window's share below the long window's median must
leave one half for a shift (``BackendHealth.hedge_delay``)."""
SHIFT_MIN_EFFECT = 0.1
"""…and the least it must leave it by (a drift of a few percent is no brownout)."""
SHIFT_MIN_SAMPLES = 50
"""Samples the recent window needs before it can call a shift."""
LONG_MARGIN = 0.01
"""How far (in CDF) below the quantile the long window's lower confidence bound may sit for the
adaptive delay (``LatencyWindow.hedge_quantile(max_margin=)``). Greenwood's bound over few
samples falls far below — the p87 for a p95 at 20 samples, the p93.9 at 1,000 — so a young
window hedged 2-3x the intended share of requests in its first seconds; for a p95, past ~1,300
samples the cap no longer binds. The recent window keeps the full margin: it speaks only during a
shift, when hedging early is what re-learning needs (capped too, a ×5 brownout was re-learnt
worse: p99 0.53× single after it on one seed of ten, against ≤ 0.29×)."""
RECENT_SLICES = 2
"""Slices of the recent window (``HealthConfig.short_window``): it holds the last half to whole of it."""
_MAX_SAMPLES = 10**9  # a warm-up gate no window can ever reach is a typo, not a setting
MAX_SLICES = 60
"""The most rotating slices a latency window may have. A slice that was recorded into holds
an observed and a censored HDR histogram (≈ 14 KB each at 1 µs–1 h, 2 significant figures,
4-byte counts) in each of a backend's three windows (latency, probe latency, TTFT): up to
≈ 85 KB per slice per busy backend, so 60 busy slices take ≈ 5 MB per backend and
``slices = 1000000`` could take 85 GB. Histograms are allocated only for slices recorded
into (an idle backend holds none), but a busy, streaming, probed backend fills every slice.
(A backend hedged on an adaptive delay also keeps a short recent window of two slices.)"""


class HealthConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """How a backend's health is tracked.

    Latency histograms cover the last ``window`` seconds in ``slices`` rotating slices and
    give quantiles once they hold ``min_samples`` samples; probe results age out after
    ``probe_max_age`` seconds and count once they hold ``probe_min_samples`` (probes are
    few — one a minute by default — and uncensored, so fewer are trusted); ``breaker`` says
    when the backend is taken out (a backend's own ``breaker`` overrides it). A provider's
    ``Retry-After`` is trusted up to ``max_retry_after`` seconds; refused credentials
    (``AuthError``) take the backend out for ``auth_cooldown`` seconds. An adaptive hedge
    delay also watches the last ``short_window`` seconds, to notice a shift and re-learn fast.
    """

    window: float = 60.0
    short_window: float = 10.0
    slices: int = 6
    min_samples: int = 20
    breaker: BreakerConfig = BreakerConfig()
    probe_max_age: float = 180.0
    probe_min_samples: int = 3
    max_retry_after: float = 300.0
    auth_cooldown: float = 600.0

    def __post_init__(self) -> None:
        check_number(self.window, "$.window", gt=0.0, unit="seconds")
        check_number(self.short_window, "$.short_window", gt=0.0, unit="seconds")
        check_int(self.slices, "$.slices", ge=1)
        if self.slices > MAX_SLICES:
            raise PolicyError(
                f"slices must be at most {MAX_SLICES}, got {self.slices}: each slice of a busy backend keeps up to "
                f"six HDR latency histograms (≈ 85 KB), so {MAX_SLICES} already take ≈ 5 MB per backend; "
                "fewer, longer slices age data out just as well",
                path="$.slices",
            )
        check_int(self.min_samples, "$.min_samples", ge=1, le=_MAX_SAMPLES)
        check_number(self.probe_max_age, "$.probe_max_age", gt=0.0, unit="seconds")
        check_int(self.probe_min_samples, "$.probe_min_samples", ge=1, le=_MAX_SAMPLES)
        check_number(self.max_retry_after, "$.max_retry_after", ge=0.0, unit="seconds")
        check_number(self.auth_cooldown, "$.auth_cooldown", ge=0.0, unit="seconds")


class BackendHealth:
    """One backend's health in one runtime: latency, breaker, rate and concurrency limits.

    Fed passively by every attempt (``on_success``, ``on_failure``, ``on_rejected``,
    ``on_cancelled``) and actively by the probe daemon (``probe_latency``). Failures are
    never recorded as latency: a fast error must not pull the hedge delay down (Finagle
    excludes them too). ``acquire``/``release`` bracket an attempt; the caller releases the
    concurrency slot when the attempt ends, whatever its outcome.
    """

    def __init__(
        self,
        name: str,
        config: HealthConfig | None = None,
        rpm: float | None = None,
        tpm: float | None = None,
        max_concurrency: int | None = None,
        breaker: BreakerConfig | None = None,
        rate_limiter: Callable[[str, float], RateLimit] | None = None,
        concurrency: Concurrency | None = None,
        circuit: CircuitBreaker | None = None,
    ) -> None:
        self.name = name
        self.config = config = config if config is not None else HealthConfig()
        self.latency = LatencyWindow(config.window, config.slices, config.min_samples)
        # Made on first use (most backends never stream, many have no probe feed): see the properties.
        self._probe_latency: LatencyWindow | None = None
        self._ttft: LatencyWindow | None = None
        # Made on the first adaptive hedge delay asked for (see hedge_delay).
        self._recent: LatencyWindow | None = None
        self._delays: dict[float, tuple[HedgeDelay, list[float]]] = {}  # q: (estimator, [refreshes seen, warm since])
        # `circuit`: a breaker made elsewhere (e.g. shared by many processes); else this backend's own
        self.breaker = (
            circuit if circuit is not None else CircuitBreaker(breaker if breaker is not None else config.breaker)
        )
        make: Callable[[str, float], RateLimit] = rate_limiter or (lambda kind, rate: RateLimiter(rate))
        self.requests = make("rpm", rpm) if rpm is not None else None
        self.tokens = make("tpm", tpm) if tpm is not None else None
        self.concurrency: Concurrency = concurrency if concurrency is not None else ConcurrencyLimit(max_concurrency)
        self.last_model: str | None = None
        self.last_error_kind: str | None = None
        self.last_error_at: float | None = None
        self.successes = 0
        self.failures = 0
        self.rejections = 0
        self.cancellations = 0

    @property
    def probe_latency(self) -> LatencyWindow:
        """The probe daemon's latency measurements (a feed replaces the window; made on first use)."""
        window = self._probe_latency
        if window is None:
            config = self.config
            window = self._probe_latency = LatencyWindow(config.probe_max_age, config.slices, config.probe_min_samples)
        return window

    @probe_latency.setter
    def probe_latency(self, window: LatencyWindow) -> None:
        self._probe_latency = window

    @property
    def ttft(self) -> LatencyWindow:
        """Time to first token of live streams (made on first use: a backend that never streams has none)."""
        window = self._ttft
        if window is None:
            config = self.config
            window = self._ttft = LatencyWindow(config.window, config.slices, config.min_samples)
        return window

    @ttft.setter
    def ttft(self, window: LatencyWindow) -> None:
        self._ttft = window

    # -- admission -------------------------------------------------------------------------

    def unavailable_reason(self, now: float, tokens: int = 0) -> str | None:
        """Why an attempt of ``tokens`` tokens could not start now, or ``None``; consumes nothing.

        One of ``"circuit open"``, ``"rate limit"``, ``"token limit"``,
        ``"at concurrency limit"`` (checked in that order). A half-open breaker whose single
        trial is out reads ``"circuit open"``.
        """
        if not self.breaker.would_allow(now):
            return "circuit open (auth)" if self.breaker.open_reason == "auth" else "circuit open"
        return self._limits_reason(now, tokens)

    def never_admits(self, tokens: int) -> str | None:
        """Why an attempt of ``tokens`` tokens can never start here (no wait would help), or ``None``."""
        if self.tokens is not None and tokens > self.tokens.burst:
            return (
                f"token limit can never admit {tokens} tokens (tpm={self.tokens.rate_per_minute:g}): "
                "raise the limit or lower max_tokens"
            )
        if self.concurrency.limit == 0:
            return "max_concurrency=0 can never admit an attempt"
        return None

    def acquire(self, now: float, tokens: int = 0, *, ignore_breaker: bool = False) -> str | None:
        """Take what an attempt needs (breaker trial, rate, tokens, a concurrency slot) or nothing.

        Returns the reason it cannot start (then nothing is taken), else ``None``; call
        ``release`` when the attempt ends. ``ignore_breaker`` (panic mode) admits past an
        open breaker and takes no trial slot.
        """
        if not self.breaker._open and self.requests is None and self.tokens is None:
            # the common case, kept cheap: closed breaker, no rate limits, maybe a concurrency cap
            return None if self.concurrency.try_acquire() else "at concurrency limit"
        reason = self.unavailable_reason(now, tokens)
        if reason is not None and not (ignore_breaker and reason.startswith("circuit open")):
            return reason
        if ignore_breaker:
            reason = self._limits_reason(now, tokens)
            if reason is not None:
                return reason
        # Each check above passed at this same `now`, so each of these succeeds.
        if not ignore_breaker:
            self.breaker.allow(now)
        if self.requests is not None:
            self.requests.try_acquire(now)
        if tokens > 0 and self.tokens is not None:
            self.tokens.try_acquire(now, tokens)
        self.concurrency.try_acquire()
        return None

    def _limits_reason(self, now: float, tokens: int) -> str | None:
        """Why the rate, token or concurrency limit refuses an attempt now, or ``None``."""
        if self.requests is not None and self.requests.wait_time(now) > 0:
            return "rate limit"
        if tokens > 0 and self.tokens is not None and self.tokens.wait_time(now, tokens) > 0:
            return "token limit"
        if self.concurrency.available == 0:
            return "at concurrency limit"
        return None

    def release(self) -> None:
        """Give back the concurrency slot taken by ``acquire``."""
        self.concurrency.release()

    # -- outcomes --------------------------------------------------------------------------

    def on_success(self, latency: float, now: float, ttft: float | None = None, model: str | None = None) -> None:
        """An accepted-or-acceptable response after ``latency`` seconds (``ttft`` when streamed)."""
        self.successes += 1
        self.latency.record(latency, now)
        if self._recent is not None:
            self._recent.record(latency, now)
        if ttft is not None:
            self.ttft.record(ttft, now)
        if model is not None:
            self.last_model = model
        self.breaker.on_success(now)

    def on_failure(self, kind: str, now: float, retry_after: float | None = None, elapsed: float | None = None) -> None:
        """A failed attempt (``kind``: the error kind); ``retry_after`` from a 429.

        A fast failure is not a latency sample (it would pull the hedge delay down); a
        ``"timeout"`` after ``elapsed`` seconds is a censored one (the answer would have taken
        longer than that).
        """
        if kind == "timeout" and elapsed is not None:
            self.latency.record_censored(elapsed, now)
            if self._recent is not None:
                self._recent.record_censored(elapsed, now)
        self.failures += 1
        self.last_error_kind = kind
        self.last_error_at = now
        if kind in _NEUTRAL_KINDS:
            return
        if kind == "auth":
            was_auth = self.breaker.open_reason == "auth" and self.breaker.state(now) == "open"
            self.breaker.trip(now, self.config.auth_cooldown, "auth")
            if not was_auth:
                _log.warning(
                    "specexec: backend %s refused its credentials (auth); taken out for %gs — check its API key",
                    self.name,
                    self.config.auth_cooldown,
                )
            return
        if retry_after is not None:  # never trusted blindly: NaN is no answer, anything past the cap is the cap
            retry_after = None if math.isnan(retry_after) else min(max(retry_after, 0.0), self.config.max_retry_after)
        self.breaker.on_failure(now, retry_after)

    def on_rejected(self, latency: float, now: float) -> None:
        """A response a verifier rejected: the backend did answer, so a success for the breaker.

        Not a latency sample: like fast failures, rejections must not pull the hedge delay
        down (Finagle excludes both); a quick refusal says nothing of a real answer's latency.
        """
        self.rejections += 1
        self.breaker.on_success(now)

    def on_first_token(self, ttft: float, now: float) -> None:
        """A stream's first token after ``ttft`` seconds (a TTFT sample, whatever comes next)."""
        self.ttft.record(ttft, now)

    def on_no_first_token(self, elapsed: float, now: float) -> None:
        """A stream cancelled or failed before its first token: a censored TTFT sample."""
        self.ttft.record_censored(elapsed, now)

    def on_unverified(self, now: float) -> None:
        """An answer that arrived but was cancelled before its verdict: the backend did answer
        (a success for the breaker, which gives a half-open trial back); not a latency sample."""
        self.breaker.on_success(now)

    def on_cancelled(self, elapsed: float, now: float) -> None:
        """An attempt cancelled after ``elapsed`` seconds (a race loser): a censored sample, no verdict."""
        self.cancellations += 1
        self.latency.record_censored(elapsed, now)
        if self._recent is not None:
            self._recent.record_censored(elapsed, now)
        if self.breaker._open:  # closed (the common case, a race's every loser): nothing to give back
            self.breaker.on_cancel(now)

    # -- latency estimates -----------------------------------------------------------------

    def quantile(self, q: float, now: float) -> float | None:
        """The ``q``-quantile of this backend's latency in seconds, or ``None`` when nothing is known.

        Live traffic when its window holds at least ``min_samples`` samples; otherwise the
        probe daemon's measurements when they hold that many (they age out after
        ``probe_max_age``); otherwise ``None``. The two are not mixed: probes measure a small
        fixed request, live traffic the real ones.
        """
        live = self.latency.quantile(q, now)
        if live is not None:
            return live
        probes = self._probe_latency  # none made yet: nothing known (and nothing allocated to say so)
        return probes.quantile(q, now) if probes is not None else None

    def hedge_delay(self, q: float, now: float) -> float | None:
        """The adaptive hedge delay at the ``q``-quantile in seconds, or ``None`` when nothing is known.

        From live traffic: the ``q``-quantile of the latency window smoothed by a
        ``HedgeDelay`` (a running median over refreshes, a bounded step), and, while the
        recent ``short_window`` says the latency shifted, the recent window's quantile. O(1)
        between refreshes of the window. Without enough live samples, the probes' quantile
        (as ``quantile``).
        """
        window = self.latency
        raw = window.hedge_quantile(q, now, LONG_MARGIN)
        entry = self._delays.get(q)
        if raw is None:
            if entry is not None:
                entry[0].reset()
            probes = self._probe_latency
            return probes.quantile(q, now) if probes is not None else None
        if entry is None:
            entry = self._delays[q] = (HedgeDelay(), [-1, now])
            if self._recent is None:
                config = self.config
                self._recent = LatencyWindow(config.short_window, RECENT_SLICES, config.min_samples)
        estimator, seen = entry
        if estimator.value is None:
            seen[1] = now  # warm again (or for the first time)
        elif seen[0] == window.refreshes:
            return estimator.value
        seen[0] = window.refreshes
        recent = self._recent_quantile(q, now)
        if recent is not None:
            return estimator.update(recent, shifted=True)
        # A window younger than its length trends (its confidence bound tightens as samples
        # come in): followed like a shift, by the median of the last few estimates.
        return estimator.update(raw, shifted=now - seen[1] < window.window)

    def _recent_quantile(self, q: float, now: float) -> float | None:
        """The recent window's ``q``-quantile if the latency shifted (its share of samples below
        the long window's median is off one half by more than noise and ``SHIFT_MIN_EFFECT``), else ``None``."""
        recent = self._recent
        if recent is None:
            return None
        n = recent.count(now)
        if n < SHIFT_MIN_SAMPLES:
            return None
        median = self.latency.quantile(0.5, now)
        below = recent.cdf(median, now) if median is not None else None
        if below is None:
            return None
        off = abs(below - 0.5)
        if off < SHIFT_MIN_EFFECT or off * 2.0 * math.sqrt(n) < SHIFT_Z:
            return None
        return recent.hedge_quantile(q, now)

    def ttft_quantile(self, q: float, now: float) -> float | None:
        """The ``q``-quantile of the time to first token (live streams), or ``None`` when unknown."""
        ttft = self._ttft
        return ttft.quantile(q, now) if ttft is not None else None

    def predicted_latency(self, now: float) -> float | None:
        """The median latency (``quantile(0.5, now)``), or ``None`` when nothing is known."""
        return self.quantile(0.5, now)
