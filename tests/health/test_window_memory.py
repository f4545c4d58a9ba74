"""Memory that scales with backends (issue 14 §3): histograms exist only for slices recorded into.

An idle backend holds no HDR histogram at all; one that never streams holds no TTFT
histograms, one without probe data no probe histograms; a slice's histograms are released when
it leaves the window. None of it changes a quantile: the lazy window is compared with the eager
one it replaced (``eager_window.py``, the code before the change) on recorded sequences, output
for output, and rotation still forgets data exactly at the window's edges in virtual time.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest
import trio
import trio.testing
from hdrh.histogram import HdrHistogram
from hypothesis import given, settings
from hypothesis import strategies as st

from specexec import Policy, Runtime, SimulatedBackend
from specexec._health import BackendHealth, HealthConfig, LatencyWindow

from .eager_window import EagerLatencyWindow

IDLE_BUDGET = 100 * 1024  # bytes per idle backend (issue 14 §3)


def held(health: BackendHealth) -> tuple[int, int, int]:
    """HDR histograms held by the latency, probe and TTFT windows."""
    return health.latency.held_histograms, health.probe_latency.held_histograms, health.ttft.held_histograms


def bytes_per(make: Callable[[], Any], n: int) -> float:
    """Traced bytes that each of ``n`` objects made by ``make`` keeps alive."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        kept = [make() for _ in range(n)]
        gc.collect()
        after = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
    assert len(kept) == n
    return (after - before) / n


def virtual(main: Callable[[], Any]) -> Any:
    return trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))


# -- what an idle or non-streaming backend holds ------------------------------------------------


def test_an_idle_backend_holds_no_histograms() -> None:
    assert held(BackendHealth("a")) == (0, 0, 0)
    assert bytes_per(lambda: BackendHealth("a"), 50) <= IDLE_BUDGET


def test_lookups_on_an_idle_backend_make_no_ttft_or_probe_window() -> None:
    health = BackendHealth("a")
    assert health.quantile(0.95, 0.0) is None and health.ttft_quantile(0.95, 0.0) is None
    assert health.predicted_latency(0.0) is None
    assert (health._ttft, health._probe_latency) == (None, None)  # made only when recorded into or set
    health.on_first_token(0.02, 0.0)
    assert health._ttft is not None and health._probe_latency is None


def test_a_runtime_of_many_idle_backends_stays_within_the_budget() -> None:
    backends = [SimulatedBackend(f"b{i}", latency=0.1) for i in range(200)]
    runtime = bytes_per(lambda: Runtime(backends), 1)
    assert runtime / len(backends) <= IDLE_BUDGET


def test_a_backend_that_never_streams_holds_no_ttft_or_probe_histograms() -> None:
    health = BackendHealth("a")
    for i in range(100):
        health.on_success(0.05 + i / 1000, now=i / 100)
    health.on_cancelled(0.3, now=1.0)
    health.on_failure("timeout", now=1.0, elapsed=2.0)
    assert held(health) == (2, 0, 0)  # one slice: its observed and censored histograms
    assert health.quantile(0.5, 1.0) is not None
    assert health.probe_latency.quantile(0.5, 1.0) is None  # the fallback allocates nothing either
    assert health.ttft_quantile(0.5, 1.0) is None
    assert held(health) == (2, 0, 0)


def test_a_backend_without_censored_samples_holds_only_observed_histograms() -> None:
    health = BackendHealth("a", HealthConfig(min_samples=1))
    health.on_success(0.05, now=0.0)
    assert health.quantile(0.5, 0.0) == pytest.approx(0.05, rel=0.01)
    assert held(health) == (1, 0, 0)


def test_streaming_allocates_ttft_histograms_and_only_those() -> None:
    async def main() -> tuple[tuple[int, int, int], tuple[int, int, int]]:
        plain = SimulatedBackend("plain", latency=0.2)
        streamed = SimulatedBackend("streamed", latency=0.2, ttft=0.05, token_time=0.01)
        async with Runtime([plain, streamed]) as rt:
            await rt.run("q", Policy.single(plain))
            async with rt.stream("q", Policy.single(streamed)) as stream:
                async for _ in stream:
                    pass
            return held(rt.health("plain")), held(rt.health("streamed"))

    plain, streamed = virtual(main)
    assert plain == (1, 0, 0)
    assert streamed == (1, 0, 1)


def test_probe_histograms_only_once_probe_data_arrives() -> None:
    health = BackendHealth("a")
    source = LatencyWindow(min_samples=1)
    source.record(0.08, 0.0)
    assert held(health) == (0, 0, 0)
    health.probe_latency.merge_encoded(*source.encode(0.0), now=0.0)
    assert held(health) == (0, 1, 0)  # the observed one: an empty censored histogram allocates nothing
    assert health.probe_latency.count(0.0) == 1


