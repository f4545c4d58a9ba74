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
floors (a raw ``trio`` nursery; ``asyncio.TaskGroup``) are measured too.

Targets (issue 2): single adds ≤ 30 µs; hedge-not-fired and race-of-3 each ≤ 1.5× their
floor. The script reports them as met or not and always exits 0: it measures, it does not
assert. ``--json`` prints the figures as one JSON document instead of tables.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import anyio
import anyio.lowlevel

from specexec import Backend, BackendBase, Policy, Query, Response, Runtime, Usage

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
"""Issue 2: hedge-not-fired and race-of-3 cost at most this times their floor (median)."""

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


def _variants(loop: str, rt: Runtime, q: Query) -> dict[str, Call]:
    """The calls to time, by name. ``rt`` holds backends ``a``, ``b`` (instant), ``s1``, ``s2`` (forever)."""
    a = rt.backends["a"]
    s1, s2 = rt.backends["s1"], rt.backends["s2"]
    single = Policy.single("a")
    hedge = Policy.hedge(["a", "b"], delay=HEDGE_DELAY)
    race = Policy.race(["a", "s1", "s2"])

    async def bare() -> object:
        return await a.complete(q)

    async def run_single() -> object:
        return await rt.run(q, single)

    async def run_hedge() -> object:
        return await rt.run(q, hedge)

    async def run_race() -> object:
        return await rt.run(q, race)

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
            for backend in (a, s1, s2):
                tg.start_soon(child, backend, tg.cancel_scope)
        return out[0]

    variants: dict[str, Call] = {
        "bare": bare,
        "single": run_single,
        "floor_hedge": floor_hedge,
        "hedge": run_hedge,
        "floor_race": floor_race,
        "race": run_race,
    }
    variants.update(_native_floors(loop, a, s1, s2, q))
    return variants


def _native_floors(loop: str, a: Any, s1: Any, s2: Any, q: Query) -> dict[str, Call]:
    """The same two floors without anyio (a raw trio nursery / ``asyncio.TaskGroup``): for orientation."""
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

        async def native_race() -> object:
            out: list[object] = []

            async def child(backend: Any, scope: trio.CancelScope) -> None:
                out.append(await backend.complete(q))
                scope.cancel()

            async with trio.open_nursery() as nursery:
                for backend in (a, s1, s2):
                    nursery.start_soon(child, backend, nursery.cancel_scope)
            return out[0]

        return {"native_hedge": native_hedge, "native_race": native_race}

    async def asyncio_hedge() -> object:
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

    async def asyncio_race() -> object:
        # asyncio.TaskGroup has no cancel(): the usual idiom is raising out of a child.
        out: list[object] = []

        async def child(backend: Any) -> None:
            out.append(await backend.complete(q))
            raise _Won

        try:
            async with asyncio.TaskGroup() as tg:
                for backend in (a, s1, s2):
                    tg.create_task(child(backend))
        except* _Won:
            pass
        return out[0]

    return {"native_hedge": asyncio_hedge, "native_race": asyncio_race}


# --------------------------------------------------------------------------- measuring


async def _check(rt: Runtime, q: Query) -> None:
    """The runs do what their names say (one attempt; hedge not fired; two losers cancelled)."""
    single = await rt.run(q, Policy.single("a"))
    hedge = await rt.run(q, Policy.hedge(["a", "b"], delay=HEDGE_DELAY))
    race = await rt.run(q, Policy.race(["a", "s1", "s2"]))
    if [x.outcome for x in single.trace.attempts] != ["accepted"]:
        raise AssertionError(f"single: {single.trace.attempts}")
    if [x.outcome for x in hedge.trace.attempts] != ["accepted"]:
        raise AssertionError(f"hedge fired: {hedge.trace.attempts}")
    if [x.outcome for x in race.trace.attempts] != ["accepted", "cancelled", "cancelled"]:
        raise AssertionError(f"race: {race.trace.attempts}")


async def _time(variants: dict[str, Call], iterations: int, chunk: int, warmup: int) -> dict[str, list[int]]:
    """Per-call nanoseconds of each variant, interleaved in rounds of ``chunk`` calls."""
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
                t0 = clock()
                await call()
                out.append(clock() - t0)
        done += n
        round_no += 1
    return samples


