"""BackendHealth: admission (breaker, rate, tokens, concurrency), outcomes, live vs probe latency."""

from __future__ import annotations

import msgspec
import pytest

from specexec._health import BackendHealth, BreakerConfig, HealthConfig


def succeed(health: BackendHealth, latency: float, n: int, now: float) -> None:
    for _ in range(n):
        health.on_success(latency, now)


def test_an_unconstrained_backend_is_available() -> None:
    health = BackendHealth("a", HealthConfig())
    assert health.unavailable_reason(0.0, tokens=10_000) is None
    assert health.acquire(0.0, tokens=10_000) is None
    health.release()


def test_concurrency_limit_and_release() -> None:
    health = BackendHealth("a", HealthConfig(), max_concurrency=1)
    assert health.acquire(0.0) is None
    assert health.unavailable_reason(0.0) == "at concurrency limit"
    assert health.acquire(0.0) == "at concurrency limit"
    health.release()
    assert health.acquire(0.0) is None


def test_a_refused_acquire_consumes_nothing() -> None:
    health = BackendHealth("a", HealthConfig(), rpm=2, max_concurrency=1)
    assert health.acquire(0.0) is None
    for _ in range(5):
        assert health.acquire(0.0) == "at concurrency limit"
    health.release()
    assert health.acquire(0.0) is None  # the refusals did not spend the rate limit
    health.release()
    assert health.acquire(0.0) == "rate limit"
    assert health.acquire(30.0) is None  # 2 a minute: one every 30 s


def test_token_limit() -> None:
    health = BackendHealth("a", HealthConfig(), tpm=1000)
    assert health.acquire(0.0, tokens=800) is None
    assert health.unavailable_reason(0.0, tokens=300) == "token limit"
    assert health.unavailable_reason(0.0, tokens=200) is None  # checking took nothing
    assert health.acquire(0.0, tokens=300) == "token limit"
    assert health.acquire(6.0, tokens=300) is None  # 100 tokens came back in 6 s


def test_circuit_open_then_one_trial() -> None:
    health = BackendHealth("a", HealthConfig(breaker=BreakerConfig(cooldown=10.0)))
    for _ in range(5):
        health.on_failure("unavailable", 1.0)
    assert health.unavailable_reason(1.0) == "circuit open"
    assert health.acquire(1.0) == "circuit open"
    assert health.unavailable_reason(11.0) is None  # checking does not take the trial
    assert health.unavailable_reason(11.0) is None
    assert health.acquire(11.0) is None  # the trial
    assert health.acquire(11.0) == "circuit open"
    health.on_cancelled(0.5, 11.5)  # the trial lost a race: no verdict, slot back
    health.release()
    assert health.acquire(12.0) is None
    health.on_success(0.2, 12.2)
    health.release()
    assert health.breaker.state(12.2) == "closed"


def test_a_rate_limited_half_open_backend_keeps_its_trial() -> None:
    health = BackendHealth("a", HealthConfig(breaker=BreakerConfig(cooldown=10.0)), rpm=1)
    assert health.acquire(0.0) is None
    health.release()
    for _ in range(5):
        health.on_failure("timeout", 1.0)
    assert health.acquire(20.0) == "rate limit"  # one a minute: the breaker trial is not taken
    assert health.breaker.would_allow(20.0)
    assert health.acquire(60.0) is None


def test_retry_after_takes_the_backend_out_exactly_that_long() -> None:
    health = BackendHealth("a", HealthConfig())
    health.on_failure("rate_limited", 5.0, retry_after=2.0)
    assert health.unavailable_reason(6.999) == "circuit open"
    assert health.unavailable_reason(7.0) is None
    assert health.last_error_kind == "rate_limited"
    assert health.last_error_at == 5.0


def test_outcomes_are_counted_and_recorded() -> None:
    health = BackendHealth("a", HealthConfig())
    health.on_success(0.5, 1.0, ttft=0.1, model="gpt-x-2024-07-18")
    health.on_rejected(0.4, 1.0)
    health.on_failure("bad_response", 1.0)
    health.on_cancelled(0.3, 1.0)
    health.on_failure("timeout", 1.0, elapsed=2.0)
    assert (health.successes, health.rejections, health.failures, health.cancellations) == (1, 1, 2, 1)
    assert health.last_model == "gpt-x-2024-07-18"
    # success, censored cancellation, censored timeout; neither the fast failure nor the rejection
    assert health.latency.count(1.0) == 3
    assert health.ttft.count(1.0) == 1


def test_a_rejection_is_a_success_for_the_breaker() -> None:
    health = BackendHealth("a", HealthConfig())
    for _ in range(4):
        health.on_failure("unavailable", 0.0)
    health.on_rejected(0.2, 0.0)
    for _ in range(4):
        health.on_failure("unavailable", 0.0)
    assert health.breaker.state(0.0) == "closed"


def test_fast_failures_do_not_lower_the_quantiles() -> None:
    health = BackendHealth("a", HealthConfig())
    succeed(health, 0.100, 30, now=0.0)
    for _ in range(300):
        health.on_failure("unavailable", 0.0)  # e.g. connection refused after 1 ms
    assert health.quantile(0.5, 0.0) == pytest.approx(0.100, rel=0.01)
    assert health.predicted_latency(0.0) == pytest.approx(0.100, rel=0.01)


def test_cancelled_attempts_keep_the_tail_up() -> None:
    health = BackendHealth("a", HealthConfig())
    succeed(health, 0.050, 80, now=0.0)
    for _ in range(20):
        health.on_cancelled(0.200, 0.0)  # slower than 200 ms, we only know that much
    assert health.quantile(0.95, 0.0) == pytest.approx(0.200, rel=0.01)


def test_live_data_first_then_probes_then_nothing() -> None:
    health = BackendHealth("a", HealthConfig(window=60.0, min_samples=20, probe_max_age=180.0))
    assert health.quantile(0.5, 0.0) is None
    assert health.predicted_latency(0.0) is None
    for _ in range(20):
        health.probe_latency.record(0.300, 0.0)
    assert health.quantile(0.5, 0.0) == pytest.approx(0.300, rel=0.01)  # no live data: probes
    succeed(health, 0.050, 19, now=1.0)
    assert health.quantile(0.5, 1.0) == pytest.approx(0.300, rel=0.01)  # live not warm yet
    health.on_success(0.050, 1.0)
    assert health.quantile(0.5, 1.0) == pytest.approx(0.050, rel=0.01)  # live wins once warm
    assert health.quantile(0.5, 70.0) == pytest.approx(0.300, rel=0.01)  # live aged out
    assert health.quantile(0.5, 180.0) is None  # and the probes too


def test_health_config_defaults_and_decoding() -> None:
    config = HealthConfig()
    assert (config.window, config.slices, config.min_samples, config.probe_max_age) == (60.0, 6, 20, 180.0)
    assert config.breaker == BreakerConfig()
    decoded = msgspec.json.decode(b'{"min_samples": 50, "breaker": {"cooldown": 3}}', type=HealthConfig)
    assert decoded.min_samples == 50 and decoded.breaker.cooldown == 3
    with pytest.raises(msgspec.ValidationError, match="unknown field"):
        msgspec.json.decode(b'{"breaker": {"colldown": 3}}', type=HealthConfig)
    with pytest.raises(ValueError):
        HealthConfig(slices=0)
