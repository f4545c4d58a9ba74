"""``python -m specexec.bench.response_bounds``: memory and time of hostile 200 answers (issue 9 item 12).

Each case runs in its own subprocess (so each peak RSS is its own) against a tiny HTTP/1.1
server on 127.0.0.1 in that process, which makes its body lazily from small pieces (so the
server adds almost nothing to the RSS): the peak RSS growth of the client call
(``ru_maxrss`` after minus before) and its wall time are reported, with the error raised.

- ``body``: a non-streamed 200 of 50 MB of JSON;
- ``bomb``: a gzip body inflating to 1 GiB (≈ 1 MB on the wire);
- ``endless``: an SSE stream of tokens that never sends ``[DONE]`` (8 s at most);
- ``line``: ``SSEDecoder`` fed one 16 MiB line in 64 KiB chunks (time only).

``--max-response-bytes`` sets ``HttpConfig.max_response_bytes`` (default: the library's).
It reports, it does not assert.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import subprocess
import sys
import time
import zlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import anyio
import anyio.abc

from specexec import Query
from specexec.backends import DEFAULT_HTTP_CONFIG, HttpConfig, HttpTimeouts, OpenAICompatible
from specexec.backends._sse import SSEDecoder

CASES = ("body", "bomb", "endless", "line")
_PIECE = 1 << 16


def _rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


@contextlib.asynccontextmanager
async def _server(head: bytes, body: Callable[[], AsyncIterator[bytes]]) -> AsyncIterator[str]:
    async def serve(stream: anyio.abc.SocketStream) -> None:
        async with stream:
            with contextlib.suppress(anyio.BrokenResourceError, anyio.ClosedResourceError, anyio.EndOfStream):
                received = b""
                while b"\r\n\r\n" not in received:
                    received += await stream.receive()
                await stream.send(head)
                async for piece in body():
                    await stream.send(piece)

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1")
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        yield f"http://127.0.0.1:{port}/v1"
        tg.cancel_scope.cancel()


def _bomb(size: int) -> bytes:
    c = zlib.compressobj(9, zlib.DEFLATED, zlib.MAX_WBITS | 16)
    zeros = b"\0" * (1 << 20)
    return b"".join(c.compress(zeros) for _ in range(size >> 20)) + c.flush()


async def _case(case: str, http: HttpConfig) -> dict[str, Any]:
    if case == "line":
        line = b"data: " + b"x" * (16 << 20) + b"\n\n"
        t0 = time.perf_counter()
        decoder = SSEDecoder()
        for i in range(0, len(line), _PIECE):
            decoder.feed(line[i : i + _PIECE])
        return {"case": case, "seconds": round(time.perf_counter() - t0, 3)}
    stream = case == "endless"
    if case == "body":
        size = 50_000_000
        prefix, suffix = b'{"choices": [{"message": {"content": "', b'"}, "finish_reason": "stop"}]}'
        filler = size - len(prefix) - len(suffix)
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n" % size

        async def body() -> AsyncIterator[bytes]:
            yield prefix
            for i in range(0, filler, _PIECE):
                yield b"x" * min(_PIECE, filler - i)
            yield suffix

    elif case == "bomb":
        packed = _bomb(1 << 30)
        head = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-encoding: gzip\r\n"
        head += b"content-length: %d\r\n\r\n" % len(packed)

        async def body() -> AsyncIterator[bytes]:
            for i in range(0, len(packed), _PIECE):
                yield packed[i : i + _PIECE]

    else:
        head = b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
        event = b'data: {"choices": [{"index": 0, "delta": {"content": "word "}}]}\n\n' * 100
        frame = b"%x\r\n%s\r\n" % (len(event), event)

        async def body() -> AsyncIterator[bytes]:
            end = time.monotonic() + 8.0
            while time.monotonic() < end:
                yield frame

    async with _server(head, body) as url:
        backend = OpenAICompatible(
            case, base_url=url, model="m", stream=stream, http=http, timeout=HttpTimeouts(read=30.0)
        )
        before = _rss_mib()
        t0 = time.perf_counter()
        try:
            await backend.complete(Query("hi", max_tokens=100_000))
            outcome = "answered"
        except Exception as exc:
            outcome = f"{type(exc).__name__}: {str(exc)[:120]}"
        seconds = time.perf_counter() - t0
        return {
            "case": case,
            "seconds": round(seconds, 3),
            "peak_rss_growth_mib": round(_rss_mib() - before, 1),
            "outcome": outcome,
        }


def main(argv: list[str] | None = None) -> None:
    """Run every case (each in a subprocess) and print one JSON line per case."""
    p = argparse.ArgumentParser(prog="python -m specexec.bench.response_bounds", description=__doc__.split("\n")[0])
    p.add_argument("--case", choices=CASES, help="run this case here (used by the parent run)")
    p.add_argument("--max-response-bytes", type=int, default=DEFAULT_HTTP_CONFIG.max_response_bytes)
    args = p.parse_args(argv)
    if args.case:
        http = HttpConfig(max_response_bytes=args.max_response_bytes)
        print(json.dumps(anyio.run(_case, args.case, http, backend="trio")), flush=True)
        return
    for case in CASES:
        cmd = [sys.executable, "-m", "specexec.bench.response_bounds", "--case", case]
        cmd += ["--max-response-bytes", str(args.max_response_bytes)]
        subprocess.run(cmd, check=False)


if __name__ == "__main__":
    main()
