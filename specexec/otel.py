"""OpenTelemetry spans from traces (optional: ``pip install 'specexec[otel]'``, i.e. ``opentelemetry-api``).

``OtelSink`` is a trace sink: ``Runtime(sinks=[OtelSink()])``. After each run it records
one span per run (``specexec.run``) and one child span per launched attempt (``chat
{model}``, kind ``CLIENT``), with the start and end times the trace recorded
(``Trace.wall_time`` + each offset), under the caller's current context: a run awaited
inside ``tracer.start_as_current_span("handle request")`` becomes a child of that span, and
so does everything propagated into it (W3C ``traceparent`` and the like, through the
caller's own instrumentation). Nothing is exported on the event loop by this sink; the
``TracerProvider``'s span processor decides (use a ``BatchSpanProcessor`` in services).

Attributes follow the OpenTelemetry GenAI semantic conventions where they fit:
``gen_ai.operation.name`` (``chat``), ``gen_ai.provider.name`` (the backend's provider),
``gen_ai.request.model`` (the backend's pinned model, when the sink knows the runtime),
``gen_ai.response.model`` (what the provider reported), ``gen_ai.usage.input_tokens`` /
``gen_ai.usage.output_tokens``, ``gen_ai.response.time_to_first_chunk`` (streams) and
``error.type`` (the error's kind). specexec's own are under ``specexec.*``: on the run
``specexec.mode``, ``.policy``, ``.outcome``, ``.winner``, ``.cost_usd``, ``.max_cost_usd``,
``.candidates``, ``.hedges``, ``.route`` (and ``.route.selector``, ``.route.confidence``,
``.route.speculation``; not the decision's ``why``, which quotes what a rule matched: the
tenant, the query's text); on an attempt ``specexec.backend``,
``.region``, ``.trigger``, ``.outcome``, ``.reason``, ``.cost_usd``, ``.usage_estimated``,
``.score``. Trace events (hedges held back by the budget, ``panic``, ``commit``, …) and
skipped candidates are span events on the run span, at their times. A run that did not end
``ok`` has status ``ERROR``; so does a failed attempt. No query or response text, tenant id
or secret is recorded (error messages in traces are already redacted by the backends).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

try:
    from opentelemetry import context as otel_context
    from opentelemetry import trace as otel_trace
    from opentelemetry.trace import SpanKind, Status, StatusCode, Tracer, TracerProvider
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise ImportError(
        "specexec.otel needs opentelemetry-api: pip install 'specexec[otel]' (opentelemetry-api>=1.20)"
    ) from exc

from ._trace import AttemptRecord, Trace

if TYPE_CHECKING:
    from ._runtime import Runtime

__all__ = ["OtelSink"]

_SCOPE = "specexec"
_NS = 1_000_000_000


def _ns(wall: float, offset: float) -> int:
    """Unix nanoseconds; the offset rounded on its own, so differences between spans stay exact."""
    return round(wall * _NS) + round(offset * _NS)


class OtelSink:
    """A trace sink that records each run as an OpenTelemetry span with one child per attempt.

    ``tracer_provider``: where spans go (default: the global provider, resolved per run, so
    a provider installed after the sink was made is used). ``runtime``: lets attempt spans
    carry ``gen_ai.request.model`` (the backend's pinned model; the trace holds only the
    reported one).
    """

    def __init__(self, tracer_provider: TracerProvider | None = None, *, runtime: Runtime | None = None) -> None:
        self.tracer_provider = tracer_provider
        self.runtime = runtime
        self._tracer: Tracer | None = None

    @property
    def tracer(self) -> Tracer:
        """The tracer spans are made with."""
        if self.tracer_provider is None:
            return otel_trace.get_tracer(_SCOPE)
        if self._tracer is None:
            self._tracer = otel_trace.get_tracer(_SCOPE, tracer_provider=self.tracer_provider)
        return self._tracer

    def __call__(self, trace: Trace) -> None:
        """Record one finished run as spans under the current context."""
        tracer = self.tracer
        wall = trace.wall_time
        ends = [a.ended for a in trace.attempts if a.ended is not None]
        end = trace.latency if trace.latency is not None else max([*ends, *(e.at for e in trace.events), 0.0])
        run = tracer.start_span(
            "specexec.run",
            context=otel_context.get_current(),
            kind=SpanKind.INTERNAL,
            attributes=_run_attributes(trace),
            start_time=_ns(wall, 0.0),
        )
        for e in trace.events:
            run.add_event(e.what, {"specexec.detail": e.detail}, timestamp=_ns(wall, e.at))
        parent = otel_trace.set_span_in_context(run)
        for a in trace.attempts:
            if a.outcome == "skipped":
                run.add_event(
                    "skipped",
                    {"specexec.backend": a.backend, "specexec.reason": a.reason},
                    timestamp=_ns(wall, a.started if a.started is not None else 0.0),
                )
                continue
            self._attempt(tracer, parent, wall, a, end)
        if trace.outcome != "ok":
            run.set_status(Status(StatusCode.ERROR, trace.outcome))
        run.end(end_time=_ns(wall, end))

    def _attempt(self, tracer: Tracer, parent: Any, wall: float, a: AttemptRecord, run_end: float) -> None:
        started = a.started if a.started is not None else 0.0
        ended = a.ended if a.ended is not None else (started + a.latency if a.latency is not None else run_end)
        attributes: dict[str, Any] = {
            "gen_ai.operation.name": "chat",
            "specexec.backend": a.backend,
            "specexec.trigger": a.trigger,
            "specexec.outcome": a.outcome or "running",
            "specexec.cost_usd": a.cost,
            "specexec.usage_estimated": a.usage_estimated,
        }
        if a.provider:
            attributes["gen_ai.provider.name"] = a.provider
        if a.region:
            attributes["specexec.region"] = a.region
        request_model = self._request_model(a.backend)
        if request_model is not None:
            attributes["gen_ai.request.model"] = request_model
        if a.model is not None:
            attributes["gen_ai.response.model"] = a.model
        if a.input_tokens:
            attributes["gen_ai.usage.input_tokens"] = a.input_tokens
        if a.output_tokens:
            attributes["gen_ai.usage.output_tokens"] = a.output_tokens
        if a.ttft is not None:
            attributes["gen_ai.response.time_to_first_chunk"] = a.ttft
        if a.reason:
            attributes["specexec.reason"] = a.reason
        if a.score is not None:
            attributes["specexec.score"] = a.score
        if a.error is not None:
            attributes["error.type"] = getattr(a.error, "kind", None) or type(a.error).__name__
        name = f"chat {request_model or a.model or a.backend}"
        span = tracer.start_span(
            name, context=parent, kind=SpanKind.CLIENT, attributes=attributes, start_time=_ns(wall, started)
        )
        if a.outcome == "failed":
            span.set_status(Status(StatusCode.ERROR, a.reason or "failed"))
        span.end(end_time=_ns(wall, ended))

    def _request_model(self, backend: str) -> str | None:
        if self.runtime is None:
            return None
        b = self.runtime.backends.get(backend)
        model = getattr(b, "model", None)
        return model if isinstance(model, str) else None


def _run_attributes(trace: Trace) -> dict[str, Any]:
    attributes: dict[str, Any] = {
        "specexec.mode": trace.mode,
        "specexec.outcome": trace.outcome,
        "specexec.cost_usd": trace.cost,
        "specexec.candidates": list(trace.candidates),
        "specexec.hedges": trace.hedges,
    }
    if trace.policy is not None:
        attributes["specexec.policy"] = trace.policy
    if trace.winner is not None:
        attributes["specexec.winner"] = trace.winner
    if trace.max_cost is not None:
        attributes["specexec.max_cost_usd"] = trace.max_cost
    route = trace.route
    if route is not None:
        attributes["specexec.route"] = route.name
        attributes["specexec.route.selector"] = route.selector
        if route.confidence is not None:
            attributes["specexec.route.confidence"] = route.confidence
        if route.speculation is not None:
            attributes["specexec.route.speculation"] = route.speculation
        if route.step is not None:
            attributes["specexec.route.step"] = route.step
    return attributes
