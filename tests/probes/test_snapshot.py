"""Snapshots: msgpack round trip, merged quantiles equal the daemon's, atomic file, resume."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import anyio
import pytest

from specexec import LogNormal, SimulatedBackend
from specexec._health import LatencyWindow
from specexec.probes import Snapshot, decode_snapshot, encode_snapshot, read_snapshot_file
from specexec.probes._snapshot import write_atomic

from ._support import WALL0, running, sim_config, virtual_time_backend

pytestmark = pytest.mark.anyio

QUANTILES = (0.1, 0.5, 0.9, 0.95, 0.99)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return virtual_time_backend()


def _config(**extra: str) -> Any:
    probe = "interval = 1.0\njitter = 0.0\ntimeout = 1.5\nwindow = 600.0\nmin_samples = 20"
    return sim_config('name = "a"', 'name = "b"', probe=probe + "".join(f"\n{k} = {v}" for k, v in extra.items()))


def _backends() -> list[SimulatedBackend]:
    return [
        SimulatedBackend("a", LogNormal(0.08, 0.5), seed=1, stall=0.05),  # some timeouts: censored samples
        SimulatedBackend("b", LogNormal(0.3, 0.3), seed=2),
    ]


async def test_encode_decode_merge_gives_the_daemons_quantiles() -> None:
    async with running(_config(), _backends()) as daemon:
        await anyio.sleep_until(300.5)
        now = anyio.current_time()
        snapshot = decode_snapshot(encode_snapshot(daemon.snapshot()))
        for name in ("a", "b"):
            source = daemon.states[name].health.latency
            source.refresh(now)
            entry = snapshot.backends[name]
            received = LatencyWindow(600.0, 6, 20)
            received.merge_encoded(entry.queries["ping"].latency.observed, entry.queries["ping"].latency.censored, now)
            assert received.count(now) == source.count(now) == entry.samples >= 250
            for q in QUANTILES:
                assert received.quantile(q, now) == source.quantile(q, now) is not None
            assert (entry.p50, entry.p90, entry.p99) == tuple(source.quantile(q, now) for q in (0.5, 0.9, 0.99))
        assert snapshot.backends["a"].errors["timeout"] > 0  # censored samples were in play


async def test_the_snapshot_file_is_written_periodically_and_at_shutdown(tmp_path: Path) -> None:
    path = tmp_path / "probes.msgpack"
    async with running(_config(snapshot_interval="5.0"), _backends(), snapshot=path) as daemon:
        await anyio.sleep_until(4.9)
        assert not path.exists()
        await anyio.sleep_until(5.1)
        first = read_snapshot_file(path)
        assert first is not None and first.generated_at == pytest.approx(WALL0 + 5.0, abs=1e-6)
        await anyio.sleep_until(7.5)
    final = read_snapshot_file(path)
    assert final is not None and final.generated_at == pytest.approx(WALL0 + 7.5, abs=1e-6)
    assert final.backends["b"].probes == 8
    assert daemon.url is None
    assert os.listdir(tmp_path) == ["probes.msgpack"]  # no temp files left


async def test_a_restart_resumes_from_the_last_snapshot(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "probes.msgpack"
    config = _config(daily_budget="1.0")
    async with running(config, _backends(), snapshot=path) as first:
        await anyio.sleep_until(100.5)
        now = anyio.current_time()
        before = {n: (s.probes, s.successes, s.failures, dict(s.errors)) for n, s in first.states.items()}
        for s in first.states.values():
            s.health.latency.refresh(now)
        quantiles = {n: [s.health.latency.quantile(q, now) for q in QUANTILES] for n, s in first.states.items()}
    caplog.set_level(logging.INFO, logger="specexec.probes")
    # The restart happens 0.5 s later (virtual time goes on in this test).
    second_backends = _backends()
    for b in second_backends:
        b.stall = 1.0  # so the resumed numbers are not muddied by new probes before we look
    async with running(config, second_backends, snapshot=path) as second:
        now = anyio.current_time()
        after = {n: (s.probes, s.successes, s.failures, dict(s.errors)) for n, s in second.states.items()}
        assert after == before
        for name, state in second.states.items():
            assert [state.health.latency.quantile(q, now) for q in QUANTILES] == quantiles[name]
        assert any("resumed from" in r.getMessage() for r in caplog.records)


async def test_a_bad_snapshot_file_is_logged_and_ignored(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "probes.msgpack"
    path.write_bytes(b"\x00not msgpack")
    async with running(_config(), _backends(), snapshot=path) as daemon:
        await anyio.sleep_until(0.5)
        assert daemon.states["a"].probes <= 1
    assert any("ignoring" in r.getMessage() for r in caplog.records)
    assert isinstance(read_snapshot_file(path), Snapshot)  # overwritten at shutdown


def test_decode_rejects_other_documents() -> None:
    with pytest.raises(ValueError, match="not a probe snapshot"):
        decode_snapshot(b"\x81\xa1a\x01")


def test_write_atomic_replaces_the_file(tmp_path: Path) -> None:
    path = tmp_path / "f"
    write_atomic(path, b"one")
    write_atomic(path, b"two")
    assert path.read_bytes() == b"two" and os.listdir(tmp_path) == ["f"]
    with pytest.raises(OSError):
        write_atomic(tmp_path / "missing-dir" / "f", b"x")
    assert os.listdir(tmp_path) == ["f"]
