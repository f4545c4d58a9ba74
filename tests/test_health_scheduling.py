"""Health-aware scheduling through the engine: adaptive delay, budget, breakers, limits, ordering.

Timing is asserted exactly in virtual time on trio; the key behaviours also run on
asyncio + uvloop (``anyio_backend`` fixture) with a real clock and a tolerance.
"""

from __future__ import annotations

from typing import Any

import anyio
import pytest
import trio
import trio.testing

import specexec
from specexec import HealthConfig, HedgeBudgetConfig, Limits, Policy, Runtime
from specexec._health import BreakerConfig
from tests.conftest import Timing
from tests.helpers import Scripted


def feed(rt: Runtime, name: str, latencies: list[float], now: float = 0.0) -> None:
    health = rt.health(name)
    for value in latencies:
        health.on_success(value, now)


def virtual(fn: Any) -> None:
    trio.run(fn, clock=trio.testing.MockClock(autojump_threshold=0))


def test_delay_tracks_the_primarys_percentile() -> None:
    async def main() -> None:
        slow, other = Scripted("slow", 1.0, region="us"), Scripted("other", 0.01, region="eu")
        async with Runtime([slow, other]) as rt:
            feed(rt, "slow", [0.05] * 90 + [0.1] * 10, trio.current_time())
            t0 = trio.current_time()
            result = await rt.run("q", Policy.hedge(["slow", "other"], delay="p95", budget=None))
            assert other.started_at[0] - t0 == pytest.approx(0.1, rel=0.01)
            assert result.trace.attempts[1].trigger == "hedge"
            t1 = trio.current_time()
            await rt.run("q", Policy.hedge(["slow", "other"], delay="p85", budget=None))
            assert other.started_at[1] - t1 == pytest.approx(0.05, rel=0.01)

    virtual(main)


def test_no_adaptive_hedge_below_min_samples_uses_the_fallback_delay() -> None:
    async def main() -> None:
        slow, other = Scripted("slow", 1.0), Scripted("other", 0.01)
        async with Runtime([slow, other], health=HealthConfig(min_samples=20)) as rt:
            feed(rt, "slow", [0.05] * 19, trio.current_time())
            t0 = trio.current_time()
            await rt.run("q", Policy.hedge(["slow", "other"], delay="p95", fallback_delay=0.3))
            assert other.started_at[0] - t0 == 0.3

    virtual(main)


def test_delay_is_clamped_to_floor_and_ceiling() -> None:
    async def main() -> None:
        slow, other = Scripted("slow", 5.0), Scripted("other", 0.01)
        async with Runtime([slow, other]) as rt:
            feed(rt, "slow", [2.0] * 50, trio.current_time())
            t0 = trio.current_time()
            await rt.run("q", Policy.hedge(["slow", "other"], delay="p95", max_delay=0.5))
            assert other.started_at[0] - t0 == 0.5

    virtual(main)


def test_failures_and_rejections_do_not_lower_the_delay() -> None:
    async def main() -> None:
        flaky = Scripted("flaky", 0.001, error=specexec.Unavailable("x"))
        async with Runtime(
            [flaky, Scripted("b", 0.01)],
            health=HealthConfig(breaker=BreakerConfig(failure_threshold=10**6, min_requests=10**6)),
        ) as rt:
            feed(rt, "flaky", [0.1] * 50, trio.current_time())
            before = rt.health("flaky").quantile(0.95, trio.current_time())
            for _ in range(100):
                await rt.run("q", Policy.failover(["flaky", "b"]))
            rt.health("flaky").latency.refresh(trio.current_time() + 2)
            assert rt.health("flaky").quantile(0.95, trio.current_time() + 2) == before

    virtual(main)


