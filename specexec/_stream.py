"""``Stream``: what ``specexec.stream`` returns — the committed attempt's text as it arrives.

The run is the one engine (``_engine``) with a sink: attempts race to their first token (or
to a verified prefix); the committed attempt's text goes through a zero-buffer memory stream
to the caller, every other attempt is cancelled. The run lives in a task group owned by this
context manager, so leaving the ``async with`` early cancels everything it started, and when
it exits nothing it started is running.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from types import TracebackType
from typing import TYPE_CHECKING

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from ._engine import unwrapped

if TYPE_CHECKING:
    from ._engine import Result

RunWithSink = Callable[[MemoryObjectSendStream[str]], Awaitable["Result"]]


class Stream:
    """An answer streamed from the one committed attempt.

    .. code-block:: python

        async with specexec.stream(query, policy, runtime=rt) as s:
            async for delta in s:          # str pieces of the committed attempt, in order
                send_to_user(delta)
        result = s.result                  # after the stream ended

    Iterating raises what ended the run instead of an answer (``NoAcceptableResponse``,
    ``DeadlineExceeded``, a fatal ``BackendError``, or — after commit — the committed stream's
    own failure, e.g. ``Timeout`` for a stall). Leaving the block early cancels every attempt.
    """

    def __init__(self, start: RunWithSink) -> None:
        self._start = start
        self._group: TaskGroup | None = None
        self._receive: MemoryObjectReceiveStream[str] | None = None
        self._result: Result | None = None
        self._error: BaseException | None = None
        self._done = False
        self._state = "new"  # "new" -> "open" (entered) -> "closed" (exited): entered once only

    @property
    def result(self) -> Result:
        """The ``Result`` (full text, backend, latency, ttft, cost, trace) once the stream has ended."""
        if self._result is None:
            if self._error is not None:
                raise RuntimeError("the stream ended with an error, not a result") from self._error
            if self._state == "closed":
                raise RuntimeError(
                    "the stream was left before its end, so its run was cancelled and has no result "
                    "(its trace, outcome 'cancelled', went to the runtime's sinks)"
                )
            raise RuntimeError("Stream.result is available once the stream has ended")
        return self._result

    async def __aenter__(self) -> Stream:
        if self._state != "new":
            raise RuntimeError("a Stream can be entered once: call stream() again for another answer")
        self._state = "open"
        send, receive = anyio.create_memory_object_stream[str](0)
        self._receive = receive
        group = anyio.create_task_group()
        await group.__aenter__()
        self._group = group
        group.start_soon(self._run, send)
        return self

    async def _run(self, send: MemoryObjectSendStream[str]) -> None:
        async with send:
            try:
                self._result = await self._start(send)
            except Exception as exc:  # handed to the reader, raised from its iteration
                self._error = exc

    def __aiter__(self) -> Stream:
        return self

    async def __anext__(self) -> str:
        if self._receive is None or self._state != "open":
            raise RuntimeError("iterate a Stream inside `async with`")
        try:
            return await self._receive.receive()
        except anyio.EndOfStream:
            self._done = True
            if self._error is not None:
                raise self._error from None
            raise StopAsyncIteration from None

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        group, self._group = self._group, None
        assert group is not None and self._receive is not None
        self._state = "closed"
        if exc_type is not None or not self._done:
            group.cancel_scope.cancel()  # left early (or failed): nothing it started may go on
        try:
            try:
                await group.__aexit__(None, None, None)
                return
            except BaseExceptionGroup as errors:  # a crash in an attempt: as run() raises it
                error = unwrapped(errors)
            raise error  # outside the handler: the group is not left as its context (a cycle)
        finally:
            self._receive.close()
