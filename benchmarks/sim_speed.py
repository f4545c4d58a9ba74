"""``python -m specexec.bench.sim_speed``: how fast ``specexec bench --sim`` simulates.

Runs the built-in ``tail-at-scale`` scenario (five policies) with ``--requests`` simulated
requests in all (split evenly over the policies) through the discrete-event driver (the
default ``--sim`` engine), in ``--jobs`` worker processes, and prints the wall time, the CPU
seconds of the workers, simulated requests per wall second and per CPU second, against the
targets (issue 14: 10⁶ requests in ≤ 60 s wall on the 2-core machine, i.e. ≥ 17 k req/s; aim
≥ 50 k req/s per core). ``--trio N`` also times N requests through the trio virtual-time driver
(the cross-check) for the speed-up. It measures and always exits 0.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections.abc import Sequence
from typing import Any

from ._timing import machine_line, machine_note
from .bench import load_scenario
from .bench._sim import simulate

TARGET_WALL_SECONDS_PER_MILLION = 60.0
AIM_PER_CORE = 50_000.0


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def measure(requests: int, jobs: int, engine: str) -> dict[str, Any]:
    """Simulate ``requests`` tail-at-scale requests in all with ``engine``; the timings."""
    scenario = load_scenario("tail-at-scale")
    per_policy = max(1, requests // len(scenario.policies))
    scenario = scenario.with_options(requests=per_policy)
    cpu0, children0, wall0 = _self_cpu(), _children_cpu(), time.perf_counter()
    stats = simulate(scenario, jobs=jobs, engine=engine)
    wall = time.perf_counter() - wall0
    cpu = (_self_cpu() - cpu0) + (_children_cpu() - children0)
    total = per_policy * len(stats)
    p99 = {name: s.total.summary().latency for name, s in stats.items()}
    return {
        "engine": engine,
        "requests": total,
        "jobs": jobs,
        "wall_s": wall,
        "cpu_s": cpu,
        "req_per_s": total / wall,
        "req_per_cpu_s": total / cpu if cpu > 0 else None,
        "p99_ms": {n: (lat["p99"] * 1000 if lat and lat["p99"] is not None else None) for n, lat in p99.items()},
    }


def per_policy(requests: int, engine: str) -> dict[str, float]:
    """Simulated requests per CPU second of each tail-at-scale policy, ``requests`` each, one
    after the other in this process (the driver's cost by policy: hedged requests do more)."""
    from .bench._sim import simulate_policy

    scenario = load_scenario("tail-at-scale").with_options(requests=requests)
    if engine == "des":
        from .bench._des import des_simulate_policy as run
    else:
        run = simulate_policy
    out = {}
    for name in scenario.policies:
        cpu = time.process_time()
        run(scenario, name)
        out[name] = requests / (time.process_time() - cpu)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line entry point."""
    p = argparse.ArgumentParser(prog="python -m specexec.bench.sim_speed", description=__doc__.split("\n\n")[0])
    p.add_argument("--requests", type=int, default=1_000_000, help="simulated requests in all (default 10⁶)")
    p.add_argument("--jobs", type=int, default=2, help="worker processes (default 2: the 2-core machine)")
    p.add_argument("--trio", type=int, default=0, metavar="N", help="also time N requests on the trio driver")
    p.add_argument(
        "--per-policy",
        type=int,
        default=0,
        metavar="N",
        help="also time N requests of each policy alone, in this process (req/CPU-s by policy)",
    )
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    runs = [measure(args.requests, args.jobs, "des")]
    if args.trio:
        runs.append(measure(args.trio, args.jobs, "trio"))
    policies = per_policy(args.per_policy, "des") if args.per_policy else {}
    if args.json:
        doc = {"machine": machine_line(machine_note()), "runs": runs, "per_policy_req_per_cpu_s": policies}
        print(json.dumps(doc, indent=2))
        return 0
    print(f"tail-at-scale, five policies; {machine_line(machine_note())}")
    for r in runs:
        print(
            f"  {r['engine']:5s} {r['requests']:>9,} requests, {r['jobs']} jobs: {r['wall_s']:7.1f} s wall, "
            f"{r['cpu_s']:7.1f} CPU-s -> {r['req_per_s']:>8,.0f} req/s wall, {r['req_per_cpu_s'] or 0:>8,.0f} req/CPU-s"
        )
    des = runs[0]
    per_million = des["wall_s"] * 1_000_000 / des["requests"]
    verdict = "met" if per_million <= TARGET_WALL_SECONDS_PER_MILLION else "NOT met"
    print(
        f"  10⁶ requests would take {per_million:.1f} s wall "
        f"(target ≤ {TARGET_WALL_SECONDS_PER_MILLION:.0f} s): {verdict}"
    )
    aim = "met" if (des["req_per_cpu_s"] or 0) >= AIM_PER_CORE else "not met"
    print(f"  per core: {des['req_per_cpu_s'] or 0:,.0f} req/CPU-s (aim ≥ {AIM_PER_CORE:,.0f}): {aim}")
    if len(runs) > 1:
        trio = runs[1]
        print(f"  discrete-event vs trio virtual time: {des['req_per_cpu_s'] / trio['req_per_cpu_s']:.1f}x per CPU-s")
    print("  p99 (ms) by policy: " + ", ".join(f"{n} {v:.1f}" for n, v in des["p99_ms"].items() if v is not None))
    if policies:
        print(
            f"  req/CPU-s by policy ({args.per_policy:,} requests each, one process): "
            + ", ".join(f"{n} {v:,.0f}" for n, v in policies.items())
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
