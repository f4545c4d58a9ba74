"""Shared state for many service processes: stores behind the small protocols specexec uses.

- ``RedisBudgetStore``: a ``routing.BudgetStore`` on Redis (``pip install 'specexec[redis]'``),
  so every worker of a service spends from one budget.

The in-process defaults (``routing.InMemoryBudgetStore``) need nothing; a shared store is
chosen explicitly, e.g. ``specexec.Budget(10.0, "day", store=RedisBudgetStore(url))``.
"""

from ._redis_budget import RedisBudgetStore as RedisBudgetStore

__all__ = ["RedisBudgetStore"]
