"""The tail-at-scale benchmark (``python -m specexec.bench.tail_at_scale``): the ``tail-at-scale``
scenario, a sweep of fixed hedge delays, an analytic cross-check, and a fleet-wide brownout.

1. The scenario's policies (single backend; fixed delay at the true p95; adaptive ``p95`` with
   ``max_attempts=3``; the same with a 5 % hedge budget; ``delay="auto"``) plus one fixed-delay
   policy per sweep point, all in virtual time on the same seeded draws.
2. The sweep table: each fixed delay's simulated p50/p99/p99.9/extra load next to the exact
   figures for independent backends (latency = min(X₁, d + X₂, 2d + X₃), so
   P(L > x) = S(x)·S(x − d)·S(x − 2d) and extra load = S(d) + S(d)·S(2d)).
3. The targets, each marked met or missed: the adaptive policies' p99 ≥ 65 % and p99.9 ≥ 60 %
   below single at ≤ 6 % extra load, and p99 within 10 % of the best fixed delay in hindsight
   at equal extra load (the sweep's lowest p99 among delays whose extra load is at most
   ``LOAD_TOLERANCE`` above the policy's).
4. The same policies with every backend browned out ×5 for a minute, reported by phase.

``--seeds N`` runs instead the adaptive policies on N seeds, each against the exact figures of
the fixed delay of its own extra load, with the brownout's re-learning (``_tail_seeds``).
``--live`` runs the policies (default single and adaptive p95, 3,000 requests each, after
``--warmup N``) over loopback HTTP on the mock fleet, each figure next to the same limit
(``_tail_live``).

Nothing here tunes anything: the delays, budgets and windows are the scenario's and the
library's defaults.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any, TextIO

import msgspec

from specexec import Constant, Distribution, LogNormal, Mixture, Policy, PolicyError, Scaled, Uniform
from specexec.config import SimulatedConfig

from ._live import LOOPS
from ._progress import Progress, progress_wanted
from ._report import BenchResult, build_result, render, write_outputs
from ._scenario import Brownout, Phase, Scenario, load_scenario
from ._sim import default_jobs, simulate
from ._stats import PolicyStats, Summary
from ._tail_live import LIVE_POLICIES, LIVE_REQUESTS, run_tail_live

__all__ = [
    "ADAPTIVE",
    "DEFAULT_SWEEP_MS",
    "Target",
    "brownout_scenario",
    "fixed_delay_analysis",
    "main",
    "quantile",
    "survival",
    "sweep_scenario",
    "targets",
]

DEFAULT_SWEEP_MS = (55, 60, 65, 70, 75, 80, 85, 90, 100, 110, 120, 137, 160, 200, 250, 300)
"""Fixed hedge delays (ms) swept for the hindsight comparison."""
ADAPTIVE = ("adaptive-p95", "adaptive-budget", "auto")
"""The scenario's adaptive policies, checked against the targets."""
DEFAULT_REQUESTS = 50_000
"""Requests per policy of the steady run (500 s of virtual time at 100/s)."""
BROWNOUT_START, BROWNOUT_LENGTH, BROWNOUT_FACTOR = 120.0, 60.0, 5.0
"""The brownout run: every backend ×5 from 120 s to 180 s of a 300 s run."""
BROWNOUT_DURATION = 300.0
RELEARN_WITHIN = 10.0
"""Seconds an adaptive delay has to re-learn after the brownout starts and after it ends (issue 14 §2)."""

LOAD_TOLERANCE = 0.0025
"""Extra load a fixed delay may exceed an adaptive policy's by and still count as "equal" (0.25 points)."""

_N = NormalDist()


# --------------------------------------------------------------------------- the distribution


def survival(dist: Distribution | float, x: float) -> float:
    """P(X > x) for a specexec latency distribution (exact)."""
    if isinstance(dist, (int, float)):
        return 1.0 if x < dist else 0.0
    if isinstance(dist, Constant):
        return 1.0 if x < dist.value else 0.0
    if isinstance(dist, LogNormal):
        if x <= 0:
            return 1.0
        if dist.sigma == 0:
            return 1.0 if x < dist.median else 0.0
        return 1.0 - _N.cdf(math.log(x / dist.median) / dist.sigma)
    if isinstance(dist, Uniform):
        if x < dist.low:
            return 1.0
        if x >= dist.high:
            return 0.0
        return (dist.high - x) / (dist.high - dist.low)
    if isinstance(dist, Scaled):
        return survival(dist.base, x / dist.factor)
    if isinstance(dist, Mixture):
        total = sum(c.weight for c in dist.components)
        return sum(c.weight * survival(c.dist, x) for c in dist.components) / total
    raise TypeError(f"unknown distribution {dist!r}")


