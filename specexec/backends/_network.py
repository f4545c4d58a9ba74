"""httpcore's network streams with cheaper reads and writes.

httpcore wraps every socket read and write in two context managers built from generators —
``map_exceptions`` and ``anyio.fail_after`` (``trio.fail_after`` on trio) — which on uvloop cost
≈ 10 µs per read or write: a streamed answer is read once per token. The streams here keep
httpcore's own classes for connecting, TLS, closing and ``get_extra_info`` and replace only
``read`` and ``write``: the same exceptions (``httpcore.ReadTimeout``, ``ReadError``,
``WriteTimeout``, ``WriteError``, each chained from its cause as httpcore chains them), with the
timeout as the running loop's cheapest deadline (``specexec._deadline``) and the mapping done by
``except`` clauses. Over plain TCP they go further: on asyncio a write the socket takes at once
and a read of bytes already received skip anyio's checkpoint (a loop turn each; see
``_AnyIOStream``); on trio the socket is read and written directly, waiting with
``trio.lowlevel.wait_readable`` (see ``_TrioStream``). On both, the socket behind httpcore's
per-request "is the idle connection readable?" is looked up once per connection.

``use_fast_streams(client)`` installs the backend on a client the HTTP backends create; an
httpx or httpcore whose layout differs (or a client given its own network backend) keeps
httpcore's own.
"""

from __future__ import annotations

import asyncio
import errno
import math
import socket
import ssl
from collections.abc import Iterable
from functools import cache
from typing import TYPE_CHECKING, Any, cast

import anyio

from .._clock import running_library
from .._httpx import httpcore, httpx
from .._task_scope import TaskScope

if TYPE_CHECKING:
    from httpcore._backends.base import SOCKET_OPTION

from httpcore._backends.anyio import AnyIOBackend, AnyIOStream
from httpcore._backends.auto import AutoBackend
from httpcore._utils import is_socket_readable

__all__ = ["FastNetworkBackend", "use_fast_streams"]

_BROKEN = (anyio.BrokenResourceError, anyio.ClosedResourceError)


class _AnyIOStream(AnyIOStream):
    """httpcore's anyio stream (asyncio) with ``read``/``write`` timed by a heap-timer deadline.

    Over a plain TCP socket (anyio's asyncio ``SocketStream``) a write whose bytes the socket
    takes at once, and a read of bytes already received, go to the asyncio transport and its
    protocol's queue directly: anyio's ``send``/``receive`` add a checkpoint there (a loop turn,
    and a shielded cancel scope for ``send``), which nothing here needs — the wait for the
    response is the cancellation point. Everything else (a write the socket has to wait for,
    a read that has to wait, a closed or broken stream, TLS) is anyio's own, with its errors."""

    def __init__(self, stream: anyio.abc.ByteStream) -> None:
        super().__init__(stream)
        self._raw_socket: Any = _UNSET  # looked up once (httpcore asks "is_readable" per request)
        self._plain: Any = stream if _is_plain_socket_stream(stream) else None  # anyio's asyncio SocketStream

    def get_extra_info(self, info: str) -> Any:
        """httpcore's extra info; ``socket`` and ``is_readable`` from the socket looked up once."""
        if info == "is_readable" or info == "socket":
            sock = self._raw_socket
            if sock is _UNSET:
                sock = self._raw_socket = self._stream.extra(anyio.abc.SocketAttribute.raw_socket, None)
            return sock if info == "socket" else is_socket_readable(sock)
        return super().get_extra_info(info)

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        """Up to ``max_bytes`` (``b""`` at EOF); ``httpcore.ReadTimeout`` after ``timeout`` seconds."""
        plain = self._plain
        if plain is not None:
            queue = plain._protocol.read_queue
            if queue and not plain._closed:  # received already: no wait, no checkpoint
                chunk: bytes = queue.popleft()
                if len(chunk) > max_bytes:
                    chunk, leftover = chunk[:max_bytes], chunk[max_bytes:]
                    queue.appendleft(leftover)
                if not queue:
                    plain._protocol.read_event.clear()
                return chunk
        try:
            if timeout is None:
                return await self._stream.receive(max_bytes=max_bytes)
            with TaskScope(asyncio.get_running_loop().time() + timeout) as scope:
                return await self._stream.receive(max_bytes=max_bytes)
        except anyio.EndOfStream:
            return b""
        except _BROKEN as exc:
            raise httpcore.ReadError(exc) from exc
        assert scope.cancelled_caught  # the block returns unless the deadline cancelled it
        cause = TimeoutError()
        raise httpcore.ReadTimeout(cause) from cause

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        """Send ``buffer`` whole; ``httpcore.WriteTimeout`` after ``timeout`` seconds."""
        if not buffer:
            return
        written = False  # handed to the transport already: only the wait for the drain is left
        plain = self._plain
        if plain is not None:
            protocol = plain._protocol
            if protocol.write_event.is_set() and not plain._closed and protocol.exception is None:
                try:
                    plain._transport.write(buffer)
                except RuntimeError:
                    pass  # the transport is closing: anyio's send below says so
                else:
                    if protocol.write_event.is_set():  # the socket took it all (the write limit is 0)
                        return
                    written = True
        try:
            if timeout is None:
                await (self._drained() if written else self._stream.send(item=buffer))
                return
            with TaskScope(asyncio.get_running_loop().time() + timeout) as scope:
                await (self._drained() if written else self._stream.send(item=buffer))
        except _BROKEN as exc:
            raise httpcore.WriteError(exc) from exc
        if scope.cancelled_caught:
            cause = TimeoutError()
            raise httpcore.WriteTimeout(cause) from cause

    async def _drained(self) -> None:
        """Wait until the socket took what was handed to the transport, with the errors anyio's
        send raises after that same wait."""
        plain = self._plain
        await plain._protocol.write_event.wait()
        if plain._closed:
            raise anyio.ClosedResourceError
        if plain._protocol.exception is not None:
            raise anyio.BrokenResourceError from plain._protocol.exception

    async def start_tls(
        self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
    ) -> httpcore.AsyncNetworkStream:
        """httpcore's TLS handshake; the TLS stream reads and writes as this one does."""
        stream = await super().start_tls(ssl_context, server_hostname, timeout)
        assert isinstance(stream, AnyIOStream)
        return _AnyIOStream(stream._stream)


