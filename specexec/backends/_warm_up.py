"""The HTTP backends' warm-up: one exchange over loopback, so that the first real one imports nothing.

A first request in a process imports httpcore's network backend for the running loop, anyio's
socket layer and (on trio) the ``idna`` codec; later ones import nothing. ``exercise_http_path``
makes one streamed POST, with a client configured like the backends' (``trust_env=False``), to a
listener it opens on 127.0.0.1 for that one exchange; once per async library and process. It is
best-effort: where loopback sockets are not allowed it logs why at DEBUG and returns.
"""

from __future__ import annotations

import logging

import anyio
import sniffio
from anyio.abc import SocketAttribute, SocketStream

from .._httpx import httpx, ssl_context

_log = logging.getLogger("specexec")

_TIMEOUT = 5.0  # seconds for the whole exchange, so a warm-up never hangs
_REPLY = (
    b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncontent-length: 12\r\nconnection: close\r\n\r\n"
    b"data: {}\r\n\r\n"
)
_BODY = b"{}"

_done: set[str] = set()  # the async libraries ("trio", "asyncio") already warmed up in this process


async def exercise_http_path() -> None:
    """One streamed POST to a one-shot loopback listener (nothing leaves 127.0.0.1)."""
    library = sniffio.current_async_library()
    if library in _done:
        return
    "localhost".encode("idna")  # the codec trio's resolver loads on first use
    try:
        with anyio.fail_after(_TIMEOUT):
            listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
            async with listener, anyio.create_task_group() as tg:
                tg.start_soon(listener.serve, _answer)
                await _post(listener.extra(SocketAttribute.local_port))
                tg.cancel_scope.cancel()  # stop listening
    except (OSError, TimeoutError, httpx.HTTPError) as exc:
        _log.debug("specexec: HTTP warm-up over loopback skipped: %r", exc)
        return
    _done.add(library)


async def _post(port: int) -> None:
    verify = ssl_context(trust_env=False)  # plain HTTP; the process's shared one, not a new ~40 ms build
    async with httpx.AsyncClient(trust_env=False, follow_redirects=False, verify=verify) as client:
        request = client.build_request("POST", f"http://127.0.0.1:{port}/warm-up", content=_BODY)
        response = await client.send(request, stream=True)
        try:
            async for _ in response.aiter_raw():
                pass
        finally:
            await response.aclose()


async def _answer(stream: SocketStream) -> None:
    async with stream:
        received = b""
        while not (b"\r\n\r\n" in received and received.endswith(_BODY)):  # the whole request, then the reply
            received += await stream.receive()
        await stream.send(_REPLY)
