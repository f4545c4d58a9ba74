"""Running every candidate on every case through the engine (``Policy.single`` per candidate),
with bounded concurrency, the backends' own limits (the runtime enforces them), a total cost
ceiling, and the cache; then scoring each answer."""

from __future__ import annotations

import contextlib
import hashlib
import math
from collections.abc import Callable, Sequence
from typing import Protocol

import anyio
import msgspec

from specexec import Policy, Runtime, SpecExecError, worst_case_cost
from specexec.config import BackendConfig

from ._cache import Answer, Cache, cache_key
from ._file import Case, EvalSpec
from ._score import judge_for, score

__all__ = ["CaseResult", "Ceiling", "CostBudget", "Job", "fingerprints", "plan", "run_eval"]


class CostBudget(Protocol):
    """What ``run_eval`` spends against: reserve a call's worst case first, settle it after.

    ``refusal`` is the reason a case not sent carries."""

    refusal: str

    def try_reserve(self, amount: float) -> bool:
        """Reserve ``amount`` USD if it fits (``False``: nothing reserved, the call is not sent)."""
        ...

    def settle(self, reserved: float, cost: float) -> None:
        """A call that reserved ``reserved`` cost ``cost`` (a judge's cost is settled with nothing reserved)."""
        ...


class Ceiling:
    """A total cost ceiling (``--max-cost``): a ``CostBudget`` that never refills."""

    refusal = "not sent: --max-cost reached"

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.committed = 0.0  # reserved and spent

    def try_reserve(self, amount: float) -> bool:
        """Reserve ``amount`` if the total stays within the limit."""
        if self.committed + amount > self.limit:
            return False
        self.committed += amount
        return True

    def settle(self, reserved: float, cost: float) -> None:
        """Replace a reservation by what was spent."""
        self.committed += cost - reserved


class CaseResult(msgspec.Struct, frozen=True):
    """One case × model: the answer, its verdict and what it cost (judging included)."""

    cls: str
    case: str
    backend: str
    passed: bool
    latency: float
    cost: float
    reason: str = ""
    cached: bool = False
    skipped: bool = False
    model: str | None = None
    error: bool = False
    """The call failed (an outage, a timeout): no answer was scored (``passed`` is False)."""
    judge_cost: float = 0.0
    """What this run's judge call cost (in ``cost`` too; spent again for a cached answer)."""


class Job(msgspec.Struct, frozen=True):
    """A case × model to evaluate, with its cache key."""

    case: Case
    backend: str
    key: str


def fingerprints(spec: EvalSpec, configs: Sequence[BackendConfig]) -> dict[str, str]:
    """Per backend, a hash of its configuration (and its ``--sim`` quality): a changed backend is resent."""
    out = {}
    for c in configs:
        raw = msgspec.json.encode([msgspec.to_builtins(c), spec.file.quality.get(c.name, {}), spec.file.eval.seed])
        out[c.name] = hashlib.sha256(raw).hexdigest()[:16]
    return out


def plan(spec: EvalSpec, prints: dict[str, str]) -> list[Job]:
    """Every case × candidate, class by class."""
    return [
        Job(case, b, cache_key(cls, case.id, b, prints.get(b, ""), case.prompt_hash))
        for cls, cases in spec.cases.items()
        for b in spec.candidates(cls)
        for case in cases
    ]