def measure(loop: str, iterations: int, chunk: int, warmup: int) -> dict[str, Summary]:
    """Time every variant on ``loop``; returns a summary per variant name."""

    async def main() -> dict[str, Summary]:
        backends: list[Backend] = [Instant("a"), Instant("b", provider="p2", region="r2"), Forever("s1"), Forever("s2")]
        q = Query(prompt="What is 2 + 2? Answer with a number only.", max_tokens=16)
        async with Runtime(backends) as rt:
            await _check(rt, q)
            samples = await _time(_variants(loop, rt, q), iterations, chunk, warmup)
        return {name: summarize_ns(s) for name, s in samples.items()}

    return run_on(loop, main)


# --------------------------------------------------------------------------- reporting


def scenarios(s: dict[str, Summary]) -> list[dict[str, Any]]:
    """The three scenarios from the variant summaries: reference, run(), added time, ratio, target."""
    bare = s["bare"]
    out: list[dict[str, Any]] = []
    single_added = s["single"].median_us - bare.median_us
    out.append(
        {
            "scenario": "single",
            "reference": "bare await",
            "ref": s["bare"].as_dict(),
            "run": s["single"].as_dict(),
            "added_median_us": round(single_added, 2),
            "added_p99_us": round(s["single"].p99_us - bare.p99_us, 2),
            "ratio_to_ref": round(ratio(s["single"].median_us, bare.median_us), 2),
            "target": f"added <= {SINGLE_TARGET_US:g} us",
            "met": single_added <= SINGLE_TARGET_US,
        }
    )
    for name, floor in (("hedge", "floor_hedge"), ("race", "floor_race")):
        r = ratio(s[name].median_us, s[floor].median_us)
        out.append(
            {
                "scenario": "hedge-not-fired" if name == "hedge" else "race-of-3",
                "reference": "anyio task group floor",
                "ref": s[floor].as_dict(),
                "run": s[name].as_dict(),
                "added_median_us": round(s[name].median_us - bare.median_us, 2),
                "added_p99_us": round(s[name].p99_us - bare.p99_us, 2),
                "over_floor_median_us": round(s[name].median_us - s[floor].median_us, 2),
                "ratio_to_ref": round(r, 2),
                "ratio_p99_to_ref": round(ratio(s[name].p99_us, s[floor].p99_us), 2),
                "native_floor": s["native_" + name].as_dict(),
                "target": f"<= {FLOOR_RATIO_TARGET:g}x floor",
                "met": r <= FLOOR_RATIO_TARGET,
            }
        )
    return out


def render(loop: str, rows: list[dict[str, Any]], iterations: int) -> str:
    """One loop's text report: the scenario table."""
    headers = [
        "scenario",
        "reference",
        "ref med",
        "ref p99",
        "run() med",
        "run() p99",
        "added med",
        "added p99",
        "run/ref",
        "target",
        "met",
    ]
    body = [
        [
            r["scenario"],
            r["reference"],
            fmt(r["ref"]["median_us"]),
            fmt(r["ref"]["p99_us"]),
            fmt(r["run"]["median_us"]),
            fmt(r["run"]["p99_us"]),
            fmt(r["added_median_us"]),
            fmt(r["added_p99_us"]),
            f"{r['ratio_to_ref']:.2f}x",
            r["target"],
            "yes" if r["met"] else "NO",
        ]
        for r in rows
    ]
    native = {r["scenario"]: r["native_floor"]["median_us"] for r in rows if "native_floor" in r}
    native_name = "raw trio nursery" if loop == "trio" else "asyncio.TaskGroup"
    notes = (
        f"added = run() − bare await (µs); run/ref = run() median ÷ reference median. "
        f"{iterations:,} calls per variant.\n"
        f"native floors ({native_name}), median µs: " + ", ".join(f"{k} {fmt(v)}" for k, v in native.items())
    )
    return f"## {LOOP_LABELS[loop]}\n\n{table(headers, body, left=2)}\n\n{notes}\n"


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
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = p.parse_args(argv)
    if args.iterations < 1 or args.chunk < 1:
        p.error("--iterations and --chunk must be >= 1")
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
        "machine": note,
        "loops": {},
    }
    if not args.json:
        print(f"# run() overhead — {args.iterations:,} calls per variant, rounds of {args.chunk}")
        print(f"machine: {machine_line(note)}\n", flush=True)
    for loop in loops_for(args.backend):
        summaries = measure(loop, args.iterations, args.chunk, args.warmup)
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
