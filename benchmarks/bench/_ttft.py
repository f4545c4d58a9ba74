"""``specexec bench ttft``: hedging the *first token* of streamed answers.

``--sim`` (the default) runs in virtual time against ``SimulatedBackend``s; ``--live`` against
the loopback mock fleet over HTTP on the real clock (deployments with the same TTFT
distribution and token gaps, streamed over SSE by ``OpenAICompatible(stream=True)``).

Three independent streaming backends whose time to first token is lognormal(median 300 ms,
σ 0.3) 95 % of the time and 8× slower the other 5 %, then ``TOKENS`` tokens ``TOKEN_TIME``
apart; 100 requests/s (Poisson, open loop). Four policies over the same seeded draws:

- ``single``: one backend, through ``run``;
- ``hedge-total``: today's hedge through ``run`` — ``delay="p95"`` of *total* latency,
  ``max_attempts=3``, a 5 % hedge budget; the first *complete* answer wins;
- ``hedge-ttft``: the same policy through ``stream`` — the delay times the first token
  (``p95`` of the TTFT histogram), the first attempt to send a token commits, the others
  are cancelled;
- ``race``: all three at once through ``stream``.

Each policy runs on a fresh runtime (empty histograms, a fresh hedge budget): ``--warmup N``
sends N requests first that are not counted (default none in virtual time, ``LIVE_WARMUP`` =
1,000, 10 s at 100 req/s, with ``--live``), so a short live run measures the steady state.

TTFT is measured from each request's intended send time to the caller's first piece of text
(streamed) or to the winning attempt's first token (``run``). Cost is shown twice per request:
what the engine charges (a cancelled stream pays for the text it sent; an attempt cancelled
before sending any its reservation, ``max_tokens`` of output) and with every cancelled attempt
charged by the tokens it received (its input only, when it sent no text). Beside the measurement, the fixed-delay
hedging limit of the TTFT distribution in closed form (``_tail.fixed_delay_analysis``:
independent backends, instant cancellation): the p99 of min(X₁, d + X₂, 2d + X₃) at the
delay ``d`` whose extra load S(d) + S(d)·S(2d) equals the policy's measured extra load.

Targets (reported met or missed, never tuned): ``hedge-ttft``'s TTFT p99 within 10 % of that
limit at ≤ 6 % extra load; its total-latency p99 no worse than ``hedge-total``'s.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from typing import TextIO

import msgspec
import trio
import trio.testing

from specexec import (
    Constant,
    HealthConfig,
    HedgeBudgetConfig,
    LogNormal,
    Policy,
    PolicyError,
    Runtime,
    SimulatedBackend,
    slow_tail,
)
from specexec.backends import HttpConfig, HttpTimeouts, OpenAICompatible
from specexec.backends._http import DEFAULT_MAX_CONNECTIONS
from specexec.bench.fleet import Deployment, FleetConfig, start_fleet_process

from ._des import des_drive
from ._driver import LastTrace, drive
from ._live import fleet_distribution, run_policy_live
from ._progress import Progress, progress_wanted
from ._scenario import Scenario, Workload
from ._sim import ENGINES, _seed_trio_scheduler
from ._stats import LATE_SEND, PERCENTILES, PolicyStats, Summary
from ._tail import fixed_delay_analysis

__all__ = [
    "DESCRIPTION",
    "LIVE_WARMUP",
    "TTFT",
    "fixed_delay_limit",
    "lag_warning",
    "live_backends",
    "main",
    "policies",
    "scenario",
    "simulate_ttft",
]

DESCRIPTION = (
    "Hedging the first token: three streaming backends, TTFT lognormal(300 ms, σ 0.3) with a 5 % ×8 slow tail, "
    "100 req/s; single, hedge on total latency (run), hedge on TTFT (p95, 5 % budget, stream), race"
)
TTFT = slow_tail(LogNormal(0.3, 0.3), 0.05, 8.0)
"""Each backend's time to first token."""
TOKENS, TOKEN_TIME = 16, 0.02
"""Tokens per answer and seconds between two of them (after the first)."""
REPLY = "The answer is four: 2 + 2 = 4, as always."
"""Each answer (longer than ``TOKENS`` characters, so no piece of it is empty)."""
BACKENDS = ("a", "b", "c")
DEFAULT_REQUESTS = 20_000
LIVE_REQUESTS = 3_000
"""Requests per policy by default: 200 s of virtual time, or 30 s of real time (``--live``)."""
LIVE_WARMUP = 1_000
"""``--live``: requests sent first and not counted, by default (10 s at 100 req/s). Each policy
starts on a fresh runtime, so its histograms and hedge budget are empty; live runs are short
(3,000 requests), so without a warm-up the empty-window start would weigh in every percentile.
Virtual-time runs are long (20,000) and default to none."""
STREAMED = frozenset({"hedge-ttft", "race"})
"""The policies sent through ``stream`` (the others through ``run``)."""
TTFT_LOAD_TARGET, TTFT_RATIO_TARGET = 0.06, 1.10


