"""The decision trace of a run, and the sinks it is sent to.

Times in a trace are offsets in seconds from the start of the run (loop clock), except
``Trace.wall_time`` (Unix time at the start). ``Trace.to_json()`` serialises it with msgspec;
exceptions become ``"Kind: message"`` strings (they never hold secrets: backends redact).
"""

from __future__ import annotations

import io
import logging
from collections.abc import Callable
from typing import IO, Any, Literal, cast

import msgspec

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
    ``budget_key`` / ``budget_remaining`` the budget's key and the fraction left before this run.
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
"""A sink is any callable taking the finished trace (called once per run, on the run's task)."""


class JsonLinesSink:
    """Writes each trace as one JSON line to a binary or text file object (flushed per line)."""

    def __init__(self, file: IO[bytes] | IO[str]) -> None:
        self.file = file

    def __call__(self, trace: Trace) -> None:
        """Append one line."""
        line = trace.to_json() + b"\n"
        if isinstance(self.file, io.TextIOBase):
            self.file.write(line.decode())
        else:
            cast("IO[bytes]", self.file).write(line)
        self.file.flush()


class LoggingSink:
    """Logs each trace as one JSON line to the ``specexec.trace`` logger (or ``logger``)."""

    def __init__(self, logger: str | logging.Logger = "specexec.trace", level: int = logging.INFO) -> None:
        self.logger = logging.getLogger(logger) if isinstance(logger, str) else logger
        self.level = level

    def __call__(self, trace: Trace) -> None:
        """Log one line, only if the logger is enabled for ``level``."""
        if self.logger.isEnabledFor(self.level):
            self.logger.log(self.level, "%s", trace.to_json().decode())
