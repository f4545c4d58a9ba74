"""``Router.stream``: the router decides, then the route's policy streams through the one engine."""

from __future__ import annotations

from collections.abc import AsyncIterator

import anyio
import pytest

import specexec
from specexec import Policy, Query, Runtime, StreamChunk, Usage, routing
from tests.conftest import Timing

pytestmark = pytest.mark.anyio


class Streamer(specexec.BackendBase):
    """Streams ``pieces``, the first after ``ttft``, the next ``gap`` apart; counts cancellations."""

    def __init__(self, name: str, ttft: float, pieces: list[str], gap: float = 0.01) -> None:
        super().__init__(name, region=name, output_price=1.0)
        self.ttft, self.pieces, self.gap = ttft, pieces, gap
        self.calls = 0

    async def complete(self, query: Query) -> specexec.Response:
        parts = [c.text async for c in self.stream(query)]
        return specexec.Response("".join(parts), Usage(10, len(parts)))

    async def stream(self, query: Query) -> AsyncIterator[StreamChunk]:
        self.calls += 1
        for i, piece in enumerate(self.pieces):
            await anyio.sleep(self.ttft if i == 0 else self.gap)
            yield StreamChunk(piece)
        yield StreamChunk(usage=Usage(10, len(self.pieces)), finish_reason="stop", model=self.name)


def _router(**kw: object) -> specexec.Router:
    async def slow(q: Query) -> str:
        await anyio.sleep(0.3)
        return "code" if "def " in q.text else "simple"

    return specexec.Router(
        {"simple": Policy.single("mini"), "code": Policy.hedge(["coder-a", "coder-b"], delay=0.05, budget=None)},
        [routing.classifier(slow)],
        default="simple",
        **kw,  # type: ignore[arg-type]
    )


async def test_router_streams_the_chosen_route(timing: Timing) -> None:
    mini = Streamer("mini", 0.1, ["hi", " there"])
    coder_a, coder_b = Streamer("coder-a", 0.5, ["slow"]), Streamer("coder-b", 0.1, ["def", " f():"])
    traces: list[specexec.Trace] = []
    async with Runtime([mini, coder_a, coder_b], sinks=[traces.append]) as rt:
        deltas = []
        async with _router().stream("fix def f", rt) as s:
            async for delta in s:
                deltas.append(delta)
        result = s.result
    assert deltas == ["def", " f():"]  # the route's hedge committed to coder-b's stream
    assert result.route == "code" and result.backend == "coder-b"
    assert result.latency == timing.approx(0.3 + 0.05 + 0.1 + 0.01)
    # Before: 0.15 — from the route's start, while latency counts from the router's
    assert result.ttft == timing.approx(0.3 + 0.05 + 0.1)
    assert result.trace.route is not None and result.trace.route.selector == "classifier:slow"
    assert traces and traces[-1].route is result.trace.route and mini.calls == 0


async def test_a_streamed_route_does_not_speculate(timing: Timing) -> None:
    mini = Streamer("mini", 0.1, ["hi"])
    coder = Streamer("coder-a", 0.1, ["def"])
    rt = Runtime([mini, coder, Streamer("coder-b", 0.1, ["x"])])
    async with rt, _router(speculate=True).stream("fix def f", rt) as s:
        deltas = [d async for d in s]
    assert deltas == ["def"] and mini.calls == 0  # no guess streamed tokens of the wrong route
    assert s.result.trace.route is not None and s.result.trace.route.speculation is None
    assert s.result.latency == timing.approx(0.3 + 0.1)


async def test_runtime_stream_and_specexec_stream_take_a_router(timing: Timing) -> None:
    mini = Streamer("mini", 0.1, ["hi", " there"])
    coder_a, coder_b = Streamer("coder-a", 0.5, ["slow"]), Streamer("coder-b", 0.1, ["def", " f():"])
    async with Runtime([mini, coder_a, coder_b]) as rt:
        for make in (lambda: rt.stream("hello", _router()), lambda: specexec.stream("hello", _router(), runtime=rt)):
            async with make() as s:
                deltas = [d async for d in s]
            assert deltas == ["hi", " there"] and s.result.route == "simple"


async def test_a_routed_stream_uses_the_default_runtimes_pooled_clients() -> None:
    # Before: Router.stream (and specexec.stream(q, router)) ran with no resources, so an HTTP
    # backend opened a one-shot client per stream; run(q, router) used the pool.
    from specexec._resources import current_resources

    seen: list[object] = []

    class Probe(Streamer):
        async def stream(self, query: Query) -> AsyncIterator[StreamChunk]:
            seen.append(current_resources())
            async for chunk in super().stream(query):
                yield chunk

    rt = Runtime([Probe("mini", 0.01, ["hi"])])
    rt._loop_pooled = True  # as the process-default runtime is
    router = specexec.Router({"simple": Policy.single("mini")}, default="simple")
    async with router.stream("hello", rt) as s:
        assert [d async for d in s] == ["hi"]
    assert len(seen) == 1 and seen[0] is not None
