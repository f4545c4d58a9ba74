"""``python -m specexec.bench.overhead``: what ``run()`` adds over a bare ``await backend.complete(q)``.

An instant in-process backend (it yields once, ``anyio.lowlevel.checkpoint()``, then returns
a prebuilt ``Response``) is called three ways, on trio and on asyncio + uvloop:

============  ==============================================  =============================================
scenario      ``run()`` under test                             reference measured in the same run
============  ==============================================  =============================================
single        ``Policy.single(a)``                            bare ``await a.complete(q)``
hedge         ``Policy.hedge([a, b], delay=1.0)``; ``a`` is   floor: an anyio task group with one child
(not fired)   instant, so the hedge timer never fires         calling ``a.complete(q)`` and setting an event,
                                                              the host waiting on it under ``move_on_after``
race-of-3     ``Policy.race([a, s1, s2])``; ``s1``/``s2``     floor: an anyio task group with three children
              sleep forever and are cancelled                 (``a``, ``s1``, ``s2``); the first to finish
                                                              cancels the group's scope
============  ==============================================  =============================================

Every variant is timed per call with ``time.perf_counter_ns`` and the variants are
interleaved in rounds of ``--chunk`` calls (A, B, C, …, then the reverse order), so machine
noise hits them alike. Reported per loop: median and p99 (µs) of each, the time ``run()``
adds over the bare call, and the ratio of ``run()`` to its floor. For orientation the native
floors (a raw ``trio`` nursery; ``asyncio.TaskGroup``) are measured too. ``--evict-mb N``
copies N MB before every timed call (untimed) so every variant runs with cold CPU caches, as
``run()`` does after a real backend's network round trip.

Targets (issue 2): single adds ≤ 30 µs; hedge-not-fired and race-of-3 each ≤ 1.5× their
floor. The script reports them as met or not and always exits 0: it measures, it does not
assert. ``--json`` prints the figures as one JSON document instead of tables.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import importlib
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from specexec import Backend, BackendBase, Policy, Query, Response, Runtime, Usage, _engine

from ._timing import (
    LOOP_LABELS,
    Summary,
    fmt,
    loops_for,
    machine_line,
    machine_note,
    ratio,
    run_on,
    summarize_ns,
    table,
)

DEFAULT_ITERATIONS = 20_000
"""Timed calls per variant."""
DEFAULT_CHUNK = 200
"""Calls of one variant in a row before the next variant's turn."""
DEFAULT_WARMUP = 1_000
"""Untimed calls per variant before measuring (caches, histogram slices, code paths)."""

SINGLE_TARGET_US = 30.0
"""Issue 2: ``Policy.single`` adds at most this over the bare call (median, µs)."""
FLOOR_RATIO_TARGET = 1.5
"""Issue 14: hedge-not-fired and race-of-3 cost at most this times their native floor (median)."""
INCREMENT_RATIO_TARGET = 1.2
"""Issue 14: each extra race candidate costs at most this times the native floor's increment."""

HEDGE_DELAY = 1.0
"""Seconds: far beyond the instant answer, so the hedge never fires."""

Call = Callable[[], Awaitable[object]]


class Instant(BackendBase):
    """Answers at once with a prebuilt response, after one checkpoint (so it yields like a real one)."""

    def __init__(self, name: str, provider: str = "p", region: str = "r") -> None:
        super().__init__(name, provider=provider, region=region)
        self.response = Response("4", Usage(12, 1), model=self.model)

    async def complete(self, query: Query) -> Response:
        """Yield once, then return the prebuilt response."""
        await anyio.lowlevel.checkpoint()
        return self.response


class Forever(BackendBase):
    """Never answers: waits until cancelled (the losers of a race)."""

    async def complete(self, query: Query) -> Response:
        """Sleep until cancelled."""
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover


# --------------------------------------------------------------------------- the variants

RACE_SIZES = (2, 3, 4)
"""Race widths timed for the per-candidate increment (race-of-4 − race-of-2, halved)."""


def _on_anyio_driver(call: Call) -> Call:
    """``call`` with the engine forced onto its anyio driver (the reference)."""

    async def anyio_driver() -> object:
        _engine.DRIVER = "anyio"
        try:
            return await call()
        finally:
            _engine.DRIVER = "native"

    return anyio_driver


