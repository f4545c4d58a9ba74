"""``--sim``: each policy against ``SimulatedBackend``s in virtual time.

Two drivers of the same engine core: the discrete-event one (``_des``: a heap of timed events,
no event loop; the default, several times faster) and this module's trio virtual-time one,
kept as the cross-check (``engine="trio"``) and for verifiers or scorers that really suspend
on something else than a judge call (the discrete-event driver refuses those: ``TypeError``).
Both give identical figures for a seed.
The trio driver:

One ``trio.run(..., clock=MockClock(autojump_threshold=0))`` per policy: a fresh ``Runtime``
(its own health and hedge budget) and fresh backends seeded from the scenario, one nursery
that launches each request at its intended time (open loop, at most ``max_in_flight`` at
once) and records it when it ends. Virtual time jumps straight to the next timer, so a run
takes as long as the CPU work it does, and a seed gives the same figures every time: the
arrivals and the query mix are seeded, every simulated draw is keyed by the request's index
(``metadata["seed_key"]``) and trio's scheduler (which breaks ties between tasks woken at the
same instant at random) is seeded too.

Policies are independent, so with ``jobs > 1`` they run in parallel worker processes
(``concurrent.futures.ProcessPoolExecutor``, joined before ``simulate`` returns; its bookkeeping
thread is the standard library's, every simulation runs on a worker's main thread); the
figures are the same as in one process.
"""

from __future__ import annotations

import concurrent.futures
import multiprocessing
import os
import random
from collections.abc import Callable, Sequence
from typing import Any

import anyio
import trio
import trio.testing

from specexec import (
    BackendError,
    Policy,
    Query,
    RateLimited,
    Response,
    Runtime,
    SimulatedBackend,
    Slowdown,
    Unavailable,
)
from specexec.config import SimulatedConfig

from ._driver import LastTrace, drive
from ._scenario import Brownout, Outage, Scenario
from ._stats import PolicyStats

__all__ = [
    "ENGINES",
    "REFUSAL_LATENCY",
    "SimBackend",
    "build_sim_backends",
    "simulate",
    "simulate_policy",
]

ENGINES = ("des", "trio")
"""``simulate``'s drivers: the discrete-event one (default) and trio virtual time (the cross-check)."""

REFUSAL_LATENCY = 0.005
"""Seconds a simulated outage or rate-limited answer takes (a refused request is quick)."""

ProgressFn = Callable[[int], None]


class SimBackend(SimulatedBackend):
    """A ``SimulatedBackend`` with the scenario's outages and rate-limit storms, and answer quality.

    While a refusal window is active every call fails after ``REFUSAL_LATENCY`` with
    ``Unavailable`` (outage) or ``RateLimited`` carrying ``retry_after`` (storm); brownouts
    are the base class's ``slowdowns``. With ``pass_rate < 1`` a call answers ``reply`` with
    that probability and ``wrong-<n>`` otherwise (drawn per request, like the latency).
    """

    def __init__(
        self,
        config: SimulatedConfig,
        *,
        seed: int,
        slowdowns: Sequence[Slowdown] = (),
        refusals: Sequence[tuple[float, float, Callable[[], BackendError]]] = (),
        pass_rate: float = 1.0,
    ) -> None:
        good = config.reply
        reply: str | Callable[[Query], str] = good
        if pass_rate < 1.0:
            salt = f"{seed}:{config.name}:answer:"

            def reply(query: Query) -> str:
                rng = random.Random(salt + str(query.metadata.get("seed_key")))
                return good if rng.random() < pass_rate else f"wrong-{rng.randrange(1_000_000)}"

        super().__init__(
            config.name,
            config.latency,
            seed=seed,
            errors=config.errors,
            stall=config.stall,
            reply=reply,
            output_tokens=config.output_tokens,
            reported_model=config.reported_model,
            slowdowns=slowdowns,
            provider=config.provider or "sim",
            region=config.region,
            model=config.model,
            input_price=config.input_price,
            output_price=config.output_price,
            limits=config.limits,
        )
        self.refusals = tuple(refusals)

    async def complete(self, query: Query) -> Response:
        """Refuse while an outage or storm is active; otherwise the simulated answer."""
        if self.refusals:
            refused = self.refusal(anyio.current_time())
            if refused is not None:
                await anyio.sleep(REFUSAL_LATENCY)
                raise refused
        return await super().complete(query)

    def refusal(self, now: float) -> BackendError | None:
        """The error of a call of ``complete`` at ``now`` while an outage or storm is active
        (counted as a call), else ``None``."""
        for start, end, error in self.refusals:
            if start <= now < end:
                self.calls += 1
                return error()
        return None

    def draw(self, query: Query, now: float) -> tuple[float, Response | BackendError | None]:
        """``complete`` as one event (see ``SimulatedBackend.draw``): a refusal while an outage or
        storm is active, otherwise the simulated answer."""
        refused = self.refusal(now) if self.refusals else None
        if refused is not None:
            return REFUSAL_LATENCY, refused
        return super().draw(query, now)


