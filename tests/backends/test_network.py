"""``specexec.backends._network``: httpcore's streams with cheaper reads and writes, over real
loopback TCP (and TLS, with a throw-away CA) on trio and asyncio + uvloop: the same bytes, EOF,
errors and timeouts as httpcore's own, and what the HTTP backends' clients get."""

from __future__ import annotations

import socket
import ssl
import struct
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


def virtual_time_on_trio() -> pytest.MarkDecorator:
    """Run a test that only waits for a timeout on trio in virtual time (exact; a fresh clock)
    and on asyncio + uvloop (real clock): this module's other tests run on the real clock."""
    return pytest.mark.parametrize(
        "anyio_backend",
        [("trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}), ("asyncio", {"use_uvloop": True})],
        ids=["trio-virtual-time", "asyncio+uvloop"],
    )


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


@virtual_time_on_trio()
async def test_a_silent_server_is_a_read_timeout_after_exactly_the_timeout(timing: Timing) -> None:
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


# -- the direct paths on asyncio (bytes already received, writes the socket takes) and their edges


async def counts_what_it_is_sent(stream: anyio.abc.ByteStream) -> None:
    """Reads a 10-digit length, then that many bytes a piece at a time, then answers the count."""
    async with stream:
        received = b""
        while len(received) < 10:
            received += await stream.receive(10 - len(received))
        expected, total = int(received), 0
        while total < expected:
            total += len(await stream.receive(4096))
            await anyio.lowlevel.checkpoint()  # a piece at a time: the client waits for the drain
        await stream.send(str(total).encode())


async def test_a_write_bigger_than_the_socket_takes_at_once_waits_until_it_is_sent() -> None:
    data = b"x" * (16 * 1024 * 1024)
    async with server(counts_what_it_is_sent) as port:
        stream = await FastNetworkBackend().connect_tcp("127.0.0.1", port, timeout=5.0)
        try:
            with anyio.fail_after(20):
                await stream.write(b"%010d" % len(data), timeout=15.0)
                await stream.write(data, timeout=15.0)
                answer = b""
                while len(answer) < len(str(len(data))):
                    answer += await stream.read(100, timeout=15.0)
            assert answer == str(len(data)).encode()
        finally:
            await stream.aclose()


@virtual_time_on_trio()
async def test_a_write_to_a_peer_that_never_reads_is_a_write_timeout_after_exactly_the_timeout(
    timing: Timing,
) -> None:
    # a listening socket that never accepts: the kernel takes the connection and a few MB, no more
    with socket.create_server(("127.0.0.1", 0)) as never_accepts:
        port = never_accepts.getsockname()[1]
        stream = await FastNetworkBackend().connect_tcp("127.0.0.1", port, timeout=5.0)
        try:
            data = b"x" * (64 * 1024 * 1024)  # more than the kernel buffers; built before the clock starts
            t0 = anyio.current_time()
            with anyio.fail_after(5), pytest.raises(httpcore.WriteTimeout) as caught:
                await stream.write(data, timeout=0.25)
            assert anyio.current_time() - t0 == timing.approx(0.25)
            assert isinstance(caught.value.__cause__, (TimeoutError, trio.TooSlowError))
        finally:
            await stream.aclose()


async def hello_world_in_one_write(stream: anyio.abc.ByteStream) -> None:
    async with stream:
        await stream.send(b"hello world")
        await anyio.sleep_forever()


async def test_bytes_already_received_are_read_in_pieces_of_at_most_max_bytes(
    anyio_backend: tuple[str, dict[str, object]],
) -> None:
    async with server(hello_world_in_one_write) as port:
        stream = await FastNetworkBackend().connect_tcp("127.0.0.1", port, timeout=5.0)
        try:
            with anyio.fail_after(5):
                pieces = [await stream.read(5, timeout=5.0)]  # waits for the data; the rest is kept
                if anyio_backend[0] == "asyncio":  # received already: the next reads take it directly
                    assert stream._plain._protocol.read_queue  # type: ignore[attr-defined]
                while sum(map(len, pieces)) < 11:
                    pieces.append(await stream.read(3, timeout=5.0))
            assert b"".join(pieces) == b"hello world"
            assert [len(p) for p in pieces][:3] == [5, 3, 3]
        finally:
            await stream.aclose()


async def test_is_readable_and_socket_say_what_httpcores_own_stream_says() -> None:
    from httpcore._backends.auto import AutoBackend

    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        ours = await FastNetworkBackend().connect_tcp("127.0.0.1", port, timeout=5.0)
        theirs = await AutoBackend().connect_tcp("127.0.0.1", port, timeout=5.0)
        try:
            for _ in range(2):  # the kernel has both connections queued already
                peer, _ = listening.accept()
                peer.sendall(b"hello")
                peer.close()  # on loopback the bytes and the EOF are in the client's buffer now
            for stream in (ours, theirs):
                assert stream.get_extra_info("is_readable") is True
                assert stream.get_extra_info("socket") is not None
                assert stream.get_extra_info("no such info") is None
            assert ours.get_extra_info("socket").fileno() != theirs.get_extra_info("socket").fileno()
        finally:
            await ours.aclose()
            await theirs.aclose()


async def test_an_idle_open_connection_is_not_readable(anyio_backend: tuple[str, dict[str, object]]) -> None:
    async with server(silent) as port:
        stream = await FastNetworkBackend().connect_tcp("127.0.0.1", port, timeout=5.0)
        try:
            assert stream.get_extra_info("is_readable") is False
            direct = stream._plain if anyio_backend[0] == "asyncio" else stream._raw  # type: ignore[attr-defined]
            assert direct is not None  # the direct paths are in use
        finally:
            await stream.aclose()


async def test_a_connection_reset_by_the_peer_is_httpcores_read_error() -> None:
    with socket.create_server(("127.0.0.1", 0)) as listening:
        port = listening.getsockname()[1]
        stream = await FastNetworkBackend().connect_tcp("127.0.0.1", port, timeout=5.0)
        try:
            peer, _ = listening.accept()  # the kernel has it queued already
            peer.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
            peer.close()  # linger 0: a reset, not an orderly close
            with anyio.fail_after(5), pytest.raises(httpcore.ReadError) as caught:
                await stream.read(100, timeout=5.0)
            assert isinstance(caught.value.__cause__, (anyio.BrokenResourceError, trio.BrokenResourceError))
        finally:
            await stream.aclose()
