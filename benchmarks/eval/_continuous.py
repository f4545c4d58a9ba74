"""Continuous evaluation: re-run a small, cost-bounded sample of the eval on a schedule for the
models each class is pinned to, and flag drift (information; routing changes stay deliberate).

Providers rotate weights and reprice: a model that passed last month may not today. One run
(``run_round``) sends a rotating window of each class's cases (``sample_jobs``) to the pinned
backends afresh (no cache) and summarises each class × backend (``PairResult``: pass rate with
its Wilson interval against the class's bar). ``watch`` repeats that every ``every`` seconds of
the loop clock within ``daily_budget`` USD per 24 h; the probe daemon runs the same rounds
under its own schedule and UTC-day budget (``specexec.probes``, ``[eval]``).

A pass rate counts the cases answered: cases not sent (the budget) and calls that failed (an
outage, a timeout: the probes report those) are counted apart, as ``skipped`` and ``errors``.
A pinned model drifts when its pass rate falls below its class's bar (exactly: 8/10 is below
0.9, 9/10 is not) or the model id it reports changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import anyio
import msgspec

from specexec import Runtime

from ._cache import Cache
from ._file import EvalSpec
from ._run import CaseResult, Ceiling, CostBudget, Job, run_eval
from ._stats import at_least, wilson

__all__ = ["Check", "Drift", "EvalHealth", "PairResult", "run_round", "sample_jobs", "summarise", "watch"]

DAY = 86_400.0


class Drift(msgspec.Struct, frozen=True):
    """A pinned model's drift: ``kind`` is ``"below_bar"`` or ``"model_changed"``."""

    cls: str
    backend: str
    kind: str
    detail: str


class PairResult(msgspec.Struct, frozen=True, kw_only=True):
    """One class × backend in one run: ``passed`` of ``cases`` answered, the 95 % Wilson interval
    ``(low, high)``, the class's ``bar`` (``min_pass_rate``) and whether the rate is below it, the
    model id the backend reported, ``errors`` (failed calls) and ``skipped`` (not sent: budget)
    apart, and what the run's calls cost (USD, judging included)."""

    cls: str
    backend: str
    passed: int
    cases: int
    errors: int
    skipped: int
    bar: float
    pass_rate: float | None
    low: float
    high: float
    below_bar: bool
    model: str | None
    cost: float


class Check(msgspec.Struct, frozen=True):
    """One scheduled check: when (loop clock), each class's pinned model's pass rate on the
    sample, the drift found, what it cost and how many calls the day's budget skipped."""

    at: float
    pass_rates: dict[str, float]
    models: dict[str, str | None]
    drift: list[Drift]
    cost: float
    skipped: int


class EvalHealth:
    """The latest ``Check`` for services to read: per-class pass rates and the drift flag."""

    def __init__(self) -> None:
        self.last: Check | None = None

    def update(self, check: Check) -> None:
        """Keep ``check`` as the latest."""
        self.last = check

    @property
    def drifting(self) -> bool:
        """Whether the latest check found drift."""
        return bool(self.last and self.last.drift)

    def pass_rates(self) -> dict[str, float]:
        """Per class, the pinned model's latest pass rate."""
        return dict(self.last.pass_rates) if self.last else {}


def sample_jobs(spec: EvalSpec, pairs: Mapping[str, Sequence[str]], round_: int, size: int | None) -> list[Job]:
    """Run ``round_``'s jobs: for each class, a window of ``size`` cases (every case: ``None``)
    that rotates through the dataset from run to run, on each of the class's backends."""
    jobs = []
    for cls, backends in pairs.items():
        cases = spec.cases[cls]
        n = len(cases) if size is None else min(size, len(cases))
        start = (round_ * n) % len(cases)  # a rotating window: every case comes round in turn
        for backend in backends:
            for i in range(n):
                case = cases[(start + i) % len(cases)]
                jobs.append(Job(case, backend, f"watch:{round_}:{cls}:{case.id}:{backend}"))
    return jobs