def build_sim_backends(scenario: Scenario, t0: float = 0.0) -> list[SimBackend]:
    """Fresh simulated backends for one policy run, seeded from the scenario's seed; the
    scenario's events are placed on the loop clock starting at ``t0``."""
    identities = scenario.backend_identities
    pass_rates = scenario.quality.pass_rate if scenario.quality is not None else {}
    slowdowns: dict[str, list[Slowdown]] = {}
    refusals: dict[str, list[tuple[float, float, Callable[[], BackendError]]]] = {}
    for ev in scenario.events:
        for name in ev.targets(identities):
            start, end = t0 + ev.start, t0 + ev.end
            if isinstance(ev, Brownout):
                slowdowns.setdefault(name, []).append(Slowdown(start, end, ev.factor))
            elif isinstance(ev, Outage):
                message = (
                    "simulated outage: connection reset" if ev.mode == "reset" else f"simulated outage: {ev.status}"
                )
                status = None if ev.mode == "reset" else ev.status
                refusals.setdefault(name, []).append((start, end, _unavailable(message, name, status)))
            else:
                refusals.setdefault(name, []).append((start, end, _rate_limited(name, ev.retry_after)))
    out = []
    for config in scenario.backends:
        if not isinstance(config, SimulatedConfig):  # load_scenario's caller checks scenario.simulated
            raise TypeError(f"backend {config.name!r} is not simulated")
        out.append(
            SimBackend(
                config,
                seed=scenario.seed * 1_000_003 + config.seed,
                slowdowns=slowdowns.get(config.name, ()),
                refusals=refusals.get(config.name, ()),
                pass_rate=pass_rates.get(config.name, 1.0),
            )
        )
    return out


def _unavailable(message: str, name: str, status: int | None) -> Callable[[], BackendError]:
    return lambda: Unavailable(message, backend=name, status=status)


def _rate_limited(name: str, retry_after: float) -> Callable[[], BackendError]:
    return lambda: RateLimited("simulated rate-limit storm", retry_after=retry_after, backend=name, status=429)


def _seed_trio_scheduler(seed: int) -> None:
    """Trio reverses each batch of runnable tasks at random; seed that choice (private API,
    looked up defensively) so that tasks woken at the same virtual instant run in the same
    order every time."""
    core = getattr(trio, "_core", None)
    rng = getattr(getattr(core, "_run", None), "_r", None)
    if isinstance(rng, random.Random):
        rng.seed(f"specexec-bench:{seed}")


def simulate_policy(scenario: Scenario, name: str, on_progress: ProgressFn | None = None) -> PolicyStats:
    """Run policy ``name`` of ``scenario`` in virtual time and return its stats.

    ``on_progress(n)`` is called with the number of requests finished so far (see ``drive``).
    """
    stats = PolicyStats(scenario.phases)
    _seed_trio_scheduler(scenario.seed)
    trio.run(
        _simulate,
        scenario,
        scenario.policies[name],
        stats,
        on_progress,
        clock=trio.testing.MockClock(autojump_threshold=0),
    )
    return stats


async def _simulate(scenario: Scenario, policy: Policy, stats: PolicyStats, on_progress: ProgressFn | None) -> None:
    sink = LastTrace()
    runtime = Runtime(build_sim_backends(scenario, trio.current_time()), health=scenario.health, sinks=[sink])
    async with runtime:
        await drive(scenario, policy, runtime, sink, stats, on_progress)


# --------------------------------------------------------------------------- several policies

_shared_counter: Any = None  # a worker process's multiprocessing.Value of finished requests


def _init_worker(counter: Any) -> None:
    global _shared_counter
    _shared_counter = counter


def _policy_runner(scenario: Scenario, engine: str) -> Callable[[Scenario, str, ProgressFn | None], PolicyStats]:
    if engine not in ENGINES:
        raise ValueError(f"unknown simulation engine {engine!r}; known: {', '.join(ENGINES)}")
    if engine == "des":
        from ._des import des_simulate_policy

        return des_simulate_policy
    return simulate_policy


def _worker(scenario: Scenario, name: str, engine: str = "des") -> dict[str, Any]:
    last = 0

    def bump(done: int) -> None:
        nonlocal last
        with _shared_counter.get_lock():
            _shared_counter.value += done - last
        last = done

    runner = _policy_runner(scenario, engine)
    return runner(scenario, name, bump if _shared_counter is not None else None).to_builtins()


def default_jobs(scenario: Scenario) -> int:
    """Worker processes ``simulate`` uses by default: one per CPU (at most one per policy) for
    runs of 50 000 requests or more; below that, starting workers costs more than it saves."""
    total = scenario.workload.expected_requests() * len(scenario.policies)
    if total < 50_000:
        return 1
    return max(1, min(os.cpu_count() or 1, len(scenario.policies)))


def simulate(
    scenario: Scenario, *, jobs: int | None = None, on_progress: ProgressFn | None = None, engine: str = "des"
) -> dict[str, PolicyStats]:
    """Run every policy of ``scenario`` in virtual time; stats by policy name, in order.

    ``jobs`` worker processes (default ``default_jobs``); ``on_progress(n)`` gets the number of
    requests finished over all policies; ``engine`` the driver (``ENGINES``).
    """
    jobs = default_jobs(scenario) if jobs is None else max(1, jobs)
    runner = _policy_runner(scenario, engine)
    names = list(scenario.policies)
    if jobs == 1 or len(names) == 1:
        out: dict[str, PolicyStats] = {}
        finished = 0
        for name in names:
            base = finished

            def bump(done: int, base: int = base) -> None:
                if on_progress is not None:
                    on_progress(base + done)

            out[name] = runner(scenario, name, bump)
            finished += out[name].total.requests + scenario.workload.warmup
        return out
    context = multiprocessing.get_context("spawn")
    counter = context.Value("q", 0)
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(jobs, len(names)), mp_context=context, initializer=_init_worker, initargs=(counter,)
    ) as pool:
        futures = {pool.submit(_worker, scenario, name, engine): name for name in names}
        pending = set(futures)
        while pending:
            _, pending = concurrent.futures.wait(pending, timeout=0.2)
            if on_progress is not None:
                on_progress(counter.value)
        results = {futures[f]: f.result() for f in futures}
    return {name: PolicyStats.from_builtins(results[name]) for name in names}
