"""The drivers of the one engine (``_core``): they do the I/O, the core decides.

The core says what to launch and when, what a failure, a verdict or a first token triggers,
what to cancel and what to charge; this driver calls the backends (within ``attempt_timeout``),
runs the verifiers and scorers, sleeps until the core's next timer, cancels what the core says
to cancel, and reports every outcome back. Each attempt runs in its own task; a run with one
possible attempt takes a path without a task group.

Cancellation: when ``execute`` returns or raises, every attempt it started has finished or
been cancelled; the caller's cancellation propagates through it unchanged.

``_Run`` here is the anyio driver (any loop; the reference). Its I/O primitives — a task group,
a wake-up with a timer, a sleep, "cancel all", a per-stream cancel scope, a call within a
timeout — are a handful of small methods; the native drivers override just those on a raw trio
nursery (``_engine_trio``) and on asyncio's own tasks and timers (``_engine_asyncio``), which cost less per
call than anyio's layer. ``execute`` picks by the running loop (``DRIVER``).
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any, Literal

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from ._clock import loop_clock, running_library
from ._core import CANCEL_ALL, DONE, SCORE, Attempt, Core, Launch, Poll, Result, Wait
from ._core import _random as _random  # re-exported: tests seed the engine's draws here
from ._deadline import ATTEMPT_DEADLINE
from ._errors import PolicyError, Timeout
from ._query import Query, Response, StreamChunk, ToolCall, Usage
from .verifiers import check

if TYPE_CHECKING:
    from ._policy import Policy
    from ._runtime import BackendState, Runtime

__all__ = ["Result", "execute", "unwrapped"]


class _Run:
    """One call of ``run``: the core's decisions carried out on anyio."""

    __slots__ = ("core", "now", "policy", "query", "scoring", "sink", "tg", "wake")

    def __init__(
        self,
        runtime: Runtime,
        query: Query,
        policy: Policy,
        states: Sequence[BackendState],
        sink: MemoryObjectSendStream[str] | None = None,
    ) -> None:
        self.sink = sink  # a stream: the committed attempt's text goes here
        self.wake: Any = None  # what `_wait` waits on (the driver's event; on trio the parked host task)
        self.tg: TaskGroup | None = None
        self.scoring = False  # `_score_all` began within the deadline
        self.query = query
        self.policy = policy
        self.now = self._begin()
        self.core = Core(runtime, query, policy, states, self.now(), time.time(), streaming=sink is not None)

    # -- the loop ----------------------------------------------------------------------------

    async def execute(self) -> Result:
        """Run to a result or an error; every attempt has ended when this returns or raises."""
        core = self.core
        try:
            try:
                if self.policy.deadline is None:  # no scope to enter: ~10-25 µs saved per run
                    await self._run_attempts()
                    if core.needs_scores:
                        await self._score_all()
                else:  # the deadline covers the scoring too, once the attempts have ended before it
                    core.deadline_passed = await self._run_within(core.t0 + self.policy.deadline)
                    if core.deadline_passed and core.needs_scores and not self.scoring:
                        await self._score_all()  # the deadline ended the gathering: score what arrived
                return core.result(self.now())
            except BaseExceptionGroup as group:
                error = unwrapped(group)
            raise error  # outside the handler: the group is not left as its context (a cycle)
        except BaseException:
            trace = core.trace
            trace.outcome = "cancelled" if trace.outcome == "running" else trace.outcome
            raise
        finally:
            core.trace.cost = core.committed
            core.rt.emit(core.trace)

    # -- the driver's primitives (the native drivers override these) ---------------------------

    def _begin(self) -> Callable[[], float]:
        """The driver's per-run state set (a native driver's own slots); the running loop's clock."""
        return loop_clock()

    async def _run_within(self, deadline: float) -> bool:
        """``_run_and_score`` cancelled at ``deadline``; True if the deadline cut it short."""
        with anyio.CancelScope(deadline=deadline) as scope:
            await self._run_and_score()
        return scope.cancelled_caught

    async def _run_and_score(self) -> None:
        """The attempts, then (``pick`` with a ``score_all`` scorer) the scoring of their answers."""
        await self._run_attempts()
        if self.core.needs_scores:
            self.scoring = True
            await self._score_all()

    async def _group(self) -> None:
        """``_schedule`` in a task group that the attempts are started in."""
        async with anyio.create_task_group() as tg:
            self.tg = tg
            await self._schedule()

    def _spawn(self, attempt: Attempt) -> None:
        """Start ``attempt`` in the group."""
        assert self.tg is not None
        self.tg.start_soon(self._attempt, attempt)

    async def _wait(self, until: float) -> None:
        """Until an attempt ends (``_ended``) or the loop clock reaches ``until`` (``inf``: no timer)."""
        self.wake = wake = anyio.Event()
        if until == math.inf:
            await wake.wait()
        else:
            with anyio.CancelScope(deadline=until):
                await wake.wait()

    async def _sleep_until(self, until: float) -> None:
        """Sleep until the loop clock reaches ``until``."""
        await anyio.sleep_until(until)

    def _cancel_all(self) -> None:
        """Cancel every attempt in flight and stop the schedule (the core has decided)."""
        if self.tg is not None:
            self.tg.cancel_scope.cancel()

    def _wake(self) -> None:
        """Wake ``_wait`` (an attempt ended)."""
        if self.wake is not None:
            self.wake.set()

    def _scope(self) -> Any:
        """A cancel scope for one stream attempt (``attempt.handle``: another's commit cancels it)."""
        return anyio.CancelScope()

    async def _complete_within(self, state: BackendState, query: Query, timeout: float) -> Response | None:
        """``state.backend.complete(query)``, or ``None`` when it took longer than ``timeout``."""
        with anyio.move_on_after(timeout):
            return await state.backend.complete(query)
        return None

    async def _next_within(
        self, chunks: AsyncIterator[StreamChunk], limit: float
    ) -> StreamChunk | Literal[False] | None:
        """The next chunk (``None`` at the end), or ``False`` when none came within ``limit`` seconds."""
        with anyio.move_on_after(limit):
            return await anext(chunks, None)
        return False

    async def _run_attempts(self) -> None:
        core = self.core
        if core.single:
            while True:
                launched = core.launch_single(self.now())
                if not isinstance(launched, Poll):
                    break
                await self._sleep_until(launched.until)
            if launched is not None:
                await self._attempt(launched)
            return
        try:
            await self._group()
        finally:
            # A task cancelled before its first step (asyncio) never runs its own `finally`:
            # give back what its launch took, so no slot outlives the run.
            for attempt in list(core.in_flight):
                self._ended(attempt)

    async def _schedule(self) -> None:
        """Carry out the core's schedule: launch, wait for an end or a timer, poll, until done."""
        core, now = self.core, self.now
        while True:
            action = core.next_action(now())
            if isinstance(action, Launch):
                self._spawn(action.attempt)
            elif isinstance(action, Wait):
                await self._wait(action.until)
            elif isinstance(action, Poll):
                await self._sleep_until(action.until)
            else:
                assert action is DONE
                return

    def _act(self, action: object) -> None:
        if action is CANCEL_ALL:
            self._cancel_all()

    def _ended(self, attempt: Attempt) -> None:
        """Last words of every attempt (runs during cancellation too: no awaits here)."""
        self.core.ended(attempt, self.now())
        self._wake()

    # -- one attempt -------------------------------------------------------------------------

    async def _attempt(self, attempt: Attempt) -> None:
        """Call the backend, verify (and score), and report; always ends in one outcome."""
        if self.sink is not None:
            await self._stream_attempt(attempt)
            return
        core = self.core
        try:
            try:
                if self.policy.attempt_timeout is None:  # a coroutine frame less per attempt
                    response = await attempt.state.backend.complete(self.query)
                else:
                    response = await self._call(attempt.state, self.query)
            except Exception as exc:
                self._act(core.failed(attempt, exc, self.now()))
                return
            ended = self.now()
            core.answered(attempt, response, ended)
            if self.policy.verify:
                verdict = await check(self.policy.verify, self.query, response)
                action = core.verdict(attempt, verdict, self.now())
            else:
                action = core.verdict(attempt, None, ended)
            if action is SCORE:
                assert core.scorer is not None
                try:
                    score: float | BaseException = await core.scorer.score_one(
                        self.query, core.candidate(attempt), _ScoreContext(self)
                    )
                except Exception as exc:
                    score = exc
                action = core.scored(attempt, score)
            self._act(action)
        finally:
            self._ended(attempt)

    async def _call(self, state: BackendState, query: Query) -> Response:
        """One call of a backend within the policy's ``attempt_timeout``."""
        timeout = self.policy.attempt_timeout
        if timeout is None:
            return await state.backend.complete(query)
        token = ATTEMPT_DEADLINE.set(self.now() + timeout)  # the backend's own waits end before it
        try:
            response = await self._complete_within(state, query, timeout)
        finally:
            ATTEMPT_DEADLINE.reset(token)
        if response is None:
            raise Timeout(f"no answer within attempt_timeout={timeout:g}s", backend=state.name)
        return response

    async def _score_all(self) -> None:
        """``pick`` with a scorer that compares every accepted response."""
        core = self.core
        assert core.scorer is not None
        try:
            scores: list[float] | BaseException = await core.scorer.score_all(
                self.query, core.candidates(), _ScoreContext(self)
            )
        except Exception as exc:
            scores = exc
        core.set_scores(scores, self.now())

    # -- streams: the attempt body of a stream (the race loop is the same) ----------------------

    async def _stream_attempt(self, attempt: Attempt) -> None:
        """Read one attempt's stream; commit it (first token / verified prefix / whole answer)
        and forward its text to the caller, or fail, reject or be cancelled before that."""
        core, record, policy = self.core, attempt.record, self.policy
        try:
            if core.winner is not None:  # launched just before another stream committed
                return
            with self._scope() as attempt.handle:
                try:
                    done = await self._read_stream(attempt)
                except Exception as exc:
                    self._act(core.stream_failed(attempt, exc, self.now()))
                    return
                if not done:
                    return
                response = attempt.response
                assert response is not None
                ended = self.now()
                record.ended = ended - core.t0
                first_token = policy.commit == "first_token"
                if attempt is not core.winner:  # the whole answer decides (shorter than the prefix, or "complete")
                    verifiers = policy.verify_prefix if first_token else policy.verify
                    if not await self._stream_verdict(attempt, verifiers, response):
                        return
                    if not self._commit(attempt, "its whole answer passed" if verifiers else "it answered"):
                        return
                    await self._forward(attempt)
                if first_token and policy.verify:  # what committed it was the prefix: verify still judges the whole
                    verdict = await check(policy.verify, self.query, response)
                    core.event(
                        "verified after commit",
                        f"{record.backend}: {'ok' if verdict.accept else verdict.reason}",
                        self.now(),
                    )
                core.stream_succeeded(attempt, ended)
        finally:
            self._ended(attempt)

    async def _read_stream(self, attempt: Attempt) -> bool:
        """Read chunks to the end (True, ``attempt.response`` set), or stop early (False: rejected
        by the prefix verifiers, or another stream committed first)."""
        core, policy, parts = self.core, self.policy, attempt.parts
        usage: Usage | None = None
        model: str | None = None
        finish: str | None = None
        tool_calls: tuple[ToolCall, ...] = ()
        request_id: str | None = None
        first_token_commit = policy.commit == "first_token"
        size = 0
        async with _open_stream(attempt.state.backend, self.query, self, attempt) as chunks:
            while (chunk := await self._next_chunk(attempt, chunks)) is not None:
                usage = chunk.usage or usage
                model = chunk.model or model
                finish = chunk.finish_reason or finish
                tool_calls = chunk.tool_calls or tool_calls
                request_id = chunk.request_id or request_id
                if not chunk.text:
                    continue
                attempt.text_at = self.now()
                if not parts:
                    core.first_token(attempt, attempt.text_at)
                parts.append(chunk.text)
                size += len(chunk.text)
                if attempt is core.winner:
                    await self._send(chunk.text)
                elif first_token_commit and size >= policy.prefix_chars:
                    prefix = Response("".join(parts), model=model, ttft=attempt.record.ttft)
                    if not await self._stream_verdict(attempt, policy.verify_prefix, prefix):
                        return False
                    why = "its prefix passed verify_prefix" if policy.verify_prefix else "first token"
                    if not self._commit(attempt, why):
                        return False
                    await self._forward(attempt)
        core.stream_done(attempt, usage, model, finish, tool_calls, request_id, self.now())
        return True

    async def _next_chunk(self, attempt: Attempt, chunks: AsyncIterator[StreamChunk]) -> StreamChunk | None:
        """The next chunk, ``None`` at the end; ``Timeout`` when the first token (``attempt_timeout``)
        or the next one once begun (``stall_timeout``) is late."""
        policy = self.policy
        if attempt.parts:  # counted from the last text: chunks without any do not restart it
            stall = policy.stall_timeout
            limit = None if stall is None else attempt.text_at + stall - self.now()
            what = f"stream stalled: no new text for {policy.stall_timeout}s"
        elif policy.attempt_timeout is not None:
            limit = attempt.started + policy.attempt_timeout - self.now()
            what = f"no first token within attempt_timeout={policy.attempt_timeout:g}s"
        else:
            limit, what = None, ""
        if limit is None:
            return await anext(chunks, None)
        token = ATTEMPT_DEADLINE.set(self.now() + limit)
        try:
            chunk = await self._next_within(chunks, limit)
        finally:
            ATTEMPT_DEADLINE.reset(token)
        if chunk is False:
            raise Timeout(what, backend=attempt.state.name)
        return chunk

    async def _stream_verdict(self, attempt: Attempt, verifiers: Sequence[Any], response: Response) -> bool:
        """Apply ``verifiers`` to (a prefix of) a streamed answer; a rejection launches the next."""
        if not verifiers:
            return True
        verdict = await check(verifiers, self.query, response)
        if verdict.accept:
            return True
        self.core.stream_rejected(attempt, verdict, self.now())
        return False

    def _commit(self, attempt: Attempt, why: str) -> bool:
        """Make ``attempt`` the stream the caller reads; cancel every other attempt. False if another
        stream committed first (this one is then cancelled)."""
        others = self.core.commit(attempt, why, self.now())
        if others is None:
            if attempt.handle is not None:
                attempt.handle.cancel()
            return False
        for other in others:
            if other.handle is not None:
                other.handle.cancel()
        return True

    async def _forward(self, attempt: Attempt) -> None:
        """Send what the committed attempt received before its commit."""
        for part in attempt.parts:
            await self._send(part)

    async def _send(self, text: str) -> None:
        """Hand ``text`` to the caller (a zero-buffer stream: this returns when the caller took it)."""
        assert self.sink is not None
        await self.sink.send(text)
        core = self.core
        if core.first_delta is None:
            core.first_delta = self.now() - core.t0