def quantile(dist: Distribution | float, q: float) -> float:
    """The ``q``-quantile in seconds (bisection on the CDF)."""
    lo, hi = 1e-9, 3600.0
    for _ in range(200):
        mid = math.sqrt(lo * hi)
        if 1.0 - survival(dist, mid) < q:
            lo = mid
        else:
            hi = mid
    return hi


def fixed_delay_analysis(dist: Distribution | float, delay: float, attempts: int = 3) -> dict[str, float]:
    """Exact p50/p99/p99.9 and extra load of hedging at a fixed ``delay`` over ``attempts``
    independent backends with latency ``dist`` (no failures, instant cancellation)."""

    def tail(x: float) -> float:
        s = 1.0
        for k in range(attempts):
            t = x - k * delay
            if t < 0:
                break
            s *= survival(dist, t)
        return s

    def inverse(q: float) -> float:
        lo, hi = 1e-9, 3600.0
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            if 1.0 - tail(mid) < q:
                lo = mid
            else:
                hi = mid
        return hi

    extra = sum(tail(k * delay) for k in range(1, attempts))  # hedge k fires iff no answer by k·delay
    return {"p50": inverse(0.5), "p99": inverse(0.99), "p99.9": inverse(0.999), "extra_load": extra}


# --------------------------------------------------------------------------- scenarios


def sweep_scenario(scenario: Scenario, delays_ms: Sequence[float]) -> Scenario:
    """``scenario`` plus one ``fixed-Dms`` hedge policy per delay (the candidates and
    ``max_attempts`` of its ``fixed-p95`` policy)."""
    template = scenario.policies["fixed-p95"]
    policies = dict(scenario.policies)
    for ms in delays_ms:
        name = f"fixed-{ms:g}ms"
        policies[name] = msgspec.structs.replace(template, delay=ms / 1000.0, name=name)
    return msgspec.structs.replace(scenario, policies=policies)


def brownout_scenario(scenario: Scenario) -> Scenario:
    """``scenario`` with every backend ×5 for a minute (120–180 s of a 300 s run), with phases."""
    start, end = BROWNOUT_START, BROWNOUT_START + BROWNOUT_LENGTH
    half = start + BROWNOUT_LENGTH / 2
    learn = RELEARN_WITHIN
    phases = (
        Phase(name="steady", start=60.0, end=start),
        Phase(name="brownout, first 30 s", start=start, end=half),
        Phase(name="brownout, last 30 s", start=half, end=end),
        Phase(name="after, first 60 s", start=end, end=end + 60.0),
        Phase(name="after, 60 s on", start=end + 60.0),
        Phase(name=f"brownout, first {learn:g} s", start=start, end=start + learn),
        Phase(name=f"brownout, {learn:g} s on", start=start + learn, end=end),
        Phase(name=f"after, first {learn:g} s", start=end, end=end + learn),
        Phase(name=f"after, {learn:g}–60 s", start=end + learn, end=end + 60.0),
    )
    return msgspec.structs.replace(
        scenario,
        name=f"{scenario.name} + brownout",
        workload=msgspec.structs.replace(scenario.workload, duration=BROWNOUT_DURATION, requests=None),
        events=(Brownout(start=start, end=end, factor=BROWNOUT_FACTOR),),
        phases=phases,
    )


# --------------------------------------------------------------------------- targets


@dataclass(frozen=True)
class Target:
    """One checked expectation: ``what``, the measured ``value`` as text, and whether it is ``met``."""

    policy: str
    what: str
    value: str
    met: bool


