"""The incremental server-sent-events decoder."""

from __future__ import annotations

import pytest

from specexec.backends._sse import ServerSentEvent, SSEDecoder

STREAM = (
    b": keep-alive comment\n"
    b"event: message_start\n"
    b'data: {"a": 1}\n'
    b"\n"
    b"data: line one\r\n"
    b"data:line two\r\n"
    b"id: 7\r\n"
    b"retry: 100\r\n"
    b"\r\n"
    b"event: ping\r"
    b"data: {}\r"
    b"\r"
    b"data: [DONE]\n\n"
)
EXPECTED = [
    ServerSentEvent("message_start", b'{"a": 1}'),
    ServerSentEvent("message", b"line one\nline two"),
    ServerSentEvent("ping", b"{}"),
    ServerSentEvent("message", b"[DONE]"),
]


def feed_all(chunks: list[bytes]) -> list[ServerSentEvent]:
    decoder = SSEDecoder()
    events: list[ServerSentEvent] = []
    for chunk in chunks:
        events.extend(decoder.feed(chunk))
    events.extend(decoder.close())
    return events


def test_whole_stream() -> None:
    assert feed_all([STREAM]) == EXPECTED


def test_byte_by_byte_gives_the_same_events() -> None:
    assert feed_all([STREAM[i : i + 1] for i in range(len(STREAM))]) == EXPECTED


@pytest.mark.parametrize("split", range(1, 40))
def test_any_split_point(split: int) -> None:
    assert feed_all([STREAM[:split], STREAM[split:]]) == EXPECTED


def test_crlf_split_across_chunks_is_one_line_break() -> None:
    # a CR at the end of one chunk and the LF at the start of the next must not make a blank line
    assert feed_all([b"data: a\r", b"\ndata: b\r\n\r\n"]) == [ServerSentEvent("message", b"a\nb")]


def test_events_are_returned_as_soon_as_complete() -> None:
    decoder = SSEDecoder()
    assert decoder.feed(b"data: x\n") == []
    assert decoder.feed(b"\n") == [ServerSentEvent("message", b"x")]


def test_blank_lines_without_data_dispatch_nothing() -> None:
    assert feed_all([b"\n\n\nevent: lonely\n\n"]) == []


def test_close_flushes_an_event_missing_its_final_blank_line() -> None:
    assert feed_all([b"data: [DONE]"]) == [ServerSentEvent("message", b"[DONE]")]
    assert feed_all([b"data: [DONE]\n"]) == [ServerSentEvent("message", b"[DONE]")]


def _allocated_while_feeding(decoder: SSEDecoder, chunks: list[bytes]) -> tuple[int, list[ServerSentEvent]]:
    """Bytes allocated transiently by ``decoder.feed`` over ``chunks`` (sum of each call's peak rise)."""
    import tracemalloc

    events: list[ServerSentEvent] = []
    total = 0
    tracemalloc.start()
    try:
        for chunk in chunks:
            tracemalloc.reset_peak()
            before = tracemalloc.get_traced_memory()[0]
            events.extend(decoder.feed(chunk))
            total += tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    return total, events


def test_a_long_line_costs_linear_work() -> None:
    # 4 MiB in one data line, fed 4 KiB at a time: a decoder that re-joins (and re-scans) its
    # whole buffer at every chunk allocates ~ n^2 / chunk (here ~4 GiB); a linear one ~ a few n
    n, step = 4 << 20, 4096
    body = b"data: " + b"x" * n + b"\n\n"
    allocated, events = _allocated_while_feeding(SSEDecoder(), [body[i : i + step] for i in range(0, len(body), step)])
    assert events == [ServerSentEvent("message", b"x" * n)]
    assert allocated < 6 * n, f"allocated {allocated} bytes for a {n}-byte line"
