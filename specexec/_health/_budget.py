"""``HedgeBudget`` (Finagle's retry budget) and ``FailoverThrottle`` (gRPC retry throttling)."""

from __future__ import annotations

from typing import Protocol

from ._rolling import RollingSums

_BUCKETS = 10  # time buckets over the budget's ttl
_DEPOSITS, _WITHDRAWALS = 0, 1
_EPSILON = 1e-9  # float slack: 20 deposits of 0.05 make one hedge


class HedgeBudgetLike(Protocol):
    """What the engine needs of a hedge budget (``HedgeBudget``, or a shared one from ``specexec.stores``)."""

    def deposit(self, now: float) -> None:
        """One request was made."""
        ...

    def balance(self, now: float) -> float:
        """Tokens available at ``now``."""
        ...

    def try_withdraw(self, now: float) -> bool:
        """Spend one token for a hedge if there is one."""
        ...


class HedgeBudget:
    """How many hedges may fire: a share of the requests plus a small steady reserve.

    Finagle's ``RetryBudget`` (a ``TokenRetryBudget`` over a ``LeakyTokenBucket``): each
    request ``deposit``s ``max_extra_load`` tokens, each hedge withdraws one; deposits and
    withdrawals both expire after about ``ttl`` seconds, and a reserve of
    ``min_per_second * ttl`` tokens lets ``min_per_second`` hedges a second through even at
    low traffic. So the balance is::

        min_per_second * ttl + max_extra_load * deposits_in_ttl - withdrawals_in_ttl

    and over any ``ttl`` the hedges stay within ``max_extra_load`` of the requests plus the
    reserve: when every backend slows down, hedging stops instead of doubling the load.
    ``max_extra_load=0`` and ``min_per_second=0`` allow no hedge at all.
    """

    def __init__(self, max_extra_load: float = 0.05, min_per_second: float = 10.0, ttl: float = 10.0) -> None:
        if max_extra_load < 0 or min_per_second < 0 or not ttl > 0:
            raise ValueError("need max_extra_load >= 0, min_per_second >= 0 and ttl > 0")
        self.max_extra_load = max_extra_load
        self.min_per_second = min_per_second
        self.ttl = ttl
        self._reserve = min_per_second * ttl
        self._sums = RollingSums(ttl, _BUCKETS, 2)

    def deposit(self, now: float) -> None:
        """One request was made: it earns ``max_extra_load`` tokens."""
        self._sums.add(now, _DEPOSITS)

    def balance(self, now: float) -> float:
        """Tokens available at ``now`` (may dip below zero when deposits expire before withdrawals)."""
        deposits, withdrawals = self._sums.totals(now)
        return self._reserve + self.max_extra_load * deposits - withdrawals

    def try_withdraw(self, now: float) -> bool:
        """Spend one token for a hedge if there is one; ``False`` (and nothing spent) otherwise."""
        if self.balance(now) < 1.0 - _EPSILON:
            return False
        self._sums.add(now, _WITHDRAWALS)
        return True


class FailoverThrottle:
    """gRPC retry throttling, for failovers after a failure.

    Starts full at ``max_tokens``; a failure takes one token (not below zero), a success gives
    back ``token_ratio`` (up to ``max_tokens``); failovers are allowed while more than half
    the tokens are left. A dead provider still fails over; a fleet that fails everywhere is
    not hammered with failovers.
    """

    def __init__(self, max_tokens: float = 10.0, token_ratio: float = 0.1) -> None:
        if not max_tokens > 0 or token_ratio < 0:
            raise ValueError("need max_tokens > 0 and token_ratio >= 0")
        self.max_tokens = max_tokens
        self.token_ratio = token_ratio
        self._tokens = max_tokens

    @property
    def tokens(self) -> float:
        """Tokens left."""
        return self._tokens

    def on_success(self) -> None:
        """A successful attempt: ``token_ratio`` tokens back, capped at ``max_tokens``."""
        if self._tokens < self.max_tokens:  # full (the usual case): nothing to add
            tokens = self._tokens + self.token_ratio
            self._tokens = tokens if tokens < self.max_tokens else self.max_tokens

    def on_failure(self) -> None:
        """A failed attempt: one token less, not below zero."""
        self._tokens = max(0.0, self._tokens - 1.0)

    def allow(self) -> bool:
        """May a failover start? While more than half the tokens are left."""
        return self._tokens > self.max_tokens / 2
