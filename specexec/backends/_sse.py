"""A small incremental decoder for ``text/event-stream`` (server-sent events).

Fed raw bytes as they arrive, it yields complete events. Lines end with CRLF, LF or CR
(a CR ending a chunk ends its line; an LF starting the next chunk is then that CRLF's, not a
blank line).
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
    """Incremental SSE decoder: ``feed(chunk)`` returns the events completed by ``chunk``.

    Linear in the bytes fed, however long a line: an unterminated line waits in a
    ``bytearray`` that only grows, and only the new bytes are searched for a line end.
    """

    __slots__ = ("_data", "_event", "_pending", "_skip_lf")

    def __init__(self) -> None:
        self._pending = bytearray()
        self._skip_lf = False  # the last complete line ended with CR: an LF next is its CRLF's
        self._event = ""
        self._data: list[bytes] = []

    def feed(self, chunk: bytes) -> list[ServerSentEvent]:
        """Add bytes; return the events whose terminating blank line they contained."""
        if self._skip_lf and chunk:
            self._skip_lf = False
            if chunk[:1] == b"\n":
                chunk = chunk[1:]
        cut = max(chunk.rfind(b"\n"), chunk.rfind(b"\r")) + 1  # just past the last line end
        pending = self._pending
        if not cut:  # no line ends here: wait for the rest
            pending += chunk
            return []
        self._skip_lf = chunk[cut - 1 : cut] == b"\r"
        lines: list[bytes] | list[bytearray]
        if pending:
            pending += memoryview(chunk)[:cut]
            lines = pending.splitlines()
            self._pending = bytearray(memoryview(chunk)[cut:])
        else:
            lines = (chunk if cut == len(chunk) else chunk[:cut]).splitlines()
            if cut < len(chunk):
                pending += memoryview(chunk)[cut:]
        events: list[ServerSentEvent] = []
        data = self._data
        for line in lines:
            if line[:6] == b"data: ":  # by far the most common line: inlined
                data.append(bytes(line[6:]))
            elif not line:  # blank: dispatch
                if data:
                    events.append(ServerSentEvent(self._event or "message", b"\n".join(data)))
                    data = self._data = []
                self._event = ""
            else:
                self._line(bytes(line))
        return events

    def close(self) -> list[ServerSentEvent]:
        """End of stream: the events still pending, leniently dispatched without a final blank line."""
        events: list[ServerSentEvent] = []
        if self._pending:
            line, self._pending = bytes(self._pending), bytearray()
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
