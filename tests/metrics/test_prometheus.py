"""``specexec.metrics``: Prometheus counters and real histograms from traces, and a runtime collector."""

from __future__ import annotations

import anyio
import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

import specexec
from specexec import AttemptRecord, Policy, RouteDecision, Runtime, Trace, TraceEvent
from specexec.metrics import LATENCY_BUCKETS, PrometheusSink, instrument
from tests.conftest import Timing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio


def value(registry: CollectorRegistry, name: str, **labels: str) -> float | None:
    """One sample's value (``None``: no such sample)."""
    return registry.get_sample_value(name, labels)


async def test_a_hedged_run_counts_runs_attempts_hedges_latency_cost_and_tokens(timing: Timing) -> None:
    slow = Scripted("slow", 1.0, input_price=1.0, output_price=2.0, usage=(100, 50))
    fast = Scripted("fast", 0.1, input_price=1.0, output_price=2.0, usage=(100, 50))
    async with Runtime([slow, fast]) as rt:
        sink = instrument(rt)
        policy = Policy.hedge(["slow", "fast"], delay=0.2, max_attempts=2, name="chat")
        result = await rt.run("q", policy)
    r = sink.registry
    run = {"mode": "hedge", "policy": "chat", "route": "", "outcome": "ok"}
    assert value(r, "specexec_runs_total", **run) == 1
    assert value(r, "specexec_run_duration_seconds_count", **run) == 1
    assert value(r, "specexec_run_duration_seconds_sum", **run) == timing.approx(0.3)
    assert value(r, "specexec_run_duration_seconds_bucket", **run, le="0.32") == 1
    assert value(r, "specexec_run_duration_seconds_bucket", **run, le="0.16") == 0
    attempts = {"policy": "chat", "route": ""}
    assert value(r, "specexec_attempts_total", **attempts, backend="slow", trigger="primary", outcome="cancelled") == 1
    assert value(r, "specexec_attempts_total", **attempts, backend="fast", trigger="hedge", outcome="accepted") == 1
    assert value(r, "specexec_hedges_total", **attempts, backend="fast") == 1
    assert value(r, "specexec_attempt_duration_seconds_count", backend="fast", outcome="accepted") == 1
    assert value(r, "specexec_attempt_duration_seconds_sum", backend="fast", outcome="accepted") == timing.approx(0.1)
    cost = sum(a.cost for a in result.trace.attempts)
    assert cost > 0
    assert value(r, "specexec_cost_usd_total", **attempts, backend="fast") == pytest.approx(
        result.trace.attempts[1].cost
    )
    assert value(r, "specexec_tokens_total", backend="fast", kind="output") == 50
    assert value(r, "specexec_hedges_refused_total", **attempts) is None


async def test_hedges_refused_by_the_budget_are_counted(timing: Timing) -> None:
    async with Runtime([Scripted("slow", 1.0), Scripted("fast", 0.1)]) as rt:
        sink = instrument(rt)
        policy = Policy.hedge(["slow", "fast"], delay=0.2, max_attempts=2, name="h")
        first = await rt.run("q", policy)  # the default budget's reserve: one hedge per 10 s
        second = await rt.run("q", policy)
    assert (first.trace.hedges, second.trace.hedges) == (1, 0)
    r = sink.registry
    assert value(r, "specexec_hedges_total", policy="h", route="", backend="fast") == 1
    assert value(r, "specexec_hedges_refused_total", policy="h", route="") == 1
    assert value(r, "specexec_run_events_total", policy="h", route="", event="skipped") == 1
    assert value(r, "specexec_runs_total", mode="hedge", policy="h", route="", outcome="ok") == 2


async def test_the_collector_reads_breaker_state_in_flight_and_hedge_budget_at_scrape(timing: Timing) -> None:
    down = Scripted("down", 0.01, error=specexec.Unavailable("down"))
    health = specexec.HealthConfig(breaker=specexec.BreakerConfig(cooldown=0.5))
    async with Runtime([down, Scripted("up", 0.01)], health=health) as rt:
        sink = instrument(rt)
        r = sink.registry
        assert value(r, "specexec_breaker_state", backend="down", state="closed") == 1
        for _ in range(5):  # the breaker opens after 5 consecutive failures, for 0.5 s
            with pytest.raises(specexec.NoAcceptableResponse):
                await rt.run("q", Policy.single("down"))
        assert value(r, "specexec_breaker_state", backend="down", state="open") == 1
        assert value(r, "specexec_breaker_state", backend="down", state="closed") == 0
        assert value(r, "specexec_breaker_state", backend="up", state="closed") == 1
        await anyio.sleep(0.5)
        assert value(r, "specexec_breaker_state", backend="down", state="half_open") == 1
        assert value(r, "specexec_backend_in_flight", backend="up") == 0
        await rt.run("q", Policy.hedge(["up"], delay=0.2, name="h"))
        budget = "max_extra_load=0.05,min_per_second=0.1,ttl=10"
        assert value(r, "specexec_hedge_budget_tokens", budget=budget) == pytest.approx(1.05)
    runs = value(r, "specexec_runs_total", mode="single", policy="", route="", outcome="no_acceptable")
    assert runs == 5