def _variants(loop: str, rt: Runtime, q: Query) -> dict[str, Call]:
    """The calls to time, by name. ``rt`` holds backends ``a``, ``b`` (instant), ``s1``…``s3`` (forever)."""
    a = rt.backends["a"]
    losers = [rt.backends[f"s{i}"] for i in (1, 2, 3)]
    single = Policy.single("a")
    hedge = Policy.hedge(["a", "b"], delay=HEDGE_DELAY)
    races = {n: Policy.race(["a", *(f"s{i}" for i in range(1, n))]) for n in RACE_SIZES}

    async def bare() -> object:
        return await a.complete(q)

    async def run_single() -> object:
        return await rt.run(q, single)

    async def run_hedge() -> object:
        return await rt.run(q, hedge)

    def run_race(n: int) -> Call:
        policy = races[n]

        async def run_race_n() -> object:
            return await rt.run(q, policy)

        return run_race_n

    variants: dict[str, Call] = {"bare": bare, "single": run_single, "hedge": run_hedge}
    variants.update({f"race{n}": run_race(n) for n in RACE_SIZES})
    variants["hedge_anyio"] = _on_anyio_driver(run_hedge)
    variants["race3_anyio"] = _on_anyio_driver(variants["race3"])
    variants.update(_anyio_floors(a, losers[:2], q))
    variants.update(_native_floors(loop, a, losers, q))
    if loop != "trio":
        variants.update(_asyncio_libraries(a, losers[:2], q))
    return variants


def _anyio_floors(a: Any, losers: list[Any], q: Query) -> dict[str, Call]:
    """The structured-concurrency floors on anyio (the anyio driver's reference)."""

    async def floor_hedge() -> object:
        # One child plus the host waiting on the child's event under a (never expiring) timer.
        done = anyio.Event()
        out: list[object] = []

        async def child() -> None:
            out.append(await a.complete(q))
            done.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(child)
            with anyio.move_on_after(HEDGE_DELAY):
                await done.wait()
        return out[0]

    async def floor_race() -> object:
        # Three children; the first to finish cancels the group (the two others never finish).
        out: list[object] = []

        async def child(backend: Any, scope: anyio.CancelScope) -> None:
            out.append(await backend.complete(q))
            scope.cancel()

        async with anyio.create_task_group() as tg:
            for backend in (a, *losers):
                tg.start_soon(child, backend, tg.cancel_scope)
        return out[0]

    return {"anyio_hedge": floor_hedge, "anyio_race3": floor_race}


def _native_floors(loop: str, a: Any, losers: list[Any], q: Query) -> dict[str, Call]:
    """The floors the target is measured against: the same hedge and races hand-written on a
    raw trio nursery / ``asyncio.TaskGroup``, with no engine at all."""
    if loop == "trio":
        import trio

        async def native_hedge() -> object:
            done = trio.Event()
            out: list[object] = []

            async def child() -> None:
                out.append(await a.complete(q))
                done.set()

            async with trio.open_nursery() as nursery:
                nursery.start_soon(child)
                with trio.move_on_after(HEDGE_DELAY):
                    await done.wait()
            return out[0]

        def native_race(backends: tuple[Any, ...]) -> Call:
            async def race() -> object:
                out: list[object] = []

                async def child(backend: Any, scope: trio.CancelScope) -> None:
                    out.append(await backend.complete(q))
                    scope.cancel()

                async with trio.open_nursery() as nursery:
                    for backend in backends:
                        nursery.start_soon(child, backend, nursery.cancel_scope)
                return out[0]

            return race

    else:

        async def native_hedge() -> object:
            done = asyncio.Event()
            out: list[object] = []

            async def child() -> None:
                out.append(await a.complete(q))
                done.set()

            async with asyncio.TaskGroup() as tg:
                tg.create_task(child())
                try:
                    async with asyncio.timeout(HEDGE_DELAY):
                        await done.wait()
                except TimeoutError:  # pragma: no cover - the child answers at once
                    pass
            return out[0]

        class _Won(Exception):
            pass

        def native_race(backends: tuple[Any, ...]) -> Call:
            async def race() -> object:
                # asyncio.TaskGroup has no cancel(): the usual idiom is raising out of a child.
                out: list[object] = []

                async def child(backend: Any) -> None:
                    out.append(await backend.complete(q))
                    raise _Won

                try:
                    async with asyncio.TaskGroup() as tg:
                        for backend in backends:
                            tg.create_task(child(backend))
                except* _Won:
                    pass
                return out[0]

            return race

    floors: dict[str, Call] = {"native_hedge": native_hedge}
    floors.update({f"native_race{n}": native_race((a, *losers[: n - 1])) for n in RACE_SIZES})
    return floors


