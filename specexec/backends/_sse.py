"""A small incremental decoder for ``text/event-stream`` (server-sent events).

Fed raw bytes as they arrive, it yields complete events. Lines end with CRLF, LF or CR
(a CR at the end of a chunk is held back until the next byte shows whether LF follows).
Only ``event`` and ``data`` matter to the LLM wire formats; ``id``, ``retry`` and comments
(``:`` lines, used as keep-alives) are ignored.

Written here rather than depending on ``httpx-sse``: the LLM streams need ~40 lines of it,
it works on bytes (msgspec decodes ``data`` without a str round trip) and it has no event
loop of its own, so it serves trio and asyncio alike.
"""

from __future__ import annotations

from typing import NamedTuple


class ServerSentEvent(NamedTuple):
    """One dispatched event: its type (``"message"`` when unnamed) and its data lines joined by LF."""

    event: str
    data: bytes


class SSEDecoder:
    """Incremental SSE decoder: ``feed(chunk)`` returns the events completed by ``chunk``."""

    __slots__ = ("_buffer", "_data", "_event")

    def __init__(self) -> None:
        self._buffer = b""
        self._event = ""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Add bytes; return the events whose terminating blank line they contained."""
        buffer = self._buffer + chunk if self._buffer else chunk
        lines = buffer.splitlines()
        end = buffer[-1:]
        if end == b"\r":  # a CR that may be half of a CRLF: keep the line (and the CR) for more
            self._buffer = lines.pop() + b"\r"
        elif end != b"\n" and lines:  # an unterminated line: wait for the rest
            self._buffer = lines.pop()
        else:
            self._buffer = b""
        events: list[ServerSentEvent] = []
        data = self._data
        for line in lines:
            if line[:6] == b"data: ":  # by far the most common line: inlined
                data.append(line[6:])
            elif not line:  # blank: dispatch
                if data:
                    events.append(ServerSentEvent(self._event or "message", b"\n".join(data)))
                    data = self._data = []
                self._event = ""
            else:
                self._line(line)
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream: the events still pending, leniently dispatched without a final blank line."""
        events: list[ServerSentEvent] = []
        if self._buffer:
            line, self._buffer = self._buffer.rstrip(b"\r\n"), b""
            event = self._line(line)
            if event is not None:
                events.append(event)
        event = self._line(b"")
        if event is not None:
            events.append(event)
        return events

    def _line(self, line: bytes) -> ServerSentEvent | None:
        if not line:
            if not self._data:
                self._event = ""
                return None
            event = ServerSentEvent(self._event or "message", b"\n".join(self._data))
            self._event, self._data = "", []
            return event
        if line[:1] == b":":
            return None
        field, sep, value = line.partition(b":")
        if sep and value[:1] == b" ":
            value = value[1:]
        if field == b"data":
            self._data.append(value)
        elif field == b"event":
            self._event = value.decode("utf-8", "replace")
        return None
