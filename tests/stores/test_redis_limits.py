"""``RedisRateLimits`` against a real redis-server: worker processes share one rpm limit and
together stay within it; the hot path never waits for Redis; an outage falls back."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time

import anyio
import pytest

import specexec
from specexec.bench.redis_server import RedisServer
from specexec.stores import RedisRateLimits

WORKER = textwrap.dedent(
    """
    import sys, time, anyio
    from specexec.stores import RedisRateLimits

    async def main():
        shared = RedisRateLimits(sys.argv[1], interval=0.05, timeout=5.0)
        limiter = shared.limiter("b", "rpm", 120.0)
        granted = 0
        await shared.sync()
        async with anyio.create_task_group() as tg:
            tg.start_soon(shared.follow, None)
            end = time.monotonic() + 3.0
            while time.monotonic() < end:
                if limiter.try_acquire(anyio.current_time()):
                    granted += 1
                else:
                    await anyio.sleep(0.005)
            tg.cancel_scope.cancel()
        await shared.aclose()
        print(granted)

    anyio.run(main, backend=sys.argv[2])
    """
)


def test_worker_processes_share_one_rate_limit(redis_server: RedisServer) -> None:
    """rpm=120 (a minute's burst of 120, then 2/s) for three processes for 3 s: at most ≈ 127 in all,
    where three in-process limiters would admit ≈ 380."""
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, redis_server.url, backend], stdout=subprocess.PIPE, text=True)
        for backend in ("trio", "asyncio", "trio")
    ]
    granted = [int(w.communicate(timeout=120)[0].strip()) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    total = sum(granted)
    print("granted per process", granted)
    assert total <= 120 + 2 * 4  # the fleet-wide GCRA: burst + rate × (3 s run + start-up skew)
    assert total >= 110  # and the allowance is used, not stranded in leases
    assert sum(g > 0 for g in granted) >= 2  # more than one process got a share


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])
async def test_runs_share_the_limit_and_an_outage_falls_back(redis_server: RedisServer, anyio_backend: str) -> None:
    async def answer(query: specexec.Query) -> str:
        return "ok"

    def backend() -> specexec.CallableBackend:
        return specexec.CallableBackend("b", answer, limits=specexec.Limits(rpm=5))

    one, two = RedisRateLimits(redis_server.url), RedisRateLimits(redis_server.url)
    ok = 0
    async with (
        specexec.Runtime([backend()], shared_limits=one) as a,
        specexec.Runtime([backend()], shared_limits=two) as b,
    ):
        for _ in range(8):
            for rt in (a, b):
                await one.sync()
                await two.sync()
                try:
                    await rt.run("q", specexec.Policy.single("b", panic=False))
                    ok += 1
                except specexec.NoAcceptableResponse:
                    pass
        assert ok == 5  # two "processes", one limit of 5 (its burst) between them
        assert isinstance(a.hedge_budget(specexec.HedgeBudgetConfig()), specexec.stores.LeasedHedgeBudget)
        redis_server.stop()
        await one.sync()  # Redis gone: the limiter falls back to its own in-process limit
        assert not one.limiters[0].leased
        result = await a.run("q", specexec.Policy.single("b"))
        assert result.backend == "b"
    await one.aclose()
    await two.aclose()


HEDGER = textwrap.dedent(
    """
    import sys, anyio
    from specexec import HedgeBudgetConfig
    from specexec.stores import RedisRateLimits

    async def main():
        shared = RedisRateLimits(sys.argv[1], interval=0.05, timeout=5.0)
        budget = shared.hedge_budget(HedgeBudgetConfig(max_extra_load=0.05, min_per_second=10.0, ttl=10.0))
        fired = 0
        await shared.sync()
        async with anyio.create_task_group() as tg:
            tg.start_soon(shared.follow, None)
            for _ in range(1000):  # every request wants a hedge
                now = anyio.current_time()
                budget.deposit(now)
                fired += budget.try_withdraw(now)
                await anyio.sleep(0.002)
            tg.cancel_scope.cancel()
        await shared.sync()  # report the last deposits, give back what is left
        await shared.aclose()
        print(fired)

    anyio.run(main, backend=sys.argv[2])
    """
)


def test_worker_processes_share_one_hedge_budget(redis_server: RedisServer) -> None:
    """A 5 % budget with Finagle's old 10/s reserve over 10 s, three processes, 3,000 requests: the
    fleet fires at most reserve + 5 % = 100 + 150 hedges, where three in-process budgets fire ≈ 450."""
    workers = [
        subprocess.Popen([sys.executable, "-c", HEDGER, redis_server.url, backend], stdout=subprocess.PIPE, text=True)
        for backend in ("trio", "asyncio", "asyncio")
    ]
    fired = [int(w.communicate(timeout=120)[0].strip()) for w in workers]
    print("hedges per process", fired)
    assert all(w.returncode == 0 for w in workers)
    assert sum(fired) <= 100 + 0.05 * 3000
    assert sum(fired) >= 150  # the reserve and most of the share are used


HOLDER = textwrap.dedent(
    """
    import sys, time, anyio
    from specexec.stores import RedisRateLimits

    async def main():
        shared = RedisRateLimits(sys.argv[1], interval=0.05, timeout=5.0)
        slots = shared.concurrency("b", 4)
        spans = []
        await shared.sync()
        async with anyio.create_task_group() as tg:
            tg.start_soon(shared.follow, None)

            async def worker():
                end = time.monotonic() + 2.0
                while time.monotonic() < end:
                    if slots.try_acquire():
                        start = time.time()
                        await anyio.sleep(0.02)
                        spans.append((start, time.time()))
                        slots.release()
                    else:
                        await anyio.sleep(0.005)

            async with anyio.create_task_group() as workers:
                for _ in range(4):
                    workers.start_soon(worker)
            tg.cancel_scope.cancel()
        await shared.aclose()
        print(";".join(f"{a},{b}" for a, b in spans))

    anyio.run(main, backend=sys.argv[2])
    """
)


def test_worker_processes_share_concurrency_slots(redis_server: RedisServer) -> None:
    """max_concurrency=4 for three processes of four workers each: never more than 4 attempts in flight."""
    workers = [
        subprocess.Popen([sys.executable, "-c", HOLDER, redis_server.url, backend], stdout=subprocess.PIPE, text=True)
        for backend in ("trio", "asyncio", "asyncio")
    ]
    outputs = [w.communicate(timeout=120)[0].strip() for w in workers]
    assert all(w.returncode == 0 for w in workers)
    spans = [tuple(map(float, pair.split(","))) for out in outputs if out for pair in out.split(";")]
    events = sorted([(a, 1) for a, _ in spans] + [(b, -1) for _, b in spans])
    level = peak = 0
    for _, step in events:
        level += step
        peak = max(peak, level)
    assert peak <= 4
    assert len(spans) >= 100  # and the slots are used (4 × 2 s / 20 ms = 400 at most)
    assert sum(bool(out) for out in outputs) >= 2


def test_a_dead_processs_slots_come_back(redis_server: RedisServer) -> None:
    hog = textwrap.dedent(
        """
        import sys, anyio
        from specexec.stores import RedisRateLimits

        async def main():
            shared = RedisRateLimits(sys.argv[1], interval=0.05, timeout=5.0)
            slots = shared.concurrency("b", 2)
            await shared.sync()
            while slots.try_acquire():
                await shared.sync()  # lease more as it takes them
            async with anyio.create_task_group() as tg:
                tg.start_soon(shared.follow, None)  # alive: its leases are renewed
                print("holding", flush=True)
                await anyio.sleep_forever()

        anyio.run(main)
        """
    )
    process = subprocess.Popen([sys.executable, "-c", hog, redis_server.url], stdout=subprocess.PIPE, text=True)
    assert process.stdout is not None and process.stdout.readline().strip() == "holding"

    async def take() -> bool:
        shared = RedisRateLimits(redis_server.url, interval=0.05, timeout=5.0)
        slots = shared.concurrency("b", 2)
        try:
            await shared.sync()
            return slots.try_acquire()
        finally:
            await shared.aclose()

    assert anyio.run(take) is False  # the hog holds both
    time.sleep(0.3)
    assert anyio.run(take) is False  # still alive: still holding
    process.kill()
    process.wait()
    time.sleep(0.3)  # its leases end 3 × interval = 150 ms after their last renewal
    assert anyio.run(take) is True


def test_a_busy_process_drains_to_its_fair_share_when_another_wants_slots(redis_server: RedisServer) -> None:
    """A process that keeps all four slots busy, with work always waiting, must not keep them
    once another process asks: past its fair share (4 over 2 processes) it takes no new slot, so
    as its attempts end the other one gets slots. Syncs are called by hand: no timing involved."""

    async def main() -> None:
        a = RedisRateLimits(redis_server.url, interval=0.05, timeout=5.0)
        b = RedisRateLimits(redis_server.url, interval=0.05, timeout=5.0)
        a_slots, b_slots = a.concurrency("b", 4), b.concurrency("b", 4)
        try:
            await a.sync()
            while a_slots.try_acquire():  # a takes what it is leased, and leases more as it goes
                await a.sync()
            assert a_slots.in_use == 4
            await b.sync()
            assert not b_slots.try_acquire()  # all four are a's, busy
            await a.sync()  # a now sees two processes asking: a fair share of 2
            a_slots.release()
            assert not a_slots.try_acquire()  # 3 busy > 2: the freed slot is not taken again here
            a_slots.release()
            a_slots.release()
            assert a_slots.try_acquire()  # 1 busy: one more is within its share
            assert not a_slots.try_acquire()  # 2 busy: its share
            await a.sync()  # the lease shrinks to its share: two slots go back
            await b.sync()
            assert b_slots.try_acquire()  # b gets the slots a gave back
            assert b_slots.in_use + a_slots.in_use <= 4
        finally:
            await a.aclose()
            await b.aclose()

    anyio.run(main)
