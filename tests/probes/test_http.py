"""The HTTP endpoints over real loopback sockets, on trio and on asyncio + uvloop."""

from __future__ import annotations

import logging
import time
from typing import Any

import anyio
import httpx
import msgspec
import pytest

from specexec import HealthConfig, HealthFeed, Runtime, SimulatedBackend
from specexec.probes import HealthReport, ProbeConfig, ProbeDaemon, decode_snapshot

from ._prometheus import parse
from ._support import REAL_BACKENDS, eventually, running

pytestmark = pytest.mark.anyio


@pytest.fixture(params=REAL_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param  # type: ignore[no-any-return]


def _config() -> ProbeConfig:
    return ProbeConfig.load(
        '[[backends]]\nkind = "simulated"\nname = "a"\nlatency = 0.002\n'
        '[[backends]]\nkind = "simulated"\nname = "b"\nlatency = 0.004\n'
        "[probe]\ninterval = 1.0\njitter = 0.0\ntimeout = 0.5\nport = 0\nmin_samples = 1\n"
    )


async def _probed(daemon: ProbeDaemon, count: int = 1) -> None:
    await eventually(lambda: min(s.probes for s in daemon.states.values()) >= count)


def _running(config: ProbeConfig, **options: Any) -> Any:
    return running(config, wall_clock=time.time, **options)  # real time: the feed's clock is time.time too


async def test_the_endpoints() -> None:
    async with _running(_config()) as daemon:
        assert daemon.url is not None and daemon.url.startswith("http://127.0.0.1:")
        await _probed(daemon)
        async with httpx.AsyncClient(base_url=daemon.url, trust_env=False) as client:
            r = await client.get("/healthz")
            assert r.status_code == 200 and r.json()["status"] == "ok"
            r = await client.get("/v1/health")
            assert r.headers["content-type"] == "application/json"
            report = msgspec.json.decode(r.content, type=HealthReport)
            assert set(report.backends) == {"a", "b"}
            a = r.json()["backends"]["a"]
            for key in ("state", "p50", "p90", "p99", "success_rate", "last_error_kind", "last_error_at", "model"):
                assert key in a
            assert (a["state"], a["drift"], a["success_rate"]) == ("healthy", False, 1.0)
            assert a["age"] >= 0
            r = await client.get("/v1/snapshot")
            assert r.headers["content-type"] == "application/vnd.msgpack"
            snapshot = decode_snapshot(r.content)
            assert snapshot.backends["b"].queries["ping"].latency.observed
            r = await client.get("/metrics")
            assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
            assert "specexec_probe_latency_seconds" in parse(r.text)
            r = await client.head("/v1/health")
            assert r.status_code == 200 and r.content == b"" and int(r.headers["content-length"]) > 0
            r = await client.get("/nope")
            assert r.status_code == 404
            r = await client.post("/v1/health", content=b"x" * 1000)
            assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"
            # Keep-alive: the same connection serves on.
            for _ in range(3):
                assert (await client.get("/healthz?x=1")).status_code == 200


async def test_malformed_requests_get_400_and_do_not_hurt_the_server() -> None:
    async with _running(_config()) as daemon:
        assert daemon.url is not None
        port = int(daemon.url.rsplit(":", 1)[1])
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"NOT HTTP AT ALL\r\n\r\n")
            reply = await stream.receive()
        assert reply.startswith(b"HTTP/1.1 400 ")
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /healthz HTTP/1.1\r\nhost: x\r\n")  # half a request, then gone
        async with httpx.AsyncClient(trust_env=False) as client:
            assert (await client.get(daemon.url + "/healthz")).status_code == 200


async def test_a_health_feed_over_http() -> None:
    async with _running(_config()) as daemon:
        assert daemon.url is not None
        await _probed(daemon, 2)
        runtime = Runtime(
            [SimulatedBackend("a", 0.002), SimulatedBackend("b", 0.004)],
            health=HealthConfig(min_samples=1, probe_min_samples=1),
        )
        feed = HealthFeed(daemon.url, timeout=2.0)
        assert await feed.poll_once(runtime)
        now = anyio.current_time()
        for name in ("a", "b"):
            source = daemon.states[name].health.latency
            source.refresh(now)
            assert runtime.health(name).quantile(0.5, now) == source.quantile(0.5, now) is not None
        remote = feed.remote("a")
        assert remote is not None and remote.state == "healthy" and remote.age is not None and remote.age < 1.5


async def test_an_unreachable_daemon_url_is_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    async with _running(_config()) as daemon:
        url = daemon.url
    assert url is not None  # the daemon is gone: its port refuses connections now
    caplog.set_level(logging.INFO, logger="specexec.feed")
    feed = HealthFeed(url, interval=0.05, timeout=0.5)
    runtime = Runtime([SimulatedBackend("a", 0.002)], feeds=[feed])
    async with runtime:
        await eventually(lambda: feed.failures >= 4)
    warnings = [r for r in caplog.records if r.name == "specexec.feed" and r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0].getMessage()


async def test_a_taken_port_is_an_error() -> None:
    async with _running(_config()) as daemon:
        assert daemon.url is not None
        port = int(daemon.url.rsplit(":", 1)[1])
        with pytest.raises(ExceptionGroup) as info:
            async with _running(_config(), port=port):
                pass
        assert info.group_contains(OSError)