async def run_eval(
    spec: EvalSpec,
    runtime: Runtime,
    jobs: Sequence[Job],
    cache: Cache,
    *,
    concurrency: int,
    max_cost: float | None = None,
    budget: CostBudget | None = None,
    timeout: float | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> list[CaseResult]:
    """Evaluate ``jobs`` (cached answers are rescored, not resent); results in ``jobs`` order.

    At most ``concurrency`` calls are in flight. With ``max_cost`` (a total ``Ceiling``) or a
    ``budget``, a call is sent only if its worst case fits (reserved first, settled to the real
    cost after; a call cancelled mid-flight stays charged its worst case); those that do not
    fit are ``skipped`` (and count as failures). A judge's calls are settled when made.
    ``timeout``: seconds per call (a call cut is an ``error``). Returns when every call it
    started has finished; cancellation goes through at once.
    """
    if max_cost is not None and budget is not None:
        raise ValueError("give max_cost or budget, not both")
    spend: CostBudget | None = Ceiling(max_cost) if max_cost is not None else budget
    results: list[CaseResult | None] = [None] * len(jobs)
    slots: dict[str, anyio.CapacityLimiter] = {}
    for name, b in runtime.backends.items():  # wait for a max_concurrency slot here (the engine skips)
        limits = getattr(b, "limits", None)
        if limits is not None and limits.max_concurrency is not None:
            slots[name] = anyio.CapacityLimiter(limits.max_concurrency)
    done = [0]
    backends = runtime.backends

    def bump() -> None:
        done[0] += 1
        if on_progress is not None:
            on_progress(done[0])

    async def one(i: int, job: Job) -> None:
        cached = cache.get(job.key)
        judge = judge_for(job.case)
        held = 0.0  # reserved for the judge's call: with the candidate's, so no answer is paid for nothing
        try:
            answer = cached
            if answer is None:
                reserve = worst_case_cost(backends[job.backend], job.case.query) if spend is not None else 0.0
                if judge is not None and spend is not None:
                    held = worst_case_cost(backends[judge.backend], judge.worst_query(job.case.query))
                if spend is not None and not spend.try_reserve(reserve + held):
                    held = 0.0
                    results[i] = CaseResult(
                        job.case.cls, job.case.id, job.backend, False, 0.0, 0.0, spend.refusal, skipped=True
                    )
                    bump()
                    return
                answer = await call(job, reserve)
                if answer.error is None:  # a failed call (503, timeout…) is sent again next run
                    cache.put(answer)
            judge_cost = 0.0
            if answer.error is not None:
                verdict_passed, reason = False, answer.error
            else:
                from specexec import Response

                if judge is not None and spend is not None:  # the judge's call at the answer's own length
                    need = worst_case_cost(backends[judge.backend], judge.judge_query(job.case.query, answer.text))
                    if need > held and not spend.try_reserve(need - held):
                        results[i] = CaseResult(
                            job.case.cls, job.case.id, job.backend, False, answer.latency,
                            0.0 if cached is not None else answer.cost, f"{spend.refusal} (the judge's call)",
                            cached=cached is not None, skipped=True, model=answer.model,
                        )  # fmt: skip
                        bump()
                        return
                    held = max(need, held)
                charged = held  # what a judge call cancelled mid-flight is charged
                try:
                    s = await score(job.case, Response(answer.text, model=answer.model), runtime)
                    verdict_passed, reason, judge_cost = s.passed, s.reason, s.cost
                    charged = judge_cost
                finally:
                    if judge is not None and spend is not None:
                        spend.settle(held, charged)
                        held = 0.0
            results[i] = CaseResult(
                job.case.cls,
                job.case.id,
                job.backend,
                verdict_passed,
                answer.latency,
                answer.cost + judge_cost,
                reason,
                cached=cached is not None,
                model=answer.model,
                error=answer.error is not None,
                judge_cost=judge_cost,
            )
            bump()
        finally:
            if held and spend is not None:
                spend.settle(held, 0.0)  # reserved for a judge call that was never made

    async def call(job: Job, reserve: float) -> Answer:
        """The candidate's answer to ``job`` (an ``Answer`` with ``error`` when it failed); its
        reservation settled to what it cost (a call cancelled mid-flight: its worst case)."""
        charged = reserve
        try:
            try:
                async with slots.get(job.backend) or contextlib.nullcontext():
                    policy = Policy.single(job.backend, limit_wait=math.inf, attempt_timeout=timeout)
                    result = await runtime.run(job.case.query, policy)
                latency = next(
                    (a.latency for a in result.trace.attempts if a.outcome == "accepted" and a.latency is not None),
                    result.latency,
                )  # the model's own time, not the wait for an rpm slot
                answer = Answer(job.key, result.response.text, latency, result.cost, result.response.model)
            except SpecExecError as exc:
                trace = getattr(exc, "trace", None)
                cost = sum(a.cost for a in trace.attempts) if trace is not None else 0.0
                latency = max((a.latency or 0.0 for a in trace.attempts), default=0.0) if trace else 0.0
                answer = Answer(job.key, "", latency, cost, None, f"{type(exc).__name__}: {exc}")
            charged = answer.cost
            return answer
        finally:
            if spend is not None:
                spend.settle(reserve, charged)

    queue = iter(enumerate(jobs))

    async def worker() -> None:  # workers take the jobs in order: --sim does not depend on task order
        for i, job in queue:
            await one(i, job)

    async with anyio.create_task_group() as tg:
        for _ in range(min(concurrency, len(jobs))):
            tg.start_soon(worker)
    return [r for r in results if r is not None]
