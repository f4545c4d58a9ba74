"""HedgeBudget (Finagle's retry budget) and FailoverThrottle (gRPC retry throttling)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specexec._health import FailoverThrottle, HedgeBudget


def run_steadily(budget: HedgeBudget, *, per_second: int, seconds: int, hedge_every_request: bool = True) -> int:
    """Deposit per request and try a hedge after each; returns the hedges allowed."""
    hedges = 0
    for i in range(per_second * seconds):
        now = i / per_second
        budget.deposit(now)
        if hedge_every_request and budget.try_withdraw(now):
            hedges += 1
    return hedges


def test_hedges_stay_within_the_extra_load() -> None:
    budget = HedgeBudget(max_extra_load=0.05, min_per_second=0.0)
    hedges = run_steadily(budget, per_second=100, seconds=60)
    assert hedges <= 0.05 * 6000
    assert hedges >= 0.045 * 6000  # and the budget is actually spent


def test_no_load_and_no_reserve_means_no_hedge() -> None:
    budget = HedgeBudget(max_extra_load=0.0, min_per_second=0.0)
    assert run_steadily(budget, per_second=100, seconds=60) == 0
    assert budget.balance(60.0) == 0.0


def test_the_reserve_allows_min_per_second() -> None:
    budget = HedgeBudget(max_extra_load=0.0, min_per_second=10.0, ttl=10.0)
    assert budget.balance(0.0) == 100.0
    hedges = 0
    for i in range(60 * 1000):  # 1000 hedge attempts a second, no requests at all
        if budget.try_withdraw(i / 1000):
            hedges += 1
    # 10 a second, plus the reserve that is there at the start.
    assert 10 * 60 <= hedges <= 10 * (60 + 10)


def test_balance_counts_deposits_and_withdrawals_in_the_ttl() -> None:
    budget = HedgeBudget(max_extra_load=0.5, min_per_second=0.0, ttl=10.0)
    for _ in range(4):
        budget.deposit(0.0)
    assert budget.balance(0.0) == 2.0
    assert budget.try_withdraw(0.0) and budget.try_withdraw(0.0)
    assert not budget.try_withdraw(0.0)
    assert budget.balance(0.0) == 0.0
    assert budget.balance(10.0) == 0.0  # all of it expired


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        HedgeBudget(max_extra_load=-0.1)
    with pytest.raises(ValueError):
        HedgeBudget(ttl=0.0)


events = st.lists(
    st.tuples(st.floats(min_value=0.0, max_value=3.0), st.sampled_from(["deposit", "hedge"])),
    min_size=1,
    max_size=300,
)


@settings(max_examples=100, deadline=None)
@given(
    events,
    st.floats(min_value=0.0, max_value=1.0),
    st.floats(min_value=0.0, max_value=5.0),
    st.floats(min_value=1.0, max_value=20.0),
)
def test_hedges_never_exceed_deposits_times_ratio_plus_reserve(
    steps: list[tuple[float, str]], ratio: float, per_second: float, ttl: float
) -> None:
    budget = HedgeBudget(max_extra_load=ratio, min_per_second=per_second, ttl=ttl)
    bucket = ttl / 10
    now = 0.0
    deposits: list[float] = []
    hedges: list[float] = []
    for gap, kind in steps:
        now += gap
        if kind == "deposit":
            budget.deposit(now)
            deposits.append(now)
        elif budget.try_withdraw(now):
            hedges.append(now)
            # Over the last ttl (less one time bucket, the resolution), the hedges fit in the
            # reserve plus the share of the requests of the last ttl.
            recent_hedges = sum(1 for t in hedges if t >= now - ttl + bucket + 1e-6)
            recent_deposits = sum(1 for t in deposits if t >= now - ttl - 1e-6)
            assert recent_hedges <= per_second * ttl + ratio * recent_deposits + 1e-6


def test_failover_throttle_allows_while_more_than_half_the_tokens_are_left() -> None:
    throttle = FailoverThrottle(max_tokens=10.0, token_ratio=0.1)
    assert throttle.allow()
    for _ in range(4):
        throttle.on_failure()
    assert throttle.allow()  # 6 > 5
    throttle.on_failure()
    assert not throttle.allow()  # 5 is not more than half
    throttle.on_success()
    assert throttle.allow()  # 5.1
    for _ in range(100):
        throttle.on_failure()
    assert throttle.tokens == 0.0  # never below zero
    assert not throttle.allow()
    for _ in range(51):
        throttle.on_success()
    assert throttle.allow()  # recovers after enough successes
    for _ in range(1000):
        throttle.on_success()
    assert throttle.tokens == 10.0  # capped


def test_default_budget_share_is_the_real_share_at_llm_request_rates() -> None:
    """Issue 9.10: at 40 req/s for a minute, every request wanting a hedge, a 5 % budget fires ≤ 7 %."""
    from specexec import HedgeBudgetConfig

    config = HedgeBudgetConfig()
    for rate in (10, 40, 100):
        budget = HedgeBudget(config.max_extra_load, config.min_per_second, config.ttl)
        fired = 0
        requests = rate * 60
        for i in range(requests):
            now = i / rate
            budget.deposit(now)
            fired += budget.try_withdraw(now)
        assert fired / requests <= 0.07, (rate, fired / requests)
        assert fired / requests >= 0.045, (rate, fired / requests)  # and the configured share is available
