"""Helpers for the MockTransport tests: canned wire payloads and recording transports."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import anyio.lowlevel
import httpx

Handler = Callable[[httpx.Request], Awaitable[httpx.Response]]


class Recorder:
    """An async MockTransport handler that records requests and answers with a fixed response factory."""

    def __init__(self, respond: Callable[[httpx.Request], httpx.Response]) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        await request.aread()
        self.requests.append(request)
        return self.respond(request)

    @property
    def last_json(self) -> Any:
        return json.loads(self.requests[-1].content)


def mock_client(respond: Callable[[httpx.Request], httpx.Response]) -> tuple[httpx.AsyncClient, Recorder]:
    recorder = Recorder(respond)
    return httpx.AsyncClient(transport=httpx.MockTransport(recorder)), recorder


class ChunkStream(httpx.AsyncByteStream):
    """A response body sent in the given chunks, optionally waiting forever after them; records aclose()."""

    def __init__(self, chunks: list[bytes], *, then_hang: bool = False) -> None:
        self.chunks = chunks
        self.then_hang = then_hang
        self.closed = False
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for chunk in self.chunks:
            self.sent += 1
            yield chunk
            await anyio.lowlevel.checkpoint()
        if self.then_hang:
            await anyio.sleep_forever()

    async def aclose(self) -> None:
        self.closed = True


def sse(*payloads: object, event_names: list[str] | None = None) -> bytes:
    """An SSE body: each payload a ``data:`` event (dicts as JSON, str verbatim)."""
    out = []
    for i, payload in enumerate(payloads):
        data = payload if isinstance(payload, str) else json.dumps(payload)
        name = f"event: {event_names[i]}\n" if event_names else ""
        out.append(f"{name}data: {data}\n\n")
    return "".join(out).encode()


def split_every(data: bytes, n: int) -> list[bytes]:
    return [data[i : i + n] for i in range(0, len(data), n)]