def policies() -> dict[str, Policy]:
    """The four policies compared (see the module docs)."""
    budget = HedgeBudgetConfig(max_extra_load=0.05)
    hedge = Policy.hedge(list(BACKENDS), delay="p95", max_attempts=3, budget=budget)
    return {
        "single": Policy.single(BACKENDS[0]),
        "hedge-total": hedge,
        "hedge-ttft": hedge,
        "race": Policy.race(list(BACKENDS)),
    }


def scenario(requests: int = DEFAULT_REQUESTS, seed: int = 1, rate: float = 100.0, warmup: int = 0) -> Scenario:
    """The scenario's workload and policies (its backends are built by ``backends``); the first
    ``warmup`` requests of each policy are sent but not counted."""
    return Scenario(
        name="ttft",
        description=DESCRIPTION,
        source=None,
        seed=seed,
        baseline="single",
        workload=Workload(rate=rate, requests=requests, warmup=warmup),
        backends=(),
        fleet=None,
        prices={},
        health=HealthConfig(),
        events=(),
        phases=(),
        quality=None,
        policies=policies(),
    )


def backends(seed: int) -> list[SimulatedBackend]:
    """Fresh streaming backends for one policy run."""
    return [
        SimulatedBackend(
            name,
            0.0,
            ttft=TTFT,
            token_time=Constant(TOKEN_TIME),
            output_tokens=TOKENS,
            reply=REPLY,
            seed=seed * 1_000_003 + i,
            provider=f"p{name}",
            region=f"r{name}",
            input_price=0.15,
            output_price=0.60,
        )
        for i, name in enumerate(BACKENDS)
    ]


def simulate_ttft(
    sc: Scenario, name: str, on_progress: Callable[[int], None] | None = None, *, engine: str = "des"
) -> PolicyStats:
    """Run policy ``name`` in virtual time (streamed when it is in ``STREAMED``): on the
    discrete-event driver (``engine="des"``, the default) or trio's virtual clock (``"trio"``,
    the cross-check; the same figures)."""
    if engine not in ENGINES:
        raise ValueError(f"unknown simulation engine {engine!r}; known: {', '.join(ENGINES)}")
    stats = PolicyStats()
    if engine == "des":
        runtime = Runtime(backends(sc.seed), health=sc.health)
        des_drive(sc, sc.policies[name], runtime, stats, on_progress, streamed=name in STREAMED)
        return stats
    _seed_trio_scheduler(sc.seed)

    async def go() -> None:
        sink = LastTrace()
        async with Runtime(backends(sc.seed), health=sc.health, sinks=[sink]) as rt:
            await drive(sc, sc.policies[name], rt, sink, stats, on_progress, streamed=name in STREAMED)

    trio.run(go, clock=trio.testing.MockClock(autojump_threshold=0))
    return stats


def fleet(sc: Scenario) -> FleetConfig:
    """The loopback fleet serving the scenario's backends (``--live``)."""
    prompts = [q.prompt for q in sc.workload.queries]
    return FleetConfig(
        seed=sc.seed,
        deployments=tuple(
            Deployment(
                name=name,
                provider=f"p{name}",
                region=f"r{name}",
                model=f"{name}-model",
                latency=fleet_distribution(TTFT),
                per_token=TOKEN_TIME,
                output_tokens=TOKENS,
                answers=dict.fromkeys(prompts, REPLY),
            )
            for name in BACKENDS
        ),
    ).validated(source="<ttft>")