@asynccontextmanager
async def _open_stream(
    backend: Any, query: Query, run: _Run, attempt: Attempt
) -> AsyncIterator[AsyncIterator[StreamChunk]]:
    """The backend's ``stream(query)`` (closed on exit), or its ``complete`` as one chunk.

    An error from the stream's ``aclose`` is a trace event (``stream close failed``), never the
    attempt's outcome: it must not replace the cancellation of a loser (the caller's or the
    run's), the failure being raised, or the end of a stream read to its end."""
    stream = getattr(backend, "stream", None)
    if stream is None:
        yield _whole(backend, query)
        return
    chunks = stream(query)
    try:
        yield chunks
    finally:
        close = getattr(chunks, "aclose", None)
        if close is not None:
            try:
                await close()
            except Exception as exc:
                detail = f"{attempt.state.name}: {type(exc).__name__}: {exc}"
                run.core.event("stream close failed", detail, run.now())


async def _whole(backend: Any, query: Query) -> AsyncIterator[StreamChunk]:
    response: Response = await backend.complete(query)
    yield StreamChunk(response.text, response.usage, response.model, response.finish_reason)


class _ScoreContext:
    """Lets a scorer call a backend: through the same admission as attempts (breaker, limits,
    health, ``attempt_timeout``), its cost reserved against the run's ceiling and traced — but
    not a race attempt (it never wins and is never hedged)."""

    def __init__(self, run: _Run) -> None:
        self.run = run

    async def complete(self, backend: Any, query: Query) -> Response:
        """Call ``backend`` (name or object) with ``query`` within ``max_cost`` and the backend's limits."""
        run = self.run
        core = run.core
        state = core.rt.state_for(backend)
        admitted = core.judge_admit(state, query, run.now())
        if isinstance(admitted, BaseException):
            raise admitted
        attempt = admitted
        try:
            response = await run._call(state, query)
        except Exception as exc:
            core.judge_failed(attempt, exc, run.now())
            raise
        except BaseException:
            core.judge_cancelled(attempt, run.now())
            raise
        finally:
            state.health.release()
        core.judge_done(attempt, response, run.now())
        return response


