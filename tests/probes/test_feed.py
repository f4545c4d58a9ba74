"""``specexec.HealthFeed`` following a daemon's snapshot file, in virtual time."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import anyio.lowlevel
import pytest

import specexec
from specexec import HealthConfig, HealthFeed, Policy, Query, Runtime, SimulatedBackend
from specexec.probes import read_snapshot_file

from ._support import WALL0, running, sim_config, virtual_time_backend, wall

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return virtual_time_backend()


def _config(*backends: str, interval: float = 1.0, extra: str = "") -> Any:
    probe = f"interval = {interval}\njitter = 0.0\ntimeout = 2.0\nsnapshot_interval = 1.0\nmin_samples = 5"
    return sim_config(*backends, probe=probe, extra=extra)


def _feed(path: Path, **options: Any) -> HealthFeed:
    options.setdefault("wall_clock", wall)
    return HealthFeed(str(path), **options)


def test_it_is_exported() -> None:
    assert specexec.HealthFeed is HealthFeed
    feed: specexec.HealthFeedLike = HealthFeed("x")  # the runtime's protocol (checked by mypy)
    assert callable(feed.follow)


async def test_a_service_orders_candidates_by_probed_latency_before_any_real_traffic(tmp_path: Path) -> None:
    path = tmp_path / "probes.msgpack"
    config = _config('name = "slow"', 'name = "fast"')
    probed = [SimulatedBackend("slow", 0.3), SimulatedBackend("fast", 0.05)]
    # The service has its own backend objects (its own process, in real life).
    slow, fast = SimulatedBackend("slow", 0.3), SimulatedBackend("fast", 0.05)
    policy = Policy.failover(["slow", "fast"], order="latency")
    async with running(config, probed, snapshot=path):
        await anyio.sleep_until(10.5)
        feed = _feed(path, interval=1.0)
        runtime = Runtime([slow, fast], health=HealthConfig(min_samples=5), feeds=[feed])
        async with runtime:
            await anyio.sleep(0.001)  # the feed polls at once (trio runs ready tasks in random order)
            assert feed.reachable
            now = anyio.current_time()
            assert runtime.health("slow").latency.count(now) == runtime.health("fast").latency.count(now) == 0
            assert runtime.health("fast").quantile(0.5, now) == pytest.approx(0.05, rel=0.01)
            assert runtime.health("slow").quantile(0.5, now) == pytest.approx(0.3, rel=0.01)
            result = await runtime.run(Query("hi"), policy)
    assert result.backend == "fast"
    assert result.trace.attempts[0].why.endswith("by predicted latency")
    assert (slow.calls, fast.calls) == (0, 1)
    # Without the feed the listed order stands.
    async with Runtime([SimulatedBackend("slow", 0.3), SimulatedBackend("fast", 0.05)]) as plain:
        assert (await plain.run(Query("hi"), policy)).backend == "slow"


async def test_a_dead_daemons_data_ages_to_unknown_at_exactly_max_age(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "probes.msgpack"
    config = _config('name = "a"', interval=10.0)
    service_a = SimulatedBackend("a", 0.05)
    feed = _feed(path, interval=5.0, max_age=30.0)
    runtime = Runtime([service_a], health=HealthConfig(min_samples=1, probe_min_samples=1), feeds=[feed])
    caplog.set_level(logging.INFO, logger="specexec.feed")
    async with anyio.create_task_group() as tg:
        daemon_scope = anyio.CancelScope()

        async def daemon() -> None:
            with daemon_scope:
                async with running(config, [SimulatedBackend("a", 0.05)], snapshot=path):
                    await anyio.sleep_forever()

        tg.start_soon(daemon)
        await anyio.sleep_until(1.5)
        async with runtime:
            await anyio.sleep_until(20.5)
            daemon_scope.cancel()  # the daemon dies; its final snapshot: probe finished at 20.05
            health = runtime.health("a")
            await anyio.sleep_until(20.05 + 30.0 - 1e-5)
            assert health.quantile(0.5, anyio.current_time()) == pytest.approx(0.05, rel=0.01)
            remote = feed.remote("a")
            assert remote is not None and remote.state == "healthy"
            assert remote.age == pytest.approx(30.0, abs=1e-4)
            await anyio.sleep_until(20.05 + 30.0 + 1e-5)
            assert health.quantile(0.5, anyio.current_time()) is None
            assert feed.remote("a") is None
            # The service works on, with no probe data.
            result = await runtime.run(Query("hi"), Policy.single("a"))
            assert result.backend == "a"
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]  # the file was readable throughout


async def test_an_unreachable_daemon_is_logged_once_per_outage_and_never_raises(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "probes.msgpack"
    feed = _feed(path, interval=1.0, max_age=60.0)
    runtime = Runtime(
        [SimulatedBackend("a", 0.05)], health=HealthConfig(min_samples=1, probe_min_samples=1), feeds=[feed]
    )
    caplog.set_level(logging.INFO, logger="specexec.feed")
    async with running(_config('name = "a"'), [SimulatedBackend("a", 0.05)], snapshot=None) as daemon, runtime:
        await anyio.sleep_until(5.5)  # polls at 0..5 all fail: no file
        assert feed.failures == 6 and not feed.reachable
        assert (await runtime.run(Query("hi"), Policy.single("a"))).backend == "a"
        daemon.snapshot_path = path
        daemon.write_snapshot()
        await anyio.sleep_until(6.5)
        assert feed.reachable and feed.remote("a") is not None
        path.write_bytes(b"garbage")  # an unreadable snapshot is an outage too
        await anyio.sleep_until(9.5)
        path.unlink()
        await anyio.sleep_until(12.5)
    records = [r for r in caplog.records if r.name == "specexec.feed"]
    warnings = [r.getMessage() for r in records if r.levelno == logging.WARNING]
    infos = [r.getMessage() for r in records if r.levelno == logging.INFO]
    assert len(warnings) == 2  # the first outage (no file), the second (garbage, then no file)
    assert "unreachable" in warnings[0] and "No such file" in warnings[0]
    assert "not a probe snapshot" in warnings[1]
    assert len(infos) == 1 and "reachable again after 6.0 s" in infos[0]
    assert feed.remote("a") is not None  # last good data is kept until max_age


async def test_remote_state_is_information_the_local_breaker_is_not_forced(tmp_path: Path) -> None:
    path = tmp_path / "probes.msgpack"
    config = _config('name = "down"', 'name = "ok"', 'name = "gone"')
    probed = [
        SimulatedBackend("down", 0.05, errors={"unavailable": 1.0}),
        SimulatedBackend("ok", 0.05),
        SimulatedBackend("gone", 0.05),
    ]
    service = [SimulatedBackend("down", 0.05), SimulatedBackend("ok", 0.05), SimulatedBackend("unprobed", 0.05)]
    feed = _feed(path, interval=1.0)
    runtime = Runtime(service, health=HealthConfig(min_samples=1, probe_min_samples=1))
    async with running(config, probed, snapshot=path):
        await anyio.sleep_until(10.5)
        assert await feed.poll_once(runtime)
        now = anyio.current_time()
        down = feed.remote("down")
        assert down is not None and (down.state, down.circuit) == ("unhealthy", "open")
        assert runtime.health("down").breaker.state(now) == "closed"
        assert runtime.health("down").quantile(0.5, now) is None  # no probe estimate for a failing backend
        assert runtime.health("ok").quantile(0.5, now) is not None
        assert feed.remote("unprobed") is None and runtime.health("unprobed").quantile(0.5, now) is None
        assert feed.remote("gone") is None  # not a backend of this runtime: ignored


async def test_polls_replace_probe_data_instead_of_adding_it(tmp_path: Path) -> None:
    path = tmp_path / "probes.msgpack"
    feed = _feed(path)
    runtime = Runtime([SimulatedBackend("a", 0.05)], health=HealthConfig(min_samples=1, probe_min_samples=1))
    async with running(_config('name = "a"'), [SimulatedBackend("a", 0.05)], snapshot=path):
        await anyio.sleep_until(10.5)
        for _ in range(3):
            assert await feed.poll_once(runtime)
        now = anyio.current_time()
        written = read_snapshot_file(path)
        assert written is not None
        assert runtime.health("a").probe_latency.count(now) == written.backends["a"].samples == 10


async def test_a_degraded_backend_gets_no_probe_estimate(tmp_path: Path) -> None:
    path = tmp_path / "probes.msgpack"
    canary = '[probe.canary]\nquery = { prompt = "2+2?" }\nexpect = "4"\n'
    config = _config('name = "a"', extra=canary)
    runtime = Runtime([SimulatedBackend("a", 0.05)], health=HealthConfig(min_samples=1, probe_min_samples=1))
    feed = _feed(path)
    async with running(config, [SimulatedBackend("a", 0.05, reply="5")], snapshot=path):
        await anyio.sleep_until(3.5)
        assert await feed.poll_once(runtime)
        remote = feed.remote("a")
        assert remote is not None and remote.state == "degraded"
        assert runtime.health("a").quantile(0.5, anyio.current_time()) is None


async def test_an_old_snapshot_is_unknown_at_once(tmp_path: Path) -> None:
    path = tmp_path / "probes.msgpack"
    runtime = Runtime([SimulatedBackend("a", 0.05)], health=HealthConfig(min_samples=1, probe_min_samples=1))
    async with running(_config('name = "a"'), [SimulatedBackend("a", 0.05)], snapshot=path):
        await anyio.sleep_until(2.5)
    feed = HealthFeed(str(path), max_age=60.0, wall_clock=lambda: WALL0 + 1000.0)  # read much later
    assert await feed.poll_once(runtime)
    assert feed.remote("a") is None and runtime.health("a").quantile(0.5, anyio.current_time()) is None


def test_arguments_are_checked() -> None:
    cases: list[dict[str, Any]] = [{"interval": 0.0}, {"max_age": -1.0}, {"timeout": 0.0}]
    for bad in cases:
        with pytest.raises(ValueError):
            HealthFeed("x", **bad)
    assert HealthFeed("http://127.0.0.1:9470/").url == "http://127.0.0.1:9470/v1/snapshot"
    assert HealthFeed("http://127.0.0.1:9470/v1/snapshot").url == "http://127.0.0.1:9470/v1/snapshot"
    assert HealthFeed("/var/lib/probes.msgpack").path == Path("/var/lib/probes.msgpack")