def live_backends(config: FleetConfig, urls: Mapping[str, str], timeout: float) -> list[OpenAICompatible]:
    """Streaming HTTP backends for the fleet's deployments (``urls``: name → base URL).

    The fleet serves every deployment from one ``host:port``, and the backends share one
    connection pool per host; three providers would each have their own. So the pool gets
    the default per-host limits once per deployment (100 connections each): otherwise a race
    of three at 100 req/s (≈ 120 streams open) would wait for connections of one provider's
    pool and fail on its pool timeout, which no real deployment of these backends would."""
    per_host = DEFAULT_MAX_CONNECTIONS * len(config.deployments)
    pool = HttpConfig(trust_env=False, max_connections=per_host, max_keepalive_connections=per_host)
    return [
        OpenAICompatible(
            d.name,
            base_url=urls[d.name],
            model=d.model,
            provider=d.provider,
            region=d.region,
            input_price=0.15,
            output_price=0.60,
            stream=True,
            timeout=HttpTimeouts(read=timeout),
            http=pool,
        )
        for d in config.deployments
    ]


def live_ttft(sc: Scenario, names: Sequence[str], on_progress: Callable[[int], None]) -> dict[str, PolicyStats]:
    """Run ``names`` in turn against the loopback fleet (reset before each), streaming backends."""
    out: dict[str, PolicyStats] = {}
    with start_fleet_process(fleet(sc)) as proc:
        for i, name in enumerate(names):
            http = live_backends(proc.config, proc.deployments, sc.workload.timeout)
            base = i * (sc.workload.expected_requests() + sc.workload.warmup)
            out[name] = run_policy_live(
                sc,
                name,
                http,
                _offset(on_progress, base),
                at_start=proc.reset,
                streamed=name in STREAMED,
            )
    return out


def _offset(report: Callable[[int], None], base: int) -> Callable[[int], None]:
    """``report`` shifted by ``base`` (one progress bar over several policies' runs)."""
    return lambda n: report(base + n)


def fixed_delay_limit(extra_load: float, attempts: int = 3) -> dict[str, float]:
    """Closed form: the fixed delay whose extra load equals ``extra_load`` for the TTFT
    distribution, with its TTFT p50/p99/p99.9 (``delay`` in seconds)."""
    lo, hi = 1e-4, 60.0  # extra load falls as the delay grows
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        if fixed_delay_analysis(TTFT, mid, attempts)["extra_load"] > extra_load:
            lo = mid
        else:
            hi = mid
    return {"delay": hi, **fixed_delay_analysis(TTFT, hi, attempts)}


def _ms(x: float | None) -> str:
    return "—" if x is None else f"{1000 * x:.1f}"


def _table(summaries: dict[str, Summary]) -> str:
    labels = [label for label, _ in PERCENTILES]
    head = (
        f"  {'policy':<12} {'via':<6} | TTFT ms " + " ".join(f"{x:>7}" for x in labels) + " | total ms "
        + " ".join(f"{x:>7}" for x in labels) + " | extra load | $/1k req (charged, received)"
    )  # fmt: skip
    rows = [head, "  " + "-" * (len(head) - 2)]
    for name, s in summaries.items():
        t = s.ttft or {}
        rows.append(
            f"  {name:<12} {'stream' if name in STREAMED else 'run':<6} |         "
            + " ".join(f"{_ms(t.get(x)):>7}" for x in labels)
            + " |          "
            + " ".join(f"{_ms(s.latency.get(x)):>7}" for x in labels)
            + f" | {100 * (s.extra_load or 0):>9.2f}% | {1000 * s.cost_mean:.5f}, "
            + ("—" if s.cost_received_mean is None else f"{1000 * s.cost_received_mean:.5f}")
        )
    return "\n".join(rows)