def _asyncio_libraries(a: Any, losers: list[Any], q: Query) -> dict[str, Call]:
    """asyncio hedging without structured concurrency: a hand-written ``asyncio.wait`` hedge and
    race, and asynchedging's ``hedge()`` / ``race()`` when it is installed (``pip install asynchedging``)."""

    async def wait_hedge() -> object:
        first = asyncio.ensure_future(a.complete(q))
        done, _ = await asyncio.wait((first,), timeout=HEDGE_DELAY)
        if done:
            return first.result()
        raise AssertionError("unreachable: the instant backend answers at once")  # pragma: no cover

    async def wait_race() -> object:
        tasks = [asyncio.ensure_future(b.complete(q)) for b in (a, *losers)]
        done, pending = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        return next(iter(done)).result()

    calls: dict[str, Call] = {"wait_hedge": wait_hedge, "wait_race3": wait_race}
    try:  # optional and untyped: imported by name
        asynchedging: Any = importlib.import_module("asynchedging")
    except ImportError:
        return calls

    async def lib_hedge() -> object:
        return (await asynchedging.hedge(lambda: a.complete(q), delays_s=[HEDGE_DELAY]))[0]

    async def lib_race() -> object:
        return (await asynchedging.race([b.complete(q) for b in (a, *losers)]))[0]

    calls.update({"asynchedging_hedge": lib_hedge, "asynchedging_race3": lib_race})
    return calls


# --------------------------------------------------------------------------- measuring


async def _check(rt: Runtime, q: Query) -> None:
    """The runs do what their names say (one attempt; hedge not fired; two losers cancelled)."""
    single = await rt.run(q, Policy.single("a"))
    hedge = await rt.run(q, Policy.hedge(["a", "b"], delay=HEDGE_DELAY))
    if [x.outcome for x in single.trace.attempts] != ["accepted"]:
        raise AssertionError(f"single: {single.trace.attempts}")
    if [x.outcome for x in hedge.trace.attempts] != ["accepted"]:
        raise AssertionError(f"hedge fired: {hedge.trace.attempts}")
    for n in RACE_SIZES:
        race = await rt.run(q, Policy.race(["a", *(f"s{i}" for i in range(1, n))]))
        if [x.outcome for x in race.trace.attempts] != ["accepted"] + ["cancelled"] * (n - 1):
            raise AssertionError(f"race of {n}: {race.trace.attempts}")


def _evicter(megabytes: int) -> Callable[[], None]:
    """A function that evicts the CPU caches by copying ``megabytes`` MB (nothing when 0): what a
    real backend's network round trip does to the engine's code and data between two runs."""
    if megabytes <= 0:
        return lambda: None
    block = bytearray(megabytes * 1_000_000)

    def evict() -> None:
        bytes(block)

    return evict


async def _time(
    variants: dict[str, Call], iterations: int, chunk: int, warmup: int, evict_mb: int = 0
) -> dict[str, list[int]]:
    """Per-call nanoseconds of each variant, interleaved in rounds of ``chunk`` calls; with
    ``evict_mb``, the caches are evicted before every timed call (outside the timing)."""
    evict = _evicter(evict_mb)
    for call in variants.values():
        for _ in range(warmup):
            await call()
    names = list(variants)
    samples: dict[str, list[int]] = {name: [] for name in names}
    clock = time.perf_counter_ns
    done = 0
    round_no = 0
    gc.collect()
    while done < iterations:
        n = min(chunk, iterations - done)
        for name in names if round_no % 2 == 0 else reversed(names):
            call, out = variants[name], samples[name]
            for _ in range(n):
                evict()
                t0 = clock()
                await call()
                out.append(clock() - t0)
        done += n
        round_no += 1
    return samples


