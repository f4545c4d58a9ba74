"""``specexec bench``: compare policies on tail latency, cost and extra load.

    specexec bench SCENARIO [--policies NAME,...] [--sim | --live | --target CONFIG]
                   [--requests N | --duration S] [--rate R] [--seed S] [--out DIR] [--json]

SCENARIO is a built-in name (``specexec bench --list``) or a TOML file. Exit status: 0 done,
1 the run failed or was not confirmed, 2 bad arguments or scenario.
"""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Sequence
from typing import TextIO

from specexec import PolicyError

from ._live import LOOPS, live_notes, run_live
from ._progress import Progress, progress_wanted
from ._report import build_result, render, to_json, write_outputs
from ._scenario import OWN_RUNNERS, builtin_scenarios, load_scenario
from ._sim import ENGINES, default_jobs, simulate
from ._stats import PolicyStats
from ._target import DEFAULT_RATE, DEFAULT_REQUESTS, check_bounds, confirm, estimate_cost, load_target, run_target

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``specexec bench``."""
    p = argparse.ArgumentParser(
        prog="specexec bench",
        description="Compare policies on tail latency, cost and extra load (open-loop load; latency is "
        "measured from each request's intended send time).",
    )
    p.add_argument("scenario", nargs="?", help="a built-in scenario name (see --list) or a scenario TOML file")
    p.add_argument("--list", action="store_true", help="list the built-in scenarios and exit")
    p.add_argument("--policies", metavar="NAME,...", help="run only these policies of the scenario")
    p.add_argument("--baseline", metavar="NAME", help="the policy others are compared with (default: the scenario's)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--sim",
        action="store_const",
        dest="mode",
        const="sim",
        help="simulated backends in virtual time: fast, deterministic for a seed (default)",
    )
    mode.add_argument(
        "--live",
        action="store_const",
        dest="mode",
        const="live",
        help="the loopback mock fleet on 127.0.0.1, real clock, over HTTP",
    )
    mode.add_argument(
        "--target",
        metavar="CONFIG",
        help="your own endpoints (a specexec.config TOML; keys from the environment); bounded, "
        "cost shown and confirmed first",
    )
    count = p.add_mutually_exclusive_group()
    count.add_argument("--requests", type=int, metavar="N", help="measured requests per policy")
    count.add_argument("--duration", type=float, metavar="S", help="seconds of load per policy")
    p.add_argument("--rate", type=float, metavar="R", help="requests per second")
    p.add_argument("--warmup", type=int, metavar="N", help="first requests sent but not counted")
    p.add_argument("--seed", type=int, metavar="S", help="seed of the arrivals, the query mix and simulated draws")
    p.add_argument("--out", metavar="DIR", help="write results.json, one .hgrm per policy and latency.png here")
    p.add_argument("--json", action="store_true", help="print the results as JSON (no table, no progress)")
    p.add_argument("--jobs", type=int, metavar="N", help="--sim: worker processes (default: one per CPU for big runs)")
    p.add_argument(
        "--sim-engine",
        choices=ENGINES,
        default="des",
        help="--sim: the discrete-event driver (default; no event loop) or trio virtual time (the cross-check)",
    )
    p.add_argument(
        "--loop",
        choices=sorted(LOOPS),
        default="trio",
        help="--live/--target: the event loop the client runs on (asyncio: with uvloop; default trio)",
    )
    p.add_argument("--yes", action="store_true", help="--target: send without asking")
    return p


def _list(stdout: TextIO) -> int:
    for name, path in builtin_scenarios().items():
        try:
            description = load_scenario(path).description
        except PolicyError as exc:  # pragma: no cover - the shipped scenarios load
            description = f"(does not load: {exc})"
        stdout.write(f"{name}\n    {description}\n")
    for name in OWN_RUNNERS:
        stdout.write(f"{name}\n    {importlib.import_module(f'._{name}', __package__).DESCRIPTION}\n")
    return 0


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run ``specexec bench`` with ``argv`` (without the program and subcommand names)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    arguments = list(sys.argv[1:] if argv is None else argv)
    # routing compares routers, not policies; ttft streamed policies with TTFT percentiles: their own runners
    if arguments[:1] and arguments[0] in OWN_RUNNERS:
        runner = importlib.import_module(f"._{arguments[0]}", __package__)
        code: int = runner.main(arguments, stdout=out, stderr=err)
        return code
    parser = build_parser()
    try:
        args = parser.parse_args(arguments)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.list:
        return _list(out)
    if not args.scenario:
        parser.print_usage(err)
        err.write(
            "specexec bench: error: give a scenario (a built-in name or a TOML file); --list shows the built-ins\n"
        )
        return 2
    mode = "target" if args.target else (args.mode or "")
    try:
        scenario = load_scenario(args.scenario)
        mode = mode or ("sim" if scenario.simulated else "live")
        if mode == "sim" and args.loop != "trio":
            raise PolicyError("--loop applies to --live and --target (--sim runs on no event loop)", path="--loop")
        requests, duration, rate = args.requests, args.duration, args.rate
        if mode == "target":
            if requests is None and duration is None:
                requests = DEFAULT_REQUESTS
            rate = rate if rate is not None else DEFAULT_RATE
        policies = [p.strip() for p in args.policies.split(",") if p.strip()] if args.policies is not None else None
        scenario = scenario.with_options(
            requests=requests,
            duration=duration,
            rate=rate,
            warmup=args.warmup,
            seed=args.seed,
            policies=policies,
            baseline=args.baseline,
        )
        if mode != "target" and not scenario.backends and scenario.fleet is None:
            raise PolicyError("this scenario has no backends of its own: run it with --target CONFIG", path="--target")
        if mode == "sim" and not scenario.simulated:
            what = "fleet deployments" if scenario.fleet is not None else "non-simulated backends"
            raise PolicyError(f"--sim needs simulated backends, this scenario has {what}: use --live", path="--sim")
        targets = load_target(args.target, scenario) if mode == "target" else None
        if mode == "target":
            check_bounds(scenario)
    except PolicyError as exc:
        text = str(exc)  # "(at $)" says nothing: the error is about the whole scenario or argument
        err.write(f"specexec bench: {text.removesuffix(' (at $)') if exc.path == '$' else text}\n")
        return 2

    notes: list[str] = []
    if targets is not None:
        lines = estimate_cost(scenario, [c.build() for c in targets])
        if not confirm(lines, yes=args.yes, stderr=err):
            err.write("specexec bench: nothing sent\n")
            return 1
        if scenario.events:
            notes.append("the scenario's [[events]] do not apply to --target endpoints")
    if mode == "live":
        notes += live_notes(scenario)

    expected = (scenario.workload.expected_requests() + scenario.workload.warmup) * len(scenario.policies)
    progress = Progress(
        f"{scenario.name} ({mode})", expected, enabled=progress_wanted(json_mode=args.json, stdout=out), stream=err
    )
    jobs = 1
    started = time.perf_counter()
    stats: dict[str, PolicyStats]
    try:
        if mode == "sim":
            jobs = args.jobs if args.jobs is not None else default_jobs(scenario)
            stats = simulate(scenario, jobs=jobs, on_progress=progress.update, engine=args.sim_engine)
        elif mode == "live":
            stats = run_live(scenario, on_progress=progress.update, loop=args.loop)
        else:
            assert targets is not None
            stats = run_target(scenario, targets, on_progress=progress.update, loop=args.loop)
    except KeyboardInterrupt:
        progress.close()
        err.write("specexec bench: interrupted\n")
        return 130
    except Exception as exc:
        progress.close()
        err.write(f"specexec bench: the run failed: {type(exc).__name__}: {exc}\n")
        return 1
    progress.close()
    elapsed = time.perf_counter() - started

    result = build_result(scenario, mode, stats, elapsed=elapsed, jobs=min(jobs, len(stats)), notes=notes)
    if args.json:
        out.write(to_json(result).decode() + "\n")
    else:
        out.write(render(result))
    if args.out:
        for line in write_outputs(result, stats, args.out):
            (err if args.json else out).write(line + "\n")
    out.flush()
    return 0
