"""``CircuitBreaker``: keeps a failing backend out for a cooldown, then lets one trial through."""

from __future__ import annotations

from typing import Literal

import msgspec

from .._checks import check_int, check_number
from ._rolling import RollingSums

BreakerState = Literal["closed", "open", "half_open"]

_BUCKETS = 10  # time buckets of the error-rate window
_SUCCESSES, _FAILURES = 0, 1


class BreakerConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """When a circuit breaker opens and for how long.

    It opens after ``failure_threshold`` consecutive failures, or when at least
    ``min_requests`` outcomes were seen in the last ``window`` seconds and the share of
    failures among them reached ``error_rate``. It then stays open ``cooldown`` seconds (or
    exactly the ``Retry-After`` a rate-limited response gave), then lets one trial through.
    """

    failure_threshold: int = 5
    error_rate: float = 0.5
    window: float = 30.0
    min_requests: int = 20
    cooldown: float = 10.0

    def __post_init__(self) -> None:
        check_int(self.failure_threshold, "$.failure_threshold", ge=1)
        check_number(self.error_rate, "$.error_rate", gt=0.0, le=1.0, unit="a share of the outcomes")
        check_number(self.window, "$.window", gt=0.0, unit="seconds")
        check_int(self.min_requests, "$.min_requests", ge=1)
        check_number(self.cooldown, "$.cooldown", ge=0.0, unit="seconds")


class CircuitBreaker:
    """A circuit breaker: ``closed`` → ``open`` (until a time) → ``half_open`` (one trial) → ``closed``.

    ``state`` is derived from the clock: an open breaker whose time is up reads
    ``half_open``; the first ``allow`` then takes the single trial slot, which is given back
    by the trial's outcome (``on_success`` closes, ``on_failure`` reopens) or, without a
    verdict, by ``on_cancel``.
    """

    def __init__(self, config: BreakerConfig | None = None) -> None:
        self.config = config if config is not None else BreakerConfig()
        self._outcomes = RollingSums(self.config.window, _BUCKETS, 2)
        self._consecutive_failures = 0
        self._open = False
        self._open_until = 0.0
        self._trial_out = False
        self.open_reason: str | None = None
        """Why the breaker is open: ``"failures"``, ``"retry-after"`` or ``"auth"`` (``None``: closed)."""

    @property
    def open_until(self) -> float | None:
        """When the open period ends (it may have passed: half-open), or ``None`` when closed."""
        return self._open_until if self._open else None

    def state(self, now: float) -> BreakerState:
        """``"closed"``, ``"open"`` or ``"half_open"`` at ``now``."""
        if not self._open:
            return "closed"
        return "open" if now < self._open_until else "half_open"

    def would_allow(self, now: float) -> bool:
        """Whether ``allow(now)`` would let an attempt through, without taking the trial slot."""
        state = self.state(now)
        return state == "closed" or (state == "half_open" and not self._trial_out)

    def allow(self, now: float) -> bool:
        """May an attempt start now? In half-open, yes exactly once until the trial is settled."""
        state = self.state(now)
        if state == "closed":
            return True
        if state == "open" or self._trial_out:
            return False
        self._trial_out = True
        return True

    def on_success(self, now: float) -> None:
        """A successful attempt: resets the consecutive count; closes a half-open breaker."""
        self._consecutive_failures = 0
        if not self._open:
            self._outcomes.add(now, _SUCCESSES)
        elif self.state(now) == "half_open":
            self._close()

    def on_failure(self, now: float, retry_after: float | None = None) -> None:
        """A failed attempt; ``retry_after`` (a 429's Retry-After) opens until exactly ``now + retry_after``.

        Closed: opens when the consecutive or error-rate threshold is reached. Half-open:
        reopens. Open: a ``retry_after`` may extend the open period, nothing else changes.
        """
        self._consecutive_failures += 1
        state = self.state(now)
        if state == "open":
            if retry_after is not None:
                self._open_until = max(self._open_until, now + max(retry_after, 0.0))
            return
        if state == "closed":
            self._outcomes.add(now, _FAILURES)
            if retry_after is None and not self._thresholds_reached(now):
                return
        self._trip(now, retry_after)

    def on_cancel(self, now: float) -> None:
        """An attempt was cancelled without a verdict: gives the half-open trial slot back."""
        if self._open and self.state(now) == "half_open":  # closed (the common case): nothing to give back
            self._trial_out = False

    def _thresholds_reached(self, now: float) -> bool:
        if self._consecutive_failures >= self.config.failure_threshold:
            return True
        successes, failures = self._outcomes.totals(now)
        seen = successes + failures
        return seen >= self.config.min_requests and failures >= self.config.error_rate * seen

    def trip(self, now: float, duration: float, reason: str) -> None:
        """Open now for ``duration`` seconds (or longer, if already open for longer), for ``reason``."""
        until = now + max(duration, 0.0)
        if self._open and self.state(now) == "open" and self._open_until >= until:
            return
        self._open = True
        self._trial_out = False
        self._open_until = until
        self.open_reason = reason

    def _trip(self, now: float, retry_after: float | None) -> None:
        if retry_after is None:
            self.trip(now, self.config.cooldown, "failures")
        else:
            self.trip(now, retry_after, "retry-after")

    def _close(self) -> None:
        self._open = False
        self.open_reason = None
        self._trial_out = False
        self._consecutive_failures = 0
        self._outcomes.clear()
