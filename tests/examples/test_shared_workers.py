"""Two worker processes of the FastAPI example share one Redis (a real redis-server): together they
stay within one tenant budget (``RedisBudgetStore``) and one rpm limit (``RedisRateLimits``), where
two in-process budgets or limiters would each allow the whole of it."""

from __future__ import annotations

import math
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
import redis

from specexec.bench.fleet import FleetProcess
from specexec.bench.redis_server import RedisServer
from specexec.bench.services import ServiceProcess

from .conftest import StartService

pytestmark = pytest.mark.slow


def fire(services: list[ServiceProcess], n: int, tenant: str, concurrency: int = 4) -> list[tuple[int, dict[str, Any]]]:
    """``n`` chat requests, alternating between the services, ``concurrency`` at a time:
    ``(status, body)`` of each."""

    def one(i: int) -> tuple[int, dict[str, Any]]:
        with httpx.Client(timeout=30.0, trust_env=False) as client:
            r = client.post(f"{services[i % len(services)].url}/v1/chat", json={"message": f"hi {i}", "tenant": tenant})
            return r.status_code, r.json()

    with ThreadPoolExecutor(concurrency) as pool:
        return list(pool.map(one, range(n)))


def test_two_workers_spend_one_tenant_budget(
    fleet: FleetProcess, redis_server: RedisServer, services: StartService
) -> None:
    """A budget of $0.0002: 80 answers at ≈ $7.4e-6 would spend ≈ 3 × it, so two in-process budgets
    would together spend ≈ 2 × it; shared on Redis the workers' answers add up to at most the limit."""
    limit = 0.0002
    workers = [services("fastapi", fleet, redis_url=redis_server.url, limit_usd=limit) for _ in range(2)]
    replies = fire(workers, 80, tenant="acme")

    statuses = Counter(status for status, _ in replies)
    assert set(statuses) == {200, 402}, statuses
    answered = [body for status, body in replies if status == 200]
    spent = sum(body["cost"] for body in answered)
    assert spent <= limit + 1e-12
    assert spent >= limit / 2  # the budget is spent, not stranded in reservations
    assert {body["worker"] for body in answered} == {str(w.pid) for w in workers}  # both spent from it
    refused = next(body for status, body in replies if status == 402)
    assert refused["error"] == "BudgetExceeded" and "acme" in refused["detail"]

    client = redis.Redis.from_url(redis_server.url)
    try:
        (key,) = client.keys("specexec:budget:acme:*")
        tally = {k.decode(): float(v) for k, v in client.hgetall(key).items()}
    finally:
        client.close()
    assert tally["spent"] == pytest.approx(spent, rel=1e-9)
    assert tally["reserved"] == pytest.approx(0.0, abs=1e-12)  # every reservation settled


def test_two_workers_share_one_rate_limit(
    fleet: FleetProcess, redis_server: RedisServer, services: StartService
) -> None:
    """rpm = 20 per backend (a burst of 20, then one every 3 s): the fleet receives at most
    20 + 20·t/60 requests per deployment from both workers together, where two in-process
    limiters would let ≈ 40 through."""
    rpm = 20
    workers = [services("fastapi", fleet, redis_url=redis_server.url, rpm=rpm) for _ in range(2)]
    fleet.reset()
    began = time.monotonic()
    replies = fire(workers, 3 * rpm, tenant="acme")
    elapsed = time.monotonic() - began

    upstream = {name: fleet.deployment_stats(name)["requests"] for name in ("alpha-us", "alpha-eu")}
    allowed = rpm + math.ceil(rpm * (elapsed + 1.0) / 60)  # burst + rate × (the run + start-up skew)
    assert all(n <= allowed for n in upstream.values()), (upstream, allowed)
    statuses = Counter(status for status, _ in replies)
    answered = [body for status, body in replies if status == 200]
    assert rpm // 2 <= len(answered) <= 2 * allowed, statuses
    assert {body["worker"] for body in answered} == {str(w.pid) for w in workers}
    assert set(statuses) - {200} == {429}, statuses