def measure(loop: str, iterations: int, chunk: int, warmup: int, evict_mb: int = 0) -> dict[str, Summary]:
    """Time every variant on ``loop`` (caches evicted before each call with ``evict_mb``); a
    summary per variant name."""

    async def main() -> dict[str, Summary]:
        backends: list[Backend] = [Instant("a"), Instant("b", provider="p2", region="r2")]
        backends += [Forever(f"s{i}") for i in (1, 2, 3)]
        q = Query(prompt="What is 2 + 2? Answer with a number only.", max_tokens=16)
        async with Runtime(backends) as rt:
            await _check(rt, q)
            samples = await _time(_variants(loop, rt, q), iterations, chunk, warmup, evict_mb)
        return {name: summarize_ns(s) for name, s in samples.items()}

    return run_on(loop, main)


# --------------------------------------------------------------------------- reporting


def _row(
    s: dict[str, Summary], scenario: str, run: str, ref: str, reference: str, target: float | None, below: bool = False
) -> dict[str, Any]:
    """One report row: ``run`` against ``ref``; met when run/ref ≤ ``target`` (``below``: run < ref)."""
    r = ratio(s[run].median_us, s[ref].median_us)
    met = (r < 1.0) if below else (None if target is None else r <= target)
    return {
        "scenario": scenario,
        "variant": run,
        "reference": reference,
        "ref": s[ref].as_dict(),
        "run": s[run].as_dict(),
        "ratio_to_ref": round(r, 2),
        "target": "< 1x (cheaper)" if below else (f"<= {target:g}x" if target is not None else "-"),
        "met": met,
    }


def increments(s: dict[str, Summary]) -> tuple[float, float]:
    """µs per extra race candidate, (run(), native floor): (race-of-4 − race-of-2) / 2, medians."""
    lo, hi = min(RACE_SIZES), max(RACE_SIZES)
    per = hi - lo
    run = (s[f"race{hi}"].median_us - s[f"race{lo}"].median_us) / per
    floor = (s[f"native_race{hi}"].median_us - s[f"native_race{lo}"].median_us) / per
    return run, floor


def scenarios(s: dict[str, Summary]) -> list[dict[str, Any]]:
    """The report rows: each run() variant, its reference, the ratio and the target (None: orientation)."""
    bare = s["bare"]
    single_added = s["single"].median_us - bare.median_us
    out: list[dict[str, Any]] = [
        {
            "scenario": "single",
            "variant": "single",
            "reference": "bare await",
            "ref": bare.as_dict(),
            "run": s["single"].as_dict(),
            "added_median_us": round(single_added, 2),
            "ratio_to_ref": round(ratio(s["single"].median_us, bare.median_us), 2),
            "target": f"added <= {SINGLE_TARGET_US:g} us",
            "met": single_added <= SINGLE_TARGET_US,
        },
        _row(s, "hedge-not-fired", "hedge", "native_hedge", "native floor", FLOOR_RATIO_TARGET),
        _row(s, "race-of-3", "race3", "native_race3", "native floor", FLOOR_RATIO_TARGET),
    ]
    run_step, floor_step = increments(s)
    step_ratio = ratio(run_step, floor_step)
    out.append(
        {
            "scenario": "per extra race candidate",
            "variant": "race4-race2",
            "reference": "native floor's increment",
            "ref": {"median_us": round(floor_step, 2)},
            "run": {"median_us": round(run_step, 2)},
            "ratio_to_ref": round(step_ratio, 2),
            "target": f"<= {INCREMENT_RATIO_TARGET:g}x",
            "met": step_ratio <= INCREMENT_RATIO_TARGET,
        }
    )
    for name, label in (("hedge", "hedge-not-fired"), ("race3", "race-of-3")):
        if f"asynchedging_{name}" in s:
            out.append(_row(s, label, name, f"asynchedging_{name}", "asynchedging", None, below=True))
        if f"wait_{name}" in s:
            out.append(_row(s, label, name, f"wait_{name}", "asyncio.wait by hand", None, below=True))
    out.append(
        _row(s, "hedge-not-fired", "hedge_anyio", "anyio_hedge", "anyio floor (anyio driver)", FLOOR_RATIO_TARGET)
    )
    out.append(_row(s, "race-of-3", "race3_anyio", "anyio_race3", "anyio floor (anyio driver)", FLOOR_RATIO_TARGET))
    out.append(_row(s, "hedge-not-fired", "hedge_anyio", "hedge", "native driver", None))
    out.append(_row(s, "race-of-3", "race3_anyio", "race3", "native driver", None))
    return out


