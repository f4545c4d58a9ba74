"""Clients that pipeline requests and never read the answers, over real loopback sockets, in virtual
time (trio ``MockClock``: the clock jumps only when every task waits, here for a write deadline)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from anyio.abc import SocketAttribute

from specexec.probes import ProbeConfig, _http
from specexec.probes._http import Endpoints, HttpServer
from tests.helpers import peer_gone, stuck_readers

from ._support import running, virtual_time_backend

pytestmark = pytest.mark.anyio

CONFIG = ProbeConfig.load(
    '[[backends]]\nkind = "simulated"\nname = "a"\n[probe]\ninterval = 3600.0\nport = 0\nmin_samples = 1\n'
)


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return virtual_time_backend()


async def status_of_a_fresh_client(port: int, path: str) -> bytes:
    """The status line a new connection gets for ``GET path`` (``b""``: closed without an answer)."""
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(f"GET {path} HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n".encode())
        data = b""
        try:
            while b"\r\n" not in data:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
        return data.split(b"\r\n", 1)[0]


BIG = b"x" * (8 << 20)  # far more than a loopback socket's buffers take: the first answer blocks


@asynccontextmanager
async def http_server() -> AsyncIterator[int]:
    """The daemon's ``HttpServer`` on a loopback listener, ``/metrics`` an 8 MB body; yields the port."""
    endpoints = Endpoints(
        healthz=lambda: ("text/plain", b"ok\n"),
        health=lambda: ("application/json", b"{}"),
        snapshot=lambda: ("application/vnd.msgpack", BIG),
        metrics=lambda: ("text/plain", BIG),
    )
    server = HttpServer(endpoints)
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    async with anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, server.handle)
        try:
            yield listener.extra(SocketAttribute.local_port)
        finally:
            tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    "anyio_backend",
    [virtual_time_backend(), ("asyncio", {"use_uvloop": True})],
    ids=["trio-virtual-time", "asyncio+uvloop"],
)
async def test_clients_that_never_read_are_disconnected_at_the_write_deadline(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: tuple[str, dict[str, Any]]
) -> None:
    # Before: only reading a request had a deadline; MAX_CONNECTIONS such clients held every
    # slot for as long as they stayed connected, and everyone else got 503.
    monkeypatch.setattr(_http, "MAX_CONNECTIONS", 4)  # fewer slots: less kernel memory held by the test
    if anyio_backend[0] == "asyncio":  # the real clock: a short deadline
        monkeypatch.setattr(_http, "WRITE_TIMEOUT", 1.0, raising=False)
    write_timeout = getattr(_http, "WRITE_TIMEOUT", 30.0)
    async with http_server() as port:
        with stuck_readers(port, "/metrics", 4, pipelined=3) as socks:
            await anyio.sleep(0.1 * write_timeout)  # every connection is accepted and blocked writing
            assert await status_of_a_fresh_client(port, "/healthz") == b"HTTP/1.1 503 "
            assert not any(peer_gone(s) for s in socks)
            await anyio.sleep(0.4 * write_timeout)
            assert not any(peer_gone(s) for s in socks)  # each answer has its whole deadline
            await anyio.sleep(1.0 * write_timeout)
            assert all(peer_gone(s) for s in socks)
            assert await status_of_a_fresh_client(port, "/healthz") == b"HTTP/1.1 200 "


async def test_the_daemon_serves_on_after_clients_that_never_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_http, "IDLE_TIMEOUT", 1e6)  # only the write deadline may end them
    async with running(CONFIG) as daemon:
        assert daemon.url is not None
        port = int(daemon.url.rsplit(":", 1)[1])
        # 4,000 snapshots of ~1 kB: more than the socket buffers take
        with stuck_readers(port, "/v1/snapshot", 2, pipelined=4000) as socks:
            await anyio.sleep(1.0)
            assert not any(peer_gone(s) for s in socks)
            await anyio.sleep(getattr(_http, "WRITE_TIMEOUT", 30.0) + 1.0)
            assert all(peer_gone(s) for s in socks)
            assert await status_of_a_fresh_client(port, "/healthz") == b"HTTP/1.1 200 "


async def test_a_reader_that_keeps_up_is_served_every_pipelined_answer() -> None:
    async with running(CONFIG) as daemon:
        assert daemon.url is not None
        port = int(daemon.url.rsplit(":", 1)[1])
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(b"GET /healthz HTTP/1.1\r\nhost: x\r\n\r\n" * 200)
            data = b""
            with anyio.fail_after(5):
                while data.count(b"HTTP/1.1 200 ") < 200:
                    data += await stream.receive()
