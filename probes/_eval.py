"""``EvalRunner``: the daemon's continuous evaluation (``[eval]``), on a schedule, within a daily budget.

Every ``interval`` seconds it runs one round of the eval file (``specexec.bench.eval.run_round``:
a rotating window of ``sample`` cases per task class, sent afresh through the engine to each
class's backends that the daemon probes) and keeps, per class and backend, the last run that
answered a case: pass rate, Wilson interval, cases, the bar, the model id reported. Runs start
at fixed times (``interval`` after the previous start; one that overruns is followed at once by
the next) and never overlap.

Budget: each call's worst case is reserved in the eval's own ``DailyBudget`` (UTC days, as the
probes') before it is sent and settled to its cost after; the first call that does not fit is
not sent, nor is any other until the next UTC midnight: the run in progress finishes what it
sent, the runs due later that day do nothing. That is logged once per day (WARNING), and the
first run of the next day logs that it resumed.

Drift (information: routing never changes by itself): a backend whose pass rate on a class is
below the class's bar, or whose reported model id differs from its pin (the daemon's
``pinned_model``), gets reasons in its probe state: ``/v1/health`` shows ``drift = true`` and
``drift_reasons``. They clear when a later run measures it at the bar with the pinned model.

Cancellation: ``run`` returns only by cancellation; every call it started has ended by then and
its runtime is closed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import msgspec

from specexec import Backend, PolicyError, Runtime
from specexec._errors import redact_id

from ._budget import DailyBudget, day_label, utc_day
from ._config import EvalSettings
from ._snapshot import EvalResultView, EvalView

if TYPE_CHECKING:
    from specexec.bench.eval import EvalSpec, PairResult

    from ._state import ProbeState

__all__ = ["EvalRunner"]

_log = logging.getLogger("specexec.probes")


class _Today:
    """The eval's ``DailyBudget`` as the ``CostBudget`` ``run_eval`` spends against (wall clock in)."""

    refusal = "not sent: the eval's daily budget is spent"

    def __init__(self, budget: DailyBudget, wall_clock: Callable[[], float]) -> None:
        self.budget = budget
        self.wall_clock = wall_clock

    def try_reserve(self, amount: float) -> bool:
        return self.budget.try_reserve(amount, self.wall_clock())

    def settle(self, reserved: float, cost: float) -> None:
        self.budget.settle(reserved, cost, self.wall_clock())


