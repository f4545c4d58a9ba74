"""CircuitBreaker and BreakerConfig: thresholds, cooldown, the single half-open trial, Retry-After."""

from __future__ import annotations

import msgspec
import pytest

from specexec._health import BreakerConfig, CircuitBreaker


def failures(breaker: CircuitBreaker, n: int, now: float) -> None:
    for _ in range(n):
        breaker.on_failure(now)


def test_opens_after_consecutive_failures_and_waits_the_cooldown() -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=5, cooldown=10.0))
    failures(breaker, 4, now=1.0)
    assert breaker.state(1.0) == "closed"
    assert breaker.allow(1.0)
    assert breaker.open_until is None
    breaker.on_failure(1.0)
    assert breaker.state(1.0) == "open"
    assert breaker.open_until == 11.0
    assert not breaker.allow(1.0)
    assert not breaker.allow(10.999)
    assert breaker.state(11.0) == "half_open"


def test_half_open_lets_exactly_one_trial_through_and_a_success_closes() -> None:
    breaker = CircuitBreaker(BreakerConfig(cooldown=10.0))
    failures(breaker, 5, now=0.0)
    assert not breaker.would_allow(9.0)
    assert breaker.would_allow(10.0)  # does not take the trial
    assert breaker.would_allow(10.0)
    assert breaker.allow(10.0)
    assert not breaker.would_allow(10.0)
    assert not breaker.allow(10.0)
    assert not breaker.allow(15.0)
    breaker.on_success(15.0)
    assert breaker.state(15.0) == "closed"
    assert breaker.open_until is None
    assert breaker.allow(15.0) and breaker.allow(15.0)
    failures(breaker, 4, now=15.0)  # the counts were reset on closing
    assert breaker.state(15.0) == "closed"


def test_a_failed_trial_reopens_for_another_cooldown() -> None:
    breaker = CircuitBreaker(BreakerConfig(cooldown=10.0))
    failures(breaker, 5, now=0.0)
    assert breaker.allow(10.0)
    breaker.on_failure(12.0)
    assert breaker.state(12.0) == "open"
    assert breaker.open_until == 22.0
    assert not breaker.allow(21.9)
    assert breaker.allow(22.0)


def test_a_cancelled_trial_gives_the_slot_back() -> None:
    breaker = CircuitBreaker(BreakerConfig(cooldown=10.0))
    failures(breaker, 5, now=0.0)
    assert breaker.allow(10.0)
    assert not breaker.allow(10.5)
    breaker.on_cancel(11.0)
    assert breaker.state(11.0) == "half_open"
    assert breaker.allow(11.0)
    assert not breaker.allow(11.0)


def test_retry_after_keeps_it_open_exactly_that_long() -> None:
    breaker = CircuitBreaker(BreakerConfig(cooldown=10.0))
    breaker.on_failure(100.0, retry_after=2.0)  # one 429: below every threshold
    assert breaker.state(100.0) == "open"
    assert breaker.open_until == 102.0
    assert not breaker.allow(101.999999)
    assert breaker.state(102.0) == "half_open"
    assert breaker.allow(102.0)
    breaker.on_success(102.5)
    assert breaker.state(102.5) == "closed"


def test_retry_after_on_a_failed_trial_and_while_open() -> None:
    breaker = CircuitBreaker(BreakerConfig(cooldown=10.0))
    failures(breaker, 5, now=0.0)
    breaker.on_failure(3.0, retry_after=30.0)  # a late 429 extends the open period
    assert breaker.open_until == 33.0
    breaker.on_failure(4.0, retry_after=1.0)  # never shortens it
    assert breaker.open_until == 33.0
    assert breaker.allow(33.0)
    breaker.on_failure(34.0, retry_after=2.0)
    assert breaker.open_until == 36.0


def test_a_success_resets_the_consecutive_count() -> None:
    breaker = CircuitBreaker(BreakerConfig(failure_threshold=5, min_requests=1000))
    for i in range(100):
        failures(breaker, 4, now=float(i))
        breaker.on_success(float(i))
    assert breaker.state(100.0) == "closed"


def test_opens_on_the_error_rate_once_enough_requests_were_seen() -> None:
    config = BreakerConfig(failure_threshold=100, error_rate=0.5, window=30.0, min_requests=20)
    breaker = CircuitBreaker(config)
    for _ in range(9):
        breaker.on_success(1.0)
        breaker.on_failure(1.0)
    breaker.on_success(1.0)
    assert breaker.state(1.0) == "closed"  # 9 failures of 19: too few requests, and < 50 %
    breaker.on_failure(1.0)  # 10 of 20
    assert breaker.state(1.0) == "open"


def test_error_rate_forgets_old_outcomes() -> None:
    config = BreakerConfig(failure_threshold=100, error_rate=0.5, window=30.0, min_requests=20)
    breaker = CircuitBreaker(config)
    for _ in range(40):
        breaker.on_success(0.0)
    failures(breaker, 15, now=0.0)
    assert breaker.state(0.0) == "closed"
    failures(breaker, 19, now=40.0)
    assert breaker.state(40.0) == "closed"  # 19 requests in the window: too few to judge
    breaker.on_failure(40.0)
    # 20 failures of 20 in the window; with the old outcomes it would be 35 of 75.
    assert breaker.state(40.0) == "open"


def test_config_defaults_and_validation() -> None:
    config = BreakerConfig()
    assert (config.failure_threshold, config.error_rate, config.window, config.min_requests, config.cooldown) == (
        5,
        0.5,
        30.0,
        20,
        10.0,
    )
    assert msgspec.json.decode(b'{"cooldown": 2.5}', type=BreakerConfig).cooldown == 2.5
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"cooldwn": 2.5}', type=BreakerConfig)
    with pytest.raises(msgspec.ValidationError, match="error_rate"):
        msgspec.json.decode(b'{"error_rate": 1.5}', type=BreakerConfig)
    for bad in ({"failure_threshold": 0}, {"window": 0.0}, {"min_requests": 0}, {"cooldown": -1.0}):
        with pytest.raises(ValueError):
            BreakerConfig(**bad)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"failure_threshold": 0}, "$.failure_threshold"),
        ({"failure_threshold": 2.5}, "$.failure_threshold"),
        ({"error_rate": float("nan")}, "$.error_rate"),
        ({"error_rate": 0.0}, "$.error_rate"),
        ({"window": float("nan")}, "$.window"),
        ({"window": float("inf")}, "$.window"),
        ({"min_requests": 0}, "$.min_requests"),
        ({"cooldown": float("nan")}, "$.cooldown"),
        ({"cooldown": float("inf")}, "$.cooldown"),
        ({"cooldown": -1.0}, "$.cooldown"),
    ],
    ids=repr,
)
def test_breaker_config_rejects_nan_inf_and_out_of_range_naming_the_field(kwargs: dict[str, float], path: str) -> None:
    from specexec import PolicyError

    with pytest.raises(PolicyError) as info:
        BreakerConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.path == path and path[2:] in str(info.value)
