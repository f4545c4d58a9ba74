"""Open-loop arrivals and the query mix: bounded, seeded, keyed by request number."""

from __future__ import annotations

import itertools
import statistics

import pytest

from specexec import Uniform
from specexec.bench.bench._scenario import QuerySpec, Workload
from specexec.bench.bench._workload import requests


def test_count_warmup_and_seed_keys() -> None:
    w = Workload(requests=50, warmup=5, rate=10.0)
    out = list(requests(w, seed=1))
    assert len(out) == 55
    assert [r.measured for r in out] == [False] * 5 + [True] * 50
    assert [r.number for r in out] == list(range(55))
    assert all(r.query.metadata == {"seed_key": r.number} for r in out)
    assert all(a.at < b.at for a, b in itertools.pairwise(out))


def test_same_seed_same_requests_other_seed_other_times() -> None:
    w = Workload(requests=100)
    a, b, c = (list(requests(w, seed=s)) for s in (3, 3, 4))
    assert [(r.at, r.query) for r in a] == [(r.at, r.query) for r in b]
    assert [r.at for r in a] != [r.at for r in c]


def test_constant_arrivals_are_evenly_spaced() -> None:
    out = list(requests(Workload(arrivals="constant", rate=20.0, requests=10), seed=0))
    assert [r.at for r in out] == pytest.approx([i / 20.0 for i in range(10)])


def test_poisson_rate_and_duration_bound() -> None:
    out = list(requests(Workload(rate=200.0, duration=50.0), seed=2))
    assert all(r.at < 50.0 for r in out)
    assert len(out) == pytest.approx(10_000, rel=0.05)
    gaps = [b.at - a.at for a, b in itertools.pairwise(out)]
    assert statistics.mean(gaps) == pytest.approx(1 / 200.0, rel=0.05)
    assert statistics.stdev(gaps) == pytest.approx(1 / 200.0, rel=0.1)  # exponential: sd = mean


def test_count_and_duration_whichever_first() -> None:
    assert len(list(requests(Workload(rate=10.0, requests=1000, duration=2.0), seed=0))) < 40
    assert Workload(rate=10.0, requests=1000, duration=2.0).expected_requests() == 20
    assert Workload(rate=10.0, requests=5, duration=2.0).expected_requests() == 5
    assert Workload(rate=10.0, duration=2.0, warmup=4).expected_requests() == 16


def test_query_mix_tenants_and_max_tokens() -> None:
    w = Workload(
        requests=4000,
        max_tokens=Uniform(10.0, 20.0),
        tenants={"a": 3.0, "b": 1.0},
        queries=(QuerySpec(prompt="p1", weight=1.0), QuerySpec(prompt="p2", weight=3.0, max_tokens=7, tenant="t")),
    )
    out = [r.query for r in requests(w, seed=5)]
    p2 = [q for q in out if q.prompt == "p2"]
    assert len(p2) / len(out) == pytest.approx(0.75, abs=0.03)
    assert {q.max_tokens for q in p2} == {7} and {q.tenant for q in p2} == {"t"}
    p1 = [q for q in out if q.prompt == "p1"]
    assert {q.max_tokens for q in p1} <= set(range(10, 21)) and len({q.max_tokens for q in p1}) > 5
    share_a = sum(q.tenant == "a" for q in p1) / len(p1)
    assert share_a == pytest.approx(0.75, abs=0.05)