def targets(summaries: dict[str, Summary], sweep: Sequence[str], baseline: str = "single") -> list[Target]:
    """The issue's targets for each adaptive policy present in ``summaries``."""
    base = summaries[baseline]
    out = []
    for name in ADAPTIVE:
        s = summaries.get(name)
        if s is None:
            continue
        p99, p999 = s.latency["p99"], s.latency["p99.9"]
        b99, b999 = base.latency["p99"], base.latency["p99.9"]
        extra = s.extra_load or 0.0
        if p99 is not None and b99:
            cut = 1.0 - p99 / b99
            out.append(Target(name, "p99 ≥ 65 % below single", f"{100 * cut:.1f} % below", cut >= 0.65))
        if p999 is not None and b999:
            cut = 1.0 - p999 / b999
            out.append(Target(name, "p99.9 ≥ 60 % below single", f"{100 * cut:.1f} % below", cut >= 0.60))
        out.append(Target(name, "extra load ≤ 6 %", f"{100 * extra:.2f} %", extra <= 0.06))
        fair = [
            (summaries[f].latency["p99"], f)
            for f in sweep
            if f in summaries
            and (summaries[f].extra_load or 0.0) <= extra + LOAD_TOLERANCE
            and summaries[f].latency["p99"]
        ]
        if p99 is not None and fair:
            best, which = min(fair)
            assert best is not None
            ratio = p99 / best
            out.append(
                Target(
                    name,
                    "p99 within 10 % of the best fixed delay at equal extra load",
                    f"{ratio:.2f}× {which} ({1000 * best:.1f} ms at {100 * (summaries[which].extra_load or 0):.2f} %)",
                    ratio <= 1.10,
                )
            )
        elif p99 is not None:
            out.append(
                Target(
                    name,
                    "p99 within 10 % of the best fixed delay at equal extra load",
                    "no fixed delay that cheap",
                    False,
                )
            )
    return out


def _targets_text(found: Sequence[Target]) -> str:
    lines = []
    for t in found:
        lines.append(f"  {'met   ' if t.met else 'MISSED'}  {t.policy:<16} {t.what:<58} {t.value}")
    return "\n".join(lines)


def _sweep_text(
    scenario: Scenario, summaries: dict[str, Summary], delays_ms: Sequence[float], dist: Distribution
) -> str:
    rows = [
        "  delay    sim p50    p99  p99.9  extra load  |  exact p50    p99  p99.9  extra load",
        "  -------  -------  -----  -----  ----------  |  ---------  -----  -----  ----------",
    ]
    attempts = scenario.policies["fixed-p95"].effective_max_attempts
    for ms in delays_ms:
        s = summaries[f"fixed-{ms:g}ms"]
        exact = fixed_delay_analysis(dist, ms / 1000.0, attempts)
        lat = s.latency
        rows.append(
            f"  {ms:>4g} ms  {_ms(lat['p50']):>7}  {_ms(lat['p99']):>5}  {_ms(lat['p99.9']):>5}  "
            f"{100 * (s.extra_load or 0):>9.2f}%  |  {_ms(exact['p50']):>9}  {_ms(exact['p99']):>5}  "
            f"{_ms(exact['p99.9']):>5}  {100 * exact['extra_load']:>9.2f}%"
        )
    return "\n".join(rows)


def _ms(seconds: float | None) -> str:
    return "—" if seconds is None else f"{1000 * seconds:.1f}"