def summarise(spec: EvalSpec, pairs: Mapping[str, Sequence[str]], results: Sequence[CaseResult]) -> list[PairResult]:
    """Each class × backend of ``pairs`` over ``results`` (see ``PairResult``)."""
    out = []
    for cls, backends in pairs.items():
        bar = spec.file.classes[cls].min_pass_rate
        for backend in backends:
            mine = [r for r in results if r.cls == cls and r.backend == backend]
            scored = [r for r in mine if not r.skipped and not r.error]
            passed, n = sum(r.passed for r in scored), len(scored)
            low, high = wilson(passed, n)
            out.append(
                PairResult(
                    cls=cls,
                    backend=backend,
                    passed=passed,
                    cases=n,
                    errors=sum(r.error for r in mine),
                    skipped=sum(r.skipped for r in mine),
                    bar=bar,
                    pass_rate=passed / n if n else None,
                    low=low,
                    high=high,
                    below_bar=n > 0 and not at_least(passed, n, bar),
                    model=next((r.model for r in scored if r.model), None),
                    cost=sum(r.cost for r in mine),
                )
            )
    return out


async def run_round(
    spec: EvalSpec,
    runtime: Runtime,
    pairs: Mapping[str, Sequence[str]],
    round_: int,
    *,
    sample: int | None = None,
    concurrency: int = 4,
    budget: CostBudget | None = None,
    timeout: float | None = None,
) -> list[PairResult]:
    """One run: ``sample_jobs`` sent afresh through ``runtime`` within ``budget``, summarised.

    Returns when every call it started has finished; cancellation goes through at once.
    """
    jobs = sample_jobs(spec, pairs, round_, sample)
    results = await run_eval(spec, runtime, jobs, Cache(None), concurrency=concurrency, budget=budget, timeout=timeout)
    return summarise(spec, pairs, results)


async def watch(
    spec: EvalSpec,
    runtime: Runtime,
    pinned: Mapping[str, str],
    *,
    every: float,
    daily_budget: float,
    sample: int | None = None,
    concurrency: int = 4,
    checks: int | None = None,
    on_check: Callable[[Check], None] | None = None,
) -> list[Check]:
    """Check each class's ``pinned`` model every ``every`` seconds (``checks`` times, or until
    cancelled); returns the checks made. The budget is ``daily_budget`` per 24 h of the loop
    clock from the first check. Cancellation goes through at once; nothing outlives the call."""
    out: list[Check] = []
    pairs = {cls: (backend,) for cls, backend in pinned.items()}
    first_model: dict[str, str | None] = {}
    day_start = anyio.current_time()
    today = Ceiling(daily_budget)
    round_ = 0
    while checks is None or round_ < checks:
        now = anyio.current_time()
        if now - day_start >= DAY:
            day_start, today = now, Ceiling(daily_budget)
        summary = await run_round(spec, runtime, pairs, round_, sample=sample, concurrency=concurrency, budget=today)
        rates: dict[str, float] = {}
        models: dict[str, str | None] = {}
        drift: list[Drift] = []
        for r in summary:
            if r.pass_rate is None:
                continue
            rates[r.cls] = r.pass_rate
            if r.below_bar:
                drift.append(Drift(r.cls, r.backend, "below_bar", f"{r.passed}/{r.cases} < {r.bar:g}"))
            models[r.cls] = r.model
            before = first_model.setdefault(r.backend, r.model)
            if r.model is not None and before is not None and r.model != before:
                drift.append(Drift(r.cls, r.backend, "model_changed", f"{before} -> {r.model}"))
        check = Check(now, rates, models, drift, sum(r.cost for r in summary), sum(r.skipped for r in summary))
        out.append(check)
        if on_check is not None:
            on_check(check)
        round_ += 1
        if checks is None or round_ < checks:
            await anyio.sleep_until(now + every)
    return out