# -- slices released as they leave the window ---------------------------------------------------


def test_rotated_out_slices_release_their_histograms() -> None:
    window = LatencyWindow(window=60.0, slices=6, min_samples=1)
    for second in range(0, 600):  # ten minutes of one sample a second, a loser every 5 s
        window.record(0.1, float(second))
        if second % 5 == 0:
            window.record_censored(0.2, float(second))
        assert window.held_histograms <= 12  # never more than the live slices' pairs
    assert window.held_histograms == 12
    assert window.count(600.0) == 50 + 10  # five live slices, the sixth (600 s) just entered, empty
    assert window.held_histograms == 10
    window.count(659.999)
    assert window.held_histograms == 0  # every slice that held data has left the window


def test_an_idle_window_releases_everything_on_its_next_use() -> None:
    window = LatencyWindow(window=60.0, slices=6)
    for i in range(30):
        window.record(0.05, 5.0 + i)
    assert window.held_histograms == 4
    assert window.quantile(0.5, 120.0) is None
    assert window.held_histograms == 0


# -- the same figures as the eager window -----------------------------------------------------

QUANTILES = (0.0, 0.3, 0.5, 0.9, 0.95, 0.99, 0.999, 1.0)

events = st.lists(
    st.tuples(
        st.sampled_from(["record", "record", "record", "censored", "censored", "query", "refresh", "ship"]),
        st.one_of(st.floats(1e-7, 0.5), st.floats(0.5, 30.0), st.floats(30.0, 5_000.0)),
        st.one_of(st.just(0.0), st.floats(0.0, 3.0), st.sampled_from([10.0, 9.999999, 60.0, 59.999999, 130.0])),
    ),
    max_size=300,
)


@settings(max_examples=60, deadline=None)
@given(
    events=events,
    slices=st.sampled_from([1, 2, 6]),
    min_samples=st.sampled_from([1, 5, 20]),
    refresh=st.sampled_from([0.0, 1.0]),
)
def test_quantiles_counts_and_encodings_match_the_eager_window(
    events: list[tuple[str, float, float]], slices: int, min_samples: int, refresh: float
) -> None:
    options: dict[str, Any] = {"window": 60.0, "slices": slices, "min_samples": min_samples}
    lazy = LatencyWindow(**options, max_refresh_interval=refresh)
    eager = EagerLatencyWindow(**options, max_refresh_interval=refresh)
    now = 0.0
    for kind, value, step in events:
        now += step
        if kind == "record":
            lazy.record(value, now)
            eager.record(value, now)
        elif kind == "censored":
            lazy.record_censored(value, now)
            eager.record_censored(value, now)
        elif kind == "refresh":
            lazy.refresh(now)
            eager.refresh(now)
        elif kind == "ship":  # the probe feed's path: encode here, merge there
            shipped = eager.encode(now)
            assert lazy.encode(now) == shipped
            lazy.merge_encoded(*shipped, now=now)
            eager.merge_encoded(*shipped, now=now)
        assert lazy.count(now) == eager.count(now)
        if kind == "query":
            for q in QUANTILES:
                assert lazy.quantile(q, now) == eager.quantile(q, now), (q, now)
    for q in QUANTILES:
        assert lazy.quantile(q, now) == eager.quantile(q, now), (q, now)
    assert lazy.encode(now) == eager.encode(now)
    assert lazy.held_histograms <= 2 * slices


def test_quantiles_match_the_eager_window_on_a_hedged_mixture() -> None:
    """A recorded sequence with the shape that matters for the hedge delay: a fast body, a slow
    mode, and slow primaries censored just past the delay, over three minutes of rotation."""
    import random

    rng = random.Random(14)
    lazy, eager = LatencyWindow(), EagerLatencyWindow()
    now = 0.0
    for _ in range(20_000):
        now += rng.expovariate(100.0)
        latency = rng.lognormvariate(-2.6, 0.25) if rng.random() < 0.95 else rng.lognormvariate(-1.0, 0.4)
        if latency > 0.09 and rng.random() < 0.8:
            lazy.record_censored(0.09, now)
            eager.record_censored(0.09, now)
        else:
            lazy.record(latency, now)
            eager.record(latency, now)
        if rng.random() < 0.01:
            for q in (0.5, 0.9, 0.95, 0.99):
                assert lazy.quantile(q, now) == eager.quantile(q, now)
    assert now > 180.0
    assert [lazy.quantile(q, now) for q in QUANTILES] == [eager.quantile(q, now) for q in QUANTILES]


# -- rotation at the window's edges, in virtual time --------------------------------------------


