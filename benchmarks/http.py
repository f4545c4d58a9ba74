"""``python -m specexec.bench.http``: ``specexec.run`` through ``OpenAICompatible`` versus bare httpx.

The mock provider fleet (``benchmarks.fleet``, asyncio + uvloop) runs in a subprocess with
one OpenAI-compatible deployment of constant, tiny latency (TTFT ``--ttft-ms``, default 0;
no per-token time; one output token), so the client side is what is measured. The
variants send the same requests, on trio and on asyncio + uvloop, at each concurrency:

- **raw**: bare httpx with the backend's client layout: as many ``httpx.AsyncClient``s as
  the backend's ``HttpConfig`` has shards (``HttpConfig.shards``: 8 by default), each built
  like the backend's (same pool limits, timeouts, ``trust_env``, user agent, one shared SSL
  context), each request going to the one with the most free connections, as the backend
  does; ``client.post(url, content=body)`` with the backend's exact URL object, JSON body
  and headers, status checked and the body decoded with msgspec;
- **specexec**: ``Runtime([OpenAICompatible(...)])`` entered once, then
  ``await rt.run(q, Policy.single("x"))`` (the runtime's shared clients for the host);
- **raw, one client** (only when the layout has more than one shard): bare httpx with one
  client holding all of the host's connections, httpx's usual layout and the backend's
  layout before ``clients_per_host``. It is reported in its own table, for reference: the
  throughput target is judged against **raw** (the same layout), never against a slower
  layout.

``c`` workers each send requests until the variant's share of the round is done; the
variants alternate in rounds (raw, specexec, then the reverse order), so machine noise hits
all alike. Reported: requests/s (requests ÷ wall time spent in that variant's rounds),
median and p99 latency per request, client CPU per request (``time.process_time`` of this
process ÷ requests: the machine has 2 cores and the fleet has the other one), the fleet's
CPU share (from ``/proc``, where there is one), the throughput ratio and the median time
specexec adds per request. At ``c > 1`` a request's latency includes waiting for the event
loop and the connection pool behind the other workers, so "added" there is queueing
amplified by the extra CPU per request, not the cost of one call.

``--max-connections N`` caps the host's connections in every variant alike (the
per-request cost of httpcore's pool grows with its connections, see ``PERFORMANCE.md``);
``--clients-per-host N`` sets the shard count of the backend and of **raw** alike.
``--breakdown`` adds, per loop, a ``c = 1`` split of the added time: raw,
``backend.complete`` and ``rt.run`` one after the other on one client, with ``run``'s time
before, inside and after ``complete``.

Targets (issue 4): specexec throughput ≥ 0.9× raw; ≤ 100 µs median added (at ``c = 1``).
The script reports, it does not assert: it exits 0 whatever the figures.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import anyio
import httpx
import msgspec

from specexec import Policy, Query, Response, Runtime
from specexec.backends import DEFAULT_HTTP_CONFIG, DEFAULT_TIMEOUTS, HttpConfig, OpenAICompatible

from ._timing import (
    LOOP_LABELS,
    fmt,
    loops_for,
    machine_line,
    machine_note,
    ratio,
    run_on,
    summarize_s,
    table,
)
from .fleet import Constant, Deployment, FleetConfig, FleetProcess, start_fleet_process

DEFAULT_REQUESTS = {1: 1_000, 32: 3_000}
"""Requests per variant at each default concurrency."""
DEFAULT_ROUNDS = 6
"""Rounds per variant (each variant's requests are split evenly across them)."""
THROUGHPUT_TARGET = 0.9
"""Issue 4: specexec's requests/s at least this share of raw httpx's."""
ADDED_TARGET_US = 100.0
"""Issue 4: specexec adds at most this median time per request at c = 1 (µs)."""

DEPLOYMENT = "x"
MODEL = "bench-model-2025-01-01"
PROMPT = "What is 2 + 2? Answer with a number only."
MAX_TOKENS = 16

Call = Callable[[], Awaitable[str]]


def fleet_config(ttft: float) -> FleetConfig:
    """One OpenAI-compatible deployment, constant ``ttft`` seconds, no per-token time, 1 output token."""
    return FleetConfig(
        deployments=(
            Deployment(
                name=DEPLOYMENT,
                provider="bench",
                region="loopback",
                model=MODEL,
                latency=Constant(value=ttft),
                per_token=0.0,
                output_tokens=1,
            ),
        ),
    ).validated()


# --------------------------------------------------------------------------- one measurement


@dataclass
class Tally:
    """What one variant accumulated over its rounds."""

    latencies: list[float] = field(default_factory=list)
    wall: float = 0.0
    cpu: float = 0.0
    fleet_cpu: float = 0.0
    fleet_cpu_known: bool = True
    errors: int = 0
    error_kinds: dict[str, int] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        """Requests/s, latency (ms), CPU per request (µs), fleet CPU share, errors."""
        n = len(self.latencies) + self.errors
        s = summarize_s(self.latencies)
        return {
            "requests": n,
            "errors": self.errors,
            "error_kinds": self.error_kinds,
            "req_per_s": round(n / self.wall, 1) if self.wall > 0 else None,
            "median_ms": round(s.median_us / 1000, 4),
            "p99_ms": round(s.p99_us / 1000, 4),
            "median_us": round(s.median_us, 1),
            "cpu_us_per_req": round(self.cpu / n * 1e6, 1) if n else None,
            "fleet_cpu_share": round(self.fleet_cpu / self.wall, 3) if self.wall > 0 and self.fleet_cpu_known else None,
        }


def _process_cpu(pid: int) -> float:
    """CPU seconds (user + system) used so far by process ``pid``; -1 where /proc is not available."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return -1.0


async def _drive(call: Call, n: int, concurrency: int, tally: Tally, fleet_pid: int) -> None:
    """Send ``n`` requests with ``concurrency`` workers; add what was seen to ``tally``."""
    remaining = n
    latencies = tally.latencies
    clock = time.perf_counter

    async def worker() -> None:
        nonlocal remaining
        while remaining > 0:
            remaining -= 1
            t0 = clock()
            try:
                await call()
            except Exception as exc:  # counted and reported, never hidden
                tally.errors += 1
                kind = type(exc).__name__
                tally.error_kinds[kind] = tally.error_kinds.get(kind, 0) + 1
                continue
            latencies.append(clock() - t0)

    fleet0 = _process_cpu(fleet_pid)
    cpu0, wall0 = time.process_time(), clock()
    async with anyio.create_task_group() as tg:
        for _ in range(concurrency):
            tg.start_soon(worker)
    tally.wall += clock() - wall0
    tally.cpu += time.process_time() - cpu0
    fleet1 = _process_cpu(fleet_pid)
    tally.fleet_cpu += fleet1 - fleet0
    tally.fleet_cpu_known = tally.fleet_cpu_known and fleet0 >= 0 and fleet1 >= 0


def _split(n: int, rounds: int) -> list[int]:
    """``n`` as ``rounds`` near-equal positive parts."""
    rounds = max(1, min(rounds, n))
    return [n // rounds + (1 if i < n % rounds else 0) for i in range(rounds)]


def http_config(max_connections: int | None, clients_per_host: int | None = None) -> HttpConfig:
    """The backend's default pool config, with ``max_connections`` (and as many keep-alive
    connections) and ``clients_per_host`` changed where given (used by every variant)."""
    config = DEFAULT_HTTP_CONFIG
    if max_connections is not None:
        config = msgspec.structs.replace(
            config, max_connections=max_connections, max_keepalive_connections=max_connections
        )
    if clients_per_host is not None:
        config = msgspec.structs.replace(config, clients_per_host=clients_per_host)
    return config


def raw_clients(pool: HttpConfig, *, sharded: bool) -> tuple[list[httpx.AsyncClient], list[int]]:
    """Bare httpx clients built like the backend's: one per shard of ``pool`` (``sharded``), or one
    client with all the host's connections; and each client's connection limit."""
    limits = pool.shard_limits() if sharded else [pool.as_httpx()]
    ssl_context = httpx.create_ssl_context(trust_env=pool.trust_env)
    clients = [
        httpx.AsyncClient(
            limits=shard,
            timeout=DEFAULT_TIMEOUTS.as_httpx(),
            follow_redirects=False,
            trust_env=pool.trust_env,
            headers={"user-agent": "specexec"},
            verify=ssl_context,
        )
        for shard in limits
    ]
    return clients, [shard.max_connections or 0 for shard in limits]


def raw_call(
    clients: list[httpx.AsyncClient], capacity: list[int], url: httpx.URL, body: bytes, headers: dict[str, str]
) -> Call:
    """One bare httpx request: to the client with the most free connections (the lowest index on a
    tie, as ``HostClients`` does), status checked, body decoded."""
    decoder = msgspec.json.Decoder()

    def text_of(r: httpx.Response) -> str:
        if r.status_code != 200:
            raise RuntimeError(f"HTTP {r.status_code}")
        text: str = decoder.decode(r.content)["choices"][0]["message"]["content"]
        return text

    if len(clients) == 1:
        (client,) = clients

        async def raw() -> str:
            return text_of(await client.post(url, content=body, headers=headers))

        return raw

    free = list(capacity)
    shards = range(1, len(free))

    async def raw_sharded() -> str:
        best, most = 0, free[0]
        for i in shards:
            if free[i] > most:
                best, most = i, free[i]
        free[best] -= 1
        try:
            return text_of(await clients[best].post(url, content=body, headers=headers))
        finally:
            free[best] += 1

    return raw_sharded


def measure(
    loop: str,
    fleet: FleetProcess,
    concurrency: int,
    requests: int,
    rounds: int,
    max_connections: int | None = None,
    clients_per_host: int | None = None,
) -> dict[str, Any]:
    """Every variant at one concurrency on one loop; their reports and the comparisons."""
    base_url = fleet.base_url(DEPLOYMENT)
    query = Query(prompt=PROMPT, max_tokens=MAX_TOKENS)
    pool = http_config(max_connections, clients_per_host)

    async def main() -> dict[str, Any]:
        backend = OpenAICompatible(DEPLOYMENT, base_url=base_url, model=MODEL, http=pool, stream=False)
        body = backend._encode(query, False)  # the exact bytes the backend sends (a JSON answer)
        headers = {**backend._headers(None), "accept": "application/json"}  # its headers
        url = backend._url  # and its URL object (parsed once, as the backend does)
        policy = Policy.single(DEPLOYMENT)
        same, same_capacity = raw_clients(pool, sharded=True)
        variants_clients = {"raw": same}
        variants: dict[str, Call] = {"raw": raw_call(same, same_capacity, url, body, headers)}
        if pool.shards > 1:
            one, one_capacity = raw_clients(pool, sharded=False)
            variants_clients["raw_one_client"] = one
            variants["raw_one_client"] = raw_call(one, one_capacity, url, body, headers)
        async with contextlib.AsyncExitStack() as stack:
            for client in (c for clients in variants_clients.values() for c in clients):
                await stack.enter_async_context(client)
            rt = await stack.enter_async_context(Runtime([backend]))

            async def via_specexec() -> str:
                result = await rt.run(query, policy)
                return result.response.text

            variants["specexec"] = via_specexec
            answers = {name: await call() for name, call in variants.items()}
            if len(set(answers.values())) != 1:  # the same answer every way
                raise AssertionError(f"the variants got different answers: {answers}")
            tallies = {name: Tally() for name in variants}
            warm = Tally()
            for call in variants.values():  # open the pools' connections; untimed
                await _drive(call, max(2 * concurrency, 20), concurrency, warm, fleet.pid)
            for i, share in enumerate(_split(requests, rounds)):
                order = list(variants) if i % 2 == 0 else list(reversed(variants))
                for name in order:
                    await _drive(variants[name], share, concurrency, tallies[name], fleet.pid)
            pools: dict[str, Any] = {name: [_pool_size(c) for c in cs] for name, cs in variants_clients.items()}
            pools["specexec"] = {k: _pool_sizes(v) for k, v in (rt._resources.items() if rt._resources else {}).items()}
        reports = {name: tally.report() for name, tally in tallies.items()}
        raw_r, spx_r = reports["raw"], reports["specexec"]
        thr = ratio(spx_r["req_per_s"] or 0.0, raw_r["req_per_s"] or 0.0)
        added = spx_r["median_us"] - raw_r["median_us"]
        one_r = reports.get("raw_one_client")
        return {
            "concurrency": concurrency,
            "shards": pool.shards,
            "raw": raw_r,
            "specexec": spx_r,
            "raw_one_client": one_r,
            "throughput_ratio": round(thr, 3),
            "throughput_ratio_vs_one_client": (
                round(ratio(spx_r["req_per_s"] or 0.0, one_r["req_per_s"] or 0.0), 3) if one_r else None
            ),
            "added_median_us": round(added, 1),
            "added_cpu_us_per_req": round((spx_r["cpu_us_per_req"] or 0.0) - (raw_r["cpu_us_per_req"] or 0.0), 1),
            "throughput_met": thr >= THROUGHPUT_TARGET,
            "added_met": added <= ADDED_TARGET_US if concurrency == 1 else None,
            "pools": pools,
        }

    return run_on(loop, main)


def _pool_size(client: Any) -> int | None:
    """Connections in an httpx client's pool (``None`` if the layout is not httpx's default)."""
    try:
        return len(client._transport._pool.connections)
    except AttributeError:
        return None


def _pool_sizes(shared: Any) -> list[int | None]:
    """Connections in each shard's pool of a runtime's ``HostClients`` (or of a lone client)."""
    clients = getattr(shared, "clients", None)
    return [_pool_size(c) for c in clients] if clients is not None else [_pool_size(shared)]


# --------------------------------------------------------------------------- --breakdown


class _Stamped(OpenAICompatible):
    """``OpenAICompatible`` that notes when ``complete`` starts and ends (for ``--breakdown``)."""

    entered = 0.0
    left = 0.0

    async def complete(self, query: Query) -> Response:
        """Stamp, call the real ``complete``, stamp."""
        self.entered = time.perf_counter()
        response = await super().complete(query)
        self.left = time.perf_counter()
        return response


def breakdown(loop: str, fleet: FleetProcess, requests: int) -> dict[str, Any]:
    """Where the time specexec adds at ``c = 1`` goes, one request of each kind after the other.

    Per round: a raw httpx request; ``backend.complete(q)``; ``rt.run(q, single)``, whose
    time is split into before ``complete`` is entered, ``complete`` itself, and after it
    returned; every other round in the reverse order. All three use one client of the same
    configuration (given as ``client=``) and the same URL object, so only the code on the
    path differs. Medians in µs, CPU per request in µs.
    """
    base_url = fleet.base_url(DEPLOYMENT)
    query = Query(prompt=PROMPT, max_tokens=MAX_TOKENS)

    async def main() -> dict[str, Any]:
        client = httpx.AsyncClient(
            limits=DEFAULT_HTTP_CONFIG.as_httpx(),
            timeout=DEFAULT_TIMEOUTS.as_httpx(),
            follow_redirects=False,
            trust_env=DEFAULT_HTTP_CONFIG.trust_env,
            headers={"user-agent": "specexec"},
        )
        backend = _Stamped(DEPLOYMENT, base_url=base_url, model=MODEL, client=client, stream=False)
        body, url = backend._encode(query, False), backend._url
        headers = {**backend._headers(None), "accept": "application/json"}
        policy = Policy.single(DEPLOYMENT)
        decoder = msgspec.json.Decoder()
        samples: dict[str, list[float]] = {k: [] for k in ("raw", "complete", "run", "before", "inside", "after")}
        cpu = {"raw": 0.0, "complete": 0.0, "run": 0.0}
        clock = time.perf_counter
        async with client, Runtime([backend]) as rt:

            async def raw() -> None:
                r = await client.post(url, content=body, headers=headers)
                decoder.decode(r.content)

            async def complete() -> None:
                await backend.complete(query)

            async def run() -> None:
                await rt.run(query, policy)

            calls: dict[str, Callable[[], Awaitable[None]]] = {"raw": raw, "complete": complete, "run": run}
            for call in calls.values():
                for _ in range(50):
                    await call()
            order = list(calls.items())
            for i in range(requests):  # the order reverses every round: none always follows another
                for name, call in order if i % 2 == 0 else reversed(order):
                    c0, t0 = time.process_time(), clock()
                    await call()
                    t1 = clock()
                    cpu[name] += time.process_time() - c0
                    samples[name].append(t1 - t0)
                    if name == "run":
                        samples["before"].append(backend.entered - t0)
                        samples["inside"].append(backend.left - backend.entered)
                        samples["after"].append(t1 - backend.left)
        med = {k: round(summarize_s(v).median_us, 1) for k, v in samples.items()}
        return {
            "requests": requests,
            "median_us": med,
            "cpu_us_per_req": {k: round(v / requests * 1e6, 1) for k, v in cpu.items()},
            "backend_added_us": round(med["complete"] - med["raw"], 1),
            "engine_added_us": round(med["run"] - med["complete"], 1),
        }

    return run_on(loop, main)


def render_breakdown(loop: str, b: dict[str, Any]) -> str:
    """The ``--breakdown`` table of one loop."""
    m, c = b["median_us"], b["cpu_us_per_req"]
    rows = [
        ["raw httpx post + decode", fmt(m["raw"]), fmt(c["raw"])],
        ["backend.complete(q)", fmt(m["complete"]), fmt(c["complete"])],
        ["rt.run(q, single)", fmt(m["run"]), fmt(c["run"])],
        ["  run: before complete()", fmt(m["before"]), ""],
        ["  run: inside complete()", fmt(m["inside"]), ""],
        ["  run: after complete()", fmt(m["after"]), ""],
    ]
    return (
        f"### breakdown at c=1, {LOOP_LABELS[loop]} ({b['requests']:,} requests of each, interleaved one by one)\n\n"
        f"{table(['path', 'median µs', 'CPU µs/req'], rows)}\n\n"
        f"backend (complete − raw): {fmt(b['backend_added_us'])} µs; "
        f"engine (run − complete): {fmt(b['engine_added_us'])} µs\n"
    )


# --------------------------------------------------------------------------- reporting


def render(loop: str, rows: list[dict[str, Any]]) -> str:
    """One loop's text report."""
    headers = [
        "c",
        "variant",
        "req/s",
        "median ms",
        "p99 ms",
        "CPU µs/req",
        "fleet CPU",
        "errors",
        "thr ratio",
        "added med µs",
        "targets",
    ]
    body: list[list[str]] = []
    for r in rows:
        for name in ("raw", "specexec"):
            v = r[name]
            is_spx = name == "specexec"
            verdict = ""
            if is_spx:
                verdict = f"thr {'met' if r['throughput_met'] else 'MISSED'}"
                if r["added_met"] is not None:
                    verdict += f", added {'met' if r['added_met'] else 'MISSED'}"
            body.append(
                [
                    str(r["concurrency"]),
                    name,
                    fmt(v["req_per_s"] or float("nan"), 0),
                    fmt(v["median_ms"], 3),
                    fmt(v["p99_ms"], 3),
                    fmt(v["cpu_us_per_req"] or float("nan"), 0),
                    f"{v['fleet_cpu_share'] * 100:.0f}%" if v["fleet_cpu_share"] is not None else "-",
                    str(v["errors"]),
                    f"{r['throughput_ratio']:.2f}x" if is_spx else "",
                    fmt(r["added_median_us"], 0) if is_spx else "",
                    verdict,
                ]
            )
    pools = "; ".join(f"c={r['concurrency']}: {r['pools']}" for r in rows)
    shards = rows[0]["shards"] if rows else 1
    text = (
        f"## {LOOP_LABELS[loop]}\n\n{table(headers, body, left=2)}\n\n"
        f"raw = bare httpx with the backend's layout ({shards} client{'s' if shards > 1 else ''} per host, "
        "least busy first). thr ratio = specexec req/s ÷ raw req/s (target ≥ 0.9); added = specexec "
        "median − raw median (target ≤ 100 µs at c=1; at c>1 it includes queueing). fleet CPU = the "
        "fleet process's CPU ÷ wall time.\n"
        f"connections pooled at the end (per client): {pools}\n"
    )
    one_rows = [r for r in rows if r.get("raw_one_client")]
    if one_rows:
        one_body = [
            [
                "raw, one client",
                str(r["concurrency"]),
                fmt(r["raw_one_client"]["req_per_s"] or float("nan"), 0),
                fmt(r["raw_one_client"]["median_ms"], 3),
                fmt(r["raw_one_client"]["p99_ms"], 3),
                fmt(r["raw_one_client"]["cpu_us_per_req"] or float("nan"), 0),
                str(r["raw_one_client"]["errors"]),
                f"{r['throughput_ratio_vs_one_client']:.2f}x",
            ]
            for r in one_rows
        ]
        one_headers = ["layout", "c", "req/s", "median ms", "p99 ms", "CPU µs/req", "errors", "specexec ÷ this"]
        text += (
            "\nFor reference (not a target): bare httpx with one client holding all the host's "
            "connections (httpx's usual layout), measured in the same rounds.\n\n"
            f"{table(one_headers, one_body, left=1)}\n"
        )
    return text