def render(loop: str, rows: list[dict[str, Any]], iterations: int) -> str:
    """One loop's text report: the scenario table."""
    headers = ["scenario", "run()", "reference", "ref med", "run() med", "ratio", "target", "met"]
    body = [
        [
            r["scenario"],
            r["variant"],
            r["reference"],
            fmt(r["ref"]["median_us"]),
            fmt(r["run"]["median_us"]),
            f"{r['ratio_to_ref']:.2f}x",
            r["target"],
            "-" if r["met"] is None else ("yes" if r["met"] else "NO"),
        ]
        for r in rows
    ]
    driver = "a raw trio nursery" if loop == "trio" else "loop tasks and timers, supervised by hand"
    floor = "a raw trio nursery" if loop == "trio" else "asyncio.TaskGroup"
    notes = (
        f"median µs per call; ratio = run() median ÷ reference median. {iterations:,} calls per variant.\n"
        f"run() without a suffix is the native driver ({driver}; what run() picks on this loop); "
        "_anyio = the anyio driver (SPECEXEC_DRIVER=anyio). Native floor = the same hedge/race hand-written "
        f"on {floor}, no engine."
    )
    return f"## {LOOP_LABELS[loop]}\n\n{table(headers, body, left=3)}\n\n{notes}\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m specexec.bench.overhead",
        description="run() overhead over a bare backend call, next to its structured-concurrency floor.",
    )
    p.add_argument("--backend", choices=["trio", "asyncio", "both"], default="both", help="event loop (default: both)")
    p.add_argument(
        "--iterations", type=int, default=DEFAULT_ITERATIONS, help=f"timed calls per variant ({DEFAULT_ITERATIONS})"
    )
    p.add_argument("--chunk", type=int, default=DEFAULT_CHUNK, help=f"calls per variant per round ({DEFAULT_CHUNK})")
    p.add_argument(
        "--warmup",
        type=int,
        default=None,
        help=f"untimed calls per variant first (default: min({DEFAULT_WARMUP}, iterations))",
    )
    p.add_argument(
        "--evict-mb",
        type=int,
        default=0,
        help="copy this many MB before every timed call (untimed) to evict the CPU caches, as a network "
        "round trip does between two real runs (default 0: warm caches, a tight loop)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = p.parse_args(argv)
    if args.iterations < 1 or args.chunk < 1:
        p.error("--iterations and --chunk must be >= 1")
    if args.evict_mb < 0:
        p.error(f"--evict-mb must be >= 0, got {args.evict_mb}")
    if args.warmup is None:
        args.warmup = min(DEFAULT_WARMUP, args.iterations)
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the report; always 0 (it reports targets, it does not assert them)."""
    args = parse_args(argv)
    note = machine_note()
    report: dict[str, Any] = {
        "benchmark": "overhead",
        "iterations": args.iterations,
        "chunk": args.chunk,
        "evict_mb": args.evict_mb,
        "machine": note,
        "loops": {},
    }
    if not args.json:
        cold = f"; caches evicted ({args.evict_mb} MB copied) before every call" if args.evict_mb else ""
        print(f"# run() overhead — {args.iterations:,} calls per variant, rounds of {args.chunk}{cold}")
        print(f"machine: {machine_line(note)}\n", flush=True)
    for loop in loops_for(args.backend):
        summaries = measure(loop, args.iterations, args.chunk, args.warmup, args.evict_mb)
        rows = scenarios(summaries)
        report["loops"][LOOP_LABELS[loop]] = {
            "scenarios": rows,
            "variants": {k: v.as_dict() for k, v in summaries.items()},
        }
        if not args.json:
            print(render(loop, rows, args.iterations), flush=True)
    if args.json:
        print(json.dumps(report, indent=2, allow_nan=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
