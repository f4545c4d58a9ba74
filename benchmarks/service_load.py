"""``python -m specexec.bench.service_load``: a bounded load test of the service examples.

The loopback fleet (``services.example_fleet_config``: TTFT 5 ms / 10 ms, 12 tokens at 0.5 ms)
runs in a subprocess; each target is its own process, started as the tests start it
(``services.start_service``) with the example's TOML pointed at the fleet (rate limits lifted
so that they are not what is measured):

- **baseline**: no service — the load generator calls the fleet's ``alpha-us`` directly
  (``POST /alpha-us/v1/chat/completions``), the floor of a request on this machine;
- **fastapi**: ``examples/fastapi_service`` on uvicorn + uvloop, ``POST /v1/chat`` (a hedge
  policy through the router: reservation in the tenant budget, hedge timer, metrics sink);
- **trio**: the same app on hypercorn's trio worker (``examples/trio_service.py``).

With ``--stream`` the services' ``/v1/chat/stream`` (server-sent events) is loaded too. The load
generator (this process, asyncio + uvloop, one ``httpx.AsyncClient``) sends exactly
``--requests`` requests with ``--concurrency`` in flight, after ``--warmup`` unmeasured ones, and
gives up after ``--timeout`` seconds: every loop is bounded. Reported per target: answered
(HTTP 200) of sent, requests/s (answered ÷ wall time), p50 and p99 latency, CPU time per request
of the service process (user + system, from psutil, else ``/proc``), of the fleet and of the load
generator, and upstream requests per answer (hedges add some).

The machine is shared and has 2 cores for the generator, the service and the fleet, so the
figures are the service's CPU cost per request under contention more than its ceiling. The
script reports, it does not assert: it exits 0 whatever the figures (1 if a target fails to start).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import anyio
import httpx

from ._timing import fmt, machine_line, machine_note, percentile, run_on, table
from .fleet import FleetProcess, start_fleet_process
from .services import KINDS, Kind, ServiceStartError, example_fleet_config, start_service, write_configs

DEFAULT_REQUESTS = 2_000
DEFAULT_CONCURRENCY = 50
DEFAULT_WARMUP = 200
DEFAULT_TIMEOUT = 600.0
_UNLIMITED_RPM = 1e7  # the example's limits lifted: the benchmark measures the service, not its quotas
_MODEL = "alpha-mini-2025-01-15"


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (psutil if installed, else ``/proc``)."""
    try:
        import psutil
    except ImportError:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime
    times = psutil.Process(pid).cpu_times()
    return float(times.user + times.system)


@dataclass
class Row:
    """One target's figures."""

    target: str
    endpoint: str
    sent: int
    answered: int
    statuses: dict[str, int]
    seconds: float
    requests_per_s: float
    p50_ms: float
    p99_ms: float
    service_cpu_ms: float | None  # per request
    fleet_cpu_ms: float
    client_cpu_ms: float
    upstream_per_answer: float
    extra: dict[str, Any] = field(default_factory=dict)


async def load(
    url: str, body: dict[str, Any], *, requests: int, concurrency: int, stream: bool, timeout: float
) -> tuple[list[float], Counter[str], float]:
    """Send ``requests`` POSTs of ``body`` to ``url``, ``concurrency`` at a time; the latencies (s) of
    the answered ones, the count of every status (or transport error, e.g. ``ReadError``) and the
    wall time. Raises ``TimeoutError`` after ``timeout`` seconds."""
    latencies: list[float] = []
    statuses: Counter[str] = Counter()
    left = requests
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=60.0, trust_env=False) as client:

        async def worker() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                began = time.perf_counter()
                try:
                    if stream:
                        async with client.stream("POST", url, json=body) as r:
                            async for _ in r.aiter_bytes():
                                pass
                    else:
                        r = await client.post(url, json=body)
                except httpx.TransportError as exc:  # counted (by kind) and reported, not fatal
                    statuses[type(exc).__name__] += 1
                    continue
                elapsed = time.perf_counter() - began
                statuses[str(r.status_code)] += 1
                if r.status_code == 200:
                    latencies.append(elapsed)

        began = time.perf_counter()
        with anyio.fail_after(timeout):
            async with anyio.create_task_group() as tg:
                for _ in range(min(concurrency, requests)):
                    tg.start_soon(worker)
        return latencies, statuses, time.perf_counter() - began


