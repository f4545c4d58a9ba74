"""The seeded latency model: distributions, repeatability, and timing as served."""

from __future__ import annotations

import random
import statistics
import time
from typing import Any

import httpx
import pytest

from specexec.bench.fleet import Constant, Deployment, FleetProcess, LatencyModel, LogNormal, Mixture, Weighted
from specexec.bench.fleet._config import Uniform
from specexec.bench.fleet._latency import sample

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def dep(latency: Any, per_token: float = 0.0) -> Deployment:
    return Deployment(name="d", provider="p", region="r", model="m", latency=latency, per_token=per_token)


def test_constant_and_uniform() -> None:
    rng = random.Random(1)
    assert sample(Constant(value=0.03), rng) == 0.03
    draws = [sample(Uniform(low=0.01, high=0.02), rng) for _ in range(200)]
    assert all(0.01 <= x <= 0.02 for x in draws)


def test_lognormal_median_and_tail() -> None:
    rng = random.Random(2)
    draws = [sample(LogNormal(median=0.04, sigma=0.25), rng) for _ in range(4000)]
    assert statistics.median(draws) == pytest.approx(0.04, rel=0.05)
    tailed = [sample(LogNormal(median=0.04, sigma=0.0, tail_prob=0.05, tail_factor=10.0), rng) for _ in range(4000)]
    assert sorted(set(tailed)) == pytest.approx([0.04, 0.4])
    assert tailed.count(0.04) / len(tailed) == pytest.approx(0.95, abs=0.015)


def test_mixture_weights() -> None:
    rng = random.Random(3)
    mix = Mixture(
        components=(Weighted(weight=3, dist=Constant(value=1.0)), Weighted(weight=1, dist=Constant(value=2.0)))
    )
    draws = [sample(mix, rng) for _ in range(4000)]
    assert draws.count(1.0) / len(draws) == pytest.approx(0.75, abs=0.03)


def test_same_seed_same_latencies_other_seed_other_latencies() -> None:
    d = dep(LogNormal(median=0.05, sigma=0.5, tail_prob=0.05))
    a, b, c = LatencyModel(d, seed=1), LatencyModel(d, seed=1), LatencyModel(d, seed=2)
    seq_a = [a.ttft() for _ in range(50)]
    assert seq_a == [b.ttft() for _ in range(50)]
    assert seq_a != [c.ttft() for _ in range(50)]
    a.reseed()
    assert [a.ttft() for _ in range(50)] == seq_a


def test_served_latencies_repeat_after_reset(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    url = fault_fleet.base_url("seeded") + "/chat/completions"

    def run() -> list[float]:
        fault_fleet.reset()
        return [float(http.post(url, json=CHAT).headers["x-fleet-ttft"]) for _ in range(10)]

    first = run()
    assert first == run()
    assert len(set(first)) == 10  # lognormal: all different
    model = LatencyModel(fault_fleet.config.deployment("seeded"), seed=fault_fleet.config.seed)
    assert first == [model.ttft() for _ in range(10)]  # exactly the model's draws for the fleet seed


def test_response_timing_follows_the_model(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    # slow: 150 ms to first token, no per-token time; seeded: ~4 ms (lognormal), 4 tokens
    url = fault_fleet.base_url("slow") + "/chat/completions"
    t0 = time.monotonic()
    r = http.post(url, json=CHAT)
    elapsed = time.monotonic() - t0
    assert r.status_code == 200
    assert 0.148 <= elapsed < 1.0
    t0 = time.monotonic()
    with http.stream("POST", url, json={**CHAT, "stream": True}) as r:
        lines = r.iter_lines()
        next(lines)
        first = time.monotonic() - t0
        for _ in lines:
            pass
    assert 0.148 <= first < 1.0


def test_per_token_time(fleet: FleetProcess, http: httpx.Client) -> None:
    # alpha-us: 5 ms to first token, 0.5 ms per token: the reply of 8 tokens takes >= 9 ms
    url = fleet.base_url("alpha-us") + "/chat/completions"
    r = http.post(url, json={**CHAT, "stream": True})
    assert float(r.headers["x-fleet-ttft"]) == 0.005
    t0 = time.monotonic()
    http.post(url, json=CHAT)
    assert time.monotonic() - t0 >= 0.009 - 0.002  # loop-time granularity: 1 ms
