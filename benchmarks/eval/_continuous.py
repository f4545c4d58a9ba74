"""Continuous evaluation: re-run a small, cost-bounded sample of the eval on a schedule for the
models each class is pinned to, and flag drift (information; routing changes stay deliberate).

Providers rotate weights and reprice: a model that passed last month may not today. ``watch``
measures afresh (no cache) every ``every`` seconds of the loop clock, spending at most
``daily_budget`` USD per 24 h (each call's worst case reserved first; calls that do not fit are
skipped until the next day), and flags a pinned model whose pass rate on the sample falls below
its class's bar, or whose reported model id changes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import anyio
import msgspec

from specexec import Runtime

from ._cache import Cache
from ._file import EvalSpec
from ._run import Job, run_eval
from ._stats import at_least

__all__ = ["Check", "Drift", "EvalHealth", "watch"]

DAY = 86_400.0


class Drift(msgspec.Struct, frozen=True):
    """A pinned model's drift: ``kind`` is ``"below_bar"`` or ``"model_changed"``."""

    cls: str
    backend: str
    kind: str
    detail: str


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


def _sample(spec: EvalSpec, pinned: Mapping[str, str], round_: int, size: int | None) -> list[Job]:
    jobs = []
    for cls, backend in pinned.items():
        cases = spec.cases[cls]
        n = len(cases) if size is None else min(size, len(cases))
        start = (round_ * n) % len(cases)  # a rotating window: every case comes round in turn
        for i in range(n):
            case = cases[(start + i) % len(cases)]
            jobs.append(Job(case, backend, f"watch:{round_}:{cls}:{case.id}:{backend}"))
    return jobs


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
    cancelled); returns the checks made. Cancellation goes through at once; nothing outlives
    the call."""
    out: list[Check] = []
    first_model: dict[str, str | None] = {}
    day_start = anyio.current_time()
    spent_today = 0.0
    round_ = 0
    while checks is None or round_ < checks:
        now = anyio.current_time()
        if now - day_start >= DAY:
            day_start, spent_today = now, 0.0
        results = await run_eval(
            spec,
            runtime,
            _sample(spec, pinned, round_, sample),
            Cache(None),
            concurrency=concurrency,
            max_cost=max(0.0, daily_budget - spent_today),
        )
        cost = sum(r.cost for r in results)
        spent_today += cost
        rates: dict[str, float] = {}
        models: dict[str, str | None] = {}
        drift: list[Drift] = []
        for cls, backend in pinned.items():
            mine = [r for r in results if r.cls == cls and not r.skipped]
            if not mine:
                continue
            passed = sum(r.passed for r in mine)
            rates[cls] = passed / len(mine)
            bar = spec.file.classes[cls].min_pass_rate
            if not at_least(passed, len(mine), bar):
                drift.append(Drift(cls, backend, "below_bar", f"{passed}/{len(mine)} < {bar:g}"))
            model = next((r.model for r in mine if r.model), None)
            models[cls] = model
            before = first_model.setdefault(backend, model)
            if model is not None and before is not None and model != before:
                drift.append(Drift(cls, backend, "model_changed", f"{before} -> {model}"))
        check = Check(now, rates, models, drift, cost, sum(r.skipped for r in results))
        out.append(check)
        if on_check is not None:
            on_check(check)
        round_ += 1
        if checks is None or round_ < checks:
            await anyio.sleep_until(now + every)
    return out
