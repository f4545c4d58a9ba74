"""One latency histogram per probe query: the 1-token ping and the canary are kept apart everywhere.

A real server answers the ping in 8-55 ms and the canary (a question, a few tokens) in
~0.2 s: mixed, the p90 says 0.19 s for a backend whose ping is fast. The daemon keeps them
apart in ``/v1/health``, ``/v1/snapshot`` and ``/metrics``, and a service's feed takes the
ping's only. A service upgraded before the daemon still reads the daemon's version-1 snapshot.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import msgspec
import pytest

from specexec import HealthConfig, HealthFeed, Query, Response, Runtime, SimulatedBackend
from specexec._health import LatencyWindow
from specexec.probes import SNAPSHOT_VERSION, decode_snapshot, encode_snapshot, read_snapshot_file

from ._prometheus import parse
from ._support import WALL0, running, sim_config, virtual_time_backend, wall

pytestmark = pytest.mark.anyio

PING, CANARY = 0.01, 0.2


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return virtual_time_backend()


class TwoSpeed:
    """Answers the 1-token ping in 10 ms and anything else (the canary) in 200 ms."""

    provider, region, input_price, output_price = "sim", "default", 0.0, 0.0

    def __init__(self, name: str) -> None:
        self.name = self.model = name

    async def complete(self, query: Query) -> Response:
        await anyio.sleep(PING if query.prompt == "ping" else CANARY)
        return Response("2 + 2 = 4", model=self.name)


def _config(**extra: str) -> Any:
    probe = "interval = 1.0\njitter = 0.0\ntimeout = 1.0\nmin_samples = 1\nsnapshot_interval = 1.0"
    canary = '[probe.canary]\nquery = { prompt = "What is 2 + 2?", max_tokens = 8 }\nexpect = "4"\nevery = 2\n'
    return sim_config('name = "a"', probe=probe + "".join(f"\n{k} = {v}" for k, v in extra.items()), extra=canary)


async def test_ping_and_canary_have_their_own_histograms_in_health_snapshot_and_metrics() -> None:
    async with running(_config(), [TwoSpeed("a")]) as daemon:
        await anyio.sleep_until(19.5)  # 20 probes: 10 pings, 10 canaries
        view = daemon.health_report().backends["a"]
        snap = decode_snapshot(encode_snapshot(daemon.snapshot())).backends["a"]
        families = parse(daemon.metrics())
    assert view.state == "healthy" and view.canary == "passed"
    assert set(view.queries) == {"ping", "canary"}
    ping, canary = view.queries["ping"], view.queries["canary"]
    assert (ping.samples, canary.samples, ping.latency_count, canary.latency_count) == (10, 10, 10, 10)
    assert ping.p50 == ping.p90 == ping.p99 == pytest.approx(PING, rel=0.01)
    assert canary.p50 == canary.p90 == pytest.approx(CANARY, rel=0.01)
    assert ping.latency_sum == pytest.approx(10 * PING) and canary.latency_sum == pytest.approx(10 * CANARY)
    # The backend's headline numbers are the ping's (what a service's feed uses).
    assert (view.p50, view.p90, view.p99, view.samples) == (ping.p50, ping.p90, ping.p99, ping.samples)
    assert (view.latency_count, view.latency_sum) == (ping.latency_count, ping.latency_sum)
    now = 19.5
    for name, expected in (("ping", PING), ("canary", CANARY)):
        window = LatencyWindow(1800.0, 6, 1)
        encoded = snap.queries[name].latency
        window.merge_encoded(encoded.observed, encoded.censored, now)
        assert window.count(now) == 10 and window.quantile(0.9, now) == pytest.approx(expected, rel=0.01)
    latency = {
        (s, labels["backend"], labels["query"], labels.get("le")): v
        for s, labels, v in families["specexec_probe_latency_seconds"]
    }
    window = {
        (labels["query"], labels["quantile"]): v for _, labels, v in families["specexec_probe_window_latency_seconds"]
    }
    assert window[("ping", "0.9")] == pytest.approx(PING, rel=0.01)
    assert window[("canary", "0.9")] == pytest.approx(CANARY, rel=0.01)
    assert latency[("specexec_probe_latency_seconds_bucket", "a", "ping", "+Inf")] == 10
    assert latency[("specexec_probe_latency_seconds_bucket", "a", "ping", "0.02")] == 10
    assert latency[("specexec_probe_latency_seconds_bucket", "a", "canary", "0.16")] == 0
    assert latency[("specexec_probe_latency_seconds_bucket", "a", "canary", "0.32")] == 10
    assert latency[("specexec_probe_latency_seconds_count", "a", "ping", None)] == 10
    assert latency[("specexec_probe_latency_seconds_count", "a", "canary", None)] == 10


async def test_a_backend_without_a_canary_has_only_the_ping() -> None:
    config = sim_config('name = "a"', probe="interval = 1.0\njitter = 0.0")
    async with running(config, [SimulatedBackend("a", 0.05)]) as daemon:
        await anyio.sleep_until(2.5)
        assert set(daemon.health_report().backends["a"].queries) == {"ping"}


async def test_a_canary_timeout_is_censored_in_the_canarys_histogram_only() -> None:
    async with running(_config(), [TwoSpeed("a")]) as daemon:
        daemon.targets["a"].settings = msgspec.structs.replace(daemon.targets["a"].settings, timeout=0.1)
        await anyio.sleep_until(3.5)
        view = daemon.health_report().backends["a"]
    assert view.errors == {"timeout": 2} and view.queries["ping"].samples == 2  # two pings, uncensored
    assert view.queries["canary"].samples == 2 and view.queries["canary"].latency_count == 0


async def test_a_services_feed_gets_the_pings_latency_only(tmp_path: Path) -> None:
    path = tmp_path / "probes.msgpack"
    async with running(_config(), [TwoSpeed("a")], snapshot=path):
        await anyio.sleep_until(20.5)
        feed = HealthFeed(str(path), wall_clock=wall)
        runtime = Runtime([SimulatedBackend("a", 0.05)], health=HealthConfig(probe_min_samples=1))
        assert await feed.poll_once(runtime)
    now = anyio.current_time()
    probe = runtime.health("a").probe_latency
    assert probe.count(now) == 10
    assert probe.quantile(0.9, now) == pytest.approx(PING, rel=0.01)
    remote = feed.remote("a")
    assert remote is not None and remote.p90 == pytest.approx(PING, rel=0.01)
    assert remote.queries["canary"].p90 == pytest.approx(CANARY, rel=0.01)


def _version_1_snapshot(generated_at: float, now: float) -> bytes:
    """A snapshot as a version-1 daemon wrote it: one mixed latency histogram per backend."""
    window = LatencyWindow(1800.0, 6, 1)
    for _ in range(8):
        window.record(0.03, now)
    observed, censored = window.encode(now)
    empty = LatencyWindow(1800.0, 6, 1).encode(now)
    entry = {
        "provider": "sim", "region": "default", "model": "a", "state": "healthy", "circuit": "closed",
        "p50": 0.03, "p90": 0.03, "p99": 0.03, "ttft_p50": None, "samples": 8, "success_rate": 1.0,
        "successes": 8, "failures": 0, "errors": {}, "consecutive_failures": 0, "last_error_kind": None,
        "last_error": None, "last_error_at": None, "last_success_at": generated_at, "last_probe_at": generated_at,
        "age": 0.5, "reported_model": "a", "drift": False, "canary": None, "canary_reason": None,
        "canary_at": None, "probes": 8, "skipped": 0, "cost": 0.0, "interval": 1.0, "latency_sum": 0.24,
        "latency_count": 8, "ttft_sum": 0.0, "ttft_count": 0,
        "latency": {"observed": observed, "censored": censored},
        "ttft": {"observed": empty[0], "censored": empty[1]},
    }  # fmt: skip
    budget = {
        "limit": None, "spent": 0.0, "reserved": 0.0, "day": 19_700, "date": "2023-12-09", "exhausted": False,
        "resets_at": WALL0 + 86_400.0, "total": 0.0,
    }  # fmt: skip
    document = {
        "version": 1, "generated_at": generated_at, "started_at": generated_at - 10.0, "revision": 17,
        "window": 1800.0, "budget": budget, "backends": {"a": entry},
    }  # fmt: skip
    return msgspec.msgpack.encode(document)


async def test_a_service_upgraded_first_reads_a_version_1_daemon(tmp_path: Path) -> None:
    assert SNAPSHOT_VERSION == 2
    path = tmp_path / "probes.msgpack"
    path.write_bytes(_version_1_snapshot(wall(), anyio.current_time()))
    feed = HealthFeed(str(path), wall_clock=wall)
    runtime = Runtime([SimulatedBackend("a", 0.05)], health=HealthConfig(probe_min_samples=1))
    assert await feed.poll_once(runtime)
    now = anyio.current_time()
    assert runtime.health("a").probe_latency.count(now) == 8
    assert runtime.health("a").probe_latency.quantile(0.5, now) == pytest.approx(0.03, rel=0.01)
    remote = feed.remote("a")
    assert remote is not None and remote.state == "healthy" and remote.queries == {}
    path.write_bytes(msgspec.msgpack.encode({"version": 3, "generated_at": wall(), "backends": {}}))
    assert not await feed.poll_once(runtime)  # a version it does not know is refused


async def test_the_daemon_resumes_its_counters_from_a_version_1_file(tmp_path: Path) -> None:
    path = tmp_path / "probes.msgpack"
    path.write_bytes(_version_1_snapshot(wall(), anyio.current_time()))
    config = sim_config('name = "a"', probe="interval = 1.0\njitter = 0.0")
    async with running(config, [SimulatedBackend("a", 0.05, stall=1.0)], snapshot=path) as daemon:
        state = daemon.states["a"]
        assert (state.probes, state.successes) == (8, 8)
        view = daemon.health_report().backends["a"]
        assert view.queries["ping"].samples == 8  # no canary configured: the version-1 window was the ping's
        assert daemon.snapshot().revision > 17
    final = read_snapshot_file(path)
    assert final is not None and final.version == 2
