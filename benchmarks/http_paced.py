"""``python -m specexec.bench.http_paced``: what loopback HTTP adds to a request at a steady rate.

One deployment of the mock fleet with a constant latency; ``run(Policy.single(...))`` through
``OpenAICompatible`` on trio, requests sent open loop at ``--rate`` per second (each in its own
task, as a service's requests arrive), streamed and not streamed. Reported per latency and mode:
p50, p90, p99 and max of the request's time minus the deployment's latency (what HTTP, the
fleet's timers and the client add), and the client's CPU per request.

At a steady rate both processes sleep between requests, so each request pays the wake-ups a
tight loop (``specexec.bench.http``) does not; this is the overhead the live tail-at-scale
figures carry. The script measures and exits 0; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from typing import Any

import trio

from specexec import Policy, Query, Runtime
from specexec.backends import HttpConfig, OpenAICompatible

from ._timing import machine_line, machine_note
from .fleet import Constant, Deployment, FleetConfig, start_fleet_process

DEPLOYMENT, MODEL = "x", "paced-model"


async def _measure(base_url: str, latency: float, streamed: bool, requests: int, rate: float) -> dict[str, float]:
    backend = OpenAICompatible(
        DEPLOYMENT, base_url=base_url, model=MODEL, http=HttpConfig(trust_env=False), stream=None if streamed else False
    )
    query, policy = Query("hello", max_tokens=16), Policy.single(DEPLOYMENT)
    added: list[float] = []
    async with Runtime([backend]) as rt:

        async def one() -> None:
            t0 = trio.current_time()
            await rt.run(query, policy)
            added.append(trio.current_time() - t0 - latency)

        for _ in range(min(20, requests)):  # open the connection, warm the caches; untimed
            await one()
        added.clear()
        cpu = time.process_time()
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            for i in range(requests):
                await trio.sleep_until(start + i / rate)
                nursery.start_soon(one)
        cpu = time.process_time() - cpu
    added.sort()

    def at(q: float) -> float:
        return added[min(int(q * len(added)), len(added) - 1)] * 1e3

    return {"p50_ms": at(0.5), "p90_ms": at(0.9), "p99_ms": at(0.99), "max_ms": added[-1] * 1e3,
            "client_cpu_us": cpu / requests * 1e6}  # fmt: skip


def measure(latencies_ms: Sequence[float], requests: int, rate: float) -> list[dict[str, Any]]:
    """Every latency × {not streamed, streamed}, each against its own fresh fleet deployment."""
    rows = []
    for latency_ms in latencies_ms:
        latency = latency_ms / 1e3
        deployment = Deployment(name=DEPLOYMENT, provider="p", region="r", model=MODEL, latency=Constant(value=latency))
        with start_fleet_process(FleetConfig(deployments=(deployment,))) as fleet:
            for streamed in (False, True):
                figures = trio.run(_measure, fleet.base_url(DEPLOYMENT), latency, streamed, requests, rate)
                rows.append({"latency_ms": latency_ms, "streamed": streamed, **figures})
    return rows


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m specexec.bench.http_paced", description=__doc__.split("\n")[0])
    p.add_argument("--latency-ms", default="0,40", help="the deployment's latencies, comma-separated (0,40)")
    p.add_argument("--requests", type=int, default=1000, help="timed requests per latency and mode (1000)")
    p.add_argument("--rate", type=float, default=100.0, help="requests per second (100)")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = p.parse_args(argv)
    if args.requests < 1 or not args.rate > 0:
        p.error("--requests must be >= 1 and --rate > 0")
    try:
        args.latencies = [float(x) for x in args.latency_ms.split(",")]
    except ValueError:
        p.error(f"--latency-ms takes numbers separated by commas, got {args.latency_ms!r}")
    if any(x < 0 for x in args.latencies):
        p.error("--latency-ms values must be >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    rows = measure(args.latencies, args.requests, args.rate)
    note = machine_note()
    if args.json:
        print(json.dumps({"benchmark": "http_paced", "rate": args.rate, "requests": args.requests,
                          "machine": note, "rows": rows}, indent=2))  # fmt: skip
        return 0
    print(f"# what HTTP adds at {args.rate:g} req/s — {args.requests:,} requests per row, trio client")
    print(f"machine: {machine_line(note)}\n")
    print("| latency ms | streamed | added p50 ms | p90 | p99 | max | client CPU µs/req |")
    print("|---:|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['latency_ms']:g} | {'yes' if r['streamed'] else 'no'} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['max_ms']:.2f} | {r['client_cpu_us']:,.0f} |"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