_UNSET: Any = object()
_PLAIN_ATTRIBUTES = ("_transport", "_protocol", "_closed")
_PROTOCOL_ATTRIBUTES = ("read_queue", "read_event", "write_event", "exception")


def _is_plain_socket_stream(stream: object) -> bool:
    """Whether ``stream`` is anyio's asyncio ``SocketStream`` with the layout the direct paths
    use (any other stream, or another anyio's, keeps anyio's own ``send``/``receive``)."""
    cls = type(stream)
    if cls.__name__ != "SocketStream" or cls.__module__ != "anyio._backends._asyncio":
        return False
    protocol = getattr(stream, "_protocol", None)
    return all(hasattr(stream, a) for a in _PLAIN_ATTRIBUTES) and all(
        hasattr(protocol, a) for a in _PROTOCOL_ATTRIBUTES
    )


def _trio_stream(stream: Any) -> httpcore.AsyncNetworkStream:
    """httpcore's trio stream ``stream`` as a ``_TrioStream``."""
    stream_class: Any = _trio_stream_class()
    wrapped: httpcore.AsyncNetworkStream = stream_class(stream._stream)
    return wrapped


@cache
def _trio_stream_class() -> type[httpcore.AsyncNetworkStream]:
    """``_TrioStream``, defined on first use: importing httpcore's trio backend imports trio,
    which an asyncio service never needs."""
    import trio
    from httpcore._backends.trio import TrioStream

    class _TrioStream(TrioStream):
        """httpcore's trio stream with ``read``/``write`` under one plain ``trio.CancelScope``.

        Over plain TCP the socket is read and written directly (``recv``/``send`` on the
        non-blocking socket, ``trio.lowlevel.wait_readable`` when there is nothing to read):
        trio's ``receive_some``/``send_all`` add a conflict detector, an error-translating
        context manager and a checkpoint (a yield) around each, which nothing here needs —
        the wait for the response is the cancellation point. A socket error is trio's
        ``BrokenResourceError`` (``ClosedResourceError`` for a closed socket) as trio maps
        it, inside httpcore's ``ReadError``/``WriteError``; a write the socket cannot take at
        once is finished by ``send_all``."""

        def __init__(self, stream: trio.abc.Stream) -> None:
            super().__init__(stream)
            raw = getattr(getattr(stream, "socket", None), "_sock", None) if type(stream) is trio.SocketStream else None
            self._raw: socket.socket | None = raw if isinstance(raw, socket.socket) else None
            self._is_readable: Any = None  # the trio socket's is_readable, looked up once

        def get_extra_info(self, info: str) -> Any:
            """httpcore's extra info; ``is_readable`` from the socket looked up once."""
            if info == "is_readable":
                if self._is_readable is None:
                    self._is_readable = self.get_extra_info("socket").is_readable
                return self._is_readable()
            return super().get_extra_info(info)

        async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
            raw = self._raw
            if raw is not None:
                deadline = math.inf if timeout is None else trio.current_time() + timeout
                try:
                    while True:
                        try:
                            return raw.recv(max_bytes)
                        except BlockingIOError:
                            pass
                        with trio.CancelScope(deadline=deadline) as scope:
                            await trio.lowlevel.wait_readable(raw)
                        if scope.cancelled_caught:
                            cause = trio.TooSlowError()
                            raise httpcore.ReadTimeout(cause) from cause
                except OSError as exc:
                    broken = _stream_error(exc)
                    raise httpcore.ReadError(broken) from broken
                except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:  # closed while waiting
                    raise httpcore.ReadError(exc) from exc
            try:
                if timeout is None:
                    return cast(bytes, await self._stream.receive_some(max_bytes=max_bytes))  # as httpcore's
                with trio.CancelScope(deadline=trio.current_time() + timeout):
                    return cast(bytes, await self._stream.receive_some(max_bytes=max_bytes))
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise httpcore.ReadError(exc) from exc
            cause = trio.TooSlowError()  # the scope's deadline cancelled the read
            raise httpcore.ReadTimeout(cause) from cause

        async def write(self, buffer: bytes, timeout: float | None = None) -> None:
            if not buffer:
                return
            raw = self._raw
            if raw is not None:
                try:
                    sent = raw.send(buffer)
                except BlockingIOError:
                    sent = 0
                except OSError as exc:
                    broken = _stream_error(exc)
                    raise httpcore.WriteError(broken) from broken
                if sent == len(buffer):
                    return
                buffer = buffer[sent:]
            try:
                if timeout is None:
                    await self._stream.send_all(data=buffer)
                    return
                with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
                    await self._stream.send_all(data=buffer)
            except (trio.BrokenResourceError, trio.ClosedResourceError) as exc:
                raise httpcore.WriteError(exc) from exc
            if scope.cancelled_caught:
                cause = trio.TooSlowError()
                raise httpcore.WriteTimeout(cause) from cause

        async def start_tls(
            self, ssl_context: ssl.SSLContext, server_hostname: str | None = None, timeout: float | None = None
        ) -> httpcore.AsyncNetworkStream:
            stream = await super().start_tls(ssl_context, server_hostname, timeout)
            return _TrioStream(stream._stream)  # type: ignore[attr-defined]

    def _stream_error(exc: OSError) -> trio.BrokenResourceError | trio.ClosedResourceError:
        """A socket's ``OSError`` as trio's ``SocketStream`` maps it."""
        error: trio.BrokenResourceError | trio.ClosedResourceError
        if exc.errno in (errno.EBADF, errno.ENOTSOCK):
            error = trio.ClosedResourceError("this socket was already closed")
        else:
            error = trio.BrokenResourceError(f"socket connection broken: {exc}")
        error.__cause__ = exc
        return error

    return _TrioStream


