"""Shared circuit breakers (``RedisRateLimits(url, breakers=True)``) against a real redis-server.

Two ``RedisRateLimits`` in one process stand for two processes here (each has its own owner ids and
Redis connection); syncs are called explicitly, so the order of events is exact. Cooldowns are
either long (60 s: open for the whole test) or 0 (half-open at once), so nothing depends on how
long the machine takes. The cross-process tests are in ``test_redis_breakers_processes.py``.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
import pytest

import specexec
from specexec._health import CircuitBreaker
from specexec.bench.redis_server import RedisServer
from specexec.stores import RedisRateLimits, SharedBreaker

pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])]

NEVER_PANIC = specexec.Policy.single("b", panic=False)


@dataclass
class Provider:
    """What backend ``b`` does in one process: fail (with ``error``) or answer; counts its calls."""

    error: Exception | None = None
    calls: int = 0
    gate: anyio.Event | None = None  # when set, a call waits for it (a trial kept in flight)
    entered: anyio.Event | None = None  # set when a call starts

    async def __call__(self, query: specexec.Query) -> str:
        self.calls += 1
        if self.entered is not None:
            self.entered.set()
        if self.gate is not None:
            await self.gate.wait()
        if self.error is not None:
            raise self.error
        return "ok"


@dataclass
class Process:
    """One "process": its shared store, its runtime and its backend ``b``."""

    shared: RedisRateLimits
    runtime: specexec.Runtime
    provider: Provider

    @property
    def breaker(self) -> CircuitBreaker:
        return self.runtime.health("b").breaker

    def state(self) -> str:
        return self.breaker.state(anyio.current_time())

    async def run(self) -> str:
        try:
            await self.runtime.run("q", NEVER_PANIC)
        except specexec.NoAcceptableResponse:
            return "failed"
        return "ok"


@asynccontextmanager
async def process(
    server: RedisServer, *, cooldown: float = 60.0, threshold: int = 2, breakers: bool = True
) -> AsyncIterator[Process]:
    # syncs only when the test says; a timeout long enough that a loaded machine is not an outage
    shared = RedisRateLimits(server.url, breakers=breakers, interval=3600.0, timeout=5.0)
    provider = Provider()
    config = specexec.BreakerConfig(failure_threshold=threshold, cooldown=cooldown)
    backend = specexec.CallableBackend("b", provider, breaker=config)
    try:
        async with specexec.Runtime([backend], shared_limits=shared) as rt:
            yield Process(shared, rt, provider)
    finally:
        await shared.aclose()


async def sync(*processes: Process) -> None:
    for p in processes:
        await p.shared.sync()


async def until_shared(p: Process) -> None:
    """Sync until Redis answers (after a restart, a client's first call may fail on its old connection)."""
    breaker = p.breaker
    assert isinstance(breaker, SharedBreaker)
    for _ in range(5):
        await p.shared.sync()
        if breaker.shared:
            return
    raise AssertionError("Redis did not answer five syncs in a row")


def flush(server: RedisServer) -> None:
    import redis

    with redis.Redis.from_url(server.url) as client:
        client.flushall()


async def trip(p: Process) -> None:
    p.provider.error = specexec.Unavailable("down")
    assert [await p.run(), await p.run()] == ["failed", "failed"]
    assert p.state() != "closed"


async def test_the_in_process_breaker_stays_the_default(redis_server: RedisServer, anyio_backend: str) -> None:
    async with process(redis_server, breakers=False) as a, process(redis_server, breakers=False) as b:
        assert not isinstance(a.breaker, SharedBreaker)
        await trip(a)
        await sync(a, b)
        assert b.state() == "closed"


async def test_one_processs_open_breaker_is_seen_by_the_other(redis_server: RedisServer, anyio_backend: str) -> None:
    async with process(redis_server) as a, process(redis_server) as b:
        assert isinstance(b.breaker, SharedBreaker)
        await trip(a)
        assert b.state() == "closed"  # not before a sync: nothing on the hot path asks Redis
        await sync(a, b)  # a publishes, b reads: seen within two sync intervals
        assert b.state() == "open"
        assert b.breaker.open_reason == "failures"
        until = b.breaker.open_until
        assert until is not None and abs(until - (anyio.current_time() + 60.0)) < 1.0  # and until when
        assert await b.run() == "failed"
        assert b.provider.calls == 0  # b does not call the backend that is open for the fleet


async def test_the_longest_open_wins(redis_server: RedisServer, anyio_backend: str) -> None:
    async with process(redis_server, cooldown=60.0) as a, process(redis_server, cooldown=5.0) as b:
        await trip(a)
        await trip(b)
        await sync(b, a, b)
        for p in (a, b):
            until = p.breaker.open_until
            assert until is not None and abs(until - (anyio.current_time() + 60.0)) < 1.0


async def test_auth_retry_after_and_external_trips_are_shared(redis_server: RedisServer, anyio_backend: str) -> None:
    async with process(redis_server) as a, process(redis_server) as b:
        a.provider.error = specexec.AuthError("refused")
        assert await a.run() == "failed"
        await sync(a, b)
        assert (b.state(), b.breaker.open_reason) == ("open", "auth")
        reason = b.runtime.health("b").unavailable_reason(anyio.current_time())
        assert reason == "circuit open (auth)"

    flush(redis_server)
    async with process(redis_server) as a, process(redis_server) as b:
        a.provider.error = specexec.RateLimited("slow down", retry_after=30.0)
        assert await a.run() == "failed"
        await sync(a, b)
        assert (b.state(), b.breaker.open_reason) == ("open", "retry-after")
        until = b.breaker.open_until
        assert until is not None and abs(until - (anyio.current_time() + 30.0)) < 1.0

    flush(redis_server)
    async with process(redis_server) as a, process(redis_server) as b:
        a.breaker.trip(anyio.current_time(), 45.0, "probe")  # e.g. a health feed or an operator
        await sync(a, b)
        assert (b.state(), b.breaker.open_reason) == ("open", "probe")


async def test_one_trial_for_the_fleet_and_its_success_is_shared(redis_server: RedisServer, anyio_backend: str) -> None:
    async with process(redis_server, cooldown=0.0) as a, process(redis_server, cooldown=0.0) as b:
        await trip(a)
        await sync(a, b)
        assert a.state() == b.state() == "half_open"
        a.provider.error = None
        # Both want the trial; neither holds the fleet's trial lease yet, so neither calls b.
        assert [await a.run(), await b.run()] == ["failed", "failed"]
        assert a.provider.calls == 2 and b.provider.calls == 0
        await sync(b, a)  # b asks first: b gets the one trial, a does not
        assert [await a.run(), await b.run()] == ["failed", "ok"]
        assert (a.provider.calls, b.provider.calls) == (2, 1)
        assert b.state() == "closed"  # b's trial succeeded
        assert a.state() == "half_open"
        await sync(b, a)  # the close is shared
        assert a.state() == "closed"
        assert await a.run() == "ok"


async def test_a_failed_trial_reopens_for_the_fleet(redis_server: RedisServer, anyio_backend: str) -> None:
    async with process(redis_server, cooldown=0.0) as a, process(redis_server, cooldown=60.0) as b:
        await trip(a)
        await sync(a, b)
        assert await b.run() == "failed"  # b wants a trial
        await sync(b)
        b.provider.error = specexec.Unavailable("still down")
        assert await b.run() == "failed"
        assert b.provider.calls == 1  # the trial went out, and failed: b reopens for its cooldown (60 s)
        await sync(b, a)
        assert a.state() == "open"
        until = a.breaker.open_until
        assert until is not None and abs(until - (anyio.current_time() + 60.0)) < 1.0


async def test_a_trial_lease_not_used_goes_back(redis_server: RedisServer, anyio_backend: str) -> None:
    async with process(redis_server, cooldown=0.0) as a, process(redis_server, cooldown=0.0) as b:
        await trip(a)
        await sync(a, b)
        assert await a.run() == "failed"
        await sync(a)  # a holds the trial lease ...
        assert isinstance(a.breaker, SharedBreaker) and a.breaker.holds_trial
        assert await b.run() == "failed"
        await sync(b)
        assert isinstance(b.breaker, SharedBreaker) and not b.breaker.holds_trial
        await sync(a)  # ... but sent nothing since: it gives the lease back
        assert not a.breaker.holds_trial
        assert await b.run() == "failed"  # a wish counts for one sync interval: b asks again
        await sync(b)
        assert b.breaker.holds_trial
        a.provider.error = b.provider.error = None
        assert await b.run() == "ok"


async def test_a_trial_in_flight_keeps_its_lease(redis_server: RedisServer, anyio_backend: str) -> None:
    async with process(redis_server, cooldown=0.0) as a, process(redis_server, cooldown=0.0) as b:
        await trip(a)
        await sync(a, b)
        a.provider.error = None
        assert await a.run() == "failed"
        await sync(a)
        a.provider.gate, a.provider.entered = gate, entered = anyio.Event(), anyio.Event()
        async with anyio.create_task_group() as tg:
            tg.start_soon(a.run)
            with anyio.fail_after(5):
                await entered.wait()  # the trial is in flight
            assert a.provider.calls == 3
            for _ in range(3):  # renewed at every sync while it is out; b never gets a trial
                assert await b.run() == "failed"
                await sync(a, b)
            assert b.provider.calls == 0
            gate.set()
        await sync(a, b)
        assert a.state() == b.state() == "closed"


async def test_a_dead_holders_trial_lease_expires(redis_server: RedisServer, anyio_backend: str) -> None:
    async with process(redis_server, cooldown=0.0) as b:
        a_shared = RedisRateLimits(redis_server.url, breakers=True, interval=0.05, timeout=5.0)  # 1 s leases
        provider = Provider(error=specexec.Unavailable("down"))
        backend = specexec.CallableBackend(
            "b", provider, breaker=specexec.BreakerConfig(failure_threshold=2, cooldown=0.0)
        )
        async with specexec.Runtime([backend], shared_limits=a_shared) as rt:
            a = Process(a_shared, rt, provider)
            await trip(a)
            await sync(a, b)
            assert await a.run() == "failed"
            await sync(a)
            assert isinstance(a.breaker, SharedBreaker) and a.breaker.holds_trial
        await a_shared.aclose()  # a "dies" holding the lease: nobody renews it
        assert await b.run() == "failed"
        with anyio.fail_after(5):  # bounded polling: the lease ends 1 s after its last renewal
            while True:
                await sync(b)
                assert isinstance(b.breaker, SharedBreaker)
                if b.breaker.holds_trial:
                    break
                assert await b.run() == "failed"
                await anyio.sleep(0.01)
        b.provider.error = None
        assert await b.run() == "ok"


async def test_the_record_expires(redis_server: RedisServer, anyio_backend: str) -> None:
    import redis

    async with process(redis_server) as a:
        await trip(a)
        await sync(a)
    client = redis.Redis.from_url(redis_server.url)
    try:
        ttl_ms = client.pttl("specexec:limit:{breakers}:b")
        assert 60_000 < ttl_ms <= 60_000 + 3_600_000  # the open period, then an hour
    finally:
        client.close()


async def test_an_outage_falls_back_to_local_breakers_and_sharing_resumes(
    redis_server: RedisServer, anyio_backend: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="specexec")
    async with process(redis_server) as a, process(redis_server) as b:
        await sync(a, b)
        redis_server.stop()
        await trip(a)  # a's own breaker opens ...
        await sync(a, b, a, b)
        assert b.state() == "closed"  # ... b cannot know: each runs on its local breaker
        assert isinstance(a.breaker, SharedBreaker) and not a.breaker.shared
        assert await b.run() == "ok"
        assert await a.run() == "failed" and a.provider.calls == 2
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 2  # once per store (per process) for the whole outage
        for warning in warnings:  # said as what it is (before: "Redis budget store ... budgets are per process")
            message = warning.getMessage()
            assert "Redis shared limits" in message and "budget store" not in message, message
        redis_server.start()  # empty: it lost every record
        await until_shared(a)  # a's open (from the outage) is published on recovery
        await until_shared(b)
        assert b.state() == "open" and b.provider.calls == 1
        assert a.breaker.shared
        assert sum("answers again" in r.getMessage() for r in caplog.records) == 2


async def test_a_restarted_redis_gets_the_open_breakers_back(redis_server: RedisServer, anyio_backend: str) -> None:
    async with process(redis_server) as a, process(redis_server) as b:
        await trip(a)
        await sync(a, b)
        redis_server.stop()
        redis_server.start()  # no persistence: the record is gone
        await until_shared(b)  # b's mirror of the fleet's open breaker restores it
        async with process(redis_server) as c:
            await sync(c)
            assert c.state() == "open"
            assert await c.run() == "failed" and c.provider.calls == 0


async def test_a_local_open_or_close_is_published_at_once(redis_server: RedisServer, anyio_backend: str) -> None:
    """The tripping process does not wait for its next interval (3600 s here): its sync task publishes at
    once, so the fleet's staleness is one interval (the readers'), not two."""
    async with process(redis_server, cooldown=0.0) as a, process(redis_server, cooldown=0.0) as b:
        await trip(a)  # no explicit sync of a from here on: only its own follow task
        with anyio.fail_after(5):  # bounded polling
            while b.state() == "closed":
                await sync(b)
                await anyio.sleep(0.005)
        assert b.state() == "half_open"
        assert await b.run() == "failed"
        await sync(b)  # b holds the trial
        assert await b.run() == "ok"
        with anyio.fail_after(5):
            while a.state() != "closed":
                await sync(a)
                await anyio.sleep(0.005)


async def test_a_holder_late_to_renew_keeps_its_lease_for_a_second(
    redis_server: RedisServer, anyio_backend: str
) -> None:
    """A lease is ``max(3 × interval, 1 s)``: a live holder whose syncs are late (a loaded machine) does
    not lose its trial to another process after 150 ms, which would make two trials at once."""
    import time

    a = RedisRateLimits(redis_server.url, breakers=True, interval=0.05, timeout=5.0)
    config = specexec.BreakerConfig(cooldown=0.0)
    mine = a.breaker("b", config)
    assert mine is not None
    async with process(redis_server, cooldown=0.0) as b:
        try:
            now = anyio.current_time()
            mine.trip(now, 0.0, "failures")
            await a.sync()
            assert not mine.allow(anyio.current_time())  # wants the trial
            await a.sync()
            renewed = time.monotonic()
            assert mine.holds_trial and mine.allow(anyio.current_time())  # the trial is out; a stalls now
            with anyio.fail_after(5):
                while time.monotonic() - renewed < 0.5:
                    await sync(b)
                    assert await b.run() == "failed"  # b wants the trial
                    await sync(b)
                    assert isinstance(b.breaker, SharedBreaker)
                    assert not b.breaker.holds_trial or time.monotonic() - renewed >= 0.9
                    await anyio.sleep(0.02)
        finally:
            await a.aclose()
