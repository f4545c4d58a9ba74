"""``python -m specexec.bench.time_wait``: do cancelled race losers exhaust the local port range?

A cancelled attempt closes its HTTP response, so its connection is dropped (the client
closes first) and its socket waits in TIME-WAIT (60 s on Linux) holding its local port.
This runs ``Policy.race`` over three OpenAI-compatible deployments of ONE loopback fleet
host (TTFTs 5, 30 and 30 ms: every run cancels two losers) at ``--rate`` runs per second
for ``--duration`` seconds (open loop, bounded: ``rate × duration`` runs in all, at most
``--max-in-flight`` at once), and samples once a second the client-side TIME-WAIT sockets
to the fleet's port (``ss -Htan state time-wait dport = :PORT``), all TIME-WAIT sockets,
and ``/proc/sys/net/ipv4/ip_local_port_range`` / ``tcp_tw_reuse``. Loopback only.

It prints one JSON line per sample and a summary; it reports, it does not assert.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import time
from typing import Any

import anyio

from specexec import Policy, Query, Runtime
from specexec.backends import OpenAICompatible

from .fleet import Constant, Deployment, FleetConfig, start_fleet_process

_TTFTS = {"w": 0.005, "l1": 0.030, "l2": 0.030}


def fleet_config() -> FleetConfig:
    """Three deployments on one host: one fast winner, two slower losers."""
    return FleetConfig(
        deployments=tuple(
            Deployment(
                name=name,
                provider="tw",
                region="loop",
                model="tw-model",
                latency=Constant(value=ttft),
                per_token=0.0,
                output_tokens=2,
            )
            for name, ttft in _TTFTS.items()
        )
    ).validated()


def _read(path: str) -> str:
    try:
        with open(path, encoding="ascii") as f:
            return f.read().strip()
    except OSError:
        return "?"


def _count(*filters: str) -> int:
    """TIME-WAIT sockets matching ``filters`` (``ss`` syntax); -1 where ``ss`` is missing."""
    try:
        out = subprocess.run(
            ["ss", "-Htan", "state", "time-wait", *filters], capture_output=True, text=True, check=False
        ).stdout
    except FileNotFoundError:
        return -1
    return sum(1 for line in out.splitlines() if line.strip())


async def _main(rate: float, duration: float, max_in_flight: int, stream: bool) -> dict[str, Any]:
    low, high = (int(x) for x in _read("/proc/sys/net/ipv4/ip_local_port_range").split())
    with start_fleet_process(fleet_config()) as fleet:
        backends = [
            OpenAICompatible(name, base_url=fleet.base_url(name), model="tw-model", stream=stream) for name in _TTFTS
        ]
        policy = Policy.race(list(_TTFTS))
        query = Query("hi", max_tokens=2)
        runs = int(rate * duration)
        done = errors = 0
        samples: list[dict[str, Any]] = []
        limiter = anyio.Semaphore(max_in_flight)
        async with Runtime(backends) as rt:

            async def one() -> None:
                nonlocal done, errors
                try:
                    await rt.run(query, policy)
                    done += 1
                except Exception:
                    errors += 1
                finally:
                    limiter.release()

            async def sampler(t0: float) -> None:
                while True:
                    samples.append(
                        {
                            "t": round(time.monotonic() - t0, 1),
                            "runs": done,
                            "errors": errors,
                            "tw_to_fleet": _count(f"dport = :{fleet.port}"),
                            "tw_all": _count(),
                        }
                    )
                    print(json.dumps(samples[-1]), flush=True)
                    await anyio.sleep(1.0)

            t0 = time.monotonic()
            async with anyio.create_task_group() as tg:
                tg.start_soon(sampler, t0)
                async with anyio.create_task_group() as load:
                    for i in range(runs):
                        delay = t0 + i / rate - time.monotonic()
                        if delay > 0:
                            await anyio.sleep(delay)
                        await limiter.acquire()
                        load.start_soon(one)
                tg.cancel_scope.cancel()
        stats = fleet.stats()
    peak = max(s["tw_to_fleet"] for s in samples)
    return {
        "rate": rate,
        "duration": duration,
        "stream": stream,
        "runs": done,
        "errors": errors,
        "disconnected_at_fleet": sum(d["disconnected"] for d in stats["deployments"].values()),
        "peak_time_wait_to_fleet": peak,
        "port_range": [low, high],
        "ports": high - low + 1,
        "peak_share_of_range": round(peak / (high - low + 1), 3),
        "tcp_tw_reuse": _read("/proc/sys/net/ipv4/tcp_tw_reuse"),
    }


def main(argv: list[str] | None = None) -> None:
    """Parse the options, run the measurement, print the summary as JSON."""
    p = argparse.ArgumentParser(prog="python -m specexec.bench.time_wait", description=__doc__.split("\n")[0])
    p.add_argument("--rate", type=float, default=100.0, help="races started per second (default 100)")
    p.add_argument("--duration", type=float, default=60.0, help="seconds of load (default 60)")
    p.add_argument("--max-in-flight", type=int, default=200, help="races in flight at most (default 200)")
    p.add_argument("--stream", action="store_true", help="stream the answers (SSE)")
    args = p.parse_args(argv)
    summary = anyio.run(_main, args.rate, args.duration, args.max_in_flight, args.stream, backend="trio")
    print(json.dumps({"summary": summary}), flush=True)


if __name__ == "__main__":
    main()
