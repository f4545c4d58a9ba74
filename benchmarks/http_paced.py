"""``python -m specexec.bench.http_paced``: what loopback HTTP adds to a request at a steady rate.

One deployment of the mock fleet with a constant latency; ``run(Policy.single(...))`` through
``OpenAICompatible`` on trio, requests sent open loop at ``--rate`` per second (each in its own
task, as a service's requests arrive), streamed and not streamed. Reported per latency and mode:
p50, p90, p99 and max of the request's time minus the deployment's latency (what HTTP, the
fleet's timers and the client add), and the client's CPU per request. Beside it, sent
alternately at the same rate, the same request (bytes, headers, URL) on a bare
``httpx.AsyncClient``: what specexec itself adds at a steady rate is the difference.

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

import httpx
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
    body = backend._encode(query, streamed)  # the bytes, headers and URL the backend sends
    accept = "text/event-stream" if streamed else "application/json"
    headers = {**backend._headers(None), "accept": accept}
    added: dict[str, list[float]] = {"specexec": [], "raw": []}
    async with Runtime([backend]) as rt, httpx.AsyncClient(trust_env=False) as client:

        async def via_specexec() -> None:
            await rt.run(query, policy)

        async def raw() -> None:  # bare httpx: the same request, the whole body read, status checked
            async with client.stream("POST", backend._url, content=body, headers=headers) as response:
                async for _ in response.aiter_raw():
                    pass
            if response.status_code != 200:
                raise RuntimeError(f"HTTP {response.status_code}")

        calls = {"specexec": via_specexec, "raw": raw}

        async def one(name: str) -> None:
            t0 = trio.current_time()
            await calls[name]()
            added[name].append(trio.current_time() - t0 - latency)

        for _ in range(min(20, requests)):  # open the connections, warm the caches; untimed
            await one("specexec")
            await one("raw")
        for values in added.values():
            values.clear()
        cpu = time.process_time()
        async with trio.open_nursery() as nursery:
            start = trio.current_time()
            for i in range(2 * requests):  # alternating, so both see the same machine
                await trio.sleep_until(start + i / rate)
                nursery.start_soon(one, "specexec" if i % 2 == 0 else "raw")
        cpu = time.process_time() - cpu

    def at(values: list[float], q: float) -> float:
        return values[min(int(q * len(values)), len(values) - 1)] * 1e3

    spx, bare = sorted(added["specexec"]), sorted(added["raw"])
    return {"p50_ms": at(spx, 0.5), "p90_ms": at(spx, 0.9), "p99_ms": at(spx, 0.99), "max_ms": spx[-1] * 1e3,
            "raw_p50_ms": at(bare, 0.5), "raw_p90_ms": at(bare, 0.9), "raw_p99_ms": at(bare, 0.99),
            "client_cpu_us": cpu / (2 * requests) * 1e6}  # fmt: skip


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
    print(
        "| latency ms | streamed | added p50 ms | p90 | p99 | max | raw httpx p50 / p90 / p99 "
        "| specexec − raw p50 / p90 | client CPU µs/req |"
    )
    print("|---:|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['latency_ms']:g} | {'yes' if r['streamed'] else 'no'} | {r['p50_ms']:.2f} | {r['p90_ms']:.2f} "
            f"| {r['p99_ms']:.2f} | {r['max_ms']:.2f} | {r['raw_p50_ms']:.2f} / {r['raw_p90_ms']:.2f} / "
            f"{r['raw_p99_ms']:.2f} | {r['p50_ms'] - r['raw_p50_ms']:+.2f} / {r['p90_ms'] - r['raw_p90_ms']:+.2f} "
            f"| {r['client_cpu_us']:,.0f} |"
        )
    print(
        "\nadded = the request's time minus the deployment's latency; raw httpx = the same request (bytes, "
        "headers, URL) on a bare httpx.AsyncClient, sent alternately with run() at the same rate; "
        "client CPU = both variants' CPU per request."
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
