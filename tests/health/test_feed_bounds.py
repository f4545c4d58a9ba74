"""``HealthFeed`` reads a snapshot within ``max_bytes`` decoded bytes, over real loopback HTTP:
a gzip bomb (or an endless body) from a hostile "daemon" fails the poll cleanly, never inflated."""

from __future__ import annotations

import gzip
import math
import os
import subprocess
import sys
import tracemalloc
from collections.abc import AsyncIterator
from pathlib import Path

import msgspec
import pytest

from specexec import HealthFeed, Runtime, SimulatedBackend
from specexec._feed import DEFAULT_MAX_SNAPSHOT_BYTES
from tests.backends.test_hardening_fleet import canned_server

pytestmark = pytest.mark.anyio

SNAPSHOT = msgspec.msgpack.encode({"version": 2, "generated_at": 0.0, "backends": {}})


def _head(length: int, gzipped: bool = False) -> bytes:
    encoding = b"content-encoding: gzip\r\n" if gzipped else b""
    return (
        b"HTTP/1.1 200 OK\r\ncontent-type: application/vnd.msgpack\r\n%scontent-length: %d\r\n"
        b"connection: close\r\n\r\n" % (encoding, length)
    )


def _body(data: bytes) -> object:
    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(data), 16384):
            yield data[i : i + 16384]

    return body


def test_the_default_bound_is_16_mib() -> None:
    assert DEFAULT_MAX_SNAPSHOT_BYTES == 16 << 20
    assert HealthFeed("http://127.0.0.1:1").max_bytes == DEFAULT_MAX_SNAPSHOT_BYTES
    for bad in (0, -1, 1.5, True):
        with pytest.raises(ValueError, match="max_bytes"):
            HealthFeed("x", max_bytes=bad)  # type: ignore[arg-type]


async def test_a_gzipped_snapshot_within_the_bound_is_read() -> None:
    packed = gzip.compress(SNAPSHOT)
    async with canned_server(_head(len(packed), gzipped=True), _body(packed)) as url:  # type: ignore[arg-type]
        feed = HealthFeed(url.removesuffix("/v1"), max_bytes=1 << 20, wall_clock=lambda: 0.0)
        async with Runtime([SimulatedBackend("a", 0.01)]) as runtime:
            assert await feed.poll_once(runtime)
    assert feed.failures == 0


async def test_a_gzip_bomb_fails_the_poll_at_the_bound(caplog: pytest.LogCaptureFixture) -> None:
    packed = gzip.compress(b"\0" * (64 << 20), compresslevel=9)  # 64 MiB inflated, ~64 KiB on the wire
    async with canned_server(_head(len(packed), gzipped=True), _body(packed)) as url:  # type: ignore[arg-type]
        feed = HealthFeed(url.removesuffix("/v1"), max_bytes=1 << 20, timeout=10.0)
        async with Runtime([SimulatedBackend("a", 0.01)]) as runtime:
            tracemalloc.start()
            try:
                tracemalloc.reset_peak()
                base = tracemalloc.get_traced_memory()[0]
                assert not await feed.poll_once(runtime)
                peak = tracemalloc.get_traced_memory()[1] - base
            finally:
                tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak} bytes"
    assert feed.failures == 1 and not feed.reachable
    assert "max_bytes" in caplog.text


async def test_an_uncompressed_body_past_the_bound_fails_the_poll() -> None:
    data = b"\0" * (2 << 20)
    async with canned_server(_head(len(data)), _body(data)) as url:  # type: ignore[arg-type]
        feed = HealthFeed(url.removesuffix("/v1"), max_bytes=1 << 20, timeout=10.0)
        async with Runtime([SimulatedBackend("a", 0.01)]) as runtime:
            assert not await feed.poll_once(runtime)
    assert feed.failures == 1


def test_a_snapshot_file_past_the_bound_fails_the_poll(tmp_path: Path) -> None:
    path = tmp_path / "big.msgpack"
    path.write_bytes(b"\0" * 4096)
    feed = HealthFeed(path, max_bytes=1024)

    async def poll() -> bool:
        async with Runtime([SimulatedBackend("a", 0.01)]) as runtime:
            return await feed.poll_once(runtime)

    import anyio

    assert not anyio.run(poll)
    assert feed.failures == 1


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="needs os.mkfifo")
def test_a_snapshot_path_that_is_not_a_regular_file_fails_the_poll_at_once(tmp_path: Path) -> None:
    # Before: opening a FIFO with no writer blocked the event loop itself (the whole process
    # hung), so the poll runs in a child process here, bounded.
    path = tmp_path / "probes.msgpack"
    os.mkfifo(path)
    done = subprocess.run(
        [sys.executable, "-c", _POLL_ONCE, str(path)], capture_output=True, text=True, timeout=20, check=False
    )
    assert done.returncode == 0 and done.stdout.split() == ["False", "1"], done.stdout + done.stderr
    assert "not a regular file" in done.stderr


_POLL_ONCE = """
import logging, sys, anyio
from specexec import HealthFeed, Runtime, SimulatedBackend
logging.basicConfig(level=logging.WARNING)
feed = HealthFeed(sys.argv[1], timeout=0.5)
async def poll():
    async with Runtime([SimulatedBackend("a", 0.01)]) as runtime:
        return await feed.poll_once(runtime)
print(anyio.run(poll), feed.failures)
"""


@pytest.mark.parametrize("age", [math.nan, -1.0e9, math.inf])
def test_a_backend_entry_with_an_impossible_age_is_unknown(tmp_path: Path, age: float) -> None:
    # Before: a NaN or negative age made the entry fresh forever (never expired at max_age).
    import time

    import anyio

    from specexec._health import LatencyWindow

    window = LatencyWindow(60.0, 6, 1)
    for _ in range(30):
        window.record(0.05, 0.0)
    observed, censored = window.encode(0.0)
    latency = {"observed": observed, "censored": censored}
    backend = {"state": "healthy", "age": age, "queries": {"ping": {"samples": 30, "latency": latency}}}
    doc = {"version": 2, "generated_at": time.time(), "backends": {"a": backend}}
    path = tmp_path / "probes.msgpack"
    path.write_bytes(msgspec.msgpack.encode(doc))
    feed = HealthFeed(path, max_age=1.0)

    async def poll() -> tuple[bool, object]:
        async with Runtime([SimulatedBackend("a", 0.01)]) as runtime:
            return await feed.poll_once(runtime), feed.remote("a")

    assert anyio.run(poll) == (True, None)