def test_delay_auto_uses_the_budget_quantile() -> None:
    async def main() -> None:
        slow, other = Scripted("slow", 5.0), Scripted("other", 0.01)
        async with Runtime([slow, other]) as rt:
            feed(rt, "slow", [0.05] * 80 + [0.2] * 20, trio.current_time())
            t0 = trio.current_time()
            # max_extra_load 0.1 → quantile 0.9 → 0.2 s (top 20 % are 0.2 s)
            await rt.run("q", Policy.hedge(["slow", "other"], delay="auto", budget=HedgeBudgetConfig(0.1)))
            assert other.started_at[0] - t0 == pytest.approx(0.2, rel=0.01)

    virtual(main)


def test_hedge_budget_under_a_slow_fleet_and_zero_budget() -> None:
    """Every backend 10× slower for 60 virtual s at 100 req/s: hedges ≤ 5 % + reserve."""

    async def load(budget: HedgeBudgetConfig) -> tuple[int, int]:
        backends = [specexec.SimulatedBackend(f"b{i}", 0.4, seed=i, region=f"r{i}", provider=f"p{i}") for i in range(3)]
        policy = Policy.hedge(["b0", "b1", "b2"], delay=0.05, max_attempts=3, budget=budget)
        hedges = requests = 0
        async with Runtime(backends) as rt, trio.open_nursery() as nursery:

            async def one() -> None:
                nonlocal hedges, requests
                result = await rt.run("q", policy)
                requests += 1
                hedges += result.trace.hedges

            for _ in range(6000):  # 60 s at 100 req/s
                nursery.start_soon(one)
                await trio.sleep(0.01)
        return hedges, requests

    out: dict[str, tuple[int, int]] = {}

    async def main() -> None:
        out["budget"] = await load(HedgeBudgetConfig(max_extra_load=0.05, min_per_second=1.0, ttl=10.0))
        out["zero"] = await load(HedgeBudgetConfig(max_extra_load=0.0, min_per_second=0.0))

    virtual(main)
    hedges, requests = out["budget"]
    assert requests == 6000
    assert hedges <= 0.05 * requests + 1.0 * 10 + 60  # ratio + the reserve's window + 1/s reserve
    assert hedges >= 0.04 * requests  # the budget is actually used
    assert out["zero"][0] == 0


def test_budget_exhaustion_is_in_the_trace() -> None:
    async def main() -> None:
        slow, other = Scripted("slow", 1.0), Scripted("other", 0.01)
        async with Runtime([slow, other]) as rt:
            policy = Policy.hedge(["slow", "other"], delay=0.1, budget=HedgeBudgetConfig(0.0, 0.0))
            result = await rt.run("q", policy)
            assert result.backend == "slow" and other.calls == 0
            assert [(e.what, e.detail) for e in result.trace.events] == [
                ("skipped", "hedge budget: no tokens left for a hedge")
            ]

    virtual(main)


def test_breaker_opens_skips_half_opens_and_closes() -> None:
    async def main() -> None:
        bad = Scripted("bad", 0.01, error=specexec.Unavailable("down"))
        good = Scripted("good", 0.01)
        config = HealthConfig(breaker=BreakerConfig(failure_threshold=3, cooldown=5.0))
        async with Runtime([bad, good], health=config) as rt:
            policy = Policy.failover(["bad", "good"])
            for _ in range(3):
                await rt.run("q", policy)
            assert bad.calls == 3
            result = await rt.run("q", policy)
            assert bad.calls == 3
            assert (result.trace.attempts[0].outcome, result.trace.attempts[0].reason) == ("skipped", "circuit open")
            await trio.sleep(5.0)
            bad.error = None  # recovered
            result = await rt.run("q", policy)
            assert result.backend == "bad" and bad.calls == 4  # the half-open trial
            assert rt.health("bad").breaker.state(trio.current_time()) == "closed"

    virtual(main)


def test_429_retry_after_keeps_the_backend_out_for_exactly_that_long() -> None:
    async def main() -> None:
        limited = Scripted("limited", 0.0, error=specexec.RateLimited("429", retry_after=2.0))
        other = Scripted("other", 0.0)
        async with Runtime([limited, other]) as rt:
            policy = Policy.failover(["limited", "other"])
            await rt.run("q", policy)
            t429 = trio.current_time()
            limited.error = None
            await trio.sleep(1.999)
            result = await rt.run("q", policy)
            assert result.trace.attempts[0].reason == "circuit open" and limited.calls == 1
            await trio.sleep(2.0 - (trio.current_time() - t429))
            result = await rt.run("q", policy)
            assert result.backend == "limited" and limited.calls == 2

    virtual(main)