def execute(
    runtime: Runtime,
    query: Query,
    policy: Policy,
    states: Sequence[BackendState],
    sink: MemoryObjectSendStream[str] | None = None,
) -> Coroutine[Any, Any, Result]:
    """Run ``policy`` for ``query`` over the resolved backend ``states`` (await it); with a
    ``sink``, as a stream whose committed attempt's text is sent there (``PolicyError`` for a
    ``pick`` policy: see ``check_streamable``).

    A plain function returning the driver's coroutine, not a coroutine of its own: one frame
    less on every run's stack, which each resume of the run's task passes through. Call it
    inside the running loop (the driver is picked by the loop that runs now)."""
    if sink is not None:
        check_streamable(policy)
    return _driver()(runtime, query, policy, states, sink).execute()


def unwrapped(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """What a run raises for the task group's ``group``, alike on every driver: the one
    exception an attempt raised (a backend's ``BaseException``, not a failure the core can
    report) as itself, the group (without its cancellations) when several did, and a
    cancellation alone (the caller's, the deadline's) as one cancellation."""
    _, crashes = group.split(anyio.get_cancelled_exc_class())
    if crashes is None:
        return _leaves(group)[0]
    leaves = _leaves(crashes)
    return leaves[0] if len(leaves) == 1 else crashes


def _leaves(error: BaseException) -> list[BaseException]:
    """The exceptions in ``error`` that are not themselves groups, in order."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]


DRIVER = os.environ.get("SPECEXEC_DRIVER", "native")
"""``"native"`` (default): a raw trio nursery on trio, asyncio's own tasks and timers on asyncio/uvloop,
the anyio driver on any other loop; ``"anyio"``: the anyio driver everywhere (the reference)."""

_native: dict[str, type[_Run]] = {}


def _driver() -> type[_Run]:
    """The driver class for the running loop (see ``DRIVER``)."""
    if DRIVER == "anyio":
        return _Run
    library = running_library()
    known = _native.get(library)
    if known is not None:
        return known
    driver: type[_Run] = _Run
    if library == "trio":
        from ._engine_trio import TrioRun

        driver = TrioRun
    elif library == "asyncio":
        from ._engine_asyncio import AsyncioRun

        driver = AsyncioRun
    _native[library] = driver
    return driver


def check_streamable(policy: Policy) -> None:
    """``PolicyError`` unless ``policy`` can stream: a stream commits to one attempt as it
    answers, while a scorer (``pick``) compares whole answers, so it would never be asked."""
    if policy.scorer is not None:
        raise PolicyError(
            f"policy {policy.name or '(unnamed)'!r} is mode {policy.mode!r} with a scorer, which compares whole "
            "answers; a stream commits to the first attempt that answers, so the scorer would be ignored: "
            "call run() for pick, or stream a hedge/race/failover/cascade policy",
            path="$.scorer",
        )
