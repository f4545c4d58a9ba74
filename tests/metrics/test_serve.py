"""``specexec.metrics.serve``: ``GET /metrics`` over real loopback HTTP, on trio and asyncio (real clock)."""

from __future__ import annotations

from functools import partial
from typing import Any

import anyio
import httpx
import pytest
import trio.testing
from prometheus_client.parser import text_string_to_metric_families

from specexec import Policy, Runtime, _metrics_http
from specexec.metrics import CONTENT_TYPE, instrument, serve
from tests.helpers import Scripted, peer_gone, stuck_readers

pytestmark = pytest.mark.anyio


@pytest.fixture(params=["trio", "asyncio+uvloop"])
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    # A real clock: the server's idle timeout must not jump ahead while the client's bytes travel.
    return ("trio", {}) if request.param == "trio" else ("asyncio", {"use_uvloop": True})


async def test_metrics_are_served_over_http_and_parse() -> None:
    async with Runtime([Scripted("a", 0.001)]) as rt:
        sink = instrument(rt)
        await rt.run("q", Policy.single("a", name="p"))
        async with anyio.create_task_group() as tg:
            port = await tg.start(serve, sink.registry, 0)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                ok = await client.get("/metrics")
                again = await client.get("/metrics")  # keep-alive: a second request on the connection
                head = await client.head("/metrics")
                missing = await client.get("/nope")
                post = await client.post("/metrics")
            tg.cancel_scope.cancel()
    assert ok.status_code == 200 and ok.headers["content-type"] == CONTENT_TYPE
    families = {f.name: f for f in text_string_to_metric_families(ok.text)}
    runs = [s for s in families["specexec_runs"].samples if s.name == "specexec_runs_total"]
    assert [(s.labels["policy"], s.value) for s in runs] == [("p", 1.0)]
    assert families["specexec_attempt_duration_seconds"].type == "histogram"
    assert families["specexec_breaker_state"].type == "gauge"
    assert again.status_code == 200
    assert head.status_code == 200 and head.content == b"" and int(head.headers["content-length"]) > 0
    assert missing.status_code == 404
    assert post.status_code == 405 and post.headers["allow"] == "GET, HEAD"


@pytest.mark.parametrize(
    "request_line", [b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close", b"GET /metrics HTTP/1.0"]
)
async def test_a_request_that_asks_to_close_is_answered(request_line: bytes) -> None:
    # Before: h11 reads such a request as MUST_CLOSE, not DONE, and the server closed unanswered.
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            partial(_metrics_http.serve_metrics, lambda: (CONTENT_TYPE, b"up 1\n"), host="127.0.0.1", port=0)
        )
        async with await anyio.connect_tcp("127.0.0.1", port) as stream:
            await stream.send(request_line + b"\r\n\r\n")
            data = b""
            with anyio.fail_after(5):
                try:
                    while True:
                        data += await stream.receive()
                except anyio.EndOfStream:
                    pass
        tg.cancel_scope.cancel()
    assert data.startswith(b"HTTP/1.1 200 ") and data.endswith(b"\r\n\r\nup 1\n")


BIG = b"x" * (8 << 20)  # far more than a loopback socket's buffers take: the first answer blocks


async def _fresh_status(port: int) -> bytes:
    async with await anyio.connect_tcp("127.0.0.1", port) as stream:
        await stream.send(b"GET /metrics HTTP/1.1\r\nhost: x\r\nconnection: close\r\n\r\n")
        data = b""
        try:
            while b"\r\n" not in data:
                data += await stream.receive()
        except (anyio.EndOfStream, anyio.BrokenResourceError):
            pass
        return data.split(b"\r\n", 1)[0]


@pytest.mark.parametrize(
    "anyio_backend",
    [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), ("asyncio", {"use_uvloop": True})],
    ids=["trio-virtual-time", "asyncio+uvloop"],
)
async def test_clients_that_never_read_are_disconnected_at_the_write_deadline(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: tuple[str, dict[str, Any]]
) -> None:
    # Before: only reading a request had a deadline: MAX_CONNECTIONS clients that never read
    # held every slot, and every other scrape was closed unanswered, for as long as they stayed.
    monkeypatch.setattr(_metrics_http, "MAX_CONNECTIONS", 4)  # fewer slots: less kernel memory held
    if anyio_backend[0] == "asyncio":  # the real clock: a short deadline
        monkeypatch.setattr(_metrics_http, "WRITE_TIMEOUT", 1.0, raising=False)
    write_timeout = getattr(_metrics_http, "WRITE_TIMEOUT", 30.0)
    async with anyio.create_task_group() as tg:
        port = await tg.start(
            partial(_metrics_http.serve_metrics, lambda: (CONTENT_TYPE, BIG), host="127.0.0.1", port=0)
        )
        with stuck_readers(port, "/metrics", 4, 3) as socks:
            await anyio.sleep(0.1 * write_timeout)  # every connection is accepted and blocked writing
            assert await _fresh_status(port) == b""  # no slot: closed unanswered
            await anyio.sleep(0.4 * write_timeout)
            assert not any(peer_gone(s) for s in socks)  # each answer has its whole deadline
            await anyio.sleep(1.0 * write_timeout)
            assert all(peer_gone(s) for s in socks)
            assert await _fresh_status(port) == b"HTTP/1.1 200 "
        tg.cancel_scope.cancel()