def _pairs(settings: EvalSettings, spec: EvalSpec, probed: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """Each class's backends to evaluate: its candidates (all, if none) probed here and allowed by ``backends``."""
    allowed = [b for b in probed if not settings.backends or b in settings.backends]
    pairs = {}
    for cls in spec.file.classes:
        candidates = spec.file.classes[cls].candidates or tuple(allowed)
        chosen = tuple(b for b in candidates if b in allowed)
        if chosen:
            pairs[cls] = chosen
    if not pairs:
        raise PolicyError(
            f"no task class of {settings.file} has a candidate among the backends evaluated here "
            f"({', '.join(allowed) or 'none'}): name them in the classes' candidates or in [eval] backends",
            path="$.eval",
        )
    used = {b for chosen in pairs.values() for b in chosen}
    for i, name in enumerate(settings.backends):
        if name not in used:
            raise PolicyError(
                f"backend {name!r} is no candidate of any task class of {settings.file}", path=f"$.eval.backends[{i}]"
            )
    return pairs


class EvalRunner:
    """The daemon's ``[eval]`` (see the module docs).

    Construction loads and checks the eval file and its datasets (``PolicyError``: a missing
    file at ``$.eval.file``; an error inside it names the eval file and its key path) and
    chooses the class × backend pairs; it sends nothing. ``states`` are the daemon's probe
    states by backend name (drift reasons go there); ``pinned`` each backend's pinned model id;
    ``secrets`` the daemon's keys now, removed from the model ids it keeps (``redact_id``: also
    anything key-like, and at most ``MAX_ID_CHARS``), as the HTTP backends do.
    """

    def __init__(
        self,
        settings: EvalSettings,
        backends: Sequence[Backend],
        *,
        pinned: Mapping[str, str | None],
        states: Mapping[str, ProbeState],
        wall_clock: Callable[[], float],
        secrets: Callable[[], Sequence[str]] = tuple,
    ) -> None:
        from specexec.bench.eval import load_eval  # the eval library: imported only when [eval] is configured

        self.settings = settings
        if not Path(settings.file).is_file():
            raise PolicyError(f"the eval file {settings.file!r} does not exist or is not a file", path="$.eval.file")
        self.spec = load_eval(settings.file)
        self.pairs = _pairs(settings, self.spec, [b.name for b in backends])
        used = {b for chosen in self.pairs.values() for b in chosen}
        probed = {b.name for b in backends}
        for cls in self.pairs:
            for judge in sorted(self.spec.judges(cls)):
                if judge not in probed:
                    raise PolicyError(
                        f"the llm_judge of class {cls!r} names backend {judge!r}, which this daemon does not"
                        f" probe (it has: {', '.join(sorted(probed))}): add it to [[backends]]",
                        path=f"$.classes.{cls}.scorer.backend",
                        source=settings.file,
                    )
                used.add(judge)
        self.runtime = Runtime([b for b in backends if b.name in used])
        self.pinned = dict(pinned)
        self.states = states
        self.wall_clock = wall_clock
        self.secrets = secrets
        self.budget = DailyBudget(settings.daily_budget)
        self.results: dict[str, dict[str, EvalResultView]] = {}
        self.runs = 0
        self.round = 0
        self.skipped = 0
        self.cost = 0.0
        self.failed_runs = 0
        """Runs that raised (logged with their traceback; the schedule goes on)."""
        self.running = False
        self.last_run_at: float | None = None
        self.revision = 0
        """Bumped whenever what ``view`` shows changes (the daemon's snapshot revision adds it)."""
        self._next_at: float | None = None  # loop time of the next run
        self._stopped_day: int | None = None  # the UTC day the budget stopped the eval (logged once)

    # -- running ---------------------------------------------------------------------------

    async def run(self) -> None:
        """Run a round now (or when the resumed schedule says), then every ``interval``, until cancelled."""
        interval = self.settings.interval
        async with self.runtime:
            wait = 0.0
            if self.last_run_at is not None:  # resumed: keep the schedule the last run set
                wait = min(interval, max(0.0, self.last_run_at + interval - self.wall_clock()))
            self._next_at = anyio.current_time() + wait
            while True:
                await anyio.sleep_until(self._next_at)
                started = anyio.current_time()
                await self.run_once()
                self._next_at = max(started + interval, anyio.current_time())
                self.revision += 1

    async def run_once(self) -> bool:
        """One round now; ``False`` when the day's budget is spent and nothing was sent."""
        from specexec.bench.eval import run_round

        wall = self.wall_clock()
        if self.budget.exhausted(wall):
            self._budget_stopped(wall)
            return False
        if self._stopped_day is not None and utc_day(wall) != self._stopped_day:
            self._stopped_day = None
            _log.info("eval budget: a new UTC day (%s) began; continuous evaluation resumes", day_label(utc_day(wall)))
        self.running = True
        self.runs += 1
        self.revision += 1
        started = wall
        spent_before = self.budget.total
        recorded = False
        try:
            summary = await run_round(
                self.spec,
                self.runtime,
                self.pairs,
                self.round,
                sample=self.settings.sample,
                concurrency=self.settings.jobs,
                budget=_Today(self.budget, self.wall_clock),
                timeout=self.settings.timeout,
            )
        except Exception:  # a bug (a scorer, a custom backend) must not stop the daemon; cancellation passes
            self.failed_runs += 1
            _log.exception(
                "eval: run %d of %s failed; the next one is due in %g s",
                self.runs,
                self.spec.name,
                self.settings.interval,
            )
            return True
        else:
            self.round += 1
            self._record(summary, started)
            recorded = True
            return True
        finally:
            self.running = False
            if not recorded:  # failed or cancelled: what its calls cost is spent all the same
                self.cost += max(self.budget.total - spent_before, 0.0)

    def _record(self, summary: Sequence[PairResult], wall: float) -> None:
        """Keep a run's results; ``wall``: when it started."""
        self.last_run_at = wall
        for r in summary:
            self.skipped += r.skipped
            self.cost += r.cost
            if r.cases == 0:
                continue  # nothing answered (budget, outage): the last measurement stands
            pinned = self.pinned.get(r.backend)
            model = self._clean(r.model)
            self.results.setdefault(r.cls, {})[r.backend] = EvalResultView(
                passed=r.passed,
                cases=r.cases,
                errors=r.errors,
                skipped=r.skipped,
                pass_rate=r.pass_rate,
                low=r.low,
                high=r.high,
                bar=r.bar,
                below_bar=r.below_bar,
                model=model,
                pinned_model=pinned,
                model_changed=pinned is not None and model is not None and model != pinned,
                last_run_at=wall,
                cost=r.cost,
            )
        _log.info(
            "eval: run %d of %s: %s",
            self.runs,
            self.spec.name,
            "; ".join(f"{r.cls}/{r.backend} {r.passed}/{r.cases}" for r in summary) or "nothing measured",
        )
        if any(r.skipped for r in summary):
            self._budget_stopped(self.wall_clock())
        self.revision += 1
        self.update_drift()

    def _clean(self, model: str | None) -> str | None:
        """A reported model id as it is published: secrets removed, at most ``MAX_ID_CHARS`` (``redact_id``)."""
        return redact_id(model, self.secrets()) if model else None

    def update_drift(self) -> None:
        """Give each evaluated backend's probe state its drift reasons from the latest results (logged on change)."""
        reasons: dict[str, list[str]] = {b: [] for chosen in self.pairs.values() for b in chosen}
        for cls, per_backend in self.results.items():
            for backend, r in per_backend.items():
                if r.below_bar:
                    reasons.setdefault(backend, []).append(
                        f"eval: {cls} passed {r.passed}/{r.cases}, below its bar {r.bar:g}"
                    )
                if r.model_changed:
                    reasons.setdefault(backend, []).append(
                        f"eval: {cls} answered by model {r.model!r}, pinned {r.pinned_model!r}"
                    )
        for backend, found in reasons.items():
            state = self.states.get(backend)
            if state is None:
                continue
            was = state.eval_drift
            if state.set_eval_drift(tuple(found)):
                if found:
                    _log.warning("eval: backend %s drifts: %s", backend, "; ".join(found))
                elif was:
                    _log.info("eval: backend %s is at its bars with its pinned model again", backend)

    def _budget_stopped(self, wall: float) -> None:
        day = utc_day(wall)
        if self._stopped_day == day:
            return
        self._stopped_day = day
        _log.warning(
            "eval budget: the daily budget of $%.6f is spent ($%.6f on %s); continuous evaluation stops until"
            " UTC midnight",
            self.settings.daily_budget,
            self.budget.spent,
            day_label(day),
        )

    # -- publishing and resuming -----------------------------------------------------------

    def view(self, now: float, wall: float) -> EvalView:
        """What ``/v1/health`` and the snapshot show, at loop time ``now`` / Unix time ``wall``."""
        next_run_at = None
        if self._next_at is not None and not self.running:
            next_run_at = wall + max(0.0, self._next_at - now)
        return EvalView(
            name=self.spec.name,
            file=self.settings.file,
            interval=self.settings.interval,
            sample=self.settings.sample,
            runs=self.runs,
            round=self.round,
            running=self.running,
            last_run_at=self.last_run_at,
            next_run_at=next_run_at,
            skipped=self.skipped,
            cost=self.cost,
            budget=self.budget.view(wall),
            results={cls: dict(per) for cls, per in self.results.items()},
        )

    def restore(self, saved: EvalView, wall: float, *, results: bool = True) -> None:
        """Resume from a snapshot's ``eval``: today's spending (a restart does not refill the budget)
        and, with ``results`` (the same eval file), the results of pairs still evaluated, the
        counters, the rotating window and the schedule."""
        self.budget.restore(saved.budget.day, saved.budget.spent, saved.budget.total, wall)
        self.revision += 1
        if not results:
            return
        self.results = {}
        for cls, per in saved.results.items():
            for backend, r in per.items():
                if backend not in self.pairs.get(cls, ()):
                    continue  # no longer evaluated here
                pinned = self.pinned.get(backend)  # the pin may have changed since
                model = self._clean(r.model)  # a snapshot another version wrote is not trusted either
                changed = pinned is not None and model is not None and model != pinned
                r = msgspec.structs.replace(r, model=model, pinned_model=pinned, model_changed=changed)
                self.results.setdefault(cls, {})[backend] = r
        self.runs, self.round = saved.runs, saved.round
        self.skipped, self.cost = saved.skipped, saved.cost
        self.last_run_at = saved.last_run_at
        self.update_drift()
