"""HealthConfig and ConcurrencyLimit validation: NaN, infinity and sizes that cannot work are refused."""

from __future__ import annotations

import math

import pytest

from specexec import HealthConfig, PolicyError
from specexec._health import BackendHealth, ConcurrencyLimit
from specexec._health._backend_health import MAX_SLICES


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"window": math.nan}, "$.window"),
        ({"window": math.inf}, "$.window"),
        ({"window": 0.0}, "$.window"),
        ({"slices": 0}, "$.slices"),
        ({"slices": MAX_SLICES + 1}, "$.slices"),
        ({"slices": 1_000_000}, "$.slices"),
        ({"min_samples": 0}, "$.min_samples"),
        ({"probe_max_age": math.inf}, "$.probe_max_age"),
        ({"probe_max_age": -1.0}, "$.probe_max_age"),
        ({"probe_min_samples": 0}, "$.probe_min_samples"),
        ({"max_retry_after": math.nan}, "$.max_retry_after"),
        ({"max_retry_after": math.inf}, "$.max_retry_after"),
        ({"max_retry_after": -1.0}, "$.max_retry_after"),
        ({"auth_cooldown": math.nan}, "$.auth_cooldown"),
        ({"auth_cooldown": math.inf}, "$.auth_cooldown"),
        ({"auth_cooldown": -5.0}, "$.auth_cooldown"),
    ],
    ids=repr,
)
def test_health_config_names_the_bad_field(kwargs: dict[str, float], path: str) -> None:
    with pytest.raises(PolicyError) as info:
        HealthConfig(**kwargs)  # type: ignore[arg-type]
    assert info.value.path == path and path[2:] in str(info.value)


def test_slices_are_bounded_and_the_error_says_why() -> None:
    assert MAX_SLICES == 60
    HealthConfig(slices=MAX_SLICES)
    with pytest.raises(PolicyError, match=r"at most 60.*histograms"):
        HealthConfig(slices=61)


def test_the_largest_slices_allowed_stay_small() -> None:
    import tracemalloc

    tracemalloc.start()
    try:
        health = BackendHealth("a", HealthConfig(slices=MAX_SLICES))
        for second in range(180):  # a busy backend: every live slice of every window recorded into
            now = float(second)
            health.on_success(0.05, now, ttft=0.01)
            health.on_cancelled(0.1, now)
            health.on_no_first_token(0.1, now)
            health.probe_latency.record(0.05, now)
            health.probe_latency.record_censored(0.1, now)
        assert [w.held_histograms for w in (health.latency, health.probe_latency, health.ttft)] == [120] * 3
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000  # bytes per busy backend (≈ 5 MB measured: 360 histograms of ≈ 14 KB)


@pytest.mark.parametrize("limit", [0, -1])
def test_a_concurrency_limit_that_can_never_admit_is_refused(limit: int) -> None:
    with pytest.raises(ValueError, match="at least 1"):
        ConcurrencyLimit(limit)
    assert ConcurrencyLimit(1).try_acquire() and ConcurrencyLimit(None).available is None
