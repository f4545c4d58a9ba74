"""Shared state for many service processes: stores behind the small protocols specexec uses.

- ``RedisBudgetStore``: a ``routing.BudgetStore`` on Redis (``pip install 'specexec[redis]'``),
  so every worker of a service spends from one budget.
- ``RedisRateLimits``: every backend's rpm/tpm and concurrency limit, and every hedge budget, as one for the
  fleet, spent locally from leases synced in the background
  (``Runtime(shared_limits=RedisRateLimits(url))``); with ``breakers=True`` the circuit breakers
  too (``SharedBreaker``: one process's open breaker seen by all within two sync intervals).

The in-process defaults (``routing.InMemoryBudgetStore``) need nothing; a shared store is
chosen explicitly, e.g. ``specexec.Budget(10.0, "day", store=RedisBudgetStore(url))``.
"""

from ._redis_breakers import SharedBreaker as SharedBreaker
from ._redis_budget import RedisBudgetStore as RedisBudgetStore
from ._redis_limits import LeasedConcurrency as LeasedConcurrency
from ._redis_limits import LeasedHedgeBudget as LeasedHedgeBudget
from ._redis_limits import LeasedRateLimiter as LeasedRateLimiter
from ._redis_limits import RedisRateLimits as RedisRateLimits

__all__ = [
    "LeasedConcurrency",
    "LeasedHedgeBudget",
    "LeasedRateLimiter",
    "RedisBudgetStore",
    "RedisRateLimits",
    "SharedBreaker",
]
