"""The probe loops in virtual time (trio ``MockClock``): every time below is exact."""

from __future__ import annotations

import itertools
import logging
from typing import Any

import anyio
import pytest

from specexec import BackendBase, BadResponse, CallableBackend, Query, Response, SimulatedBackend
from specexec.probes import ProbeDaemon

from ._support import WALL0, running, sim_config, virtual_time_backend

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return virtual_time_backend()


def view(daemon: ProbeDaemon, name: str) -> Any:
    return daemon.health_report().backends[name]


async def test_an_outage_is_reported_within_two_intervals_and_recovery_follows() -> None:
    config = sim_config('name = "a"\nlatency = 0.05', probe="interval = 10.0\njitter = 0.0\ntimeout = 2.0")
    backend = SimulatedBackend("a", 0.05)
    async with running(config, [backend]) as daemon:
        await anyio.sleep_until(0.06)
        assert view(daemon, "a").state == "healthy"
        assert view(daemon, "a").last_success_at == pytest.approx(WALL0 + 0.05, abs=1e-6)
        # Down just after the probe at 0: the worst case for detection.
        await anyio.sleep_until(0.051)
        down_at = anyio.current_time()
        backend.errors = {"unavailable": 1.0}
        await anyio.sleep_until(10.0)
        assert view(daemon, "a").state == "healthy"  # the probe at 10.0 is in flight
        await anyio.sleep_until(10.01 - 1e-9)
        assert view(daemon, "a").state == "healthy"
        await anyio.sleep_until(10.01 + 1e-9)  # it fails after 0.2 x 0.05 s
        v = view(daemon, "a")
        assert v.state == "unhealthy"
        assert v.last_error_kind == "unavailable" and v.errors == {"unavailable": 1}
        assert v.last_error_at == pytest.approx(WALL0 + 10.01, abs=1e-6)
        assert v.last_error_at - WALL0 - down_at <= 2 * 10.0
        assert v.consecutive_failures == 1 and v.success_rate == 0.5
        # Back up at 25: the probe at 30 finds it.
        await anyio.sleep_until(25.0)
        backend.errors = {}
        await anyio.sleep_until(30.0)
        assert view(daemon, "a").state == "unhealthy"
        await anyio.sleep_until(30.05 + 1e-9)
        v = view(daemon, "a")
        assert v.state == "healthy" and v.consecutive_failures == 0
        assert (v.successes, v.failures, v.probes) == (2, 2, 4)  # 0 ok, 10 and 20 failed, 30 ok
        assert backend.calls == 4


async def test_a_hung_probe_is_cut_at_its_timeout_and_never_delays_another_backend() -> None:
    starts: dict[str, list[float]] = {"fast": [], "hung": []}

    def backend(name: str, latency: float) -> CallableBackend:
        async def complete(query: Query) -> Response:
            starts[name].append(anyio.current_time())
            await anyio.sleep(latency)
            return Response("pong", model=name)

        return CallableBackend(name, complete)

    config = sim_config(
        'name = "fast"',
        'name = "hung"',
        probe="interval = 10.0\njitter = 0.0\ntimeout = 2.5",
    )
    async with running(config, [backend("fast", 0.01), backend("hung", 3600.0)]) as daemon:
        await anyio.sleep_until(2.5 - 1e-6)
        assert view(daemon, "hung").probes == 0
        await anyio.sleep_until(2.5 + 1e-6)
        v = view(daemon, "hung")
        assert v.state == "unhealthy" and v.last_error_kind == "timeout"
        assert v.last_error_at == pytest.approx(WALL0 + 2.5, abs=1e-6)
        # The timeout is a censored latency sample: at least 2.5 s.
        assert daemon.states["hung"].health.latency.count(anyio.current_time()) == 1
        await anyio.sleep_until(31.0)
        assert starts["fast"] == [0.0, 10.0, 20.0, 30.0]
        assert starts["hung"] == [0.0, 10.0, 20.0, 30.0]
        assert view(daemon, "fast").state == "healthy"
        assert view(daemon, "hung").errors == {"timeout": 3}


