"""A minimal HTTP/1.1 server for ``GET /metrics`` on anyio, with h11 doing the protocol.

h11 comes with httpx (through httpcore), so it costs no new dependency; prometheus_client's
own ``start_http_server`` runs a bare daemon thread, which the project's structured
concurrency rules exclude. Keep-alive is supported; a connection idle for ``IDLE_TIMEOUT``
seconds is closed; one whose client does not take a response within ``WRITE_TIMEOUT`` seconds
(a client that pipelines requests and never reads) is reset; at most ``MAX_CONNECTIONS`` are
served at once (more are closed at once).
A broken connection only ends itself; cancellation ends the server and every connection.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from typing import Any

import anyio
import h11
from anyio.abc import SocketAttribute, SocketStream

IDLE_TIMEOUT = 30.0
"""Seconds a connection may sit idle (or take to send its request) before it is closed."""
WRITE_TIMEOUT = 30.0
"""Seconds a client may take to receive one response before its connection is reset (its slot freed)."""
MAX_CONNECTIONS = 16
"""Connections served at once."""
_READ_SIZE = 65536
_TEXT = "text/plain; charset=utf-8"

_log = logging.getLogger("specexec.metrics")


async def serve_metrics(
    render: Callable[[], tuple[str, bytes]], *, host: str, port: int, task_status: Any = None
) -> None:
    """Listen on ``host:port`` and answer ``GET``/``HEAD /metrics`` with ``render()`` until cancelled.

    ``task_status`` (from ``TaskGroup.start``) is given the bound port once listening.
    """
    slots = anyio.CapacityLimiter(MAX_CONNECTIONS)

    async def handle(stream: SocketStream) -> None:
        async with stream:
            try:
                slots.acquire_nowait()
            except anyio.WouldBlock:
                return  # too many connections: this one is closed
            try:
                await _serve(stream, render)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream, h11.ProtocolError):
                pass
            except Exception:
                _log.exception("metrics http: a connection failed")
            finally:
                slots.release()

    listener = await anyio.create_tcp_listener(local_host=host, local_port=port)
    async with listener:
        bound = listener.extra(SocketAttribute.local_port)
        _log.info("specexec metrics: serving http://%s:%d/metrics", host, bound)
        if task_status is not None:
            task_status.started(bound)
        await listener.serve(handle)


async def _serve(stream: SocketStream, render: Callable[[], tuple[str, bytes]]) -> None:
    conn = h11.Connection(h11.SERVER)
    while True:
        request: h11.Request | None = None
        with anyio.move_on_after(IDLE_TIMEOUT):
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    try:
                        data = await stream.receive(_READ_SIZE)
                    except anyio.EndOfStream:
                        data = b""
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.EndOfMessage):
                    break
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return
        if request is None or conn.their_state not in (h11.DONE, h11.MUST_CLOSE):
            return  # idle too long, or closed (MUST_CLOSE: a complete request with "Connection: close", or HTTP/1.0)
        method = request.method.decode("ascii", "replace").upper()
        path = request.target.decode("ascii", "replace").split("?", 1)[0]
        headers = [("cache-control", "no-store"), ("server", "specexec-metrics")]
        if method not in ("GET", "HEAD"):
            status, content_type, body = 405, _TEXT, b"method not allowed\n"
            headers.append(("allow", "GET, HEAD"))
        elif path != "/metrics":
            status, content_type, body = 404, _TEXT, b"not found: try /metrics\n"
        else:
            try:
                content_type, body = render()
                status = 200
            except Exception:
                _log.exception("metrics http: rendering /metrics failed")
                status, content_type, body = 500, _TEXT, b"internal error\n"
        headers += [("content-type", content_type), ("content-length", str(len(body)))]
        with anyio.move_on_after(WRITE_TIMEOUT) as scope:
            await stream.send(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
            if method != "HEAD" and body:
                await stream.send(conn.send(h11.Data(data=body)) or b"")
            await stream.send(conn.send(h11.EndOfMessage()) or b"")
        if scope.cancelled_caught:  # the client does not read: reset the connection, free the slot
            _abort(stream)
            return
        if conn.our_state is h11.MUST_CLOSE:
            return
        try:
            conn.start_next_cycle()
        except h11.LocalProtocolError:
            return


_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST


def _abort(stream: SocketStream) -> None:
    """Make closing ``stream`` a reset: the kernel drops what the client never read at once."""
    with contextlib.suppress(OSError, anyio.TypedAttributeLookupError):
        stream.extra(SocketAttribute.raw_socket).setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
