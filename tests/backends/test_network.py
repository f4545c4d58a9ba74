"""``specexec.backends._network``: httpcore's streams with cheaper reads and writes, over real
loopback TCP (and TLS, with a throw-away CA) on trio and asyncio + uvloop: the same bytes, EOF,
errors and timeouts as httpcore's own, and what the HTTP backends' clients get."""

from __future__ import annotations

import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager

import anyio
import httpcore
import httpx
import pytest
import trio
import trio.testing
import trustme
from anyio.streams.tls import TLSListener

from specexec.backends import OpenAICompatible
from specexec.backends._network import FastNetworkBackend, use_fast_streams
from tests.conftest import Timing

pytestmark = pytest.mark.anyio

Handler = Callable[[anyio.abc.ByteStream], Awaitable[None]]


@asynccontextmanager
async def server(handler: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[int]:
    """A loopback TCP (or TLS) server running ``handler`` per connection; yields its port."""
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    serving = TLSListener(listener, tls, standard_compatible=False) if tls is not None else listener
    async with anyio.create_task_group() as tg:
        tg.start_soon(serving.serve, handler)
        try:
            yield port
        finally:
            tg.cancel_scope.cancel()


async def hello_then_close(stream: anyio.abc.ByteStream) -> None:
    async with stream:
        await stream.send(b"hello")


async def silent(stream: anyio.abc.ByteStream) -> None:
    async with stream:
        await anyio.sleep_forever()


async def echo(stream: anyio.abc.ByteStream) -> None:
    async with stream:
        await stream.send(await stream.receive())


async def test_read_returns_the_bytes_sent_then_empty_at_eof() -> None:
    async with server(hello_then_close) as port:
        stream = await FastNetworkBackend().connect_tcp("127.0.0.1", port, timeout=5.0)
        try:
            received = b""
            while len(received) < 5:
                received += await stream.read(100, timeout=5.0)
            assert received == b"hello"
            assert await stream.read(100, timeout=5.0) == b""  # EOF, as httpcore's stream reads it
        finally:
            await stream.aclose()


@pytest.mark.parametrize(
    "anyio_backend",
    [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), ("asyncio", {"use_uvloop": True})],
    ids=["trio-virtual-time", "asyncio+uvloop"],
)
async def test_a_silent_server_is_a_read_timeout_after_exactly_the_timeout(timing: Timing) -> None:
    # this module's other tests run on the real clock (as every loopback test here); this one
    # waits only for the timeout, so on trio it runs in virtual time and is exact
    async with server(silent) as port:
        stream = await FastNetworkBackend().connect_tcp("127.0.0.1", port, timeout=5.0)
        try:
            t0 = anyio.current_time()
            with anyio.fail_after(5), pytest.raises(httpcore.ReadTimeout) as caught:  # fail_after: never a hang
                await stream.read(100, timeout=0.25)
            assert anyio.current_time() - t0 == timing.approx(0.25)
            assert isinstance(caught.value.__cause__, (TimeoutError, trio.TooSlowError))  # as httpcore chains it
        finally:
            await stream.aclose()


async def test_a_read_without_a_timeout_waits_for_the_data() -> None:
    async with server(echo) as port:
        stream = await FastNetworkBackend().connect_tcp("127.0.0.1", port, timeout=5.0)
        try:
            await stream.write(b"ping", timeout=None)
            assert await stream.read(100, timeout=None) == b"ping"
        finally:
            await stream.aclose()


async def test_reading_or_writing_a_closed_stream_is_httpcores_read_or_write_error() -> None:
    async with server(silent) as port:
        stream = await FastNetworkBackend().connect_tcp("127.0.0.1", port, timeout=5.0)
        await stream.aclose()
        with pytest.raises(httpcore.ReadError):
            await stream.read(100, timeout=1.0)
        with pytest.raises(httpcore.WriteError):
            await stream.write(b"x", timeout=1.0)
        await stream.write(b"", timeout=1.0)  # nothing to send: nothing done, as httpcore's


async def test_a_refused_connection_is_httpcores_connect_error() -> None:
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    await listener.aclose()  # nothing listens there now
    with pytest.raises(httpcore.ConnectError):
        await FastNetworkBackend().connect_tcp("127.0.0.1", port, timeout=5.0)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    return trustme.CA()


def tls_contexts(ca: trustme.CA) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    return server_ctx, client_ctx


async def test_start_tls_gives_a_fast_stream_that_reads_and_writes_through_tls(ca: trustme.CA) -> None:
    server_ctx, client_ctx = tls_contexts(ca)
    async with server(echo, tls=server_ctx) as port:
        plain = await FastNetworkBackend().connect_tcp("localhost", port, timeout=5.0)
        stream = await plain.start_tls(client_ctx, server_hostname="localhost", timeout=5.0)
        try:
            assert type(stream).read is type(plain).read  # the TLS stream reads as the plain one does
            assert stream.get_extra_info("ssl_object") is not None
            await stream.write(b"over tls", timeout=5.0)
            assert await stream.read(100, timeout=5.0) == b"over tls"
        finally:
            await stream.aclose()


async def test_a_certificate_not_trusted_is_a_connect_error(ca: trustme.CA) -> None:
    server_ctx, _ = tls_contexts(ca)
    async with server(echo, tls=server_ctx) as port:
        plain = await FastNetworkBackend().connect_tcp("localhost", port, timeout=5.0)
        with pytest.raises(httpcore.ConnectError):
            await plain.start_tls(ssl.create_default_context(), server_hostname="localhost", timeout=5.0)


async def test_httpx_over_https_with_the_fast_streams(ca: trustme.CA) -> None:
    server_ctx, client_ctx = tls_contexts(ca)

    async def http_ok(stream: anyio.abc.ByteStream) -> None:
        async with stream:
            request = b""
            while b"\r\n\r\n" not in request:
                request += await stream.receive()
            await stream.send(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok")

    client = use_fast_streams(httpx.AsyncClient(verify=client_ctx, trust_env=False))
    assert isinstance(client._transport._pool._network_backend, FastNetworkBackend)  # type: ignore[attr-defined]
    async with server(http_ok, tls=server_ctx) as port, client:
        response = await client.get(f"https://localhost:{port}/")
        assert (response.status_code, response.text) == (200, "ok")


def test_the_http_backends_clients_get_the_fast_streams_and_other_transports_are_left_alone() -> None:
    backend = OpenAICompatible("x", base_url="http://127.0.0.1:9/v1", model="m")
    made = backend._new_client()
    assert isinstance(made._transport._pool._network_backend, FastNetworkBackend)  # type: ignore[attr-defined]
    mocked = httpx.AsyncClient(transport=httpx.MockTransport(lambda request: httpx.Response(200)))
    assert use_fast_streams(mocked)._transport is mocked._transport  # no pool of httpcore's: unchanged