def measure(
    target: str,
    endpoint: str,
    url: str,
    body: dict[str, Any],
    fleet: FleetProcess,
    service_pid: int | None,
    args: argparse.Namespace,
) -> Row:
    """Warm ``url`` up, then load it and read every process's CPU time around the measured part."""
    stream = endpoint.endswith("/stream")

    async def warmup() -> None:
        await load(url, body, requests=args.warmup, concurrency=args.concurrency, stream=stream, timeout=args.timeout)

    if args.warmup:
        run_on("asyncio", warmup)
    fleet.reset()
    before = (cpu_seconds(service_pid) if service_pid else 0.0, cpu_seconds(fleet.pid), time.process_time())

    async def main() -> tuple[list[float], Counter[str], float]:
        return await load(
            url, body, requests=args.requests, concurrency=args.concurrency, stream=stream, timeout=args.timeout
        )

    latencies, statuses, seconds = run_on("asyncio", main)
    service_cpu = (cpu_seconds(service_pid) - before[0]) if service_pid else None
    fleet_cpu = cpu_seconds(fleet.pid) - before[1]
    client_cpu = time.process_time() - before[2]
    upstream = sum(int(d["requests"]) for d in fleet.stats()["deployments"].values())
    values = sorted(latencies)
    n, answered = args.requests, len(latencies)
    return Row(
        target=target,
        endpoint=endpoint,
        sent=n,
        answered=answered,
        statuses=dict(sorted(statuses.items())),
        seconds=round(seconds, 3),
        requests_per_s=round(answered / seconds, 1) if seconds > 0 else 0.0,
        p50_ms=round(percentile(values, 0.5) * 1e3, 2),
        p99_ms=round(percentile(values, 0.99) * 1e3, 2),
        service_cpu_ms=round(service_cpu / n * 1e3, 3) if service_cpu is not None else None,
        fleet_cpu_ms=round(fleet_cpu / n * 1e3, 3),
        client_cpu_ms=round(client_cpu / n * 1e3, 3),
        upstream_per_answer=round(upstream / answered, 3) if answered else 0.0,
    )


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Every target, one after the other, against one fleet."""
    rows: list[Row] = []
    chat = {"message": "tell me a story", "tenant": "bench", "max_tokens": 64}
    with start_fleet_process(example_fleet_config()) as fleet, tempfile.TemporaryDirectory() as tmp:
        direct = {"model": _MODEL, "messages": [{"role": "user", "content": chat["message"]}], "max_tokens": 64}
        base = fleet.base_url("alpha-us")
        rows.append(measure("baseline", "fleet direct", f"{base}/chat/completions", direct, fleet, None, args))
        env = write_configs(Path(tmp), fleet.port, rpm=_UNLIMITED_RPM)
        for kind in args.targets:
            with start_service(kind, env) as service:
                endpoints = ["/v1/chat", "/v1/chat/stream"] if args.stream else ["/v1/chat"]
                for path in endpoints:
                    row = measure(kind, path, service.url + path, chat, fleet, service.pid, args)
                    if row.answered < row.sent:  # say why, from the service's own log
                        row.extra["service_log_tail"] = service.stderr_text()[-2000:]
                    rows.append(row)
    return {
        "benchmark": "service_load",
        "requests": args.requests,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "machine": machine_note(),
        "rows": [asdict(r) for r in rows],
    }


def render(doc: dict[str, Any]) -> str:
    """The report as a Markdown table."""
    headers = [
        "target", "endpoint", "answered", "req/s", "p50 ms", "p99 ms",
        "service CPU ms/req", "fleet CPU ms/req", "client CPU ms/req", "upstream/answer",
    ]  # fmt: skip
    rows = []
    for r in doc["rows"]:
        service_cpu = r["service_cpu_ms"]
        rows.append(
            [
                r["target"],
                r["endpoint"],
                f"{r['answered']}/{r['sent']}",
                fmt(r["requests_per_s"]),
                fmt(r["p50_ms"], 2),
                fmt(r["p99_ms"], 2),
                fmt(service_cpu, 3) if service_cpu is not None else "—",
                fmt(r["fleet_cpu_ms"], 3),
                fmt(r["client_cpu_ms"], 3),
                fmt(r["upstream_per_answer"], 3),
            ]
        )
    head = (
        f"service_load: {doc['requests']} requests at concurrency {doc['concurrency']} per target "
        f"(after {doc['warmup']} unmeasured); {machine_line(doc['machine'])}"
    )
    return head + "\n\n" + table(headers, rows, left=2)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line (see the module docstring)."""
    p = argparse.ArgumentParser(prog="python -m specexec.bench.service_load", description=__doc__.splitlines()[0])
    p.add_argument("--requests", type=int, default=DEFAULT_REQUESTS, help=f"per target (default {DEFAULT_REQUESTS})")
    p.add_argument("--concurrency", type=int, default=DEFAULT_CONCURRENCY, help="requests in flight (default 50)")
    p.add_argument("--warmup", type=int, default=DEFAULT_WARMUP, help="unmeasured requests first (default 200)")
    p.add_argument("--timeout", type=float, default=DEFAULT_TIMEOUT, help="seconds a load may take (default 600)")
    p.add_argument("--targets", default=",".join(KINDS), help="service examples to load: fastapi,trio (default)")
    p.add_argument("--stream", action="store_true", help="load /v1/chat/stream too")
    p.add_argument("--json", action="store_true", help="print one JSON document instead of a table")
    args = p.parse_args(argv)
    if args.requests < 1 or args.concurrency < 1 or args.warmup < 0 or not args.timeout > 0:
        p.error("--requests and --concurrency must be >= 1, --warmup >= 0, --timeout > 0")
    targets = [t for t in args.targets.split(",") if t]
    unknown = [t for t in targets if t not in KINDS]
    if unknown:
        p.error(f"unknown --targets {', '.join(unknown)}; known: {', '.join(KINDS)}")
    args.targets = [cast(Kind, t) for t in targets]
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Run and print; 1 if a service example did not start."""
    args = parse_args(argv)
    try:
        doc = run(args)
    except ServiceStartError as exc:
        print(f"service_load: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(doc, indent=2) if args.json else render(doc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