async def test_probes_wait_for_the_concurrency_limit() -> None:
    starts: list[tuple[str, float]] = []

    def backend(name: str) -> CallableBackend:
        async def complete(query: Query) -> Response:
            starts.append((name, anyio.current_time()))
            await anyio.sleep(1.0)
            return Response("pong")

        return CallableBackend(name, complete)

    config = sim_config('name = "a"', 'name = "b"', probe="interval = 10.0\njitter = 0.0\nmax_concurrent = 1")
    async with running(config, [backend("a"), backend("b")]) as daemon:
        await anyio.sleep_until(2.5)
        assert sorted(t for _, t in starts) == [0.0, 1.0]
        # Latency is measured from the send, not from the wait for a slot.
        assert [view(daemon, n).p50 for n in "ab"] == [pytest.approx(1.0, rel=0.01)] * 2


async def test_jitter_spreads_probes_within_its_bounds() -> None:
    config = sim_config('name = "a"\nlatency = 0.01', probe="interval = 10.0\njitter = 0.5\nseed = 7")
    backend = SimulatedBackend("a", 0.01)
    times: list[float] = []
    original = backend.complete

    async def recording(query: Query) -> Response:
        times.append(anyio.current_time())
        return await original(query)

    backend.complete = recording  # type: ignore[method-assign]
    async with running(config, [backend]):
        await anyio.sleep_until(200.0)
    assert 0.0 <= times[0] <= 5.0
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(5.0 - 1e-9 <= g <= 15.0 + 1e-9 for g in gaps)
    assert len(set(round(g, 6) for g in gaps)) > 3  # really jittered


async def test_a_changed_model_id_raises_the_drift_flag(caplog: pytest.LogCaptureFixture) -> None:
    config = sim_config('name = "a"', probe="interval = 10.0\njitter = 0.0")
    backend = SimulatedBackend("a", 0.01, model="alpha-2025-01-01")
    caplog.set_level(logging.INFO, logger="specexec.probes")
    async with running(config, [backend]) as daemon:
        await anyio.sleep_until(1.0)
        v = view(daemon, "a")
        assert (v.drift, v.model, v.reported_model) == (False, "alpha-2025-01-01", "alpha-2025-01-01")
        backend.reported_model = "alpha-2025-06-01"
        await anyio.sleep_until(11.0)
        v = view(daemon, "a")
        assert (v.drift, v.reported_model, v.state) == (True, "alpha-2025-06-01", "healthy")
        assert 'specexec_probe_model_drift{backend="a"} 1.0\n' in daemon.metrics()
        await anyio.sleep_until(21.0)  # still drifted: logged once
        backend.reported_model = None
        await anyio.sleep_until(31.0)
        assert view(daemon, "a").drift is False
    drift_logs = [r for r in caplog.records if "drift" in r.getMessage()]
    assert len(drift_logs) == 1 and drift_logs[0].levelno == logging.WARNING
    assert any("pinned model" in r.getMessage() and "again" in r.getMessage() for r in caplog.records)


async def test_a_pinned_model_override_is_what_drift_compares_with() -> None:
    config = sim_config(
        'name = "a"', probe="interval = 10.0\njitter = 0.0", extra='[probe.backends.a]\npinned_model = "v2"\n'
    )
    async with running(config, [SimulatedBackend("a", 0.01, model="v1")]) as daemon:
        await anyio.sleep_until(1.0)
        assert (view(daemon, "a").model, view(daemon, "a").drift) == ("v2", True)


CANARY = """
[probe.canary]
query = { prompt = "What is 2 + 2? Answer with a number only.", max_tokens = 4 }
expect = "4"
every = 2
"""


