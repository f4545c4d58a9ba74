"""``--live``: the scenario against the loopback mock fleet, on the real clock, over HTTP.

The fleet (``benchmarks.fleet``, a subprocess on 127.0.0.1) serves the scenario's backends:
the deployments of its ``[fleet]`` config, or its simulated ``[[backends]]`` translated to
deployments (same latency distribution, faults and events). Each policy gets a fresh
``Runtime`` of ``OpenAICompatible``/``Anthropic`` backends pointed at the fleet, after
``POST /reset`` (counters, seeded draws and the event clock start again), so every policy
sees the same schedule. The load is open loop (see ``_driver``): latency counts from each
request's intended send time, and the run is bounded by the workload's count or duration.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any

import anyio

from specexec import Backend, HealthFeedLike, PolicyError, Runtime
from specexec import Constant as SimConstant
from specexec import LogNormal as SimLogNormal
from specexec import Mixture as SimMixture
from specexec import Scaled as SimScaled
from specexec import Uniform as SimUniform
from specexec.backends import Anthropic, HttpConfig, HttpTimeouts, OpenAICompatible
from specexec.bench.fleet import (
    Constant,
    Deployment,
    Faults,
    FleetConfig,
    FleetProcess,
    LogNormal,
    Mixture,
    Uniform,
    Weighted,
    start_fleet_process,
)
from specexec.config import SimulatedConfig

from ._driver import LastTrace, drive
from ._scenario import Scenario, backend_kind
from ._stats import PolicyStats

__all__ = [
    "LOOPS",
    "fleet_backends",
    "fleet_config",
    "fleet_distribution",
    "live_notes",
    "run_live",
    "run_on_fleet",
    "run_policy_live",
]

START_DELAY = 0.005
"""Seconds between the start signal (the fleet's reset: its event clock's zero) and the first
intended send time."""

ProgressFn = Callable[[int], None]

LOOPS = {"trio": ("trio", {}), "asyncio": ("asyncio", {"use_uvloop": True})}
"""``--loop`` choices: the event loop the client (runtime and load driver) runs on; ``asyncio``
is asyncio with uvloop."""

_FAULTS = {"unavailable": "error_503", "bad_response": "malformed"}
_LOOPBACK = HttpConfig(trust_env=False)  # the fleet is on 127.0.0.1: never through an HTTP(S)_PROXY


# --------------------------------------------------------------------------- scenario → fleet


def fleet_config(scenario: Scenario) -> FleetConfig:
    """The fleet serving ``scenario``: its ``[fleet]`` config, or its simulated backends as
    deployments (with the scenario's events). Raises ``PolicyError`` for what the fleet cannot
    serve (error kinds other than ``unavailable`` and ``bad_response``, non-simulated backends)."""
    if scenario.fleet is not None:
        return scenario.fleet
    from ._scenario import _fleet_events

    prompts = [q.prompt for q in scenario.workload.queries]
    deployments = []
    for i, b in enumerate(scenario.backends):
        if not isinstance(b, SimulatedConfig):
            raise PolicyError(
                f"backend {b.name!r} is kind {backend_kind(b)!r}: --live serves simulated backends from the loopback "
                "fleet; real endpoints are for --target",
                path=f"$.backends[{i}]",
                source=scenario.source,
            )
        faults = {"stall": b.stall, "error_503": 0.0, "malformed": 0.0}
        for kind, rate in b.errors.items():
            fault = _FAULTS.get(kind)
            if fault is None:
                raise PolicyError(
                    f"the fleet cannot inject {kind!r} at random (it can: {', '.join(_FAULTS)}; "
                    "rate limits come from [[events]] kind = 'rate_limit')",
                    path=f"$.backends[{i}].errors.{kind}",
                    source=scenario.source,
                )
            faults[fault] = rate
        deployments.append(
            Deployment(
                name=b.name,
                provider=b.provider or "sim",
                region=b.region,
                model=b.model or f"{b.name}-model",
                latency=fleet_distribution(b.latency),
                output_tokens=b.output_tokens,
                answers={prompt: b.reply for prompt in prompts},
                faults=Faults(stall=faults["stall"], error_503=faults["error_503"], malformed=faults["malformed"]),
            )
        )
    events = _fleet_events(scenario.events, scenario.backend_identities)
    config = FleetConfig(deployments=tuple(deployments), events=events, seed=scenario.seed)
    return config.validated(source=scenario.source or "<scenario>")


def fleet_distribution(dist: Any) -> Any:
    """A specexec latency distribution as the fleet's (mixtures and scaling flattened)."""
    leaves = _flatten(dist, 1.0, 1.0)
    if len(leaves) == 1:
        return leaves[0][1]
    return Mixture(components=tuple(Weighted(weight=w, dist=d) for w, d in leaves if w > 0))


def _flatten(dist: Any, weight: float, factor: float) -> list[tuple[float, Any]]:
    if isinstance(dist, (int, float)):
        return [(weight, Constant(value=float(dist) * factor))]
    if isinstance(dist, SimConstant):
        return [(weight, Constant(value=dist.value * factor))]
    if isinstance(dist, SimLogNormal):
        return [(weight, LogNormal(median=dist.median * factor, sigma=dist.sigma))]
    if isinstance(dist, SimUniform):
        return [(weight, Uniform(low=dist.low * factor, high=dist.high * factor))]
    if isinstance(dist, SimScaled):
        return _flatten(dist.base, weight, factor * dist.factor)
    if isinstance(dist, SimMixture):
        total = sum(c.weight for c in dist.components)
        out: list[tuple[float, Any]] = []
        for c in dist.components:
            out += _flatten(c.dist, weight * c.weight / total, factor)
        return out
    raise TypeError(f"no fleet equivalent for latency distribution {dist!r}")


def fleet_backends(scenario: Scenario, config: FleetConfig, urls: Mapping[str, str]) -> list[Backend]:
    """Fresh HTTP backends for the fleet's deployments at ``urls`` (name → base URL), with the
    scenario's prices and limits; no API keys unless a deployment asks for one, and no proxy."""
    simulated = {b.name: b for b in scenario.backends}
    timeout = HttpTimeouts(read=scenario.workload.timeout)
    out: list[Backend] = []
    for d in config.deployments:
        sim = simulated.get(d.name)
        if sim is not None:
            input_price, output_price, limits = sim.input_price, sim.output_price, sim.limits
        else:
            input_price, output_price = scenario.prices.get(d.name, scenario.prices.get(d.provider, (0.0, 0.0)))
            limits = None
        common: dict[str, Any] = {
            "base_url": urls[d.name],
            "model": d.model,
            "api_key_env": d.api_key_env,
            "provider": d.provider,
            "region": d.region,
            "input_price": input_price,
            "output_price": output_price,
            "limits": limits,
            "timeout": timeout,
            "http": _LOOPBACK,
        }
        backend: Backend = Anthropic(d.name, **common) if d.api == "anthropic" else OpenAICompatible(d.name, **common)
        out.append(backend)
    return out


# --------------------------------------------------------------------------- running


FeedsFn = Callable[[], Sequence[HealthFeedLike]]
"""Makes the health feeds (e.g. a ``specexec.HealthFeed`` following a probe daemon) of one
policy's fresh runtime."""


def run_policy_live(
    scenario: Scenario,
    name: str,
    backends: Sequence[Backend],
    on_progress: ProgressFn | None = None,
    *,
    feeds: FeedsFn | None = None,
    at_start: Callable[[], None] | None = None,
    streamed: bool = False,
    loop: str = "trio",
) -> PolicyStats:
    """Run policy ``name`` on the real clock against ``backends`` (in a fresh, entered Runtime
    with ``feeds()`` as its health feeds) on ``loop`` (a ``LOOPS`` key). ``at_start()`` is called
    once the runtime is entered, just before the workload's time zero (``run_on_fleet`` resets
    the fleet there, so the fleet's scheduled events line up with the workload's clock within a
    few milliseconds). ``streamed``: each request goes through ``Runtime.stream`` (see ``drive``)."""
    if loop not in LOOPS:
        raise ValueError(f"loop must be one of {', '.join(LOOPS)}, got {loop!r}")
    backend, options = LOOPS[loop]
    stats = PolicyStats(scenario.phases)
    feeds_now = list(feeds() if feeds else ())
    anyio.run(
        _run,
        scenario,
        name,
        list(backends),
        stats,
        on_progress,
        feeds_now,
        at_start,
        streamed,
        backend=backend,
        backend_options=options,
    )
    return stats


async def _run(
    scenario: Scenario,
    name: str,
    backends: list[Backend],
    stats: PolicyStats,
    on_progress: ProgressFn | None,
    feeds: list[HealthFeedLike],
    at_start: Callable[[], None] | None,
    streamed: bool = False,
) -> None:
    sink = LastTrace()
    async with Runtime(backends, health=scenario.health, sinks=[sink], feeds=feeds) as runtime:
        if at_start is not None:
            at_start()  # a short blocking call (the fleet's POST /reset) before any request is sent
        policy = scenario.policies[name]
        await drive(scenario, policy, runtime, sink, stats, on_progress, start_delay=START_DELAY, streamed=streamed)


def run_on_fleet(
    scenario: Scenario,
    fleet: FleetProcess,
    *,
    on_progress: ProgressFn | None = None,
    feeds: FeedsFn | None = None,
    loop: str = "trio",
) -> dict[str, PolicyStats]:
    """Run every policy of ``scenario`` in turn against a running fleet (serving
    ``fleet_config(scenario)``), resetting it before each, the client on ``loop``.
    ``on_progress(n)`` gets requests finished over all policies."""
    out: dict[str, PolicyStats] = {}
    finished = 0
    for name in scenario.policies:
        base = finished

        def bump(done: int, base: int = base) -> None:
            if on_progress is not None:
                on_progress(base + done)

        backends = fleet_backends(scenario, fleet.config, fleet.deployments)
        out[name] = run_policy_live(scenario, name, backends, bump, feeds=feeds, at_start=fleet.reset, loop=loop)
        finished += out[name].total.requests + scenario.workload.warmup
    return out


def run_live(
    scenario: Scenario, *, on_progress: ProgressFn | None = None, loop: str = "trio"
) -> dict[str, PolicyStats]:
    """Start the fleet for ``scenario``, run every policy against it in turn (the client on
    ``loop``: ``"trio"`` or ``"asyncio"``, with uvloop), stop the fleet."""
    with start_fleet_process(fleet_config(scenario)) as fleet:
        return run_on_fleet(scenario, fleet, on_progress=on_progress, loop=loop)


def live_notes(scenario: Scenario) -> list[str]:
    """What ``--live`` does not reproduce of a scenario written for ``--sim``."""
    notes = []
    if scenario.quality is not None and any(r < 1.0 for r in scenario.quality.pass_rate.values()):
        notes.append("quality.pass_rate is simulated only in --sim: fleet deployments always give their reply")
    return notes
