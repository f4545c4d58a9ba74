"""``tail_at_scale --seeds N``: the adaptive policies on N seeds against the fixed-delay limit.

For each seed and adaptive policy, the steady run's p99, p99.9 and extra load next to the
exact figures of hedging at the *fixed* delay whose extra load equals the policy's (closed
form, ``limit_at_load``): the best a delay that never moves can do for the same load. The
targets (issue 14 §2), on every seed: p99 within 5 % and p99.9 within 10 % of that limit,
extra load ≤ 6 %. With the brownout (unless ``--no-brownout``): p99 ≤ 0.35× single's from
10 s after the brownout starts to its end, and from 10 s to 60 s after it ends.

Seeds run in parallel worker processes on the discrete-event driver (one task per seed and
policy), so the figures are those of ``simulate`` for each seed.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TextIO

from specexec import Distribution

from ._scenario import Scenario
from ._stats import PolicyStats

__all__ = [
    "P99_WITHIN",
    "P999_WITHIN",
    "RELEARN_CUT",
    "SeedRow",
    "limit_at_load",
    "run_seeds",
    "seeds_text",
]

P99_WITHIN, P999_WITHIN, MAX_EXTRA = 1.05, 1.10, 0.06
"""The steady targets: p99 ≤ 1.05× and p99.9 ≤ 1.10× the fixed-delay limit, extra load ≤ 6 %."""
RELEARN_CUT = 0.35
"""The brownout targets: p99 at most this share of single's, 10 s into it and 10 s after it."""


def limit_at_load(dist: Distribution | float, extra_load: float, attempts: int = 3) -> dict[str, float]:
    """The exact figures (``fixed_delay_analysis``) of the fixed delay whose extra load is
    ``extra_load``, with ``"delay"`` (bisection: extra load falls as the delay grows)."""
    from ._tail import fixed_delay_analysis

    lo, hi = 1e-4, 3600.0
    for _ in range(100):
        mid = (lo + hi) / 2
        if fixed_delay_analysis(dist, mid, attempts)["extra_load"] > extra_load:
            lo = mid
        else:
            hi = mid
    return {**fixed_delay_analysis(dist, hi, attempts), "delay": hi}


@dataclass(frozen=True)
class SeedRow:
    """One policy on one seed: its figures, the limit at its extra load, the brownout ratios."""

    seed: int
    policy: str
    p99: float
    p999: float
    extra_load: float
    limit: dict[str, float]
    brownout: float | None = None  # p99 / single's p99, from 10 s into the brownout to its end
    after: float | None = None  # the same, 10 s to 60 s after it

    @property
    def p99_ratio(self) -> float:
        return self.p99 / self.limit["p99"]

    @property
    def p999_ratio(self) -> float:
        return self.p999 / self.limit["p99.9"]

    def met(self) -> bool:
        """Every target met on this seed."""
        relearnt = all(r is None or r <= RELEARN_CUT for r in (self.brownout, self.after))
        steady = self.p99_ratio <= P99_WITHIN and self.p999_ratio <= P999_WITHIN and self.extra_load <= MAX_EXTRA
        return steady and relearnt


def _steady(scenario: Scenario, name: str) -> dict[str, Any]:
    from ._des import des_simulate_policy

    return des_simulate_policy(scenario, name, None).to_builtins()


def _phase_p99(stats: PolicyStats, index: int) -> float | None:
    return stats.phase_stats[index].summary().latency["p99"]


