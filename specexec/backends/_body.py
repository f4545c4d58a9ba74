"""Reading a response body within a bound of decoded bytes (``HttpConfig.max_response_bytes``).

httpx's ``aiter_bytes`` inflates each compressed network chunk in one piece: a 64 KiB gzip
chunk of zeros is 64 MiB decoded before the caller can count it. ``iter_body`` reads the
raw bytes and inflates gzip and deflate itself with ``zlib``'s ``max_length``, so at most
``limit + 1`` decoded bytes ever exist; other encodings (``br``, ``zstd``, several stacked)
go through httpx's decoders and are counted chunk by chunk. Backends ask only for gzip and
deflate (``ACCEPT_ENCODING``).
"""

from __future__ import annotations

import zlib
from collections.abc import AsyncGenerator

from .._httpx import httpx

ACCEPT_ENCODING = "gzip, deflate"
"""The ``accept-encoding`` the backends' own clients send: the encodings ``iter_body`` bounds itself."""


class BodyTooLarge(Exception):
    """The body went past ``limit`` decoded bytes (internal: the backend turns it into ``BadResponse``)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"response body larger than {limit} bytes")


class _Inflater:
    """gzip or deflate (zlib-wrapped, or raw as some servers send it), inflated in bounded steps."""

    def __init__(self, encoding: str) -> None:
        self._gzip = encoding != "deflate"
        self._first = True
        self._z = zlib.decompressobj(zlib.MAX_WBITS | 16 if self._gzip else zlib.MAX_WBITS)

    def inflate(self, data: bytes, room: int) -> tuple[bytes, bytes]:
        """At most ``room`` decoded bytes of ``data``, and the input left over for the next step."""
        try:
            out = self._z.decompress(data, room)
        except zlib.error as exc:
            if self._gzip or not self._first:
                raise httpx.DecodingError(f"invalid compressed body: {exc}") from None
            self._z = zlib.decompressobj(-zlib.MAX_WBITS)  # a raw deflate stream (no zlib header)
            self._first = False
            return self.inflate(data, room)
        self._first = False
        return out, self._z.unconsumed_tail


def _encodings(response: httpx.Response) -> list[str]:
    value = response.headers.get("content-encoding", "")
    return [e for e in (part.strip().lower() for part in value.split(",")) if e and e != "identity"]


async def iter_body(response: httpx.Response, limit: int, *, truncate: bool = False) -> AsyncGenerator[bytes, None]:
    """The decoded body of ``response``, chunk by chunk, never more than ``limit`` bytes.

    Past ``limit``, raise ``BodyTooLarge`` (or, with ``truncate``, stop after exactly
    ``limit`` bytes: for error bodies, of which only an excerpt is kept).
    """
    try:
        content = response.content  # already read (a response built in memory, e.g. by a mock transport)
    except httpx.ResponseNotRead:
        pass
    else:
        if len(content) > limit and not truncate:
            raise BodyTooLarge(limit)
        yield content[:limit]
        return
    encodings = _encodings(response)
    if len(encodings) == 1 and encodings[0] in ("gzip", "x-gzip", "deflate"):
        inflater = _Inflater(encodings[0])
        total = 0
        async for raw in response.aiter_raw():
            data = raw
            while data:
                out, data = inflater.inflate(data, limit - total + 1)
                total += len(out)
                if total > limit:
                    if truncate:
                        yield out[: len(out) - (total - limit)]
                        return
                    raise BodyTooLarge(limit)
                if out:
                    yield out
                elif data:  # no progress possible (trailing garbage after the end): stop
                    break
        return
    chunks = response.aiter_raw() if not encodings else response.aiter_bytes()
    total = 0
    async for chunk in chunks:
        total += len(chunk)
        if total > limit:
            if truncate:
                yield chunk[: len(chunk) - (total - limit)]
                return
            raise BodyTooLarge(limit)
        yield chunk
