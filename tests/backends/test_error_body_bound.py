"""An error status whose body trickles in (the fleet's ``error_drip``) is that status's error, read
within ``ERROR_BODY_TIMEOUT``, and charged nothing: over real loopback HTTP, on trio and uvloop."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

from specexec import NoAcceptableResponse, Policy, Query, RateLimited, Runtime, Unavailable
from specexec.backends import Anthropic, HttpTimeouts, OpenAICompatible, _http
from specexec.bench.fleet import (
    Constant,
    Deployment,
    Faults,
    FleetConfig,
    FleetProcess,
    RateLimit,
    start_fleet_process,
)

pytestmark = pytest.mark.anyio

QUERY = Query("Say something.", max_tokens=16)
DRIP = 0.2  # seconds per byte: a ~120-byte error body takes ~25 s
SLACK = 1.5  # a real clock's scheduling slack, on top of the bound


def dep(name: str, api: str = "openai", **faults: Any) -> Deployment:
    return Deployment(
        name=name,
        provider="e",
        region="loop",
        model="e-model",
        api=api,  # type: ignore[arg-type]
        latency=Constant(value=0.005),
        output_tokens=8,
        faults=Faults(error_drip=DRIP, **faults),
    )


CONFIG = FleetConfig(
    deployments=(
        dep("drip500", error_500=1.0),
        dep("drip503", error_503=1.0),
        dep("a-drip529", api="anthropic", overloaded_529=1.0),
        dep("good"),
        dep("drip429"),
    ),
    events=(RateLimit(deployments=("drip429",), retry_after=7.0),),
)


@pytest.fixture(scope="module")
def efleet() -> Iterator[FleetProcess]:
    with start_fleet_process(CONFIG) as process:
        yield process


def make(fleet: FleetProcess, name: str, **kw: Any) -> OpenAICompatible | Anthropic:
    kw.setdefault("timeout", HttpTimeouts(connect=2.0, read=5.0, write=2.0, pool=5.0))
    cls = Anthropic if fleet.config.deployment(name).api == "anthropic" else OpenAICompatible
    return cls(name, base_url=fleet.base_url(name), model="e-model", api_key_env=None, **kw)


@pytest.mark.parametrize("stream", [False, None], ids=["json", "default-stream"])
@pytest.mark.parametrize(("name", "status"), [("drip500", 500), ("drip503", 503), ("a-drip529", 529)])
async def test_a_slow_error_body_is_the_statuss_error_within_the_bound(
    efleet: FleetProcess, name: str, status: int, stream: bool | None
) -> None:
    # Before: the read timeout restarts with every byte, so the call took the whole body (~25 s) or
    # until the run's deadline or HttpTimeouts.idle made it a Timeout.
    backend = make(efleet, name, stream=stream)
    start = anyio.current_time()
    with anyio.fail_after(_http.ERROR_BODY_TIMEOUT + SLACK + 2.0), pytest.raises(Unavailable) as info:
        await backend.complete(QUERY)
    elapsed = anyio.current_time() - start
    assert _http.ERROR_BODY_TIMEOUT - 0.01 <= elapsed < _http.ERROR_BODY_TIMEOUT + SLACK
    error = info.value
    assert error.status == status and error.partial_usage is None
    assert error.body is not None and error.body.startswith("{")  # what came in time, for the excerpt
    assert error.request_id is not None


async def test_a_slow_error_body_within_idle_is_no_timeout(efleet: FleetProcess) -> None:
    # idle shorter than the error body's bound: the status came, so it is still the 503
    backend = make(efleet, "drip503", timeout=HttpTimeouts(read=5.0, idle=0.3))
    with anyio.fail_after(_http.ERROR_BODY_TIMEOUT + SLACK + 2.0), pytest.raises(Unavailable) as info:
        await backend.complete(QUERY)
    assert info.value.status == 503


@pytest.mark.parametrize("stream", [False, None], ids=["json", "default-stream"])
async def test_a_slow_error_body_is_charged_nothing(efleet: FleetProcess, stream: bool | None) -> None:
    # Before: the attempt ran into attempt_timeout, a Timeout charged its whole reservation.
    backends = [make(efleet, "drip500", stream=stream, input_price=10.0, output_price=30.0)]
    async with Runtime(backends) as rt:
        with anyio.fail_after(_http.ERROR_BODY_TIMEOUT + SLACK + 4.0), pytest.raises(NoAcceptableResponse) as info:
            await rt.run(QUERY, Policy.single("drip500", attempt_timeout=_http.ERROR_BODY_TIMEOUT + 3.0))
    (attempt,) = info.value.attempts
    assert isinstance(attempt.error, Unavailable) and attempt.error.status == 500
    assert attempt.reserved > 0 and attempt.cost == 0.0 and info.value.trace.cost == 0.0


async def test_a_slow_429_body_is_rate_limited_with_its_retry_after_within_the_bound(efleet: FleetProcess) -> None:
    backend = make(efleet, "drip429")
    start = anyio.current_time()
    with anyio.fail_after(_http.ERROR_BODY_TIMEOUT + SLACK + 2.0), pytest.raises(RateLimited) as info:
        await backend.complete(QUERY)
    assert anyio.current_time() - start < _http.ERROR_BODY_TIMEOUT + SLACK
    assert info.value.status == 429 and info.value.retry_after == 7.0


ATTEMPT_TIMEOUT = 0.5  # shorter than ERROR_BODY_TIMEOUT


@pytest.mark.parametrize("stream", [False, None], ids=["json", "default-stream"])
@pytest.mark.parametrize(("name", "kind"), [("drip503", Unavailable), ("drip429", RateLimited)])
async def test_a_slow_error_body_under_a_short_attempt_timeout_is_still_the_statuss_error(
    efleet: FleetProcess, name: str, kind: type[Exception], stream: bool | None
) -> None:
    # Before: the error body was given ERROR_BODY_TIMEOUT (1 s) whatever the attempt had left, so
    # attempt_timeout=0.5 cut it first: a Timeout, its reservation charged, a 429's Retry-After lost.
    backends = [make(efleet, name, stream=stream, input_price=10.0, output_price=30.0)]
    async with Runtime(backends) as rt:
        start = anyio.current_time()
        with anyio.fail_after(ATTEMPT_TIMEOUT + SLACK + 2.0), pytest.raises(NoAcceptableResponse) as info:
            await rt.run(QUERY, Policy.single(name, attempt_timeout=ATTEMPT_TIMEOUT))
        assert anyio.current_time() - start < ATTEMPT_TIMEOUT + SLACK
    (attempt,) = info.value.attempts
    assert isinstance(attempt.error, kind), attempt.error
    assert attempt.cost == 0.0 and info.value.trace.cost == 0.0


@pytest.mark.parametrize(("name", "kind"), [("drip503", Unavailable), ("drip429", RateLimited)])
async def test_a_slow_error_body_of_a_stream_under_a_short_attempt_timeout_is_the_statuss_error(
    efleet: FleetProcess, name: str, kind: type[Exception]
) -> None:
    # The stream's wait for its first token is the call the engine bounds (ATTEMPT_DEADLINE too).
    async with Runtime([make(efleet, name)]) as rt:
        start = anyio.current_time()
        with anyio.fail_after(ATTEMPT_TIMEOUT + SLACK + 2.0), pytest.raises(NoAcceptableResponse) as info:
            async with rt.stream(QUERY, Policy.single(name, attempt_timeout=ATTEMPT_TIMEOUT)) as stream:
                async for _ in stream:
                    pass
        assert anyio.current_time() - start < ATTEMPT_TIMEOUT + SLACK
    (attempt,) = info.value.attempts
    assert isinstance(attempt.error, kind), attempt.error