# --------------------------------------------------------------------------- main


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m specexec.bench.tail_at_scale",
        description="The tail-at-scale benchmark: adaptive hedging vs single, fixed delays (sweep) and a brownout.",
    )
    p.add_argument("--requests", type=int, help=f"per policy (default {DEFAULT_REQUESTS:,}; --live: {LIVE_REQUESTS:,})")
    p.add_argument("--seed", type=int, help="seed (default: the scenario's)")
    p.add_argument(
        "--sweep", help="fixed delays in ms, comma-separated (default: " + ",".join(map(str, DEFAULT_SWEEP_MS)) + ")"
    )
    p.add_argument("--jobs", type=int, help="worker processes (default: one per CPU)")
    p.add_argument(
        "--seeds",
        type=int,
        help="instead of the tables: the adaptive policies on seeds 1..N (from --seed) against the fixed-delay limit "
        "at equal extra load, per seed, with the brownout's re-learning (issue 14 §2)",
    )
    p.add_argument(
        "--live",
        action="store_true",
        help="instead of the tables: the policies over loopback HTTP (the mock fleet, real clock), each figure "
        "next to the fixed-delay limit at its extra load (issue 14 §2's live targets)",
    )
    p.add_argument("--warmup", type=int, default=0, help="--live: requests per policy sent first, not counted (0)")
    p.add_argument(
        "--loop",
        choices=sorted(LOOPS),
        default="trio",
        help="--live: the event loop the client runs on (asyncio: with uvloop; default trio)",
    )
    p.add_argument(
        "--policies",
        help="with --seeds or --live: the policies, comma-separated (default: --seeds "
        + ",".join(ADAPTIVE)
        + "; --live "
        + ",".join(LIVE_POLICIES)
        + ")",
    )
    p.add_argument("--no-brownout", action="store_true", help="skip the brownout run")
    p.add_argument(
        "--out", help="write each run's results.json, .hgrm files and plot under this directory (--seeds: seeds.json)"
    )
    p.add_argument("--json", action="store_true", help="print both runs' results and the targets as JSON")
    return p


