"""``specexec eval``: the cheapest model that passes each task class, measured.

    specexec eval EVALFILE [--sim | --target CONFIG] [--out DIR] [--json] [--jobs N]
                  [--max-cost USD] [--yes] [--write-routes FILE] [--compare PREVIOUS.json] [--no-cache]

Exit status: 0 done, 1 the run failed or was not confirmed, 2 bad arguments or eval file,
3 ``--compare`` found a regression.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TextIO

import trio
import trio.testing

from specexec import Backend, PolicyError, Router, Runtime, worst_case_cost
from specexec.bench.bench import CostLine, Progress, confirm, progress_wanted
from specexec.config import BackendConfig, RuntimeConfig, SimulatedConfig

from ._cache import Cache
from ._file import EvalSpec, load_eval
from ._live import fleet_backends, fleet_for
from ._report import EvalReport, build_report, plot, render, to_json
from ._routes import compare, read_previous, routes_toml, routing_quality
from ._run import CaseResult, Job, fingerprints, plan, run_eval
from ._score import judge_for
from ._sim import sim_backends

__all__ = ["EXIT_REGRESSION", "build_parser", "main"]

EXIT_REGRESSION = 3
"""The exit status when ``--compare`` finds a regression."""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``specexec eval``."""
    p = argparse.ArgumentParser(
        prog="specexec eval",
        description="Run every candidate on every case of each task class, and pick the cheapest model "
        "that clears the class's bar.",
    )
    p.add_argument("evalfile", help="the eval TOML file")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument(
        "--sim",
        action="store_const",
        dest="mode",
        const="sim",
        help="simulated backends in virtual time with the file's [quality] model "
        "(default when every backend is simulated)",
    )
    mode.add_argument(
        "--live",
        action="store_const",
        dest="mode",
        const="live",
        help="the same simulated backends served by the loopback mock fleet (HTTP on 127.0.0.1, real clock)",
    )
    mode.add_argument(
        "--target",
        metavar="CONFIG",
        help="real endpoints (a specexec.config TOML; keys from the environment): cost shown and confirmed first",
    )
    p.add_argument(
        "--out", metavar="DIR", help="write report.json, quality.png and the answer cache (cache.jsonl) here"
    )
    p.add_argument("--json", action="store_true", help="print the report as JSON")
    p.add_argument("--jobs", type=int, metavar="N", help="calls in flight at once (default: [eval] jobs)")
    p.add_argument(
        "--max-cost",
        type=float,
        metavar="USD",
        help="never spend more than this in total (worst case reserved per call)",
    )
    p.add_argument("--yes", action="store_true", help="--target: send without asking")
    p.add_argument(
        "--write-routes", metavar="FILE", help="write the router TOML with each class's route set to its choice"
    )
    p.add_argument(
        "--compare", metavar="PREVIOUS.json", help="compare with a previous --json report; exit 3 on a regression"
    )
    p.add_argument("--no-cache", action="store_true", help="send every case again")
    return p


def _judge_lines(jobs: Sequence[Job], cache: Cache, backends: Mapping[str, Backend]) -> list[CostLine]:
    """The judges' calls, a line per judge backend: each answer to judge (a cached one by its
    text, one still to come at its longest, ``LlmJudge.worst_query``) at its worst case."""
    calls: dict[str, list[float]] = {}
    for job in jobs:
        judge = judge_for(job.case)
        if judge is None:
            continue
        cached = cache.get(job.key)
        query = judge.judge_query(job.case.query, cached.text) if cached else judge.worst_query(job.case.query)
        calls.setdefault(judge.backend, []).append(worst_case_cost(backends[judge.backend], query))
    return [CostLine(f"{name} (judge)", len(c), sum(c), sum(c)) for name, c in sorted(calls.items())]


def _check_outputs(args: argparse.Namespace) -> None:
    """``--out`` and ``--write-routes`` can be written, checked before anything is sent (a paid
    run must not end in a traceback for want of a directory)."""
    if args.out:
        out = Path(args.out)
        if out.exists() and not out.is_dir():
            raise PolicyError(f"--out {out} is a file: give a directory (it is made if missing)", path="--out")
        try:
            out.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise PolicyError(f"--out {out}: cannot make the directory: {exc.strerror}", path="--out") from None
    if args.write_routes:
        routes = Path(args.write_routes)
        if routes.is_dir():
            raise PolicyError(f"--write-routes {routes} is a directory: give a file name", path="--write-routes")
        if not routes.parent.is_dir():
            raise PolicyError(
                f"--write-routes {routes}: the directory {routes.parent} does not exist", path="--write-routes"
            )


def _configs(spec: EvalSpec, target: str | None) -> list[BackendConfig]:
    for name in spec.file.classes:  # nothing to evaluate would be a report of nothing, and rc 0
        if not spec.candidates(name):
            raise PolicyError(
                f"class {name!r} has no candidates: name them (candidates = [...], backends of --target CONFIG) "
                "or add [[backends]] to the eval file",
                path=f"$.classes.{name}.candidates",
                source=spec.source,
            )
    if target is None:
        return list(spec.file.backends)
    loaded = {b.name: b for b in RuntimeConfig.load(Path(target), extra=("*",)).backends}
    needed = {n for cls in spec.file.classes for n in spec.candidates(cls)}
    missing = sorted(needed - loaded.keys())
    if missing:
        raise PolicyError(
            f"{target} does not define the candidate(s) {', '.join(missing)}", path="$.backends", source=target
        )
    return list(loaded.values())


