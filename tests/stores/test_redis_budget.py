"""``RedisBudgetStore`` against a real redis-server: atomic across tasks and processes, on trio
and asyncio, and a Redis outage never fails a call."""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import anyio
import pytest
import redis

from specexec.bench import redis_server as redis_server_module
from specexec.bench.redis_server import RedisServer
from specexec.stores import RedisBudgetStore

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["trio", "asyncio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_reserve_settle_usage(redis_server: RedisServer) -> None:
    store = RedisBudgetStore(redis_server.url, timeout=5.0)  # a loaded machine is no outage
    try:
        assert await store.reserve("t", 1, 0.4, 1.0)
        assert await store.reserve("t", 1, 0.5, 1.0)
        assert not await store.reserve("t", 1, 0.2, 1.0)  # 0.9 reserved: 0.2 more does not fit
        assert await store.usage("t", 1) == pytest.approx((0.0, 0.9))
        await store.settle("t", 1, 0.4, 0.1)
        assert await store.usage("t", 1) == pytest.approx((0.1, 0.5))
        assert await store.reserve("t", 1, 0.2, 1.0)
        assert await store.usage("t", 2) == (0.0, 0.0)  # another window
    finally:
        await store.aclose()


async def test_concurrent_reservations_never_overshoot(redis_server: RedisServer) -> None:
    store = RedisBudgetStore(redis_server.url, timeout=5.0)  # a loaded machine is no outage
    granted = 0

    async def one() -> None:
        nonlocal granted
        ok = await store.reserve("t", 7, 1.0, 10.0)
        granted += ok

    try:
        async with anyio.create_task_group() as tg:
            for _ in range(50):
                tg.start_soon(one)
        assert granted == 10
        assert await store.usage("t", 7) == pytest.approx((0.0, 10.0))
    finally:
        await store.aclose()


WORKER = textwrap.dedent(
    """
    import sys, anyio
    from specexec.stores import RedisBudgetStore

    async def main():
        store = RedisBudgetStore(sys.argv[1], timeout=5.0)
        granted = 0
        for _ in range(40):
            if await store.reserve("shared", 1, 1.0, 50.0):
                granted += 1
                await store.settle("shared", 1, 1.0, 1.0)
        await store.aclose()
        print(granted)

    anyio.run(main, backend=sys.argv[2])
    """
)


def test_several_processes_share_one_budget(redis_server: RedisServer) -> None:
    """Four worker processes (two on trio, two on asyncio) spend from one $50 budget, 160 tries in all."""
    workers = [
        subprocess.Popen([sys.executable, "-c", WORKER, redis_server.url, backend], stdout=subprocess.PIPE, text=True)
        for backend in ("trio", "asyncio", "trio", "asyncio")
    ]
    granted = [int(w.communicate(timeout=120)[0].strip()) for w in workers]
    assert all(w.returncode == 0 for w in workers)
    assert sum(granted) == 50  # exactly the budget: never more, and nothing lost

    async def usage() -> tuple[float, float]:
        store = RedisBudgetStore(redis_server.url, timeout=5.0)  # a loaded machine is no outage
        try:
            return await store.usage("shared", 1)
        finally:
            await store.aclose()

    assert anyio.run(usage) == pytest.approx((50.0, 0.0))


async def test_an_outage_falls_back_to_local_state_and_sharing_resumes(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="specexec")
    store = RedisBudgetStore(redis_server.url, timeout=0.5)
    try:
        assert await store.reserve("t", 1, 1.0, 3.0)
        await store.settle("t", 1, 1.0, 1.0)
        redis_server.stop()
        # Redis is gone: calls still answer, from a local tally (budgets per process meanwhile)
        assert await store.reserve("t", 1, 1.0, 3.0)
        assert await store.reserve("t", 1, 1.0, 3.0)
        await store.settle("t", 1, 1.0, 1.0)
        assert await store.usage("t", 1) == pytest.approx((1.0, 1.0))
        outages = [r for r in caplog.records if "unreachable" in r.getMessage()]
        assert len(outages) == 1  # once per outage
        redis_server.start()  # a fresh, empty server on the same port
        assert await store.reserve("t", 1, 2.0, 3.0)
        assert await store.usage("t", 1) == pytest.approx((0.0, 2.0))  # shared state again
        assert any("answers again" in r.getMessage() for r in caplog.records)
    finally:
        await store.aclose()


def test_the_url_password_never_reaches_the_log() -> None:
    from specexec.stores._redis_budget import _safe_url

    assert _safe_url("redis://:s3cret@10.0.0.1:6379/0") == "redis://***@10.0.0.1:6379/0"


def test_import_specexec_does_not_import_redis() -> None:
    out = subprocess.run(
        [sys.executable, "-c", "import sys, specexec; print('redis' in sys.modules)"], capture_output=True, text=True
    )
    assert out.stdout.strip() == "False"


def test_a_server_never_shares_a_port_another_worker_took(redis_server: RedisServer) -> None:
    """Parallel test workers each start servers: one whose free port was taken meanwhile moves on."""
    other = RedisServer()
    other.port, other.url = redis_server.port, redis_server.url  # the port another worker's server got
    try:
        other.start()
        assert other.port != redis_server.port
        assert other.process is not None and other.process.poll() is None
        assert redis.Redis.from_url(other.url).info("server")["process_id"] == other.process.pid
    finally:
        other.stop()
        shutil.rmtree(other.dir, ignore_errors=True)


def test_a_server_that_cannot_start_says_why_instead_of_blaming_the_port(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A redis-server that exits at once with no other server on its port failed on its own:
    its output is in the error, and it is not retried on other ports as if the port were taken."""
    broken = tmp_path / "redis-server"
    broken.write_text("#!/bin/sh\necho 'FATAL CONFIG FILE ERROR: bad directive' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setattr(redis_server_module, "redis_binary", lambda: str(broken))
    server = RedisServer()
    try:
        with pytest.raises(RuntimeError, match=r"exited with status 1(.|\n)*FATAL CONFIG FILE ERROR"):
            server.start()
    finally:
        shutil.rmtree(server.dir, ignore_errors=True)
