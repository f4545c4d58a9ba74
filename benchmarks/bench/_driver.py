"""The open-loop load driver shared by ``--sim`` (virtual time) and ``--live``/``--target`` (real time).

One task group (on the loop that runs it: trio or asyncio): a launcher sends each request at
its *intended* time (sleeping until then) and starts a task for it; the task runs the policy,
bounded by the workload's ``timeout``, and records the latency from the intended time to the
end. If the launcher falls behind (the client stalls, or ``max_in_flight`` requests are
already running), requests go out late but their latency still counts from when they should
have been sent, so a stall shows in the tail instead of being hidden (no coordinated
omission). Everything ends inside the group: bounded by the workload's count or duration plus
one ``timeout``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

import anyio
import sniffio

from specexec import Policy, Query, Result, Runtime, Trace
from specexec.verifiers import check

from ._scenario import Scenario
from ._stats import PolicyStats
from ._workload import requests

__all__ = ["PROGRESS_EVERY", "LastTrace", "drive", "received_cost"]

PROGRESS_EVERY = 256
"""Finished requests between two progress callbacks."""

ProgressFn = Callable[[int], None]


class LastTrace:
    """A trace sink keeping the latest trace: ``run`` emits it just before it returns or raises,
    with no checkpoint in between, so the caller reads its own run's trace right after."""

    __slots__ = ("last",)

    def __init__(self) -> None:
        self.last: Trace | None = None

    def __call__(self, trace: Trace) -> None:
        self.last = trace


async def drive(
    scenario: Scenario,
    policy: Policy,
    runtime: Runtime,
    sink: LastTrace,
    stats: PolicyStats,
    on_progress: ProgressFn | None = None,
    *,
    start_delay: float = 0.0,
    streamed: bool = False,
) -> None:
    """Send the scenario's workload through ``runtime`` under ``policy`` and record it in ``stats``.

    ``runtime`` must have ``sink`` among its sinks and be entered by the caller. Time zero of
    the workload (and of ``stats``' phases) is now + ``start_delay``. ``on_progress(n)`` gets
    the number of requests finished (warm-up included), every ``PROGRESS_EVERY`` and at the end.

    ``streamed``: each request goes through ``runtime.stream`` and its TTFT is when the caller
    got the first piece of text; otherwise through ``runtime.run``, and its TTFT is when the
    winning attempt's first token arrived (``AttemptRecord.ttft``, for backends that report
    one). Both are measured from the intended send time, like the latency.
    """
    workload = scenario.workload
    quality = scenario.quality
    verify = quality.verify if quality is not None and quality.verify else None
    timeout = workload.timeout
    max_in_flight = workload.max_in_flight
    run = runtime.run
    record = stats.record
    current_time = _clock()
    t0 = current_time() + start_delay
    in_flight = 0
    done = 0
    slot_freed: anyio.Event | None = None

    async def streamed_run(query: Query) -> tuple[Result, float]:
        first: float | None = None
        async with runtime.stream(query, policy) as s:
            async for _ in s:
                if first is None:
                    first = current_time()
        return s.result, first if first is not None else current_time()

    async def one(query: Query, at: float, measured: bool) -> None:
        nonlocal in_flight, done, slot_freed
        error: str | None = None
        good: bool | None = None
        trace: Trace | None = None
        ttft: float | None = None
        with anyio.CancelScope(deadline=at + timeout):
            try:
                if streamed:
                    result, first = await streamed_run(query)
                    ttft = first - at
                else:
                    called = current_time()
                    result = await run(query, policy)
                    ttft = _winner_ttft(result, called - at)
            except Exception as exc:
                trace = sink.last
                error = type(exc).__name__
            else:
                trace = sink.last
                if verify is not None:
                    good = (await check(verify, query, result.response)).accept
        if trace is None:  # cancelled by the timeout: the run emitted its trace as it unwound
            trace, error = sink.last, "timeout"
        if measured:
            received = received_cost(trace, runtime, query) if streamed or ttft is not None else None
            record(
                at - t0,
                current_time() - at,
                trace,
                error,
                good,
                query.metadata.get("step"),
                ttft if error is None else None,
                received,
            )
        in_flight -= 1
        done += 1
        if on_progress is not None and done % PROGRESS_EVERY == 0:
            on_progress(done)
        if slot_freed is not None:
            slot_freed.set()
            slot_freed = None

    async with anyio.create_task_group() as group:
        for request in requests(workload, scenario.seed):
            at = t0 + request.at
            if at > current_time():
                await anyio.sleep_until(at)
            while in_flight >= max_in_flight:
                if slot_freed is None:
                    slot_freed = anyio.Event()
                await slot_freed.wait()
            if request.measured:
                stats.sent(current_time() - at)
            in_flight += 1
            group.start_soon(one, request.query, at, request.measured)
    if on_progress is not None:
        on_progress(done)


def _clock() -> Callable[[], float]:
    """The running loop's clock (what ``anyio.current_time`` reads, without its per-call lookup)."""
    if sniffio.current_async_library() == "trio":
        import trio

        return trio.current_time
    return asyncio.get_running_loop().time


def received_cost(trace: Trace | None, runtime: Runtime, query: Query) -> float:
    """USD of a run with every cancelled attempt charged by the tokens it received: what the
    engine charged it when it sent text (``AttemptRecord.output_tokens``), else only its input
    (the engine charges an attempt cancelled before any text its reservation: ``max_tokens``)."""
    if trace is None:
        return 0.0
    total = 0.0
    for a in trace.attempts:
        if a.outcome == "skipped" or a.outcome is None:
            continue
        if a.outcome == "cancelled" and a.output_tokens == 0:
            state = runtime.state_for(a.backend)
            total += state.input_tokens(query) * state.input_price / 1e6
        else:
            total += a.cost
    return total


def _winner_ttft(result: Result, offset: float) -> float | None:
    """When the winner's first token arrived, ``offset`` + seconds from the run's start (``None``
    when the backend reports no TTFT)."""
    for a in result.trace.attempts:
        if a.outcome == "accepted" and a.ttft is not None and a.started is not None:
            return offset + a.started + a.ttft
    return None