def _run(
    scenario: Scenario, jobs: int | None, show: bool, err: TextIO, label: str
) -> tuple[dict[str, PolicyStats], float, int]:
    expected = (scenario.workload.expected_requests() + scenario.workload.warmup) * len(scenario.policies)
    progress = Progress(label, expected, enabled=show, stream=err)
    jobs = jobs if jobs is not None else max(default_jobs(scenario), 1)
    started = time.perf_counter()
    try:
        stats = simulate(scenario, jobs=jobs, on_progress=progress.update)
    finally:
        progress.close()
    return stats, time.perf_counter() - started, jobs


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the benchmark and print its tables and targets; returns 0 (whether targets are met or not)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    try:
        args = _parser().parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    delays = [float(x) for x in args.sweep.split(",")] if args.sweep else list(DEFAULT_SWEEP_MS)
    if args.loop != "trio" and not args.live:
        err.write("python -m specexec.bench.tail_at_scale: --loop applies to --live only\n")
        return 2
    if args.live and args.seeds is not None:
        err.write("python -m specexec.bench.tail_at_scale: --live and --seeds are two different runs: give one\n")
        return 2
    requests = args.requests if args.requests is not None else (LIVE_REQUESTS if args.live else DEFAULT_REQUESTS)
    try:
        base = load_scenario("tail-at-scale").with_options(requests=requests, seed=args.seed)
        if args.seeds is not None:
            return _seeds_main(base, args, out)
        config = base.backends[0]
        assert isinstance(config, SimulatedConfig)
        dist = config.latency
        assert not isinstance(dist, (int, float))
        show = progress_wanted(json_mode=args.json, stdout=out)
        if args.live:
            policies = args.policies.split(",") if args.policies else list(LIVE_POLICIES)
            live = base.with_options(warmup=args.warmup, policies=["single", *(p for p in policies if p != "single")])
            return run_tail_live(
                live, dist, out=out, err=err, show=show, as_json=args.json, out_dir=args.out, loop=args.loop
            )
    except PolicyError as exc:
        err.write(f"python -m specexec.bench.tail_at_scale: {exc}\n")
        return 2
    doc: dict[str, Any] = {}

    scenario = sweep_scenario(base, delays)
    stats, elapsed, jobs = _run(scenario, args.jobs, show, err, "tail-at-scale")
    main_names = list(base.policies)
    shown = msgspec.structs.replace(scenario, policies={n: scenario.policies[n] for n in main_names})
    result = build_result(shown, "sim", {n: stats[n] for n in main_names}, elapsed=elapsed, jobs=jobs)
    total = sum(s.total.requests for s in stats.values())
    result.requests_per_second = total / elapsed  # the sweep's requests ran in the same wall time
    summaries = {n: s.total.summary() for n, s in stats.items()}
    sweep_names = [f"fixed-{ms:g}ms" for ms in delays]
    found = targets(summaries, sweep_names)
    true_p95 = quantile(dist, 0.95)
    header = (
        f"true p95 of the latency distribution: {1000 * true_p95:.1f} ms (fixed-p95 uses "
        f"{1000 * _fixed(base.policies['fixed-p95']):.1f} ms); CDF between 90 ms and 250 ms: "
        f"{1 - survival(dist, 0.09):.4f} … {1 - survival(dist, 0.25):.4f}\n"
    )
    if not args.json:
        out.write(render(result))
        out.write("\n" + header + "\nfixed-delay sweep (hedge over a, b, c; max_attempts 3; no budget)\n")
        out.write(_sweep_text(scenario, summaries, delays, dist) + "\n")
        out.write(f"\ntargets (steady state)\n{_targets_text(found)}\n")
        out.write(
            f"\nsteady run: {total:,} simulated requests ({len(stats)} policies incl. the sweep) in {elapsed:.1f} s "
            f"wall = {total / elapsed:,.0f} simulated requests/s with {jobs} worker process(es)\n"
        )
        out.flush()
    doc["steady"] = _doc(result, found, summaries, sweep_names, total, elapsed, jobs)
    if args.out:
        for line in write_outputs(result, {n: stats[n] for n in main_names}, Path(args.out) / "steady"):
            err.write(line + "\n")

    if not args.no_brownout:
        b = brownout_scenario(base)
        bstats, belapsed, bjobs = _run(b, args.jobs, show, err, "brownout")
        bresult = build_result(b, "sim", bstats, elapsed=belapsed, jobs=bjobs)
        phase_targets = {}
        for i, phase in enumerate(b.phases):
            phase_summaries = {n: s.phase_stats[i].summary() for n, s in bstats.items()}
            phase_targets[phase.name] = [t for t in targets(phase_summaries, []) if "fixed delay" not in t.what]
        if not args.json:
            out.write("\n" + "=" * 100 + "\n\n")
            out.write(render(bresult))
            for name, found_b in phase_targets.items():
                out.write(f"\ntargets in phase {name!r}\n{_targets_text(found_b)}\n")
        btotal = sum(s.total.requests for s in bstats.values())
        doc["brownout"] = {
            "result": msgspec.to_builtins(bresult),
            "targets": {k: [t.__dict__ for t in v] for k, v in phase_targets.items()},
            "requests": btotal,
            "elapsed": belapsed,
        }
        if args.out:
            for line in write_outputs(bresult, bstats, Path(args.out) / "brownout"):
                err.write(line + "\n")
    if args.json:
        out.write(msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n")
    return 0


def _seeds_main(base: Scenario, args: argparse.Namespace, out: TextIO) -> int:
    from ._tail_seeds import run_seeds, seeds_text

    first = args.seed if args.seed is not None else 1
    seeds = list(range(first, first + max(args.seeds, 1)))
    policies = args.policies.split(",") if args.policies else list(ADAPTIVE)
    started = time.perf_counter()
    rows = run_seeds(base, seeds, policies, brownout=not args.no_brownout, jobs=args.jobs)
    elapsed = time.perf_counter() - started
    doc = [{**r.__dict__, "p99_ratio": r.p99_ratio, "p999_ratio": r.p999_ratio, "met": r.met()} for r in rows]
    text = msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n"  # --json and --out's
    if args.json:
        out.write(text)
    else:
        out.write(
            f"tail-at-scale, {base.workload.requests:,} requests per seed and policy, seeds {seeds[0]}–{seeds[-1]}\n"
        )
        seeds_text(rows, out)
        out.write(f"({elapsed:.0f} s wall)\n")
    if args.out:  # the rows as --json prints them (a seeds run has no histograms of its own to write)
        path = Path(args.out) / "seeds.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        if not args.json:
            out.write(f"wrote {path}\n")
    return 0


def _fixed(policy: Policy) -> float:
    delay = policy.effective_delay
    return delay if isinstance(delay, float) else math.nan


def _doc(
    result: BenchResult,
    found: Sequence[Target],
    summaries: dict[str, Summary],
    sweep: Sequence[str],
    total: int,
    elapsed: float,
    jobs: int,
) -> dict[str, Any]:
    return {
        "result": msgspec.to_builtins(result),
        "sweep": {n: msgspec.to_builtins(summaries[n]) for n in sweep},
        "targets": [t.__dict__ for t in found],
        "requests": total,
        "elapsed": elapsed,
        "jobs": jobs,
    }
