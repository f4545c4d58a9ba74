"""The daemon's HTTP/1.1 endpoints, on an anyio TCP listener with h11 doing the protocol.

==================  ==========================================  ======================================
``GET /healthz``    the daemon is alive                          ``{"status": "ok", ...}`` (JSON)
``GET /v1/health``  per backend state, quantiles, errors, drift  ``HealthReport`` (JSON)
``GET /v1/snapshot`` the same plus HDR histograms                ``Snapshot`` (msgpack)
``GET /metrics``    Prometheus text exposition 0.0.4             text
==================  ==========================================  ======================================

``HEAD`` is answered like ``GET`` without a body; other methods get 405, other paths 404. A
route that raises ``HttpError`` is answered with its status and message (``/metrics`` without
prometheus_client: 501 and how to install it); any other exception is a 500.
Keep-alive is supported; a connection idle for ``IDLE_TIMEOUT`` seconds is closed, one whose
client does not take a response within ``WRITE_TIMEOUT`` seconds (a client that pipelines
requests and never reads the answers) is reset, and at most ``MAX_CONNECTIONS`` are served at
once (more get a 503 and are closed). A handler never raises into the listener: a broken
connection only ends itself.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import struct
from collections.abc import Callable
from dataclasses import dataclass

import anyio
import h11
from anyio.abc import SocketAttribute, SocketStream

__all__ = ["IDLE_TIMEOUT", "MAX_CONNECTIONS", "WRITE_TIMEOUT", "Endpoints", "HttpError", "HttpServer", "abort"]

IDLE_TIMEOUT = 30.0
"""Seconds a connection may sit idle (or take to send a request) before it is closed."""
WRITE_TIMEOUT = 30.0
"""Seconds a client may take to receive one response before its connection is reset (its slot freed)."""
MAX_CONNECTIONS = 64
"""Connections served at once."""
_READ_SIZE = 65536
_LINGER_RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close sends RST

_log = logging.getLogger("specexec.probes")

Body = tuple[str, bytes]  # (content type, body)


class HttpError(Exception):
    """Raised by a route: answer ``status`` with the exception's message as plain text."""

    status = 500


@dataclass(frozen=True)
class Endpoints:
    """What each path serves: functions returning ``(content_type, body)``, called per request."""

    healthz: Callable[[], Body]
    health: Callable[[], Body]
    snapshot: Callable[[], Body]
    metrics: Callable[[], Body]


class HttpServer:
    """Serves ``Endpoints`` over HTTP/1.1 on accepted connections (``await server.handle(stream)``)."""

    def __init__(self, endpoints: Endpoints) -> None:
        self.routes: dict[str, Callable[[], Body]] = {
            "/healthz": endpoints.healthz,
            "/v1/health": endpoints.health,
            "/v1/snapshot": endpoints.snapshot,
            "/metrics": endpoints.metrics,
        }
        self._slots = anyio.CapacityLimiter(MAX_CONNECTIONS)

    async def handle(self, stream: SocketStream) -> None:
        """Serve one connection until it closes, errs or idles out; never raises an ``Exception``."""
        async with stream:
            try:
                self._slots.acquire_nowait()
            except anyio.WouldBlock:
                await self._reject_busy(stream)
                return
            try:
                await self._serve(stream)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
                pass
            except Exception:
                _log.exception("http: a connection failed")
            finally:
                self._slots.release()

    async def _reject_busy(self, stream: SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        try:
            with anyio.move_on_after(1.0):
                data = await stream.receive(_READ_SIZE)
                conn.receive_data(data)
                if isinstance(conn.next_event(), h11.Request):
                    await self._send(stream, conn, 503, "text/plain; charset=utf-8", b"busy\n", close=True)
        except Exception:  # the client is told nothing more; the connection closes
            return

    async def _serve(self, stream: SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        while True:
            request = await self._next_request(stream, conn)
            if request is None:
                return
            method = request.method.decode("ascii", "replace").upper()
            path = request.target.decode("ascii", "replace").split("?", 1)[0]
            if method not in ("GET", "HEAD"):
                status, content_type, body = 405, "text/plain; charset=utf-8", b"method not allowed\n"
            elif path not in self.routes:
                status, content_type, body = 404, "text/plain; charset=utf-8", b"not found\n"
            else:
                try:
                    content_type, body = self.routes[path]()
                    status = 200
                except HttpError as exc:
                    status, content_type, body = exc.status, "text/plain; charset=utf-8", f"{exc}\n".encode()
                except Exception:
                    _log.exception("http: %s failed", path)
                    status, content_type, body = 500, "text/plain; charset=utf-8", b"internal error\n"
            if not await self._send(
                stream, conn, status, content_type, body, head=method == "HEAD", allow=status == 405
            ):
                return
            if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                return
            try:
                conn.start_next_cycle()
            except h11.LocalProtocolError:
                return

    async def _next_request(self, stream: SocketStream, conn: h11.Connection) -> h11.Request | None:
        """The next complete request (its body read and dropped), or ``None`` when the connection ends."""
        request: h11.Request | None = None
        with anyio.move_on_after(IDLE_TIMEOUT):
            while True:
                try:
                    event = conn.next_event()
                except h11.RemoteProtocolError as exc:
                    if conn.our_state in (h11.IDLE, h11.SEND_RESPONSE):
                        await self._send(
                            stream, conn, exc.error_status_hint, "text/plain; charset=utf-8", b"bad request\n"
                        )
                    return None
                if event is h11.NEED_DATA:
                    try:
                        data = await stream.receive(_READ_SIZE)
                    except anyio.EndOfStream:
                        data = b""
                    conn.receive_data(data)
                elif isinstance(event, h11.Request):
                    request = event
                elif isinstance(event, h11.EndOfMessage):
                    return request
                elif isinstance(event, h11.ConnectionClosed) or event is h11.PAUSED:
                    return None
                # h11.Data: a request body nobody needs; read on
        return None

    async def _send(
        self,
        stream: SocketStream,
        conn: h11.Connection,
        status: int,
        content_type: str,
        body: bytes,
        *,
        head: bool = False,
        allow: bool = False,
        close: bool = False,
    ) -> bool:
        """Send one response within ``WRITE_TIMEOUT``; ``False`` (the connection reset) if the client
        did not take it in time."""
        headers = [
            ("content-type", content_type),
            ("content-length", str(len(body))),
            ("cache-control", "no-store"),
            ("server", "specexec-probes"),
        ]
        if allow:
            headers.append(("allow", "GET, HEAD"))
        if close:
            headers.append(("connection", "close"))
        with anyio.move_on_after(WRITE_TIMEOUT):
            await stream.send(conn.send(h11.Response(status_code=status, headers=headers)) or b"")
            if not head and body:
                await stream.send(conn.send(h11.Data(data=body)) or b"")
            await stream.send(conn.send(h11.EndOfMessage()) or b"")
            return True
        abort(stream)
        return False


def abort(stream: SocketStream) -> None:
    """Make closing ``stream`` a reset: the kernel drops what the client never read at once,
    instead of holding it (and the connection) while it keeps trying to deliver it."""
    with contextlib.suppress(OSError, anyio.TypedAttributeLookupError):
        stream.extra(SocketAttribute.raw_socket).setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _LINGER_RESET)
