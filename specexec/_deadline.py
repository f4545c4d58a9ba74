"""A deadline over a block of the current task, as cheaply as the running loop allows.

``deadline_scope()`` returns, once per stream, the factory the HTTP backends use for each wait
for the server: ``with scope_at(when) as scope: ...`` cancels the block when the loop's clock
reaches ``when`` and tells after it whether it did (``scope.cancelled_caught``), as
``anyio.CancelScope(deadline=when)`` does. A stream waits for the server once per read (a
paced stream: once per token), and anyio's scope costs ≈ 10 µs per use on uvloop and ≈ 20 µs on
trio, a tenth of the client's CPU for a streamed answer. So:

- trio: ``trio.CancelScope`` itself (what anyio's scope wraps there);
- asyncio (uvloop too): the driver's ``TaskScope`` with a deadline, an entry in the loop's
  timer heap that cancels the task once; leaving the block takes that cancellation back and
  swallows it if it is the only one, as ``asyncio.timeout`` does — a caller's cancellation
  still propagates. asyncio's cancellation is edge-triggered: a body that swallows
  ``CancelledError`` runs on (the reads here are httpx's, which do not);
- any other loop: ``anyio.CancelScope``.

A deadline of ``inf`` arms nothing.

``ATTEMPT_DEADLINE`` tells a backend when the engine will cut the call it is in (the policy's
``attempt_timeout``; for a stream, its wait for the next chunk), so that it can end its own
waits first: an HTTP backend reads a slow error body only until then, and raises the status's
error (a 429 with its ``Retry-After``) rather than be cut into a ``Timeout``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from contextvars import ContextVar
from types import TracebackType
from typing import Protocol, Self

import anyio

from ._clock import running_library
from ._task_scope import TaskScope

__all__ = ["ATTEMPT_DEADLINE", "DeadlineScope", "deadline_scope"]

ATTEMPT_DEADLINE: ContextVar[float] = ContextVar("specexec_attempt_deadline", default=math.inf)
"""The loop-clock time at which the engine cuts the backend call under way (``inf``: none); see
the module docstring. Set by the engine around each call it bounds."""


class DeadlineScope(Protocol):
    """What ``deadline_scope()``'s factory returns: a context manager with ``cancelled_caught``."""

    @property
    def cancelled_caught(self) -> bool:
        """True when the deadline cancelled the block (and leaving it swallowed that)."""
        ...

    def __enter__(self) -> Self: ...

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool | None: ...


def deadline_scope() -> Callable[[float], DeadlineScope]:
    """The running loop's cheapest deadline scope: call it with a loop-clock time (see the module)."""
    library = running_library()
    if library == "trio":
        return _trio_scope
    if library == "asyncio":
        return TaskScope
    return _anyio_scope


def _trio_scope(when: float) -> DeadlineScope:
    import trio

    return trio.CancelScope(deadline=when)


def _anyio_scope(when: float) -> DeadlineScope:
    return anyio.CancelScope(deadline=when)
