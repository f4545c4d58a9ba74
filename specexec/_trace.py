"""The decision trace of a run, and the sinks it is sent to.

Times in a trace are offsets in seconds from the start of the run (loop clock), except
``Trace.wall_time`` (Unix time at the start). ``Trace.to_json()`` serialises it with msgspec;
exceptions become ``"Kind: message"`` strings (they never hold secrets: backends redact).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable, Sequence
from typing import IO, Any, Literal, Self, cast

import msgspec

from ._writer import DEFAULT_MAX_PENDING, BackgroundWriter

_log = logging.getLogger("specexec")

Outcome = Literal["accepted", "rejected", "failed", "cancelled", "skipped"]


class AttemptRecord(msgspec.Struct):
    """One attempt (or one skipped candidate) of a run.

    ``trigger`` says why it was launched (``primary``, ``hedge``, ``after failure``,
    ``parallel``); ``why`` why this candidate; ``reason`` what became of it.
    """

    backend: str
    provider: str = ""
    region: str = ""
    trigger: str = ""
    why: str = ""
    outcome: Outcome | None = None
    reason: str = ""
    started: float | None = None
    ended: float | None = None
    latency: float | None = None
    ttft: float | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    usage_estimated: bool = False
    reserved: float = 0.0
    cost: float = 0.0
    score: float | None = None
    model: str | None = None
    error: BaseException | None = None


class TraceEvent(msgspec.Struct):
    """A scheduler decision that is not an attempt: a hedge fired or held back, a budget call."""

    at: float
    what: str
    detail: str = ""


class RouteDecision(msgspec.Struct):
    """What a ``Router`` decided for a run (``Trace.route``; also what ``routing.decide`` returns).

    ``name`` is the route taken, ``selector`` the selector that decided (``"default"`` when none
    did; ``"budget"`` never: a downgrade keeps the selector and sets ``requested``), ``why`` its
    reason, ``confidence`` its confidence where it gave one, ``latency`` the seconds the
    selectors took, ``cost`` the USD they spent (an LLM router's call). ``passed`` says why each
    earlier selector passed. ``requested`` is the route before a budget downgrade;
    ``budget_key`` / ``budget_remaining`` the budget's key and the fraction left before this run,
    ``budget`` the budget's name (what it is keyed by and its period: ``"tenant/day"``).
    With speculation: ``speculated`` the route started at t = 0, ``speculation`` ``"hit"`` or
    ``"miss"``, ``speculation_cost`` what the cancelled guess cost, ``started`` when the route's
    run began (seconds from the router's start). ``step`` is the query's ``metadata["step"]``
    (a multi-step workflow's stage), so reports can group by it.
    """

    name: str
    selector: str = "default"
    why: str = ""
    confidence: float | None = None
    latency: float = 0.0
    cost: float = 0.0
    passed: list[str] = msgspec.field(default_factory=list)
    requested: str | None = None
    budget_key: str | None = None
    budget_remaining: float | None = None
    budget: str | None = None
    speculated: str | None = None
    speculation: Literal["hit", "miss"] | None = None
    speculation_cost: float = 0.0
    started: float = 0.0
    step: str | None = None


RunOutcome = Literal["running", "ok", "no_acceptable", "deadline", "budget", "fatal", "stream_failed", "cancelled"]


class Trace(msgspec.Struct):
    """Everything a run decided: candidates and order, each attempt, hedges, budget calls, result."""

    mode: str
    policy: str | None = None
    wall_time: float = 0.0
    candidates: list[str] = msgspec.field(default_factory=list)
    attempts: list[AttemptRecord] = msgspec.field(default_factory=list)
    events: list[TraceEvent] = msgspec.field(default_factory=list)
    outcome: RunOutcome = "running"
    winner: str | None = None
    latency: float | None = None
    cost: float = 0.0
    max_cost: float | None = None
    tenant: str | None = None
    route: RouteDecision | None = None

    @property
    def hedges(self) -> int:
        """How many attempts were launched as timed hedges."""
        return sum(1 for a in self.attempts if a.trigger == "hedge")

    @property
    def launched(self) -> int:
        """How many attempts were launched (skipped candidates excluded)."""
        return sum(1 for a in self.attempts if a.outcome != "skipped")

    def to_json(self) -> bytes:
        """The trace as JSON (exceptions as ``"Kind: message"``)."""
        return _encoder.encode(self)

    def to_builtins(self) -> Any:
        """The trace as plain dicts and lists."""
        return msgspec.to_builtins(self, enc_hook=_enc_hook)


def _enc_hook(obj: Any) -> Any:
    if isinstance(obj, BaseException):
        return f"{type(obj).__name__}: {obj}"
    raise NotImplementedError(f"cannot encode {type(obj).__name__} in a trace")


_encoder = msgspec.json.Encoder(enc_hook=_enc_hook)

TraceSink = Callable[[Trace], None]
"""A sink is any callable taking the finished trace (called once per run, on the run's task).

It runs on the event loop: it must not block (no file or network I/O there). The sinks here
hand their records to a ``BackgroundWriter`` (a bounded buffer, one writer thread that
``close`` joins); ``specexec.metrics.PrometheusSink`` only updates in-memory counters.
"""


class _BufferedSink:
    """What the buffered sinks share: ``close``/``aclose``, context managers, ``dropped``."""

    _writer: BackgroundWriter[Any] | None

    @property
    def dropped(self) -> int:
        """Records refused because the buffer was full (or the sink closed)."""
        return self._writer.dropped if self._writer is not None else 0

    def flush(self, timeout: float | None = None) -> bool:
        """Block until every record so far is written (``False`` on ``timeout``); not on the event loop."""
        return self._writer.flush(timeout) if self._writer is not None else True

    def close(self) -> None:
        """Write what is buffered and stop the writer thread (blocking). Later traces are dropped.

        The file itself is the caller's: it is flushed, never closed.
        """
        if self._writer is not None:
            self._writer.close()

    async def aclose(self) -> None:
        """``close`` from async code, off the event loop (on a worker thread)."""
        import anyio.to_thread

        await anyio.to_thread.run_sync(self.close, abandon_on_cancel=False)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _log_write_error(exc: BaseException) -> None:
    _log.error("specexec: a trace sink could not write: %s: %s", type(exc).__name__, exc)


class JsonLinesSink(_BufferedSink):
    """Writes each trace as one JSON line to a binary or text file object, off the event loop.

    The trace is encoded on the run's task (a few µs); the line goes to a bounded buffer of
    ``max_pending`` lines that one writer thread drains, writing and flushing a batch at a
    time. When the buffer is full a line is dropped and counted (``dropped``). ``close()``
    (or ``with`` / ``async with`` the sink) writes every buffered line and joins the thread;
    call it after the ``Runtime`` exits. In-memory files (``io.BytesIO``, ``io.StringIO``)
    cannot block: they are written at once, with no thread.
    """

    def __init__(self, file: IO[bytes] | IO[str], *, max_pending: int = DEFAULT_MAX_PENDING) -> None:
        self.file = file
        self._text = isinstance(file, io.TextIOBase)
        self._memory = isinstance(file, io.BytesIO | io.StringIO)
        self._writer: BackgroundWriter[bytes] | None = None
        if not self._memory:
            self._writer = BackgroundWriter(
                self._write, max_pending=max_pending, name="specexec-jsonl", on_error=_log_write_error
            )

    def __call__(self, trace: Trace) -> None:
        """Queue one line (never blocks)."""
        line = trace.to_json() + b"\n"
        if self._writer is None:
            self._write((line,))
        else:
            self._writer.put(line)

    def _write(self, lines: Sequence[bytes]) -> None:
        data = b"".join(lines)
        if self._text:
            cast("IO[str]", self.file).write(data.decode())
        else:
            cast("IO[bytes]", self.file).write(data)
        self.file.flush()


class LoggingSink(_BufferedSink):
    """Logs each trace as one JSON line to the ``specexec.trace`` logger (or ``logger``), off the event loop.

    Only when the logger is enabled for ``level`` is the trace encoded (on the run's task) and
    queued; a writer thread hands the lines to the logger's handlers (which may block), as a
    ``logging.handlers.QueueHandler`` would. ``max_pending``, ``dropped`` and ``close`` as
    for ``JsonLinesSink``.
    """

    def __init__(
        self,
        logger: str | logging.Logger = "specexec.trace",
        level: int = logging.INFO,
        *,
        max_pending: int = DEFAULT_MAX_PENDING,
    ) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level
        self._writer = BackgroundWriter(
            self._write, max_pending=max_pending, name="specexec-log", on_error=_log_write_error
        )

    def __call__(self, trace: Trace) -> None:
        """Queue one line, only if the logger is enabled for ``level`` (never blocks)."""
        if self.logger.isEnabledFor(self.level):
            assert self._writer is not None
            self._writer.put(trace.to_json().decode())

    def _write(self, lines: Sequence[str]) -> None:
        for line in lines:
            self.logger.log(self.level, "%s", line)