def targets(summaries: dict[str, Summary]) -> list[tuple[str, str, bool]]:
    """``(what, measured, met)`` for each target (see the module docs).

    The TTFT target compares with the fixed-delay limit at the policy's own measured extra
    load (equal load, as the tail-at-scale benchmark does); the figures against the limits at
    5 % and 6 % extra load are printed beside it. The limit is the best *fixed* delay: a
    rationed adaptive delay may come in below it, because the budget's refusals fall on a few
    requests that then make only the top of the tail.
    """
    s, today = summaries["hedge-ttft"], summaries["hedge-total"]
    extra = s.extra_load or 0.0
    limit = fixed_delay_limit(extra)
    p99 = (s.ttft or {}).get("p99")
    out = [("hedge-ttft extra load ≤ 6 %", f"{100 * extra:.2f} %", extra <= TTFT_LOAD_TARGET)]
    if p99 is not None:
        ratio = p99 / limit["p99"]
        at = {load: fixed_delay_limit(load)["p99"] for load in (0.05, 0.06)}
        others = ", ".join(f"{p99 / v:.2f}× the limit at {100 * k:g} % ({_ms(v)} ms)" for k, v in at.items())
        out.append(
            (
                "hedge-ttft TTFT p99 within 10 % of the fixed-delay limit at its extra load",
                f"{_ms(p99)} ms vs {_ms(limit['p99'])} ms (d = {_ms(limit['delay'])} ms) = {ratio:.2f}× [{others}]",
                ratio <= TTFT_RATIO_TARGET,
            )
        )
    a, b = s.latency.get("p99"), today.latency.get("p99")
    if a is not None and b is not None:
        out.append(
            (
                "hedge-ttft total p99 no worse than hedge-total's (today's hedge)",
                f"{_ms(a)} ms vs {_ms(b)} ms (extra load {100 * extra:.2f} % vs {100 * (today.extra_load or 0):.2f} %)",
                a <= b,
            )
        )
    return out


LATE_SHARE = 0.01
"""A policy run with more than this share of its requests sent late gets a warning."""


def lag_warning(lags: Mapping[str, tuple[int, float, int]]) -> str | None:
    """A warning naming the policies whose load driver fell behind (``lags``: name →
    ``(late_sends, max_send_lag, requests)``), or ``None`` when every one kept to schedule."""
    behind = [
        f"{name} sent {late:,} of {n:,} ({100 * late / n:.1f} %) more than {1000 * LATE_SEND:g} ms late, "
        f"up to {lag:.1f} s"
        for name, (late, lag, n) in lags.items()
        if n and late > LATE_SHARE * n
    ]
    if not behind:
        return None
    return (
        "WARNING: the load driver fell behind its schedule — "
        + "; ".join(behind)
        + ". Latencies count from the intended send times, so these figures include the client's own "
        "queue (its CPU saturated, or max_in_flight reached), not only the policy: run on an idle "
        "machine or at a lower --rate."
    )


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="specexec bench ttft", description=DESCRIPTION)
    p.add_argument("--requests", type=int, help=f"per policy (default {DEFAULT_REQUESTS:,}; --live {LIVE_REQUESTS:,})")
    p.add_argument(
        "--warmup",
        type=int,
        metavar="N",
        help=f"first N requests of each policy sent but not counted (default 0; --live {LIVE_WARMUP:,})",
    )
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--rate", type=float, default=100.0, help="requests per second (default 100)")
    p.add_argument("--policies", metavar="NAME,...", help="run only these (default: all four)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sim", action="store_true", help="virtual time, simulated backends (the default)")
    mode.add_argument(
        "--live",
        action="store_true",
        help=f"the loopback mock fleet over HTTP, real clock (default {LIVE_REQUESTS:,} requests per policy)",
    )
    p.add_argument(
        "--sim-engine",
        choices=ENGINES,
        default="des",
        help="--sim: the discrete-event driver (default; no event loop) or trio virtual time (the cross-check)",
    )
    p.add_argument("--json", action="store_true", help="print summaries, limits and targets as JSON")
    return p