@pytest.mark.anyio
async def test_backend_at_its_concurrency_limit_is_skipped_for_a_hedge(timing: Timing) -> None:
    busy = Scripted("busy", 0.5, region="eu", limits=Limits(max_concurrency=1))
    first = Scripted("first", 1.0, region="us")
    spare = Scripted("spare", 0.1, region="ap")
    async with Runtime([first, busy, spare]) as rt, anyio.create_task_group() as tg:
        tg.start_soon(rt.run, "occupy", Policy.single("busy"))
        await anyio.sleep(0.01)
        result = await rt.run("q", Policy.hedge(["first", "busy", "spare"], delay=0.1, max_attempts=2))
    skipped = [a for a in result.trace.attempts if a.outcome == "skipped"]
    assert [(a.backend, a.reason) for a in skipped] == [("busy", "at concurrency limit")]
    assert result.backend == "spare"
    assert result.latency == timing.approx(0.2)


@pytest.mark.anyio
async def test_hedge_prefers_another_failure_domain(timing: Timing) -> None:
    primary = Scripted("us-1", 1.0, provider="alpha", region="us")
    same_region = Scripted("us-2", 0.1, provider="beta", region="us")
    same_provider = Scripted("eu-alpha", 0.1, provider="alpha", region="eu")
    elsewhere = Scripted("eu-beta", 0.1, provider="beta", region="eu")
    backends = [primary, same_region, same_provider, elsewhere]
    async with Runtime(backends) as rt:
        result = await rt.run("q", Policy.hedge([b.name for b in backends], delay=0.1, max_attempts=2))
    assert result.backend == "eu-beta"
    assert "other failure domain" in result.trace.attempts[1].why
    assert same_region.calls == same_provider.calls == 0


def test_order_by_predicted_latency() -> None:
    async def main() -> None:
        backends = [Scripted("a", 0.3), Scripted("b", 0.1), Scripted("c", 0.2)]
        async with Runtime(backends) as rt:
            now = trio.current_time()
            feed(rt, "a", [0.3] * 30, now)
            feed(rt, "b", [0.1] * 30, now)
            feed(rt, "c", [0.2] * 30, now)
            result = await rt.run("q", Policy.failover(["a", "b", "c"], order="latency"))
            assert result.backend == "b" and result.trace.attempts[0].why == "first by predicted latency"

    virtual(main)


def test_primary_may_wait_for_a_rate_slot_but_a_hedge_never_does() -> None:
    async def main() -> None:
        limited = Scripted(
            "limited",
            0.01,
            limits=Limits(
                rpm=60,
            ),
        )
        async with Runtime([limited]) as rt:
            rt.health("limited").requests.burst = 1.0  # type: ignore[union-attr]
            await rt.run("q", Policy.single("limited"))
            t0 = trio.current_time()
            with pytest.raises(specexec.NoAcceptableResponse, match="rate limit"):
                await rt.run("q", Policy.single("limited"))
            assert trio.current_time() == t0
            result = await rt.run("q", Policy.single("limited", limit_wait=2.0))
            assert result.backend == "limited" and trio.current_time() - t0 <= 1.0 + 0.01 + 1e-9

    virtual(main)


