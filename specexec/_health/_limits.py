"""``RateLimiter`` (GCRA, for requests and tokens per minute) and ``ConcurrencyLimit``.

These are plain clock-injected counters so that the same code serves trio and asyncio:
aiolimiter, the usual choice, is asyncio-only (it awaits asyncio futures and reads the
asyncio loop's clock), so it cannot be used under trio.
"""

from __future__ import annotations

from typing import Protocol

_EPSILON = 1e-9  # seconds of float slack at the edge of the allowance


class RateLimit(Protocol):
    """What admission needs of a rate limit (``RateLimiter``, or a shared one from ``specexec.stores``)."""

    rate_per_minute: float
    burst: float

    def wait_time(self, now: float, amount: float = 1.0) -> float:
        """Seconds until ``amount`` would be admitted (0: now; ``inf``: never)."""
        ...

    def try_acquire(self, now: float, amount: float = 1.0) -> bool:
        """Admit ``amount`` now if allowed."""
        ...


class RateLimiter:
    """A rate limit of ``rate_per_minute`` units (requests or tokens), with the generic cell rate algorithm.

    GCRA keeps one number, the theoretical arrival time (TAT): each admitted unit pushes it
    ``60 / rate_per_minute`` seconds further, and an amount is admitted when the TAT it
    would reach is at most ``burst`` units ahead of ``now``. So any period of ``t`` seconds
    admits at most ``rate_per_minute * t / 60 + burst`` units, and an idle limiter admits
    ``burst`` at once. ``burst`` defaults to ``rate_per_minute`` (at least 1): a full minute's quota, the
    way providers count a per-minute limit (and like ``aiolimiter.AsyncLimiter(rate, 60)``).
    An amount larger than ``burst`` is never admitted (its ``wait_time`` is infinite).
    """

    def __init__(self, rate_per_minute: float, burst: float | None = None) -> None:
        if not rate_per_minute > 0:
            raise ValueError(f"rate_per_minute must be positive, got {rate_per_minute!r}")
        if burst is not None and not burst > 0:
            raise ValueError(f"burst must be positive, got {burst!r}")
        self.rate_per_minute = rate_per_minute
        self.burst = max(rate_per_minute, 1.0) if burst is None else burst
        self._interval = 60.0 / rate_per_minute  # seconds per unit
        self._tat = float("-inf")

    def wait_time(self, now: float, amount: float = 1.0) -> float:
        """Seconds until ``amount`` would be admitted (0 when it would be now; ``inf`` if it exceeds ``burst``)."""
        if amount > self.burst:
            return float("inf")
        excess = max(self._tat, now) + (amount - self.burst) * self._interval - now
        return excess if excess > _EPSILON else 0.0

    def try_acquire(self, now: float, amount: float = 1.0) -> bool:
        """Admit ``amount`` units at ``now`` if the rate allows it; ``False`` (and nothing taken) otherwise."""
        if self.wait_time(now, amount) > 0:
            return False
        self._tat = max(self._tat, now) + amount * self._interval
        return True


class Concurrency(Protocol):
    """What admission needs of a concurrency limit (``ConcurrencyLimit``, or a shared one)."""

    @property
    def limit(self) -> int | None:
        """The most slots, or ``None`` when unlimited (read-only here, so a shared limit's ``int`` fits)."""
        ...

    @property
    def in_use(self) -> int:
        """Slots taken."""
        ...

    @property
    def available(self) -> int | None:
        """Slots free, or ``None`` when unlimited."""
        ...

    def try_acquire(self) -> bool:
        """Take a slot if one is free."""
        ...

    def release(self) -> None:
        """Give a slot back."""
        ...


class ConcurrencyLimit:
    """At most ``limit`` attempts in flight (``None``: no limit)."""

    def __init__(self, limit: int | None) -> None:
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
            raise ValueError(
                f"limit must be at least 1 (or None: no limit), got {limit!r}: {limit!r} would never admit"
            )
        self.limit = limit
        self._in_use = 0

    @property
    def in_use(self) -> int:
        """Slots taken."""
        return self._in_use

    @property
    def available(self) -> int | None:
        """Slots free, or ``None`` when unlimited."""
        return None if self.limit is None else self.limit - self._in_use

    def try_acquire(self) -> bool:
        """Take a slot if one is free."""
        if self.limit is not None and self._in_use >= self.limit:
            return False
        self._in_use += 1
        return True

    def release(self) -> None:
        """Give a slot back; raises ``RuntimeError`` if none is taken."""
        if self._in_use == 0:
            raise RuntimeError("ConcurrencyLimit.release() without a matching try_acquire()")
        self._in_use -= 1