def main(argv: Sequence[str] | None = None, *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """Run the TTFT benchmark (``argv`` without the leading ``ttft``); 0 whether targets are met or not."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    arguments = list(sys.argv[1:] if argv is None else argv)
    if arguments[:1] == ["ttft"]:
        arguments = arguments[1:]
    try:
        args = _parser().parse_args(arguments)
    except SystemExit as exc:
        return int(exc.code or 0)
    if args.requests is None:
        args.requests = LIVE_REQUESTS if args.live else DEFAULT_REQUESTS
    if args.warmup is None:
        args.warmup = LIVE_WARMUP if args.live else 0
    if args.requests < 1 or not args.rate > 0 or args.warmup < 0:
        err.write("specexec bench ttft: --requests must be >= 1, --warmup >= 0 and --rate > 0\n")
        return 2
    sc = scenario(args.requests, args.seed, args.rate, args.warmup)
    names = list(sc.policies)
    if args.policies:
        names = [n.strip() for n in args.policies.split(",") if n.strip()]
        unknown = [n for n in names if n not in sc.policies]
        if unknown or not names:
            err.write(f"specexec bench ttft: unknown policy {unknown}; this scenario has: {', '.join(sc.policies)}\n")
            return 2
    mode = "live" if args.live else "sim"
    progress = Progress(
        f"ttft ({mode})",
        (args.requests + args.warmup) * len(names),
        enabled=progress_wanted(json_mode=args.json, stdout=out),
        stream=err,
    )
    started = time.perf_counter()
    runs: dict[str, PolicyStats] = {}
    try:
        if args.live:
            runs = live_ttft(sc, names, progress.update)
        else:
            for i, name in enumerate(names):
                base = i * (args.requests + args.warmup)
                runs[name] = simulate_ttft(sc, name, _offset(progress.update, base), engine=args.sim_engine)
    except PolicyError as exc:
        progress.close()
        err.write(f"specexec bench ttft: {exc}\n")
        return 2
    finally:
        progress.close()
    elapsed = time.perf_counter() - started
    summaries: dict[str, Summary] = {n: s.total.summary() for n, s in runs.items()}
    lags = {n: (s.late_sends, s.max_send_lag, summaries[n].requests) for n, s in runs.items()}
    warning = lag_warning(lags)
    found = targets(summaries) if {"hedge-ttft", "hedge-total"} <= set(summaries) else []
    limit5 = fixed_delay_limit(0.05)
    if args.json:
        doc = {
            "summaries": msgspec.to_builtins(summaries),
            "limit_at_5_percent": limit5,
            "requests": args.requests,
            "warmup": args.warmup,
            "send_lag": {n: {"late_sends": late, "max_s": lag} for n, (late, lag, _) in lags.items()},
            "warning": warning,
            "targets": [{"what": w, "value": v, "met": m} for w, v, m in found],
            "elapsed": elapsed,
        }
        out.write(msgspec.json.format(msgspec.json.encode(doc), indent=2).decode() + "\n")
        return 0
    warm = f" (after {args.warmup:,} warm-up requests, not counted)" if args.warmup else ""
    clock = "virtual time" if mode == "sim" else "live, loopback fleet"
    out.write(f"ttft — {DESCRIPTION}\n{args.requests:,} requests per policy{warm} at {args.rate:g}/s, "
              f"seed {args.seed}, {clock} ({elapsed:.1f} s wall)\n\n")  # fmt: skip
    out.write(_table(summaries) + "\n\n")
    if warning is not None:
        out.write(warning + "\n\n")
    out.write(
        f"fixed-delay hedging limit of this TTFT distribution (closed form, 3 independent backends): at 5 % extra "
        f"load d = {_ms(limit5['delay'])} ms, TTFT p50 {_ms(limit5['p50'])} / p99 {_ms(limit5['p99'])} / p99.9 "
        f"{_ms(limit5['p99.9'])} ms\n"
    )
    if found:
        out.write("\ntargets\n")
        for what, value, met in found:
            out.write(f"  {'met   ' if met else 'MISSED'}  {what:<78} {value}\n")
    out.flush()
    return 0
