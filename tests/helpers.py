"""Test backends whose behaviour is scripted exactly (and which count what is alive), and a
switch for the cyclic garbage collector."""

from __future__ import annotations

import contextlib
import gc
import socket
from collections.abc import Callable, Iterator

import anyio

import specexec
from specexec import Query, Response, Usage


class Scripted(specexec.BackendBase):
    """Answers ``text`` after ``latency`` seconds, or raises ``error`` after it.

    ``active`` counts calls in progress; ``cancelled`` those that saw cancellation.
    """

    def __init__(
        self,
        name: str,
        latency: float,
        *,
        text: str | Callable[[Query], str] = '{"ok": true}',
        error: Exception | None = None,
        usage: tuple[int, int] = (10, 20),
        provider: str = "p",
        region: str = "r",
        input_price: float = 0.0,
        output_price: float = 0.0,
        limits: specexec.Limits | None = None,
        model: str | None = None,
    ) -> None:
        super().__init__(
            name,
            provider=provider,
            region=region,
            input_price=input_price,
            output_price=output_price,
            limits=limits,
            model=model,
        )
        self.latency = latency
        self.text = text
        self.error = error
        self.usage = usage
        self.calls = 0
        self.active = 0
        self.cancelled = 0
        self.started_at: list[float] = []

    async def complete(self, query: Query) -> Response:
        self.calls += 1
        self.active += 1
        self.started_at.append(anyio.current_time())
        try:
            await anyio.sleep(self.latency)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
        if self.error is not None:
            raise self.error
        text = self.text(query) if callable(self.text) else self.text
        return Response(text, Usage(*self.usage), model=self.model)


@contextlib.contextmanager
def cyclic_collector_off() -> Iterator[None]:
    """The cyclic garbage collector off for the block (as between two of its passes), after a
    pass: ``gc.collect()`` at the end of the block counts what only it could free."""
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@contextlib.contextmanager
def stuck_readers(port: int, path: str, count: int, pipelined: int) -> Iterator[list[socket.socket]]:
    """``count`` loopback connections to ``port``, each with ``pipelined`` GETs of ``path`` and a
    tiny receive buffer, that never read: the server's writes block once the socket buffers are full."""
    request = f"GET {path} HTTP/1.1\r\nhost: x\r\n\r\n".encode()
    socks = []
    try:
        for _ in range(count):
            s = socket.socket()
            socks.append(s)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
            s.connect(("127.0.0.1", port))  # the listener's backlog completes it
            s.setblocking(False)
            with contextlib.suppress(BlockingIOError):
                s.send(request * pipelined)
        yield socks
    finally:
        for s in socks:
            s.close()


def peer_gone(s: socket.socket) -> bool:
    """Whether the server closed (or reset) ``s``: reading it to its end finds EOF."""
    try:
        while s.recv(1 << 20):
            pass
    except BlockingIOError:
        return False
    except ConnectionResetError:
        return True
    return True
