"""Cost of a shared budget: ``reserve`` + ``settle`` on ``RedisBudgetStore`` (a real redis-server on
loopback) next to the in-process store, on trio and on asyncio + uvloop, measured side by side.

    python -m specexec.bench.redis_store [--calls 2000]

Prints the median µs per reserve+settle pair for each store and loop, and the ratio.
"""

from __future__ import annotations

import argparse
import statistics
import time

import anyio

from specexec.bench.redis_server import RedisServer
from specexec.routing import InMemoryBudgetStore
from specexec.stores import RedisBudgetStore


async def pairs(store: object, calls: int) -> float:
    times = []
    for _ in range(calls):
        t = time.perf_counter()
        await store.reserve("bench", 1, 0.001, 1e9)  # type: ignore[attr-defined]
        await store.settle("bench", 1, 0.001, 0.0005)  # type: ignore[attr-defined]
        times.append(time.perf_counter() - t)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    args = parser.parse_args()
    calls = max(10, min(args.calls, 100_000))
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
    finally:
        server.stop()


if __name__ == "__main__":
    main()
