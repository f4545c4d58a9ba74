"""The adaptive hedge delay: ``HedgeDelay`` (running median, shift restart, bounded step),
``LatencyWindow.hedge_quantile`` (no trust in a sparse censored tail) and ``BackendHealth.hedge_delay``."""

from __future__ import annotations

import math
import random

import pytest
from hypothesis import given
from hypothesis import strategies as st

from specexec._health import BackendHealth, HealthConfig, LatencyWindow
from specexec._health._delay import HedgeDelay

# --------------------------------------------------------------------------- HedgeDelay


def test_the_first_estimate_is_taken_as_it_is() -> None:
    assert HedgeDelay().update(0.08) == 0.08


def test_a_stretch_of_wrong_estimates_shorter_than_half_the_history_does_not_move_it() -> None:
    """The plateau flip: the window's p95 jumps into the slow mode for a while and back."""
    delay = HedgeDelay(history=21)
    for _ in range(11):
        assert delay.update(0.08) == 0.08
    for _ in range(10):  # 10 of 21 refreshes say 300 ms
        assert delay.update(0.30) == 0.08
    assert delay.update(0.30) == 0.08 * 2.0  # now 11 of 21 do: it moves, one bounded step at a time


def test_each_refresh_moves_it_by_at_most_max_step() -> None:
    delay = HedgeDelay(history=1, shifted_history=1, max_step=2.0)
    delay.update(0.1)
    assert [delay.update(1.0) for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
    assert [delay.update(0.1) for _ in range(3)] == [0.5, 0.25, 0.125]


def test_a_shift_restarts_the_median_from_the_recent_estimates() -> None:
    delay = HedgeDelay(history=100, shifted_history=3, max_step=1.5, min_shift=10)
    for _ in range(100):
        delay.update(0.08)
    # Without the shift, 100 old estimates would outvote the new ones for 50 refreshes.
    values = [round(delay.update(0.4, shifted=True), 6) for _ in range(10)]
    assert values == [0.12, 0.18, 0.27, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4, 0.4]
    # The shift lasted 10 refreshes: when it is over, the history is the new level's.
    assert delay.update(0.08) == 0.4
    # A new shift; an isolated outlier among its last three estimates is outvoted.
    values = [delay.update(v, shifted=True) for v in (0.08, 0.08, 0.9, 0.08)]
    assert values == [0.4 / 1.5, 0.4 / 1.5 / 1.5, 0.4 / 1.5 / 1.5 / 1.5, 0.08]


def test_a_flicker_of_the_detector_does_not_restart_the_history() -> None:
    """After a brownout the long window agrees with the recent one on the median before its
    tail is clean; a detector that flickers off and on there must not hand the delay to it."""
    delay = HedgeDelay(history=100, shifted_history=3, min_shift=10)
    for _ in range(30):
        delay.update(0.08)
    for _ in range(3):  # a flicker: 3 refreshes < min_shift
        delay.update(0.08, shifted=True)
    assert [delay.update(0.2) for _ in range(16)] == [0.08] * 16  # 16 of 49 estimates say 200 ms
    for _ in range(12):  # a real shift (12 refreshes) back at the old level
        delay.update(0.08, shifted=True)
    assert [delay.update(0.2) for _ in range(6)] == [0.08] * 6  # the history is the shift's 12


def test_reset_forgets() -> None:
    delay = HedgeDelay()
    delay.update(0.08)
    delay.reset()
    assert delay.value is None
    assert delay.update(1.0) == 1.0  # no step bound from a forgotten value


@pytest.mark.parametrize(
    "kwargs", [{"history": 0}, {"shifted_history": 0}, {"history": 3, "shifted_history": 4}, {"max_step": 1.0}]
)
def test_bad_settings_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        HedgeDelay(**kwargs)  # type: ignore[arg-type]


@given(
    st.lists(st.tuples(st.floats(1e-4, 100.0), st.booleans()), min_size=1, max_size=300),
    st.integers(1, 50),
    st.integers(1, 50),
    st.floats(1.01, 10.0),
    st.integers(1, 20),
)
def test_the_delay_never_jumps_more_than_its_bound_nor_leaves_the_estimates_range(
    steps: list[tuple[float, bool]], history: int, shifted_history: int, max_step: float, min_shift: int
) -> None:
    delay = HedgeDelay(max(history, shifted_history), shifted_history, max_step, min_shift)
    previous = None
    for i, (raw, shifted) in enumerate(steps):
        value = delay.update(raw, shifted)
        seen = [r for r, _ in steps[: i + 1]]
        assert min(seen) <= value <= max(seen)
        if previous is not None:
            assert previous / max_step * (1 - 1e-12) <= value <= previous * max_step * (1 + 1e-12)
        previous = value


# --------------------------------------------------------------------------- hedge_quantile


def test_one_sample_that_outlived_the_censored_ones_does_not_make_the_quantile() -> None:
    """Under hedging the slow primaries are cancelled just past the delay; the one slow sample
    that finished after all of them takes their whole mass in the Kaplan–Meier curve (its
    CDF jumps from 0.90 to 1), so ``quantile(0.95)`` is that sample. ``hedge_quantile``
    stops trusting the curve where fewer than 10 samples are at risk past a censored one and
    gives the censored samples' lower bound: just past where they were cancelled."""
    window = LatencyWindow(min_samples=1)
    for i in range(900):
        window.record(0.030 + 0.050 * i / 900, 0.0)  # 30–80 ms
    for i in range(99):
        window.record_censored(0.100 + 0.020 * i / 99, 0.0)  # cancelled at 100–120 ms
    window.record(0.469, 0.0)
    assert window.quantile(0.95, 0.0) == pytest.approx(0.469, rel=0.01)
    hedged = window.hedge_quantile(0.95, 0.0)
    assert hedged is not None and 0.100 <= hedged <= 0.121
    assert window.hedge_quantile(0.5, 0.0) == window.quantile(0.5, 0.0)  # the trusted part: the same


@given(st.lists(st.floats(1e-3, 10.0), min_size=20, max_size=200), st.sampled_from([0.5, 0.9, 0.95, 0.99, 1.0]))
def test_without_censoring_hedge_quantile_is_quantile(values: list[float], q: float) -> None:
    window = LatencyWindow()
    for value in values:
        window.record(value, 1.0)
    assert window.hedge_quantile(q, 1.0) == window.quantile(q, 1.0)


def _twenty_samples() -> LatencyWindow:
    window = LatencyWindow()
    for ms in range(1, 21):  # 1, 2, ..., 20 ms: the empirical CDF steps by 5 %
        window.record(ms / 1000, 1.0)
    return window


def test_the_margin_cap_keeps_a_young_windows_bound_near_the_quantile() -> None:
    """20 samples: Greenwood's 95 % lower bound of the p95 is the 17th (CDF 0.85, 1.645 standard
    errors of 0.08 below); capped at 0.01 it is the first point whose CDF reaches 0.94, the 19th."""
    window = _twenty_samples()
    assert window.hedge_quantile(0.95, 1.0) == pytest.approx(0.017, rel=0.01)
    assert window.hedge_quantile(0.95, 1.0, max_margin=0.01) == pytest.approx(0.019, rel=0.01)
    assert window.hedge_quantile(0.95, 1.0) == pytest.approx(0.017, rel=0.01)  # cached apart, per margin


@given(st.sampled_from([0.9, 0.95, 0.99]), st.integers(0, 2**32 - 1))
def test_the_margin_cap_does_not_bind_on_a_well_measured_window(q: float, seed: int) -> None:
    """5,000 samples: at the quantiles hedging uses, 1.645 standard errors (sqrt(q(1-q)/n)) are
    under 0.01 of CDF, so the cap changes nothing (at the median they would be 0.012: it binds)."""
    rng = random.Random(seed)
    window = LatencyWindow()
    for _ in range(5_000):
        window.record(rng.lognormvariate(math.log(0.04), 0.25), 1.0)
    assert window.hedge_quantile(q, 1.0, max_margin=0.01) == window.hedge_quantile(q, 1.0)


def test_a_young_windows_hedge_delay_is_not_far_below_its_quantile() -> None:
    """The adaptive delay reads the long window with the cap (a young window's bound far below
    the quantile hedged 2-3x the intended share of requests in its first seconds)."""
    health = BackendHealth(HealthConfig(min_samples=20))
    for ms in range(1, 21):
        health.on_success(ms / 1000, 1.0)
    assert health.hedge_delay(0.95, 1.0) == pytest.approx(0.019, rel=0.01)


def test_cdf_is_the_share_at_or_below_a_value() -> None:
    window = LatencyWindow(min_samples=10)
    assert window.cdf(0.05, 0.0) is None  # below min_samples
    for i in range(1, 11):
        window.record(i / 100, 0.0)  # 10 … 100 ms
    assert window.cdf(0.05, 0.0) == pytest.approx(0.5)
    assert window.cdf(0.001, 0.0) == 0.0
    assert window.cdf(10.0, 0.0) == pytest.approx(1.0)


# --------------------------------------------------------------------------- BackendHealth.hedge_delay

RATE = 100  # samples a second
MEDIAN, SIGMA = 0.04, 0.25


def _feed(health: BackendHealth, rng: random.Random, start: float, end: float, scale: float = 1.0) -> float:
    """Samples at RATE a second from ``start`` to ``end``, asking for the delay after each; returns the last."""
    delay = math.nan
    for i in range(round((end - start) * RATE)):
        now = start + i / RATE
        health.on_success(scale * rng.lognormvariate(math.log(MEDIAN), SIGMA), now)
        delay = health.hedge_delay(0.95, now) or math.nan
    return delay


def test_a_x5_shift_is_learnt_within_10_s_and_forgotten_within_10_s_of_its_end() -> None:
    """With the long window alone a ×5 slowdown takes ~3 s to show at its p95, but after it
    ends the window's p95 stays slow for nearly its whole minute (the brownout still holds
    more than 5 % of it); the recent window sees both ends within seconds."""
    health = BackendHealth("a")
    rng = random.Random(7)
    steady = _feed(health, rng, 0.0, 120.0)
    true_p95 = MEDIAN * math.exp(SIGMA * 1.6449)
    assert 0.85 * true_p95 <= steady <= true_p95  # the lower confidence bound: a little low
    _feed(health, rng, 120.0, 130.0, scale=5.0)
    assert health.hedge_delay(0.95, 129.99) == pytest.approx(5 * steady, rel=0.15)
    _feed(health, rng, 130.0, 180.0, scale=5.0)
    _feed(health, rng, 180.0, 190.0)
    assert health.hedge_delay(0.95, 189.99) == pytest.approx(steady, rel=0.15)
    late = _feed(health, rng, 190.0, 300.0)
    assert late == pytest.approx(steady, rel=0.1)


def test_without_a_shift_the_recent_window_is_not_used() -> None:
    health = BackendHealth("a")
    rng = random.Random(3)
    _feed(health, rng, 0.0, 120.0)
    assert health._recent is not None and health._recent.count(119.99) > 500
    assert health._recent_quantile(0.95, 119.99) is None


def test_probes_stand_in_until_live_traffic_is_warm() -> None:
    health = BackendHealth("a", HealthConfig(min_samples=5, probe_min_samples=1))
    assert health.hedge_delay(0.95, 0.0) is None
    health.probe_latency.record(0.2, 0.0)
    assert health.hedge_delay(0.95, 0.0) == pytest.approx(0.2, rel=0.01)
    for _ in range(5):
        health.on_success(0.05, 1.0)
    assert health.hedge_delay(0.95, 1.0) == pytest.approx(0.05, rel=0.01)


def test_short_window_is_validated() -> None:
    from specexec import PolicyError

    with pytest.raises(PolicyError, match="short_window"):
        HealthConfig(short_window=0.0)
