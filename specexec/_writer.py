"""``BackgroundWriter``: a bounded buffer drained by one thread that its owner joins.

Trace sinks are called on the run's task, on the event loop; a file or a log handler may
block (a slow disk, NFS, a full pipe). A sink hands its record to a ``BackgroundWriter``
instead: ``put`` appends to a bounded buffer and returns at once (or counts the record as
dropped when ``max_pending`` records already wait); one writer thread takes every pending
record as a batch and passes it to the ``write`` function. ``close`` writes what is
pending, joins the thread and returns; nothing put before ``close`` is lost. The thread is
started on the first ``put`` and never outlives ``close`` (an ``atexit`` hook closes a
writer its owner forgot, so a clean interpreter exit loses nothing either).

Why a thread: file and logging I/O has no non-blocking form shared by trio and asyncio
(``anyio.to_thread`` would need a running loop per record, and a sink is synchronous).
"""

from __future__ import annotations

import atexit
import contextlib
import threading
from collections import deque
from collections.abc import Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")

DEFAULT_MAX_PENDING = 10_000
"""Records a sink buffers before it drops new ones."""


class BackgroundWriter(Generic[T]):
    """Buffers records (at most ``max_pending``) and passes them in batches to ``write`` on one thread.

    ``dropped`` counts the records refused because the buffer was full (exactly: one per
    refused ``put``). ``errors`` counts batches whose ``write`` raised (the batch is lost, the
    error is passed to ``on_error``; the writer keeps going). ``close()`` is idempotent.
    """

    def __init__(
        self,
        write: Callable[[Sequence[T]], None],
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
        name: str = "specexec-sink",
        on_error: Callable[[BaseException], None] | None = None,
    ) -> None:
        if not isinstance(max_pending, int) or isinstance(max_pending, bool) or max_pending < 1:
            raise ValueError(f"max_pending must be an integer >= 1, got {max_pending!r}")
        self._write = write
        self.max_pending = max_pending
        self._name = name
        self._on_error = on_error
        self._pending: deque[T] = deque()
        self._cond = threading.Condition()
        self._thread: threading.Thread | None = None
        self._closing = False
        self._busy = False  # the thread holds a batch it has not finished writing
        self.dropped = 0
        self.written = 0
        self.errors = 0

    @property
    def closed(self) -> bool:
        """Whether ``close`` was called (later records are dropped)."""
        return self._closing

    def put(self, record: T) -> bool:
        """Queue ``record``; ``False`` (and ``dropped`` + 1) if the buffer is full or the writer closed."""
        with self._cond:
            if self._closing or len(self._pending) >= self.max_pending:
                self.dropped += 1
                return False
            self._pending.append(record)
            if self._thread is None:
                self._thread = threading.Thread(target=self._drain, name=self._name, daemon=True)
                self._thread.start()
                atexit.register(self.close)
            self._cond.notify()
        return True

    def flush(self, timeout: float | None = None) -> bool:
        """Wait (blocking) until every record put so far is written; ``False`` on ``timeout``."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._pending and not self._busy, timeout)

    def close(self) -> None:
        """Write what is pending, stop and join the thread (blocking). Later ``put`` calls drop."""
        with self._cond:
            self._closing = True
            thread = self._thread
            self._cond.notify_all()
        if thread is not None:
            if thread is not threading.current_thread():
                thread.join()
            atexit.unregister(self.close)

    def _drain(self) -> None:
        while True:
            with self._cond:
                self._busy = False
                self._cond.notify_all()  # wakes flush()
                self._cond.wait_for(lambda: self._pending or self._closing)
                if not self._pending:
                    return  # closing, and everything is written
                batch = list(self._pending)
                self._pending.clear()
                self._busy = True
            try:
                self._write(batch)
            except Exception as exc:
                self.errors += 1
                if self._on_error is not None:
                    with contextlib.suppress(Exception):  # a failing error handler must not kill the writer
                        self._on_error(exc)
            else:
                with self._cond:
                    self.written += len(batch)
