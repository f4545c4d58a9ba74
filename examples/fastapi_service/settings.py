"""What the service examples read from the environment, and the specexec objects built from it.

==========================  ==================================================================
``SPECEXEC_BACKENDS``        the backends TOML (default: ``backends.toml`` beside this file)
``SPECEXEC_ROUTER``          the router TOML: routes (policies) and the tenant budget
                             (default: ``router.toml`` beside this file)
``SPECEXEC_REDIS_URL``       optional, e.g. ``redis://127.0.0.1:6379/0``: every process pointing
                             at it shares one spend budget (``RedisBudgetStore``) and one set
                             of rate limits, concurrency slots and hedge budgets (``RedisRateLimits``)
==========================  ==================================================================

A bad file stops the service at start-up with a ``PolicyError`` that names the file and the key
path (e.g. ``router.toml: ... (at $.routes.chat.delay)``): nothing is served half-configured. The
service prints it (``config_error_message``) on stderr, without a traceback, and exits non-zero.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import specexec
import specexec.metrics
from specexec.routing import Router
from specexec.stores import RedisBudgetStore, RedisRateLimits

HERE = Path(__file__).resolve().parent
BACKENDS_ENV = "SPECEXEC_BACKENDS"
ROUTER_ENV = "SPECEXEC_ROUTER"
REDIS_ENV = "SPECEXEC_REDIS_URL"


def config_error_message(exc: specexec.PolicyError) -> str:
    """What the service prints when its configuration does not load: the error (file, key path,
    what was expected) and what to do about it."""
    return (
        f"bad configuration: {exc}\n"
        f"Fix the file (or point {BACKENDS_ENV} / {ROUTER_ENV} at another one) and start the service again."
    )


@dataclass
class Service:
    """The objects a request handler uses: an entered runtime, the router, and the metrics sink."""

    runtime: specexec.Runtime
    router: Router
    metrics: specexec.metrics.PrometheusSink


@asynccontextmanager
async def open_service() -> AsyncIterator[Service]:
    """Build the runtime and router from the environment and enter the runtime (its HTTP pools,
    the Redis lease sync); on exit every connection and client is closed. Works on asyncio and trio."""
    backends = Path(os.environ.get(BACKENDS_ENV, HERE / "backends.toml"))
    router = Router.from_toml(Path(os.environ.get(ROUTER_ENV, HERE / "router.toml")))
    redis_url = os.environ.get(REDIS_ENV)
    budget_store = RedisBudgetStore(redis_url) if redis_url else None
    shared_limits = RedisRateLimits(redis_url) if redis_url else None
    if budget_store is not None and router.budget is not None:
        router.budget.store = budget_store  # the tenant budget is now one for every worker
    runtime = specexec.Runtime.from_config(backends, shared_limits=shared_limits)
    try:
        router.check(runtime)  # a route naming an unknown backend stops the service here, not per request
        async with runtime:
            sink = specexec.metrics.instrument(runtime)  # runs, attempts, hedges, cost ... on /metrics
            yield Service(runtime, router, sink)
    finally:
        if shared_limits is not None:
            await shared_limits.aclose()
        if budget_store is not None:
            await budget_store.aclose()
