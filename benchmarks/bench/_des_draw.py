"""A simulated backend call drawn as one event, for the discrete-event ``--sim`` driver: when
it ends on the virtual clock and with what (``SimulatedBackend.draw``; for a streaming backend
its stream read whole, ``whole_stream``), within the policy's ``attempt_timeout``."""

from __future__ import annotations

import math

from specexec import BackendError, Query, SimulatedBackend, Timeout
from specexec._query import Response

from ._sim import REFUSAL_LATENCY, SimBackend

__all__ = ["Outcome", "draw_call", "whole_stream"]

Outcome = Response | BackendError | None
"""What a drawn call ends with: the answer, the error, or ``None`` (it stalls until cancelled)."""


def draw_call(backend: object, query: Query, now: float, timeout: float | None) -> tuple[float, Outcome]:
    """``complete(query)`` of ``backend`` started at ``now`` within ``timeout`` seconds (``None``:
    no bound): when it ends (absolute; ``inf`` for a stall) and with what — ``Timeout`` when the
    bound comes first, as the engine's ``move_on_after(attempt_timeout)``."""
    if not isinstance(backend, SimulatedBackend):
        name = getattr(backend, "name", type(backend).__name__)
        raise TypeError(f"backend {name!r} is not simulated: the discrete-event driver draws calls")
    end: float
    outcome: Outcome
    if backend.ttft is None:
        delay, outcome = backend.draw(query, now)
        if timeout is not None and delay >= timeout:
            delay, outcome = timeout, _late(timeout, backend.name)
        end = now + delay
    else:  # complete() of a streaming backend: its stream read whole
        end, outcome = whole_stream(backend, query, now)
        if timeout is not None and end >= now + timeout:
            end, outcome = now + timeout, _late(timeout, backend.name)
    return end, outcome


def _late(timeout: float, backend: str) -> Timeout:
    return Timeout(f"no answer within attempt_timeout={timeout:g}s", backend=backend)


def whole_stream(backend: SimulatedBackend, query: Query, now: float) -> tuple[float, Response | BackendError | None]:
    """``complete(query)`` of a streaming backend (its stream read whole) started at ``now``: when
    it ends (absolute, ``inf`` for a stall) and with what. The end is summed piece by piece, as
    the sleeps of ``stream`` add up on a virtual clock (so the times are the same floats)."""
    if isinstance(backend, SimBackend) and backend.refusals:
        refused = backend.refusal(now)
        if refused is not None:
            return now + REFUSAL_LATENCY, refused
    draw = backend.draw_stream(query, now)
    outcome = draw.outcome
    if outcome is None:
        return math.inf, None
    t = now + draw.ttft
    if isinstance(outcome, BackendError):
        return t, outcome
    first: float | None = None
    gaps, slowdown = draw.gaps, backend.slowdown
    for i, piece in enumerate(outcome):
        if i:
            t = t + gaps[i - 1] * slowdown(t)
        if piece and first is None:
            first = t - now
    response = Response(
        "".join(outcome),
        backend.stream_usage(query),
        model=backend.reported_model or backend.model,
        ttft=first,
        finish_reason="stop",
    )
    return t, response