def test_routes_and_spend_budgets_come_from_the_trace() -> None:
    sink = PrometheusSink()
    route = RouteDecision("code", selector="rule:code", budget_key="team-a", budget_remaining=0.25, budget="tenant/day")
    trace = Trace(
        mode="single",
        policy="coder",
        outcome="ok",
        latency=0.5,
        cost=0.003,
        route=route,
        attempts=[AttemptRecord("coder", trigger="primary", outcome="accepted", latency=0.5, cost=0.003, ttft=0.05)],
        events=[TraceEvent(0.0, "panic", "every breaker open")],
    )
    sink(trace)
    sink(trace)
    r = sink.registry
    assert value(r, "specexec_runs_total", mode="single", policy="coder", route="code", outcome="ok") == 2
    # Before: the label was the key's value, a tenant id (one series per tenant, forever).
    assert value(r, "specexec_budget_spent_usd_total", budget="tenant/day") == pytest.approx(0.006)
    assert value(r, "specexec_budget_remaining_ratio", budget="tenant/day") == 0.25
    assert "team-a" not in generate_latest(r).decode()
    per_key = PrometheusSink(budget_keys=True)
    per_key(trace)
    assert value(per_key.registry, "specexec_budget_spent_usd_total", budget="team-a") == pytest.approx(0.003)
    assert value(r, "specexec_run_events_total", policy="coder", route="code", event="panic") == 2
    assert value(r, "specexec_attempt_ttft_seconds_count", backend="coder") == 2
    assert value(r, "specexec_attempt_ttft_seconds_bucket", backend="coder", le="0.06") == 2


def test_a_run_without_an_answer_is_timed_to_its_last_attempt() -> None:
    sink = PrometheusSink()
    sink(
        Trace(
            mode="failover",
            outcome="deadline",
            attempts=[
                AttemptRecord("a", outcome="failed", latency=0.2, ended=0.2),
                AttemptRecord("b", outcome="cancelled", latency=0.8, ended=1.0),
                AttemptRecord("c", outcome="skipped"),
            ],
        )
    )
    labels = {"mode": "failover", "policy": "", "route": "", "outcome": "deadline"}
    assert value(sink.registry, "specexec_run_duration_seconds_sum", **labels) == 1.0
    skipped = {"policy": "", "route": "", "backend": "c", "trigger": "", "outcome": "skipped"}
    assert value(sink.registry, "specexec_attempts_total", **skipped) == 1
    assert value(sink.registry, "specexec_attempt_duration_seconds_count", backend="c", outcome="skipped") is None


def test_each_sink_has_its_own_registry_never_the_global_one() -> None:
    before = {m.name for m in REGISTRY.collect()}
    a, b = PrometheusSink(), PrometheusSink()
    assert a.registry is not b.registry
    a(Trace(mode="single", outcome="ok", latency=0.1))
    assert value(a.registry, "specexec_runs_total", mode="single", policy="", route="", outcome="ok") == 1
    assert value(b.registry, "specexec_runs_total", mode="single", policy="", route="", outcome="ok") is None
    assert {m.name for m in REGISTRY.collect()} == before
    shared = CollectorRegistry()
    PrometheusSink(shared, namespace="svc_a")
    PrometheusSink(shared, namespace="svc_b")  # two namespaces in one registry do not collide
    with pytest.raises(ValueError, match="Duplicated timeseries"):
        PrometheusSink(shared, namespace="svc_a")


def test_buckets_are_the_genai_conventions_and_can_be_changed() -> None:
    assert LATENCY_BUCKETS[0] == 0.01 and LATENCY_BUCKETS[-1] == 81.92
    sink = PrometheusSink(latency_buckets=(1.0, 2.0))
    sink(Trace(mode="single", outcome="ok", latency=1.5))
    labels = {"mode": "single", "policy": "", "route": "", "outcome": "ok"}
    assert value(sink.registry, "specexec_run_duration_seconds_bucket", **labels, le="1.0") == 0
    assert value(sink.registry, "specexec_run_duration_seconds_bucket", **labels, le="2.0") == 1
    assert value(sink.registry, "specexec_run_duration_seconds_bucket", **labels, le="+Inf") == 1


async def test_a_routed_run_is_labelled_with_its_route(timing: Timing) -> None:
    router = specexec.Router(
        {"simple": Policy.single("mini", name="simple-p"), "code": Policy.single("coder", name="code-p")},
        [specexec.routing.rule("code", regex=r"\bdef ")],
        default="simple",
    )
    async with Runtime([Scripted("mini", 0.1), Scripted("coder", 0.2)]) as rt:
        sink = instrument(rt)
        await rt.run("hello", router)
        await rt.run("def f(): ...", router)
    r = sink.registry
    assert value(r, "specexec_runs_total", mode="single", policy="simple-p", route="simple", outcome="ok") == 1
    assert value(r, "specexec_runs_total", mode="single", policy="code-p", route="code", outcome="ok") == 1
    attempt = {"policy": "code-p", "route": "code", "backend": "coder", "trigger": "primary", "outcome": "accepted"}
    assert value(r, "specexec_attempts_total", **attempt) == 1
