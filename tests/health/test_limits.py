"""RateLimiter (GCRA) and ConcurrencyLimit."""

from __future__ import annotations

import math

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from specexec._health import ConcurrencyLimit, RateLimiter


def test_sixty_per_minute_without_burst_is_one_a_second() -> None:
    limiter = RateLimiter(60, burst=1)
    assert limiter.wait_time(0.0) == 0.0
    assert limiter.try_acquire(0.0)
    assert not limiter.try_acquire(0.0)
    assert limiter.wait_time(0.0) == 1.0
    assert limiter.wait_time(0.25) == 0.75
    assert not limiter.try_acquire(0.999)
    assert limiter.try_acquire(1.0)
    for second in range(2, 100):
        assert limiter.try_acquire(float(second))
        assert not limiter.try_acquire(second + 0.5)


def test_default_burst_is_a_minute_of_quota() -> None:
    limiter = RateLimiter(60)
    assert all(limiter.try_acquire(0.0) for _ in range(60))
    assert not limiter.try_acquire(0.0)
    assert limiter.wait_time(0.0) == 1.0
    assert limiter.try_acquire(1.0)
    assert not limiter.try_acquire(1.0)
    # After a minute idle the whole burst is back.
    assert all(limiter.try_acquire(61.0) for _ in range(60))


def test_burst_semantics() -> None:
    limiter = RateLimiter(60, burst=3)
    assert [limiter.try_acquire(0.0) for _ in range(4)] == [True, True, True, False]
    assert limiter.wait_time(0.0) == 1.0
    assert limiter.wait_time(0.0, amount=2) == 2.0
    assert limiter.try_acquire(2.0, amount=2)


def test_tokens_per_minute() -> None:
    limiter = RateLimiter(6000)  # 100 tokens a second, a minute's worth at once
    assert limiter.try_acquire(0.0, amount=6000)
    assert limiter.wait_time(0.0, amount=100) == 1.0
    assert not limiter.try_acquire(0.5, amount=100)
    assert limiter.try_acquire(1.0, amount=100)
    assert limiter.wait_time(1.0, amount=7000) == math.inf  # more than the burst: never
    assert not limiter.try_acquire(1000.0, amount=7000)


def test_a_refused_attempt_takes_nothing() -> None:
    limiter = RateLimiter(60, burst=1)
    assert limiter.try_acquire(0.0)
    for _ in range(10):
        assert not limiter.try_acquire(0.5)
    assert limiter.try_acquire(1.0)


def test_arguments_are_checked() -> None:
    with pytest.raises(ValueError):
        RateLimiter(0)
    with pytest.raises(ValueError):
        RateLimiter(60, burst=0)


@settings(max_examples=100, deadline=None)
@given(
    st.floats(min_value=1.0, max_value=10_000.0),
    st.one_of(st.none(), st.floats(min_value=1.0, max_value=100.0)),
    st.lists(st.tuples(st.floats(min_value=0.0, max_value=2.0), st.floats(min_value=0.1, max_value=5.0)), max_size=60),
)
def test_gcra_never_admits_more_than_rate_times_time_plus_burst(
    rate: float, burst: float | None, steps: list[tuple[float, float]]
) -> None:
    limiter = RateLimiter(rate, burst)
    now = 0.0
    admitted: list[tuple[float, float]] = []
    for gap, amount in steps:
        now += gap
        wait = limiter.wait_time(now, amount)
        if limiter.try_acquire(now, amount):
            assert wait == 0.0
            admitted.append((now, amount))
        elif wait != math.inf:
            assert wait > 0.0
            assert limiter.wait_time(now + wait, amount) == 0.0  # wait_time is enough
    for i, (start, _) in enumerate(admitted):
        for j in range(i, len(admitted)):
            end = admitted[j][0]
            total = sum(amount for _, amount in admitted[i : j + 1])
            assert total <= rate * (end - start) / 60 + limiter.burst + 1e-6


def test_concurrency_limit() -> None:
    limit = ConcurrencyLimit(2)
    assert limit.available == 2 and limit.in_use == 0
    assert limit.try_acquire() and limit.try_acquire()
    assert not limit.try_acquire()
    assert limit.available == 0 and limit.in_use == 2
    limit.release()
    assert limit.available == 1
    assert limit.try_acquire()
    limit.release()
    limit.release()
    with pytest.raises(RuntimeError):
        limit.release()


def test_no_concurrency_limit() -> None:
    limit = ConcurrencyLimit(None)
    assert all(limit.try_acquire() for _ in range(1000))
    assert limit.in_use == 1000
    assert limit.available is None
