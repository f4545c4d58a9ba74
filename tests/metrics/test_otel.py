"""``specexec.otel``: one span per run, a child per attempt, at the trace's times, under the caller's span."""

from __future__ import annotations

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

import specexec
from specexec import Policy, RouteDecision, Runtime, Trace, TraceEvent
from specexec.otel import OtelSink
from tests.conftest import Timing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _by_name(finished: tuple[ReadableSpan, ...]) -> dict[str, ReadableSpan]:
    return {s.name: s for s in finished}


async def test_a_hedged_run_is_a_span_with_a_child_per_attempt_under_the_callers_span(
    spans: tuple[TracerProvider, InMemorySpanExporter], timing: Timing
) -> None:
    provider, exporter = spans
    slow = Scripted("slow", 1.0, provider="openai", region="us", model="gpt-x-2026-01-01")
    fast = Scripted("fast", 0.1, provider="anthropic", region="eu", model="claude-y", usage=(12, 34))
    async with Runtime([slow, fast]) as rt:
        rt.sinks.append(OtelSink(provider, runtime=rt))
        with provider.get_tracer("app").start_as_current_span("handle request") as caller:
            result = await rt.run("q", Policy.hedge(["slow", "fast"], delay=0.2, max_attempts=2, name="chat"))
    found = _by_name(exporter.get_finished_spans())
    run, first, hedge = found["specexec.run"], found["chat gpt-x-2026-01-01"], found["chat claude-y"]
    assert run.parent is not None and run.parent.span_id == caller.get_span_context().span_id
    assert run.context.trace_id == caller.get_span_context().trace_id
    assert first.parent is not None and first.parent.span_id == run.context.span_id
    assert hedge.parent is not None and hedge.parent.span_id == run.context.span_id
    assert run.attributes is not None and hedge.attributes is not None and first.attributes is not None
    assert dict(run.attributes) == {
        "specexec.mode": "hedge",
        "specexec.outcome": "ok",
        "specexec.cost_usd": 0.0,
        "specexec.candidates": ("slow", "fast"),
        "specexec.hedges": 1,
        "specexec.policy": "chat",
        "specexec.winner": "fast",
    }
    assert hedge.kind is SpanKind.CLIENT
    assert hedge.attributes["gen_ai.operation.name"] == "chat"
    assert hedge.attributes["gen_ai.provider.name"] == "anthropic"
    assert hedge.attributes["gen_ai.request.model"] == "claude-y"
    assert hedge.attributes["gen_ai.response.model"] == "claude-y"
    assert (hedge.attributes["gen_ai.usage.input_tokens"], hedge.attributes["gen_ai.usage.output_tokens"]) == (12, 34)
    assert (hedge.attributes["specexec.trigger"], hedge.attributes["specexec.outcome"]) == ("hedge", "accepted")
    assert first.attributes["specexec.outcome"] == "cancelled"
    assert first.attributes["specexec.reason"] == "fast answered first"
    # Times are the trace's: the run starts at wall_time, the hedge 0.2 s later, both end at 0.3 s.
    assert run.start_time == round(result.trace.wall_time * 1e9)
    ns = 1e-9
    assert run.end_time is not None and hedge.start_time is not None and hedge.end_time is not None
    assert (run.end_time - run.start_time) * ns == timing.approx(0.3)
    assert (hedge.start_time - run.start_time) * ns == timing.approx(0.2)
    assert (hedge.end_time - run.start_time) * ns == timing.approx(0.3)
    assert first.start_time is not None
    # exact on trio; a loaded real loop may start the first attempt a millisecond after the run
    assert (first.start_time - run.start_time) * ns == timing.approx(0.0)
    assert run.status.status_code is StatusCode.UNSET


async def test_a_failed_run_and_attempt_are_errors_with_their_error_type(
    spans: tuple[TracerProvider, InMemorySpanExporter], timing: Timing
) -> None:
    provider, exporter = spans
    async with Runtime([Scripted("a", 0.1, error=specexec.Unavailable("down"))], sinks=[OtelSink(provider)]) as rt:
        with pytest.raises(specexec.NoAcceptableResponse):
            await rt.run("q", Policy.single("a"))
    found = _by_name(exporter.get_finished_spans())
    run, attempt = found["specexec.run"], found["chat a"]
    assert run.parent is None  # no caller span: a root span
    assert run.status.status_code is StatusCode.ERROR and run.status.description == "no_acceptable"
    assert attempt.status.status_code is StatusCode.ERROR
    assert attempt.attributes is not None and attempt.attributes["error.type"] == "unavailable"
    assert run.end_time is not None and (run.end_time - run.start_time) * 1e-9 == timing.approx(0.1)


def test_events_skipped_candidates_and_the_route_are_recorded(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    trace = Trace(
        mode="hedge",
        policy="p",
        wall_time=1_700_000_000.0,
        outcome="ok",
        latency=0.5,
        route=RouteDecision(
            "simple",
            selector="rule:x",
            why="tenant=acme, regex matched 'my password'",
            confidence=0.9,
            speculation="hit",
        ),
        attempts=[
            specexec.AttemptRecord("a", outcome="skipped", reason="circuit open"),
            specexec.AttemptRecord("b", trigger="primary", outcome="accepted", started=0.0, ended=0.5, latency=0.5),
        ],
        events=[TraceEvent(0.25, "skipped", "hedge budget: no tokens left for a hedge")],
    )
    OtelSink(provider)(trace)
    found = _by_name(exporter.get_finished_spans())
    run = found["specexec.run"]
    assert set(found) == {"specexec.run", "chat b"}  # a skipped candidate is an event, not a span
    assert [(e.name, dict(e.attributes or {})) for e in run.events] == [
        ("skipped", {"specexec.detail": "hedge budget: no tokens left for a hedge"}),
        ("skipped", {"specexec.backend": "a", "specexec.reason": "circuit open"}),
    ]
    assert run.events[0].timestamp == 1_700_000_000 * 10**9 + 250_000_000
    assert run.attributes is not None
    assert (run.attributes["specexec.route"], run.attributes["specexec.route.selector"]) == ("simple", "rule:x")
    assert run.attributes["specexec.route.speculation"] == "hit"
    # Before: specexec.route.why held a rule's reason: the tenant id and the query text it matched.
    assert "specexec.route.why" not in run.attributes
    assert not any("acme" in str(v) or "password" in str(v) for v in run.attributes.values())
    assert run.end_time == 1_700_000_000 * 10**9 + 500_000_000