async def _run(
    spec: EvalSpec,
    runtime: Runtime,
    cache: Cache,
    args: argparse.Namespace,
    progress: Progress,
    jobs_list: list[Job],
    router: Router | None,
) -> tuple[list[CaseResult], dict[str, object] | None]:
    async with runtime:
        results = await run_eval(
            spec,
            runtime,
            jobs_list,
            cache,
            concurrency=args.jobs or spec.file.eval.jobs,
            max_cost=args.max_cost,
            on_progress=progress.update,
        )
        quality = await routing_quality(router, spec, results, runtime) if router is not None else None
    return results, quality


def main(
    argv: Sequence[str] | None = None,
    *,
    stdout: TextIO | None = None,
    stderr: TextIO | None = None,
    stdin: TextIO | None = None,
) -> int:
    """Run ``specexec eval`` with ``argv`` (without the program and subcommand names)."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    parser = build_parser()
    try:
        args = parser.parse_args(list(sys.argv[1:] if argv is None else argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    try:
        if args.jobs is not None and args.jobs < 1:
            raise PolicyError(f"--jobs must be >= 1, got {args.jobs}", path="--jobs")
        if args.max_cost is not None and not args.max_cost >= 0:
            raise PolicyError(f"--max-cost must be >= 0 USD, got {args.max_cost}", path="--max-cost")
        spec = load_eval(args.evalfile)
        configs = _configs(spec, args.target)
        simulated = all(isinstance(c, SimulatedConfig) for c in configs)
        mode = "target" if args.target else (args.mode or ("sim" if simulated else "target"))
        if mode in ("sim", "live") and not simulated:
            raise PolicyError(
                f"--{mode} needs simulated backends; give real ones with --target CONFIG", path=f"--{mode}"
            )
        _check_outputs(args)
        previous = read_previous(args.compare) if args.compare else None
        fleet_cfg = fleet_for(spec) if mode == "live" else None
    except PolicyError as exc:
        err.write(f"specexec eval: {exc}\n")
        return 2
    with contextlib.ExitStack() as stack:
        if fleet_cfg is not None:
            from specexec.bench.fleet import start_fleet_process

            fleet = stack.enter_context(start_fleet_process(fleet_cfg))
            backends = fleet_backends(spec, fleet)
        else:
            backends = sim_backends(spec) if mode == "sim" else [c.build() for c in configs]
        return _evaluate(spec, mode, configs, backends, previous, args, out, err, stdin)


def _evaluate(
    spec: EvalSpec,
    mode: str,
    configs: list[BackendConfig],
    backends: list[Backend],
    previous: EvalReport | None,
    args: argparse.Namespace,
    out: TextIO,
    err: TextIO,
    stdin: TextIO | None,
) -> int:

    out_dir = Path(args.out) if args.out else None
    cache = Cache(None if args.no_cache or out_dir is None else out_dir / "cache.jsonl")
    jobs_list = plan(spec, fingerprints(spec, configs))
    by_name = {b.name: b for b in backends}
    to_send = [j for j in jobs_list if cache.get(j.key) is None]
    lines = []
    for name in sorted({j.backend for j in to_send}):
        mine = [j for j in to_send if j.backend == name]
        worst = sum(worst_case_cost(by_name[name], j.case.query) for j in mine)
        lines.append(CostLine(name, len(mine), worst, worst))
    lines += _judge_lines(jobs_list, cache, by_name)  # a cached answer is judged (and paid for) again
    if mode == "target" and lines:
        if args.max_cost is not None:
            err.write(f"--max-cost: at most ${args.max_cost:,.4f} in total will be spent\n")
        if not confirm(lines, yes=args.yes, stdin=stdin, stderr=err):
            err.write("specexec eval: nothing sent\n")
            return 1
    router = Router.from_toml(spec.root / spec.file.eval.router) if spec.file.eval.router else None
    runtime = Runtime(backends)
    progress = Progress(
        f"eval {spec.name} ({mode})",
        len(jobs_list),
        enabled=progress_wanted(json_mode=args.json, stdout=out),
        stream=err,
    )
    try:
        if mode == "sim":
            results, quality = trio.run(
                _run,
                spec,
                runtime,
                cache,
                args,
                progress,
                jobs_list,
                router,
                clock=trio.testing.MockClock(autojump_threshold=0),
            )
        else:
            results, quality = trio.run(_run, spec, runtime, cache, args, progress, jobs_list, router)
    except KeyboardInterrupt:
        progress.close()
        err.write("specexec eval: interrupted (answers so far are cached)\n")
        return 130
    progress.close()
    report = build_report(spec, mode, results)
    report.routing = quality
    status = 0
    try:
        if args.write_routes:
            text = routes_toml(spec, report)
            try:
                Path(args.write_routes).write_text(text, encoding="utf-8")
            except OSError as exc:
                raise PolicyError(f"cannot write {args.write_routes}: {exc.strerror}", path="--write-routes") from None
            written = Router.from_toml(text)
            report.routing = trio.run(
                _quality, written, spec, results, backends, clock=trio.testing.MockClock(autojump_threshold=0)
            )
    except PolicyError as exc:
        err.write(f"specexec eval: {exc}\n")
        status = 1
    out.write(to_json(report).decode() + "\n" if args.json else render(report))
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / "report.json").write_bytes(to_json(report))
        try:
            plot(report, out_dir / "quality.png")
        except ImportError:
            err.write("specexec eval: no plot (pip install 'specexec[plot]')\n")
    if previous is not None:
        regressions, changes = compare(previous, report)
        for line in changes:
            err.write(f"changed: {line}\n")
        for line in regressions:
            err.write(f"REGRESSION: {line}\n")
        if regressions:
            status = EXIT_REGRESSION
    out.flush()
    return status


async def _quality(
    router: Router, spec: EvalSpec, results: list[CaseResult], backends: list[Backend]
) -> dict[str, object]:
    return await routing_quality(router, spec, results, Runtime(backends))
