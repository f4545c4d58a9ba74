"""``python -m specexec.bench.memory``: what a backend's health costs in memory, and building a big ``Runtime``.

Per-backend memory is measured with ``tracemalloc`` (bytes traced and still alive, after a
``gc.collect()``, divided by the backends measured) in four states:

=================  ==========================================================================
state              what was done to every measured backend
=================  ==========================================================================
idle               registered in a ``Runtime``, nothing run
after 1 run        one ``Policy.single`` run
after streaming    one streamed run (``rt.stream``: a TTFT sample too)
after 10 k runs    10,000 hedged runs spread over the backends (``Policy.hedge`` of pairs,
                   fixed delay, so the losers leave censored samples), over ≈ 30 minutes of
                   virtual time: every slice of the 60 s window has been filled and rotated out
                   many times
=================  ==========================================================================

The runs go through ``SimulatedBackend`` (seeded log-normal latency) on trio in virtual time
(``MockClock``), so they take CPU time only. Next to each figure: the HDR histograms the
backend's windows hold (``LatencyWindow.held_histograms``), and what the eager windows of
before issue 14 §3 held in that state, modelled in the same run: the measured state plus the
histograms they allocated up front and the lazy ones do not (2 × slices × 3 windows per
backend, each of the measured size of one histogram). Run the script on an older tree for the
real figures of before.

Build time: ``Runtime(backends)`` of ``--backends`` backends (1,000), median of ``--builds``
builds, without ``tracemalloc``. Targets (issue 14 §3): ≤ 100 KiB per idle backend, ≤ 0.1 s
to build 1,000. The script reports them as met or not and always exits 0.
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import time
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import trio
import trio.testing
from hdrh.histogram import HdrHistogram

from specexec import LogNormal, Policy, Runtime, SimulatedBackend
from specexec._health import BackendHealth, HealthConfig, _latency

from ._timing import machine_line, machine_note, table

IDLE_TARGET_KIB = 100.0
BUILD_TARGET_S = 0.1
WINDOWS = 3  # latency, probe latency, TTFT
KIB = 1024.0


def _traced(action: Callable[[], object]) -> tuple[int, object]:
    """Bytes traced and still alive after ``action()``, and what it returned (kept alive meanwhile)."""
    gc.collect()
    before = tracemalloc.get_traced_memory()[0]
    kept = action()
    gc.collect()
    return tracemalloc.get_traced_memory()[0] - before, kept


def histogram_bytes(word_size: int) -> int:
    """What one latency histogram (1 µs–1 h, 2 significant figures, counts of ``word_size`` bytes) takes."""
    tracemalloc.start()
    try:
        size, kept = _traced(lambda: [HdrHistogram(1, 3_600_000_000, 2, word_size=word_size) for _ in range(20)])
    finally:
        tracemalloc.stop()
    del kept
    return size // 20


def held(health: BackendHealth) -> int:
    """HDR histograms held by a backend's windows (on an older tree, whose windows cannot say,
    the histograms in their slice lists: this script also measures the eager windows of before)."""

    def of(window: Any) -> int:
        count = getattr(window, "held_histograms", None)
        if count is None:
            count = sum(isinstance(h, HdrHistogram) for h in window._observed + window._censored)
        return int(count)

    return sum(of(w) for w in (health.latency, health.probe_latency, health.ttft))


def _backends(n: int, prefix: str, streaming: bool = False) -> list[SimulatedBackend]:
    return [
        SimulatedBackend(
            f"{prefix}{i}",
            latency=LogNormal(0.08, 0.4),
            ttft=LogNormal(0.03, 0.3) if streaming else None,
            token_time=0.002,
            seed=i,
        )
        for i in range(n)
    ]


def measure_states(backends: int, runs: int, health: HealthConfig) -> list[dict[str, Any]]:
    """Per-backend memory and histograms held, in each state (see the module docstring)."""
    states: list[dict[str, Any]] = []

    def note(state: str, size: int, rt: Runtime, measured: int) -> None:
        healths = [rt.health(name) for name in rt.backends]
        states.append(
            {
                "state": state,
                "backends": measured,
                "bytes_per_backend": size / measured,
                "histograms_per_backend": sum(map(held, healths)) / measured,
            }
        )

    async def phase(state: str, made: list[SimulatedBackend], work: Callable[[Runtime], Any] | None) -> None:
        """Build a runtime of ``made`` (idle memory), do ``work`` in it, note the memory after."""
        gc.collect()  # the previous phase's runtime is gone before this one is measured
        idle, kept = _traced(lambda: Runtime(made, health=health))
        assert isinstance(kept, Runtime)
        rt = kept
        if work is None:
            note(state, idle, rt, len(made))
            return
        async with rt:
            gc.collect()
            before = tracemalloc.get_traced_memory()[0]
            await work(rt)
            gc.collect()
            note(state, tracemalloc.get_traced_memory()[0] - before + idle, rt, len(made))

    async def one_run_each(rt: Runtime) -> None:
        for b in rt.backends.values():
            await rt.run("q", Policy.single(b))

    async def one_stream_each(rt: Runtime) -> None:
        for b in rt.backends.values():
            async with rt.stream("q", Policy.single(b)) as stream:
                async for _ in stream:
                    pass

    async def hedged(rt: Runtime) -> None:
        busy = list(rt.backends.values())
        pairs = [Policy.hedge([busy[i], busy[(i + 1) % len(busy)]], delay=0.1, budget=None) for i in range(len(busy))]
        for i in range(runs):
            await rt.run("q", pairs[i % len(pairs)])
            await trio.sleep(0.1)  # ≈ 30 minutes of virtual time over 10 k runs

    async def main() -> None:
        await phase("idle", _backends(backends, "i"), None)
        await phase("after 1 run", _backends(backends, "b"), one_run_each)
        await phase("after streaming", _backends(backends, "s", streaming=True), one_stream_each)
        await phase(f"after {runs:,} runs", _backends(min(backends, 10), "h"), hedged)

    tracemalloc.start()
    try:
        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    finally:
        tracemalloc.stop()
    return states


def build_seconds(backends: int, builds: int, health: HealthConfig) -> list[float]:
    """Seconds to build ``Runtime(backends)``, once per build (no tracemalloc)."""
    made = _backends(backends, "r")
    times = []
    for _ in range(builds):
        gc.collect()
        start = time.perf_counter()
        rt = Runtime(made, health=health)
        times.append(time.perf_counter() - start)
        del rt
    return times


def report(args: argparse.Namespace) -> dict[str, Any]:
    """Measure everything; the figures as plain data."""
    health = HealthConfig()
    eager_bytes, lazy_bytes = histogram_bytes(8), histogram_bytes(getattr(_latency, "WORD_SIZE", 8))
    eager_histograms = 2 * health.slices * WINDOWS
    states = measure_states(args.backends, args.runs, health)
    for s in states:  # the lazy windows' histograms swapped for all of the eager ones (8-byte counts)
        lazy = s["histograms_per_backend"] * lazy_bytes
        s["eager_bytes_per_backend"] = s["bytes_per_backend"] - lazy + eager_histograms * eager_bytes
    builds = build_seconds(args.backends, args.builds, health)
    build = statistics.median(builds)
    idle_kib = states[0]["bytes_per_backend"] / KIB
    return {
        "benchmark": "memory",
        "backends": args.backends,
        "runs": args.runs,
        "machine": machine_note(),
        "histogram_bytes": lazy_bytes,
        "eager_histogram_bytes": eager_bytes,
        "eager_histograms_per_backend": eager_histograms,
        "states": states,
        "build": {
            "backends": args.backends,
            "median_s": build,
            "builds_s": builds,
        },
        "targets": {
            "idle_kib": {"target": IDLE_TARGET_KIB, "measured": idle_kib, "met": idle_kib <= IDLE_TARGET_KIB},
            "build_s": {
                "target": BUILD_TARGET_S,
                "measured": build,
                "met": args.backends < 1000 or build <= BUILD_TARGET_S,
            },
        },
    }


def render(doc: dict[str, Any]) -> str:
    """The text report."""
    rows = [
        [
            s["state"],
            str(s["backends"]),
            f"{s['bytes_per_backend'] / KIB:,.1f}",
            f"{s['histograms_per_backend']:.1f}",
            f"{s['eager_bytes_per_backend'] / KIB:,.1f}",
            f"{doc['eager_histograms_per_backend']}",
        ]
        for s in doc["states"]
    ]
    headers = ["state", "backends", "KiB/backend", "histograms", "eager KiB (model)", "eager histograms"]
    b, t = doc["build"], doc["targets"]
    lines = [
        "# health memory per backend",
        f"machine: {machine_line(doc['machine'])}",
        "",
        table(headers, rows),
        "",
        f"one histogram (1 µs–1 h, 2 significant figures): {doc['histogram_bytes'] / KIB:.1f} KiB "
        f"(eager, 8-byte counts: {doc['eager_histogram_bytes'] / KIB:.1f} KiB)",
        f"build Runtime of {b['backends']:,} backends: median {b['median_s'] * 1000:.1f} ms "
        "(for before, run this script on an older tree: allocation alone does not model the GC cost)",
        f"targets: idle ≤ {t['idle_kib']['target']:g} KiB/backend: {t['idle_kib']['measured']:.1f} "
        f"({'met' if t['idle_kib']['met'] else 'NOT met'}); build ≤ {t['build_s']['target']:g} s: "
        f"{t['build_s']['measured']:.3f} s ({'met' if t['build_s']['met'] else 'NOT met'})",
    ]
    return "\n".join(lines) + "\n"


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m specexec.bench.memory",
        description="Per-backend health memory (idle, after runs, after streaming) and Runtime build time.",
    )
    p.add_argument("--backends", type=int, default=1000, help="backends measured and built (1000)")
    p.add_argument("--runs", type=int, default=10_000, help="hedged runs for the busy state (10000)")
    p.add_argument("--builds", type=int, default=5, help="Runtime builds timed (5)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = p.parse_args(argv)
    if args.backends < 2 or args.runs < 1 or args.builds < 1:
        p.error("need --backends >= 2, --runs >= 1, --builds >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Measure and print; always 0 (it reports targets, it does not assert them)."""
    args = parse_args(argv)
    doc = report(args)
    print(json.dumps(doc, indent=2) + "\n" if args.json else render(doc), end="")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