async def test_a_canary_with_the_wrong_answer_marks_the_backend_degraded(caplog: pytest.LogCaptureFixture) -> None:
    config = sim_config('name = "a"', probe="interval = 10.0\njitter = 0.0", extra=CANARY)
    prompts: list[str] = []
    answer = {"text": "5"}

    async def complete(query: Query) -> Response:
        prompts.append(query.text)
        await anyio.sleep(0.001)  # fast
        return Response(answer["text"] if "2 + 2" in query.text else "pong")

    caplog.set_level(logging.INFO, logger="specexec.probes")
    async with running(config, [CallableBackend("a", complete)]) as daemon:
        await anyio.sleep_until(1.0)
        v = view(daemon, "a")
        assert (v.state, v.canary) == ("degraded", "failed")
        assert v.canary_reason == "expected '4' in the reply, got '5'"
        canary_p50 = v.queries["canary"].p50
        assert canary_p50 is not None and canary_p50 < 0.01  # answered fast, still degraded
        assert v.p50 is None  # the headline latency is the ping's: none sent yet
        await anyio.sleep_until(11.0)  # a plain probe: still degraded
        assert view(daemon, "a").state == "degraded"
        answer["text"] = "4"
        await anyio.sleep_until(21.0)  # the next canary passes
        v = view(daemon, "a")
        assert (v.state, v.canary, v.canary_reason) == ("healthy", "passed", None)
    assert ["2 + 2" in p for p in prompts] == [True, False, True]
    assert any(r.levelno == logging.WARNING and "degraded" in r.getMessage() for r in caplog.records)


class _Garbage(BackendBase):
    def __init__(self, name: str, result: object) -> None:
        super().__init__(name)
        self.result = result

    async def complete(self, query: Query) -> Response:
        await anyio.sleep(0.01)
        if isinstance(self.result, Exception):
            raise self.result
        return self.result  # type: ignore[return-value]


async def test_bad_responses_count_as_failures() -> None:
    config = sim_config('name = "a"', 'name = "b"', 'name = "c"', probe="interval = 10.0\njitter = 0.0")
    backends = [
        _Garbage("a", {"not": "a response"}),
        _Garbage("b", BadResponse("malformed chat completion", backend="b")),
        _Garbage("c", ValueError("a bug in a custom backend")),
    ]
    async with running(config, backends) as daemon:
        await anyio.sleep_until(1.0)
        report = daemon.health_report()
    assert report.backends["a"].errors == {"bad_response": 1}
    assert report.backends["b"].errors == {"bad_response": 1}
    assert report.backends["c"].errors == {"error": 1}
    assert report.backends["c"].last_error == "ValueError: a bug in a custom backend"
    assert {b.state for b in report.backends.values()} == {"unhealthy"}
    assert all(b.p50 is None and b.samples == 0 for b in report.backends.values())  # failures are not latency


async def test_a_disabled_backend_is_not_probed() -> None:
    config = sim_config('name = "a"', probe="interval = 10.0", extra="[probe.backends.a]\nenabled = false\n")
    backend = SimulatedBackend("a", 0.01)
    async with running(config, [backend]) as daemon:
        await anyio.sleep_until(100.0)
        assert backend.calls == 0 and view(daemon, "a").state == "unknown"


async def test_quantiles_over_the_window_and_stale_data_reads_unknown() -> None:
    config = sim_config(
        'name = "a"', probe="interval = 1.0\njitter = 0.0\ntimeout = 1.0\nmin_samples = 5\nwindow = 60.0"
    )
    backend = SimulatedBackend("a", 0.1)
    async with running(config, [backend]) as daemon:
        await anyio.sleep_until(3.5)
        assert view(daemon, "a").p50 is None  # 4 samples < min_samples
        await anyio.sleep_until(4.5)
        assert view(daemon, "a").p50 == pytest.approx(0.1, rel=0.01)
        # Stop answering (stall): the probe at 5.0 times out at 6.0, and so on.
        backend.stall = 1.0
        await anyio.sleep_until(6.0 + 1e-6)
        assert view(daemon, "a").state == "unhealthy"