def run_seeds(
    base: Scenario, seeds: Sequence[int], policies: Sequence[str], *, brownout: bool, jobs: int | None = None
) -> list[SeedRow]:
    """Every policy on every seed (steady run of ``base``'s requests, and the brownout run), in
    ``jobs`` worker processes; rows by seed, then policy."""
    from ._tail import RELEARN_WITHIN, brownout_scenario

    dist = base.backends[0].latency  # type: ignore[union-attr]
    tasks: list[tuple[str, int, str, Scenario]] = []
    for seed in seeds:
        scenario = base.with_options(seed=seed, policies=policies)
        tasks += [("steady", seed, name, scenario) for name in policies]
        if brownout:
            b = brownout_scenario(base.with_options(seed=seed, policies=["single", *policies]))
            tasks += [("brownout", seed, name, b) for name in ["single", *policies]]
    workers = max(1, jobs if jobs is not None else (os.cpu_count() or 1))
    context = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(max_workers=min(workers, len(tasks)), mp_context=context) as pool:
        futures = [pool.submit(_steady, scenario, name) for _, _, name, scenario in tasks]
        done = [PolicyStats.from_builtins(f.result()) for f in futures]
    results = {(kind, seed, name): stats for (kind, seed, name, _), stats in zip(tasks, done, strict=True)}
    rows = []
    names = [p.name for p in brownout_scenario(base).phases]
    during = names.index(f"brownout, {RELEARN_WITHIN:g} s on")
    after = names.index(f"after, {RELEARN_WITHIN:g}–60 s")
    for seed in seeds:
        for name in policies:
            s = results["steady", seed, name].total.summary()
            p99, p999 = s.latency["p99"], s.latency["p99.9"]
            assert p99 is not None and p999 is not None
            extra = s.extra_load or 0.0
            ratios: list[float | None] = [None, None]
            if brownout:
                single, mine = results["brownout", seed, "single"], results["brownout", seed, name]
                for i, phase in enumerate((during, after)):
                    base_p99, p99_there = _phase_p99(single, phase), _phase_p99(mine, phase)
                    ratios[i] = p99_there / base_p99 if base_p99 and p99_there is not None else None
            rows.append(SeedRow(seed, name, p99, p999, extra, limit_at_load(dist, extra), *ratios))
    return rows


def seeds_text(rows: Sequence[SeedRow], out: TextIO) -> bool:
    """Print the per-seed table and the worst figures over seeds; ``True`` if every target is met."""
    out.write(
        "adaptive delay vs the fixed-delay limit at equal extra load (limit: exact, for the fixed delay of the same "
        "extra load)\n"
        "  seed  policy            p99 ms (limit)       p99.9 ms (limit)     extra load  (delay*)  "
        "| brownout p99 / single: 10 s on, 10–60 s after\n"
    )
    for r in rows:
        lim = r.limit
        tail = f"| {_ratio(r.brownout)}  {_ratio(r.after)}" if r.brownout is not None or r.after is not None else "|"
        out.write(
            f"  {r.seed:>4}  {r.policy:<16}  {1000 * r.p99:6.1f} ({1000 * lim['p99']:5.1f}) {r.p99_ratio:5.3f}×  "
            f"{1000 * r.p999:6.1f} ({1000 * lim['p99.9']:5.1f}) {r.p999_ratio:5.3f}×  {100 * r.extra_load:8.2f} %  "
            f"({1000 * lim['delay']:5.1f} ms)  {tail}  {'met' if r.met() else 'MISSED'}\n"
        )
    ok = True
    for name in dict.fromkeys(r.policy for r in rows):
        mine = [r for r in rows if r.policy == name]
        w99 = max(mine, key=lambda r: r.p99_ratio)
        w999 = max(mine, key=lambda r: r.p999_ratio)
        wl = max(mine, key=lambda r: r.extra_load)
        line = (
            f"  worst of {len(mine)} seeds, {name}: p99 {w99.p99_ratio:.3f}× (seed {w99.seed}, target ≤ {P99_WITHIN}), "
            f"p99.9 {w999.p999_ratio:.3f}× (seed {w999.seed}, ≤ {P999_WITHIN}), extra load "
            f"{100 * wl.extra_load:.2f} % (seed {wl.seed}, ≤ {100 * MAX_EXTRA:g} %)"
        )
        during = [r.brownout for r in mine if r.brownout is not None]
        after = [r.after for r in mine if r.after is not None]
        if during and after:
            line += f"; brownout p99 ≤ {max(during):.2f}× and {max(after):.2f}× single (≤ {RELEARN_CUT})"
        met = all(r.met() for r in mine)
        ok = ok and met
        out.write(line + f": {'met' if met else 'MISSED'}\n")
    return ok


def _ratio(value: float | None) -> str:
    return "  —  " if value is None else f"{value:.2f}×"