def _concurrencies(text: str) -> list[int]:
    values = [int(x) for x in text.split(",") if x.strip()]
    if not values or any(v < 1 for v in values):
        raise argparse.ArgumentTypeError("a comma-separated list of positive integers, e.g. 1,32")
    return values


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(
        prog="python -m specexec.bench.http",
        description="specexec.run(policy=single) through OpenAICompatible vs a bare httpx loop, against the fleet.",
    )
    p.add_argument("--backend", choices=["trio", "asyncio", "both"], default="both", help="event loop (default: both)")
    p.add_argument(
        "--concurrency", type=_concurrencies, default=[1, 32], help="comma-separated in-flight counts (default: 1,32)"
    )
    p.add_argument(
        "--requests",
        type=int,
        default=None,
        help="requests per variant at every concurrency (default: 1000 at c=1, 3000 otherwise)",
    )
    p.add_argument("--rounds", type=int, default=DEFAULT_ROUNDS, help=f"rounds per variant ({DEFAULT_ROUNDS})")
    p.add_argument(
        "--max-connections",
        type=int,
        default=None,
        help=f"pool size of both clients (default: the backend's, {DEFAULT_HTTP_CONFIG.max_connections})",
    )
    p.add_argument(
        "--clients-per-host",
        type=int,
        default=None,
        help=f"shards of the backend's clients and of raw's (default: the backend's, "
        f"{DEFAULT_HTTP_CONFIG.clients_per_host})",
    )
    p.add_argument("--ttft-ms", type=float, default=0.0, help="the deployment's constant time to first token (0)")
    p.add_argument(
        "--breakdown",
        action="store_true",
        help="also split the time specexec adds at c=1 into backend and engine parts (before/inside/after complete)",
    )
    p.add_argument("--json", action="store_true", help="print one JSON document instead of tables")
    args = p.parse_args(argv)
    if args.requests is not None and args.requests < 1:
        p.error("--requests must be >= 1")
    if (
        args.rounds < 1
        or args.ttft_ms < 0
        or (args.max_connections is not None and args.max_connections < 1)
        or (args.clients_per_host is not None and args.clients_per_host < 1)
    ):
        p.error("--rounds, --max-connections and --clients-per-host must be >= 1, --ttft-ms >= 0")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    """Start the fleet, measure, print the report; always 0 (it reports targets, it does not assert them)."""
    args = parse_args(argv)
    note = machine_note()
    pool = http_config(args.max_connections, args.clients_per_host)
    report: dict[str, Any] = {
        "benchmark": "http",
        "ttft_ms": args.ttft_ms,
        "rounds": args.rounds,
        "max_connections": pool.max_connections,
        "clients_per_host": pool.shards,
        "machine": note,
        "loops": {},
    }
    if not args.json:
        print(
            f"# specexec over HTTP vs raw httpx — fleet deployment TTFT {args.ttft_ms:g} ms, 1 output token, "
            f"max_connections={pool.max_connections} per host over {pool.shards} client(s) "
            f"({', '.join(str(x.max_connections) for x in pool.shard_limits())})"
        )
        print(f"machine: {machine_line(note)}\n", flush=True)
    with start_fleet_process(fleet_config(args.ttft_ms / 1000.0)) as fleet:
        for loop in loops_for(args.backend):
            rows = []
            for c in args.concurrency:
                n = args.requests if args.requests is not None else DEFAULT_REQUESTS.get(c, DEFAULT_REQUESTS[32])
                rows.append(measure(loop, fleet, c, n, args.rounds, args.max_connections, args.clients_per_host))
            report["loops"][LOOP_LABELS[loop]] = rows
            if not args.json:
                print(render(loop, rows), flush=True)
            if args.breakdown:
                n = args.requests if args.requests is not None else DEFAULT_REQUESTS[1]
                split = breakdown(loop, fleet, n)
                report.setdefault("breakdown", {})[LOOP_LABELS[loop]] = split
                if not args.json:
                    print(render_breakdown(loop, split), flush=True)
        stats = fleet.deployment_stats(DEPLOYMENT)
        report["fleet"] = {"requests": stats["requests"], "by_status": stats["by_status"]}
        if not args.json:
            print(f"fleet served {stats['requests']:,} requests, by status {stats['by_status']}")
    if args.json:
        print(json.dumps(report, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