def test_failover_throttle_spares_a_failing_fleet_but_not_a_dead_provider() -> None:
    no_breaker = HealthConfig(breaker=BreakerConfig(failure_threshold=10**6, min_requests=10**6))

    async def main() -> None:
        dead = Scripted("dead", 0.01, error=specexec.Unavailable("down"))
        ok = Scripted("ok", 0.01)
        async with Runtime([dead, ok], health=no_breaker) as rt:
            for _ in range(50):
                assert (await rt.run("q", Policy.failover(["dead", "ok"]))).backend == "ok"
        sick = [Scripted(f"s{i}", 0.01, error=specexec.Unavailable("down")) for i in range(2)]
        async with Runtime(sick, health=no_breaker) as rt:
            for _ in range(20):
                with pytest.raises(specexec.NoAcceptableResponse):
                    await rt.run("q", Policy.failover(["s0", "s1"]))
        assert sick[0].calls == 20
        assert sick[1].calls < 10  # failovers to a backend that keeps failing stop

    virtual(main)


def test_censoring_keeps_the_p95_estimate_honest_under_steady_hedging() -> None:
    """Race losers are cancelled, so their slow samples are never seen; recording them as
    censored (Kaplan–Meier) keeps the estimated p95 of the primary near its true p95.

    10 % of answers are ten times slower, so the true p95 sits in the slow mode; a hedge at
    the p95 nearly always beats a slow primary, which is then cancelled. Dropping those
    samples (the naive way) drags the estimate down towards the fast body, the hedges fire
    earlier, more slow samples are dropped, and so on.
    """
    import random

    dist = specexec.slow_tail(specexec.LogNormal(0.04, 0.25), 0.10, 10.0)
    rng = random.Random(99)
    samples = sorted(dist.sample(rng) for _ in range(200_000))
    true_p95 = samples[int(0.95 * len(samples))]
    estimates: list[float] = []

    async def main() -> None:
        backends = [specexec.SimulatedBackend(f"b{i}", dist, seed=i, region=f"r{i}") for i in range(2)]
        policy = Policy.hedge(["b0", "b1"], delay="p95", budget=None, fallback_delay=0.3)
        async with Runtime(backends, health=HealthConfig(window=30.0, min_samples=50)) as rt:
            async with trio.open_nursery() as nursery:
                for i in range(6000):  # 60 s at 100 req/s, always b0 first
                    nursery.start_soon(rt.run, specexec.Query("q", metadata={"seed_key": i}), policy)
                    await trio.sleep(0.01)
                    if i % 500 == 499:
                        estimates.append(rt.health("b0").quantile(0.95, trio.current_time()) or 0.0)
            assert rt.health("b0").cancellations > 150  # the primary really lost races

    virtual(main)
    for estimate in estimates[3:]:
        assert abs(estimate - true_p95) / true_p95 < 0.15, (estimates, true_p95)


def test_a_backend_with_no_estimate_ranks_as_a_typical_one_not_last() -> None:
    async def main() -> None:
        down = specexec.Unavailable("down")  # every attempt fails, so the trace shows the whole order
        backends = [Scripted(name, 0.01, error=down) for name in ("forgotten", "a", "b", "c")]
        async with Runtime(backends) as rt:
            now = trio.current_time()
            for name, latency in (("a", 0.1), ("b", 0.2), ("c", 0.3)):
                feed(rt, name, [latency] * 30, now)
            with pytest.raises(specexec.NoAcceptableResponse) as info:
                await rt.run("q", Policy.failover(["forgotten", "a", "b", "c"], order="latency"))
            # no estimate → the median of the others (0.2 s), tied with b and listed before it
            assert [x.backend for x in info.value.attempts] == ["a", "forgotten", "b", "c"]

    virtual(main)


def test_503_retry_after_keeps_the_backend_out_for_exactly_that_long() -> None:
    async def main() -> None:
        busy = Scripted("busy", 0.0, error=specexec.Unavailable("overloaded", retry_after=3.0))
        other = Scripted("other", 0.0)
        async with Runtime([busy, other]) as rt:
            policy = Policy.failover(["busy", "other"])
            await rt.run("q", policy)
            busy.error = None
            await trio.sleep(2.999)
            assert (await rt.run("q", policy)).trace.attempts[0].reason == "circuit open"
            await trio.sleep(0.001)
            assert (await rt.run("q", policy)).backend == "busy"

    virtual(main)