def test_rotation_forgets_old_data_exactly_at_the_window_edges() -> None:
    async def main() -> list[tuple[float, int, int, float | None]]:
        backend = SimulatedBackend("a", latency=0.25)
        seen: list[tuple[float, int, int, float | None]] = []
        async with Runtime([backend], health=HealthConfig(window=60.0, slices=6, min_samples=1)) as rt:
            health = rt.health("a")

            def look() -> None:
                now = trio.current_time()
                seen.append((now, health.latency.count(now), held(health)[0], health.quantile(0.5, now)))

            for _ in range(4):  # answered at 0.25 … 1.0 s: the slice [0, 10)
                await rt.run("q", Policy.single(backend))
            await trio.sleep_until(10.0)
            backend.latency = SimulatedBackend("slower", latency=0.5).latency
            await rt.run("q", Policy.single(backend))  # answered at 10.5 s: the slice [10, 20)
            for edge in (59.999, 60.0, 69.999, 70.0):
                await trio.sleep_until(edge)
                look()
        return seen

    # Medians are the buckets' highest equivalent values (2 significant figures).
    fast, slow = pytest.approx(0.25, rel=0.01), pytest.approx(0.5, rel=0.01)
    assert virtual(main) == [
        (59.999, 5, 2, fast),  # both slices live a moment before the first one's minute is up
        (60.0, 1, 1, slow),  # at exactly 60 s the slice [0, 10) is gone, histogram and all
        (69.999, 1, 1, slow),
        (70.0, 0, 0, None),  # and at 70 s the slice [10, 20): nothing is held
    ]


# -- 4-byte counts ------------------------------------------------------------------------------


def test_slices_count_in_four_bytes_and_ship_in_the_usual_encoding() -> None:
    window = LatencyWindow(min_samples=1)
    window.record(0.05, 0.0)
    window.record_censored(0.2, 0.0)
    assert {h.word_size for h in window._observed + window._censored if h is not None} == {4}
    assert bytes_per(lambda: LatencyWindow(min_samples=1)._observed_slice(), 20) < 15 * 1024  # 8-byte: 27 KiB
    plain = HdrHistogram(1, 3_600_000_000, 2)  # what a daemon of before ships
    plain.record_value(50_000)
    assert window.encode(0.0)[0] == plain.encode().decode("ascii")


def test_a_histogram_that_could_overflow_a_slice_is_refused_whole() -> None:
    window = LatencyWindow(min_samples=1)
    window.record(0.05, 0.0)
    huge = HdrHistogram(1, 3_600_000_000, 2)
    huge.record_value(80_000, 2**32 - 1)  # one more than the slice can still take
    empty = LatencyWindow().encode(0.0)[1]
    with pytest.raises(ValueError, match="too many samples"):
        window.merge_encoded(huge.encode().decode("ascii"), empty, now=0.0)
    assert window.count(0.0) == 1 and window.quantile(1.0, 0.0) == pytest.approx(0.05, rel=0.01)


def test_a_window_past_four_byte_counts_merges_into_eight_byte_ones() -> None:
    window = LatencyWindow(window=60.0, slices=2, min_samples=1)
    big = HdrHistogram(1, 3_600_000_000, 2)
    big.record_value(80_000, 2**32 - 2)
    empty = LatencyWindow().encode(0.0)[1]
    window.merge_encoded(big.encode().decode("ascii"), empty, now=0.0)  # slice [0, 30)
    window.merge_encoded(big.encode().decode("ascii"), empty, now=30.0)  # slice [30, 60)
    window.record(0.01, 30.0)
    assert window.count(30.0) == 2 * (2**32 - 2) + 1
    assert window.quantile(0.5, 30.0) == pytest.approx(0.08, rel=0.01)  # no bucket wrapped round
    assert window.quantile(0.0, 30.0) == pytest.approx(0.01, rel=0.01)


def test_released_and_merged_histograms_go_without_the_garbage_collector() -> None:
    """hdrh's histogram and its encoder refer to each other: dropped whole, each rotated-out
    slice and each refresh's merged copy would wait for the cyclic collector."""
    gc.collect()
    gc.disable()
    tracemalloc.start()
    try:
        window = LatencyWindow(window=60.0, slices=6, min_samples=1)
        for second in range(600):
            window.record(0.1, float(second))
            window.record_censored(0.2, float(second))
            assert window.quantile(0.5, float(second)) is not None  # a refresh a second
        alive = tracemalloc.get_traced_memory()[0]
    finally:
        tracemalloc.stop()
        gc.enable()
    assert window.held_histograms == 12
    assert alive < 16 * 15 * 1024  # the 12 slices' histograms, the kept censored merge, and change
