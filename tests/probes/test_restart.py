"""Restarts and snapshot-file outages: orphan temp files, revisions that never go back, one ERROR per outage."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest

from specexec import SimulatedBackend
from specexec.probes import read_snapshot_file

from ._support import WALL0, running, sim_config, virtual_time_backend

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return virtual_time_backend()


def _config(**extra: str) -> Any:
    probe = "interval = 1.0\njitter = 0.0\ntimeout = 1.0\nmin_samples = 1"
    return sim_config('name = "a"', 'name = "b"', probe=probe + "".join(f"\n{k} = {v}" for k, v in extra.items()))


def _backends() -> list[SimulatedBackend]:
    return [SimulatedBackend("a", 0.01), SimulatedBackend("b", 0.02)]


async def test_orphan_temp_files_of_this_snapshot_are_removed_at_start(tmp_path: Path) -> None:
    path = tmp_path / "probes.msgpack"
    ours = [tmp_path / ".probes.msgpack.k2j3h4.tmp", tmp_path / ".probes.msgpack.zz_9.tmp"]
    others = [
        tmp_path / ".other.msgpack.k2j3h4.tmp",  # another file's temp file
        tmp_path / "probes.msgpack.tmp",  # not the pattern write_atomic uses
        tmp_path / ".probes.msgpack.k2j3h4.keep",
        tmp_path / "notes.txt",
    ]
    for file in [*ours, *others]:
        file.write_bytes(b"left over")
    async with running(_config(snapshot_interval="5.0"), _backends(), snapshot=path):
        await anyio.sleep(0.5)
        assert not any(file.exists() for file in ours)
        assert all(file.read_bytes() == b"left over" for file in others)


async def test_revisions_keep_growing_across_restarts_even_past_an_older_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "probes.msgpack"
    config = _config(snapshot_interval="5.0")
    served: list[int] = []
    async with running(config, _backends(), snapshot=path) as first:
        for _ in range(9):
            await anyio.sleep(1.0)
            served.append(first.snapshot().revision)
            assert first.health_report().revision == served[-1]
        first.snapshot_path = None  # killed: no final snapshot; the file on disk is from t = 5
    on_disk = read_snapshot_file(path)
    assert on_disk is not None and on_disk.revision < served[-1]
    assert served == sorted(served) and len(set(served)) == len(served)  # each second brought new results
    await anyio.sleep(0.05)  # a restart takes a while (the wall clock moves on)
    async with running(config, _backends(), snapshot=path) as second:
        resumed = second.snapshot().revision
        assert resumed > served[-1]
        assert second.snapshot().revision == resumed  # same data: same revision
        await anyio.sleep(1.0)
        assert second.snapshot().revision > resumed
        later = second.snapshot().revision
    again = read_snapshot_file(path)
    assert again is not None and again.revision == later  # the final snapshot carries the last served revision


async def test_a_restart_with_the_wall_clock_set_back_still_resumes_above_the_snapshot(tmp_path: Path) -> None:
    path = tmp_path / "probes.msgpack"
    config = _config()
    async with running(config, _backends(), snapshot=path) as first:
        await anyio.sleep(3.5)
        last = first.snapshot().revision
    async with running(config, _backends(), snapshot=path, wall_clock=lambda: WALL0 - 86_400.0) as second:
        assert second.snapshot().revision > last


async def test_an_unwritable_snapshot_path_is_logged_once_per_outage(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    directory = tmp_path / "state"
    path = directory / "probes.msgpack"
    caplog.set_level(logging.INFO, logger="specexec.probes")

    def records(level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.levelno == level and "snapshot" in r.getMessage()]

    async with running(_config(snapshot_interval="1.0"), _backends(), snapshot=path):
        await anyio.sleep(10.5)  # ten failed writes
        assert len(records(logging.ERROR)) == 1
        assert str(path) in records(logging.ERROR)[0]
        directory.mkdir()
        await anyio.sleep(1.0)
        assert path.exists()
        assert [m for m in records(logging.INFO) if "works again" in m]
        await anyio.sleep(3.0)
        assert len(records(logging.ERROR)) == 1
        path.unlink()
        directory.rmdir()  # a second outage
        await anyio.sleep(5.0)
        assert len(records(logging.ERROR)) == 2
        directory.mkdir()  # the final write at shutdown ends the second outage
    assert len([m for m in records(logging.INFO) if "works again" in m]) == 2
    assert len(records(logging.ERROR)) == 2
    assert read_snapshot_file(path) is not None
