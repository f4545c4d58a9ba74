"""Cost of shared state on Redis (a real redis-server on loopback), next to the in-process
defaults, on trio and on asyncio + uvloop, measured side by side:

- a shared budget: ``reserve`` + ``settle`` on ``RedisBudgetStore`` vs the in-process store;
- ``run()`` (``Policy.single`` on a ``CallableBackend``) in a runtime without shared state, with
  ``RedisRateLimits`` (limits only: the in-process breakers) and with
  ``RedisRateLimits(breakers=True)`` (shared breakers), the sync task running in the background;
- one sync of the shared breakers (one Lua script for all of a process's breakers).

    python -m specexec.bench.redis_store [--calls 2000] [--runs 3000]

Prints medians in µs and the ratios.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import anyio

import specexec
from specexec.bench.redis_server import RedisServer
from specexec.routing import InMemoryBudgetStore
from specexec.stores import RedisBudgetStore, RedisRateLimits

_ROUNDS = 5  # the variants of run() alternate in rounds, so the machine's noise falls on all of them
_BACKENDS = 10  # backends of the breaker sync measurement


async def pairs(store: object, calls: int) -> float:
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        await store.reserve("bench", 1, 0.001, 1e9)  # type: ignore[attr-defined]
        await store.settle("bench", 1, 0.001, 0.0005)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


async def _answer(query: specexec.Query) -> str:
    return "ok"


async def runs(url: str, total: int) -> dict[str, float]:
    """Median µs per ``run()`` for each variant (see the module docstring), and per breaker sync."""
    policy = specexec.Policy.single("b")
    variants: dict[str, RedisRateLimits | None] = {
        "in-process": None,
        "limits": RedisRateLimits(url),
        "limits+breakers": RedisRateLimits(url, breakers=True),
    }
    times: dict[str, list[float]] = {name: [] for name in variants}
    per_round = max(1, total // _ROUNDS)
    try:
        async with contextlib.AsyncExitStack() as stack:
            runtimes = {
                name: await stack.enter_async_context(
                    specexec.Runtime([specexec.CallableBackend("b", _answer)], shared_limits=shared)
                )
                for name, shared in variants.items()
            }
            for rt in runtimes.values():
                for _ in range(100):  # warm up
                    await rt.run("q", policy)
            for _ in range(_ROUNDS):
                for name, rt in runtimes.items():
                    for _ in range(per_round):
                        t = time.perf_counter()
                        await rt.run("q", policy)
                        times[name].append(time.perf_counter() - t)
        out = {name: statistics.median(ts) * 1e6 for name, ts in times.items()}
        out["sync"] = await breaker_sync(url, max(10, total // 20))
        return out
    finally:
        for shared in variants.values():
            if shared is not None:
                await shared.aclose()


async def breaker_sync(url: str, calls: int) -> float:
    """Median µs of one sync of ``_BACKENDS`` shared breakers (nothing else to sync)."""
    shared = RedisRateLimits(url, breakers=True)
    config = specexec.BreakerConfig()
    for i in range(_BACKENDS):
        shared.breaker(f"bench{i}", config)
    try:
        await shared.sync()
        times = []
        for _ in range(calls):
            t = time.perf_counter()
            await shared.sync()
            times.append(time.perf_counter() - t)
        return statistics.median(times) * 1e6
    finally:
        await shared.aclose()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3000, help="run() calls per variant (0: skip)")
    args = parser.parse_args(argv)
    calls = max(10, min(args.calls, 100_000))
    total = max(0, min(args.runs, 100_000))
    server = RedisServer()
    server.start()
    try:
        print(f"{'loop':<16}{'in-process µs':>15}{'Redis µs':>12}{'ratio':>9}")
        for loop, options in (("trio", {}), ("asyncio+uvloop", {"use_uvloop": True})):
            backend = "trio" if loop == "trio" else "asyncio"

            async def both() -> tuple[float, float]:
                local = await pairs(InMemoryBudgetStore(), calls)
                redis = RedisBudgetStore(server.url)
                try:
                    await pairs(redis, 50)  # connect and warm up
                    shared = await pairs(redis, calls)
                finally:
                    await redis.aclose()
                return local, shared

            local, shared = anyio.run(both, backend=backend, backend_options=options)
            print(f"{loop:<16}{local:>15.1f}{shared:>12.1f}{shared / local:>8.0f}×")
        if total:
            print(f"\nrun() µs (median of {total}):")
            head = f"{'loop':<16}{'in-process':>12}{'limits':>10}{'+breakers':>11}{'ratio':>8}"
            print(f"{head}{f'sync of {_BACKENDS} breakers':>24}")
            for loop, options in (("trio", {}), ("asyncio+uvloop", {"use_uvloop": True})):
                backend = "trio" if loop == "trio" else "asyncio"
                m = anyio.run(runs, server.url, total, backend=backend, backend_options=options)
                ratio = m["limits+breakers"] / m["limits"]
                print(
                    f"{loop:<16}{m['in-process']:>12.1f}{m['limits']:>10.1f}{m['limits+breakers']:>11.1f}"
                    f"{ratio:>7.2f}×{m['sync']:>24.0f}"
                )
    finally:
        server.stop()


if __name__ == "__main__":
    main()