class FastNetworkBackend(httpcore.AsyncNetworkBackend):
    """httpcore's own backends for the running loop (anyio's on asyncio, trio's on trio) whose
    streams read and write as described in the module docstring."""

    def __init__(self) -> None:
        self._anyio = AnyIOBackend()
        self._trio: httpcore.AsyncNetworkBackend | None = None

    def _trio_backend(self) -> httpcore.AsyncNetworkBackend:
        if self._trio is None:
            from httpcore._backends.trio import TrioBackend

            self._trio = TrioBackend()
        return self._trio

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        """A TCP connection to ``host:port`` (httpcore's connect, its errors and timeout)."""
        if running_library() == "trio":
            stream = await self._trio_backend().connect_tcp(host, port, timeout, local_address, socket_options)
            return _trio_stream(stream)
        plain = await self._anyio.connect_tcp(host, port, timeout, local_address, socket_options)
        assert isinstance(plain, AnyIOStream)
        return _AnyIOStream(plain._stream)

    async def connect_unix_socket(
        self, path: str, timeout: float | None = None, socket_options: Iterable[SOCKET_OPTION] | None = None
    ) -> httpcore.AsyncNetworkStream:
        """A Unix-socket connection to ``path`` (httpcore's connect, its errors and timeout)."""
        if running_library() == "trio":
            stream = await self._trio_backend().connect_unix_socket(path, timeout, socket_options)
            return _trio_stream(stream)
        plain = await self._anyio.connect_unix_socket(path, timeout, socket_options)
        assert isinstance(plain, AnyIOStream)
        return _AnyIOStream(plain._stream)

    async def sleep(self, seconds: float) -> None:
        """Sleep on the running loop."""
        await anyio.sleep(seconds)


_BACKEND = FastNetworkBackend()


def use_fast_streams(client: httpx.AsyncClient) -> httpx.AsyncClient:
    """Give ``client``'s connection pool the fast streams (when it has httpcore's default backend); ``client``."""
    pool = getattr(getattr(client, "_transport", None), "_pool", None)
    if isinstance(pool, httpcore.AsyncConnectionPool) and isinstance(
        getattr(pool, "_network_backend", None), AutoBackend
    ):
        pool._network_backend = _BACKEND
    return client
