"""HTTP/1.1 over an :class:`asyncio.Protocol`, parsed and serialised by h11, with keep-alive.

One :class:`HttpProtocol` per connection. When a request has arrived whole, a handler task
runs it with an :class:`Exchange` to answer through; h11 holds any pipelined request until
the response is done. If the client goes away (EOF or reset) while a handler sleeps or
streams, the task is cancelled and the exchange is marked ``lost``, so the handler's
``finally`` can count a disconnect; nothing outlives the connection. The server owner
tracks every protocol and task, and :meth:`HttpProtocol.shutdown` cancels and closes them.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import sys
import traceback
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import cast

import h11

__all__ = ["ClientDisconnected", "Exchange", "Handler", "HttpProtocol", "HttpRequest"]

#: Largest request body accepted (larger: 413).
MAX_BODY = 8 * 1024 * 1024
#: Largest request head accepted by h11.
MAX_HEAD = 64 * 1024

Headers = Iterable[tuple[str, str]]


def _reason(status: int) -> bytes:
    if status == 529:
        return b"Overloaded"
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""


class ClientDisconnected(Exception):
    """Raised by :class:`Exchange` writes once the connection is gone."""


@dataclass(slots=True)
class HttpRequest:
    """A whole request: method, path (without the query), query string, lower-cased headers, body."""

    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""
    started: float = 0.0


Handler = Callable[[HttpRequest, "Exchange"], Awaitable[None]]


@dataclass(eq=False, slots=True)
class Exchange:
    """The response side of one request.

    Either :meth:`respond` once, or :meth:`start` then :meth:`send` … then :meth:`end`;
    or :meth:`abort` to reset the connection with no response. ``status`` is the status
    sent (``None`` before the head); ``completed`` is true once the last byte was handed
    to the transport; ``lost`` once the client went away; ``aborted`` after :meth:`abort`.
    """

    proto: HttpProtocol
    status: int | None = None
    completed: bool = False
    aborted: bool = False
    lost: bool = False

    def _write(self, *events: h11.Event) -> None:
        if self.lost or self.proto.closing:
            raise ClientDisconnected
        conn = self.proto.conn
        data = b"".join(conn.send(event) or b"" for event in events)
        if data:
            self.proto.transport.write(data)

    @staticmethod
    def _head(status: int, headers: Headers) -> h11.Response:
        return h11.Response(
            status_code=status, headers=[*headers, ("server", "specexec-fleet")], reason=_reason(status)
        )

    async def start(self, status: int, headers: Headers, first: bytes = b"", *, last: bool = False) -> None:
        """Send the head of a response whose body follows in :meth:`send` calls (chunked).

        ``first`` is the start of the body, sent in the same write as the head; ``last``: it is
        the whole body, and the response ends in that same write (no :meth:`end` to call).
        """
        tail = [h11.EndOfMessage()] if last else []
        self._write(self._head(status, headers), *([h11.Data(data=first)] if first else []), *tail)
        self.status = status
        if last:
            self.completed = True
            self.proto.response_done()
            return
        await self.proto.drain()

    async def send(self, data: bytes) -> None:
        """Send part of the body, waiting while the transport's buffer is full."""
        if data:
            self._write(h11.Data(data=data))
            await self.proto.drain()

    async def end(self, last: bytes = b"") -> None:
        """Finish the response, after ``last`` (the end of the body, in the same write); the
        connection then serves its next request (or closes)."""
        self._write(*([h11.Data(data=last)] if last else []), h11.EndOfMessage())
        self.completed = True
        self.proto.response_done()

    async def respond(self, status: int, headers: Headers, body: bytes) -> None:
        """Send a whole response with a ``content-length``, in one write."""
        self._write(
            self._head(status, [*headers, ("content-length", str(len(body)))]), h11.Data(data=body), h11.EndOfMessage()
        )
        self.status = status
        self.completed = True
        self.proto.response_done()

    def abort(self) -> None:
        """Reset the connection (RST where the platform allows) without a response."""
        self.aborted = True
        self.proto.abort()

    async def wait_lost(self) -> None:
        """Wait until the client goes away: the protocol cancels the task then, so this never returns."""
        await asyncio.get_running_loop().create_future()


class HttpProtocol(asyncio.Protocol):
    """One HTTP/1.1 connection: h11 parses requests, a task per request runs ``handler``.

    ``tasks`` and ``connections`` are the server owner's registries: the protocol adds
    itself and its tasks, and removes them when they end.
    """

    def __init__(self, handler: Handler, connections: set[HttpProtocol], tasks: set[asyncio.Task[None]]) -> None:
        self.handler = handler
        self.connections = connections
        self.tasks = tasks
        self.conn = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_HEAD)
        self.transport: asyncio.Transport
        self.closing = False
        self._request: HttpRequest | None = None
        self._body: list[bytes] = []
        self._body_size = 0
        self._task: asyncio.Task[None] | None = None
        self._exchange: Exchange | None = None
        self._can_write: asyncio.Event | None = None

    # -- asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """Register the connection."""
        # uvloop's transports implement asyncio.Transport without subclassing it.
        self.transport = cast(asyncio.Transport, transport)
        self.connections.add(self)

    def data_received(self, data: bytes) -> None:
        """Feed h11 and handle whatever requests are complete."""
        self.conn.receive_data(data)
        self._process()

    def eof_received(self) -> bool | None:
        """The client closed its side: treat it as gone (HTTP clients do not half-close)."""
        self.conn.receive_data(b"")
        self._process()
        return None  # let the transport close, which calls connection_lost

    def connection_lost(self, exc: Exception | None) -> None:
        """Mark the in-flight exchange lost and cancel its task."""
        self.closing = True
        self.connections.discard(self)
        ex, task = self._exchange, self._task
        if ex is not None and not ex.completed:
            ex.lost = True
        if task is not None and not task.done():
            task.cancel()
        if self._can_write is not None:
            self._can_write.set()

    def pause_writing(self) -> None:
        """The transport's buffer is full: make :meth:`drain` wait."""
        if self._can_write is None:
            self._can_write = asyncio.Event()
        self._can_write.clear()

    def resume_writing(self) -> None:
        """The transport's buffer has room again."""
        if self._can_write is not None:
            self._can_write.set()

    # -- helpers for Exchange and the owner

    async def drain(self) -> None:
        """Wait while the transport's write buffer is above its high-water mark."""
        if self._can_write is not None and not self._can_write.is_set():
            await self._can_write.wait()
        if self.closing:
            raise ClientDisconnected

    def response_done(self) -> None:
        """The response is complete: start the next request cycle, or close."""
        if self.conn.our_state is h11.MUST_CLOSE or self.conn.our_state is h11.ERROR:
            self._close()
            return
        if self.conn.our_state is h11.DONE and self.conn.their_state is h11.DONE:
            self.conn.start_next_cycle()
            self._exchange = None
            # Process pipelined requests outside the finishing handler's stack.
            asyncio.get_running_loop().call_soon(self._process)

    def abort(self) -> None:
        """Close the connection abruptly: SO_LINGER 0 makes the close send an RST."""
        sock = self.transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError, AttributeError, TypeError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.closing = True
        self.transport.abort()

    def shutdown(self) -> None:
        """Server shutdown: cancel the running handler (if any) and close the connection."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
        self._close()

    def _close(self) -> None:
        self.closing = True
        self.transport.close()

    # -- request processing

    def _process(self) -> None:
        if self.closing:
            return
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError as e:
                self._reject(e.error_status_hint, str(e))
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                return
            if isinstance(event, h11.Request):
                self._begin(event)
                if self.closing:
                    return
            elif isinstance(event, h11.Data):
                self._body_size += len(event.data)
                if self._body_size > MAX_BODY:
                    self._reject(413, "request body too large")
                    return
                self._body.append(event.data)
            elif isinstance(event, h11.EndOfMessage):
                self._dispatch()
                return
            elif isinstance(event, h11.ConnectionClosed):
                self._close()
                return

    def _begin(self, event: h11.Request) -> None:
        target = event.target.decode("latin-1")
        path, _, query = target.partition("?")
        headers: dict[str, str] = {}
        for name, value in event.headers:
            headers[name.decode("latin-1")] = value.decode("latin-1")
        length = headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > MAX_BODY:
            self._reject(413, "request body too large")
            return
        self._request = HttpRequest(method=event.method.decode("ascii"), path=path, query=query, headers=headers)
        self._body = []
        self._body_size = 0
        if self.conn.they_are_waiting_for_100_continue:
            self.transport.write(self.conn.send(h11.InformationalResponse(status_code=100, headers=[])))

    def _dispatch(self) -> None:
        req = self._request
        assert req is not None
        req.body = b"".join(self._body)
        self._body = []
        loop = asyncio.get_running_loop()
        req.started = loop.time()
        ex = Exchange(self)
        self._exchange = ex
        task = loop.create_task(self._run(req, ex))
        self._task = task
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _run(self, req: HttpRequest, ex: Exchange) -> None:
        try:
            await self.handler(req, ex)
            if not (ex.completed or ex.aborted or ex.lost):
                raise RuntimeError(f"handler for {req.method} {req.path} returned without a response")
        except ClientDisconnected:
            pass
        except Exception:  # a bug in a handler: report it, answer 500 if still possible
            traceback.print_exc(file=sys.stderr)
            if ex.status is None and not (ex.lost or self.closing):
                with contextlib.suppress(ClientDisconnected, h11.LocalProtocolError):
                    await ex.respond(500, [("content-type", "text/plain")], b"internal fleet error\n")
                    return
            if not self.closing:
                self.abort()

    def _reject(self, status: int, message: str) -> None:
        """Answer a request h11 or the size limit refused, then close."""
        if self.conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
            body = message.encode() + b"\n"
            with contextlib.suppress(h11.LocalProtocolError):
                self.transport.write(
                    self.conn.send(
                        h11.Response(
                            status_code=status,
                            reason=_reason(status),
                            headers=[
                                ("content-type", "text/plain"),
                                ("content-length", str(len(body))),
                                ("connection", "close"),
                            ],
                        )
                    )
                )
                self.transport.write(self.conn.send(h11.Data(data=body)))
                self.transport.write(self.conn.send(h11.EndOfMessage()))
        self._close()
