"""End to end over real loopback HTTP: the HTTP backends against the mock provider fleet.

The fleet (``benchmarks.fleet``, asyncio + uvloop, in a subprocess) serves one deployment
per fault kind at rate 1.0 (plus scheduled outages with chosen statuses), so every error
kind is checked over the wire, on trio and on asyncio + uvloop, streamed and not.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import traceback
from collections.abc import AsyncIterator, Iterator
from typing import Any

import anyio
import httpx
import pytest

from specexec import (
    AuthError,
    BackendError,
    BadRequest,
    BadResponse,
    Policy,
    Query,
    RateLimited,
    Runtime,
    Timeout,
    Unavailable,
)
from specexec._resources import Resources, _current
from specexec.backends import Anthropic, HttpConfig, HttpTimeouts, OpenAICompatible
from specexec.backends._http import HostClients, HttpBackend
from specexec.bench.fleet import (
    Constant,
    Deployment,
    Faults,
    FleetConfig,
    FleetProcess,
    Outage,
    RateLimit,
    start_fleet_process,
)
from specexec.bench.fleet.pytest_fixtures import CANARY_ANSWER, CANARY_QUESTION, TEST_API_KEY, TEST_API_KEY_ENV

from .conftest import FAKE_KEY

pytestmark = pytest.mark.anyio

KEY_ENV = "SPECEXEC_E2E_FLEET_KEY"
WRONG_KEY_ENV = "SPECEXEC_E2E_WRONG_KEY"
WRONG_KEY = "sk-test-WRONGWRONG5678"

STATUS_OUTAGES = (400, 401, 403, 404, 408, 409, 422, 500, 502, 504)


def dep(name: str, api: str = "openai", **kw: Any) -> Deployment:
    kw.setdefault("latency", Constant(value=0.005))
    kw.setdefault("output_tokens", 8)
    return Deployment(name=name, provider="e2e", region="loop", model=f"{name}-model-2025", api=api, **kw)  # type: ignore[arg-type]


CONFIG = FleetConfig(
    deployments=(
        dep("ok"),
        dep("a-ok", api="anthropic"),
        dep("e500", faults=Faults(error_500=1.0)),
        dep("e503", faults=Faults(error_503=1.0)),
        dep("o529", faults=Faults(overloaded_529=1.0)),
        dep("a-o529", api="anthropic", faults=Faults(overloaded_529=1.0)),
        dep("reset", faults=Faults(reset=1.0)),
        dep("a-reset", api="anthropic", faults=Faults(reset=1.0)),
        dep("malformed", faults=Faults(malformed=1.0)),
        dep("a-malformed", api="anthropic", faults=Faults(malformed=1.0)),
        dep("stall", faults=Faults(stall=1.0)),
        dep("a-stall", api="anthropic", faults=Faults(stall=1.0)),
        # two tokens, then held open until the client leaves: a disconnect whatever the timing
        dep("held", faults=Faults(stall_after=1.0, stall_after_tokens=2)),
        dep("a-held", api="anthropic", faults=Faults(stall_after=1.0, stall_after_tokens=2)),
        dep("drip", faults=Faults(slow_drip=1.0, slow_drip_interval=0.01)),
        dep("wrong", faults=Faults(wrong_model=1.0)),
        dep("nousage", faults=Faults(no_usage=1.0)),
        dep("a-nousage", api="anthropic", faults=Faults(no_usage=1.0)),
        dep("limited"),
        dep("quota", rpm=1.0, retry_after=30.0),
        dep("auth", api_key_env=KEY_ENV),
        dep("a-auth", api="anthropic", api_key_env=KEY_ENV),
        dep("strict", strict_model=True),
        dep("ttft", latency=Constant(value=0.05), per_token=0.01, output_tokens=10),
        dep("a-ttft", api="anthropic", latency=Constant(value=0.05), per_token=0.01, output_tokens=10),
        dep("slow", latency=Constant(value=2.0)),
        dep("a-slow", api="anthropic", latency=Constant(value=0.01), per_token=0.5),
        dep("churn", latency=Constant(value=0.06)),
        *(dep(f"s{code}") for code in STATUS_OUTAGES),
    ),
    events=(
        RateLimit(deployments=("limited",), retry_after=7.0),
        *(Outage(deployments=(f"s{code}",), status=code) for code in STATUS_OUTAGES),
    ),
)


@pytest.fixture(scope="module")
def faults_fleet() -> Iterator[FleetProcess]:
    """One fleet subprocess for the module (both event loops use it; tests compare counter deltas)."""
    with start_fleet_process(CONFIG, env={KEY_ENV: FAKE_KEY}) as process:
        yield process


@pytest.fixture(autouse=True)
def _keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)
    monkeypatch.setenv(WRONG_KEY_ENV, WRONG_KEY)


def make(
    faults_fleet: FleetProcess, name: str, *, stream: bool = False, key_env: str = KEY_ENV, **kw: Any
) -> OpenAICompatible | Anthropic:
    """A backend for deployment ``name`` (Anthropic-style when the fleet serves it so)."""
    kw.setdefault("timeout", HttpTimeouts(connect=2.0, read=5.0, write=2.0, pool=5.0))
    kw.setdefault("model", "not-the-pinned-model" if name == "strict" else f"{name}-model-2025")
    cls = Anthropic if faults_fleet.config.deployment(name).api == "anthropic" else OpenAICompatible
    return cls(name, base_url=faults_fleet.base_url(name), api_key_env=key_env, stream=stream, **kw)


@contextlib.asynccontextmanager
async def runtime() -> AsyncIterator[Resources]:
    """What an entered ``Runtime`` does for its runs: a ``Resources`` as ``current_resources()``."""
    resources = Resources()
    token = _current.set(resources)
    try:
        yield resources
    finally:
        _current.reset(token)
        with anyio.CancelScope(shield=True):
            await resources.aclose()


async def stats(faults_fleet: FleetProcess, name: str) -> dict[str, Any]:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await client.get(f"{faults_fleet.url}/stats")
        entry: dict[str, Any] = response.json()["deployments"][name]
        return entry


async def settled_stats(faults_fleet: FleetProcess, name: str, timeout: float = 5.0) -> dict[str, Any]:
    """The deployment's stats once nothing is in flight there."""
    with anyio.fail_after(timeout):
        while True:
            entry = await stats(faults_fleet, name)
            if entry["in_flight"] == 0:
                return entry
            await anyio.sleep(0.02)


def pool_of(client: httpx.AsyncClient) -> Any:
    return client._transport._pool  # type: ignore[attr-defined]


def host_clients(resources: Resources, backend: HttpBackend) -> HostClients:
    """The runtime's shared clients (all shards) for ``backend``'s host."""
    host: HostClients = resources.items()[backend._client_key]
    return host


def pools_of(resources: Resources, backend: HttpBackend) -> list[Any]:
    """The connection pool of every shard created so far for ``backend``'s host."""
    return [pool_of(client) for client in host_clients(resources, backend).clients]


QUERY = Query("Say something short.", max_tokens=8)

# --------------------------------------------------------------------------- answers


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("name", ["ok", "a-ok", "auth", "a-auth"])
async def test_answer(faults_fleet: FleetProcess, name: str, stream: bool) -> None:
    async with runtime():
        response = await make(faults_fleet, name, stream=stream).complete(QUERY)
    assert response.text
    assert response.model == f"{name}-model-2025"
    assert response.usage.estimated is False
    assert response.usage.input_tokens > 0
    assert response.usage.output_tokens == 8
    assert response.finish_reason in ("stop", "length", "end_turn", "max_tokens")
    if stream:
        assert response.ttft is not None and response.raw is None
    else:
        assert response.ttft is None and response.raw is not None


@pytest.mark.parametrize("name", ["ttft", "a-ttft"])
async def test_streaming_ttft_is_recorded_and_below_total_latency(faults_fleet: FleetProcess, name: str) -> None:
    backend = make(faults_fleet, name, stream=True)
    async with runtime():
        await backend.complete(QUERY)  # warm the connection
        start = anyio.current_time()
        response = await backend.complete(Query("x", max_tokens=10))
        total = anyio.current_time() - start
    assert response.ttft is not None
    assert 0.045 <= response.ttft < total
    assert total >= 0.05 + 9 * 0.01 - 0.005
    assert response.usage.output_tokens == 10 and not response.usage.estimated


async def test_slow_drip_stream_completes(faults_fleet: FleetProcess) -> None:
    async with runtime():
        start = anyio.current_time()
        response = await make(faults_fleet, "drip", stream=True).complete(QUERY)
        total = anyio.current_time() - start
    assert response.usage.output_tokens == 8
    assert response.ttft is not None and response.ttft < total
    assert total >= 7 * 0.01


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_wrong_model_is_reported(faults_fleet: FleetProcess, stream: bool) -> None:
    async with runtime():
        response = await make(faults_fleet, "wrong", stream=stream).complete(QUERY)
    assert response.model == "wrong-model-2025-drifted"


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("name", ["nousage", "a-nousage"])
async def test_missing_usage_is_estimated(faults_fleet: FleetProcess, name: str, stream: bool) -> None:
    async with runtime():
        response = await make(faults_fleet, name, stream=stream).complete(QUERY)
    assert response.usage.estimated is True
    assert response.usage.input_tokens > 0 and response.usage.output_tokens > 0


async def test_one_shot_client_without_a_runtime(faults_fleet: FleetProcess) -> None:
    response = await make(faults_fleet, "ok").complete(QUERY)
    assert response.text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_one_shot_clients_reuse_one_ssl_context(faults_fleet: FleetProcess, stream: bool) -> None:
    # Building an SSL context (the CA bundle) is ~40 ms of CPU: a backend called on its own,
    # outside a run, made one per call. Every one-shot client now shares the process's one.
    backend = make(faults_fleet, "ok", stream=stream)
    made: list[httpx.AsyncClient] = []
    new_client = backend._new_client

    def recording() -> httpx.AsyncClient:
        made.append(new_client())
        return made[-1]

    backend._new_client = recording  # type: ignore[method-assign]
    for _ in range(3):
        assert (await backend.complete(QUERY)).text
    contexts = {id(pool_of(client)._ssl_context) for client in made}
    assert len(made) == 3 and len(contexts) == 1


async def test_user_client_is_used_and_left_open(faults_fleet: FleetProcess) -> None:
    async with httpx.AsyncClient(trust_env=False) as client:
        response = await make(faults_fleet, "ok", client=client).complete(QUERY)
        assert response.text
        assert not client.is_closed
        assert len(pool_of(client).connections) == 1


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_connections_are_reused_and_shared_per_host(faults_fleet: FleetProcess, stream: bool) -> None:
    a, b = make(faults_fleet, "ok", stream=stream), make(faults_fleet, "a-ok", stream=stream)
    before = await settled_stats(faults_fleet, "ok")
    async with runtime() as resources:
        for _ in range(10):
            await a.complete(QUERY)
            await b.complete(QUERY)
        assert list(resources.items()) == [f"httpx:http://127.0.0.1:{faults_fleet.port}"]
        # one call at a time: always the first shard, never another one
        assert len(host_clients(resources, a).clients) == 1
        (pool,) = pools_of(resources, a)
        assert len(pool.connections) == 1  # one keep-alive connection served all 20 calls
        assert all(c.is_idle() for c in pool.connections)
    after = await settled_stats(faults_fleet, "ok")
    assert after["completed"] - before["completed"] == 10
    assert after["disconnected"] == before["disconnected"]


# --------------------------------------------------------------------------- errors over the wire

ERROR_CASES: list[tuple[str, type[BackendError], int | None]] = [
    ("e500", Unavailable, 500),
    ("e503", Unavailable, 503),
    ("o529", Unavailable, 529),
    ("a-o529", Unavailable, 529),
    ("reset", Unavailable, None),
    ("a-reset", Unavailable, None),
    ("malformed", BadResponse, 200),
    ("a-malformed", BadResponse, 200),
    ("limited", RateLimited, 429),
    ("strict", Unavailable, 404),  # the model this backend names does not exist there
    ("s400", BadRequest, 400),
    ("s401", AuthError, 401),
    ("s403", AuthError, 403),
    ("s404", Unavailable, 404),
    ("s408", Unavailable, 408),
    ("s409", Unavailable, 409),
    ("s422", BadRequest, 422),
    ("s500", Unavailable, 500),
    ("s502", Unavailable, 502),
    ("s504", Unavailable, 504),
]


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize(("name", "kind", "status"), ERROR_CASES, ids=[c[0] for c in ERROR_CASES])
async def test_error_kinds(
    faults_fleet: FleetProcess, name: str, kind: type[BackendError], status: int | None, stream: bool
) -> None:
    async with runtime():
        with pytest.raises(kind) as info:
            await make(faults_fleet, name, stream=stream).complete(QUERY)
    error = info.value
    assert type(error) is kind
    assert error.backend == name
    assert error.status == status
    if status is not None:
        assert error.request_id is not None and name in error.request_id
    if status is not None and status != 200:
        assert error.body  # the provider's error body, excerpted
    if isinstance(error, RateLimited):
        assert error.retry_after == 7.0
    assert FAKE_KEY not in str(error)


@pytest.mark.parametrize("name", ["strict", "s404"])
async def test_a_backend_answering_404_is_failed_over_not_the_end_of_the_run(
    faults_fleet: FleetProcess, name: str
) -> None:
    # a wrong model or base_url is this backend's problem (before: BadRequest, fatal: the run ended)
    async with Runtime([make(faults_fleet, name), make(faults_fleet, "ok")]) as rt:
        result = await rt.run(QUERY, Policy.failover([name, "ok"]))
    assert result.backend == "ok"
    first = result.trace.attempts[0]
    assert first.outcome == "failed" and "HTTP 404" in first.reason and "base_url" in first.reason


@pytest.mark.parametrize("name", ["auth", "a-auth"])
async def test_refused_key_is_an_auth_error(faults_fleet: FleetProcess, name: str) -> None:
    async with runtime():
        with pytest.raises(AuthError) as info:
            await make(faults_fleet, name, key_env=WRONG_KEY_ENV).complete(QUERY)
    assert info.value.status == 401 and not info.value.fatal  # about this backend: the run goes on
    assert WRONG_KEY not in str(info.value)


async def test_missing_key_env_var_sends_nothing(faults_fleet: FleetProcess, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV)
    before = await stats(faults_fleet, "auth")
    with pytest.raises(AuthError, match=KEY_ENV):
        await make(faults_fleet, "auth").complete(QUERY)
    assert (await stats(faults_fleet, "auth"))["requests"] == before["requests"]


async def test_quota_gives_retry_after(faults_fleet: FleetProcess) -> None:
    backend = make(faults_fleet, "quota")
    outcomes: list[BaseException | None] = []
    async with runtime():
        for _ in range(2):
            try:
                await backend.complete(QUERY)
                outcomes.append(None)
            except BackendError as exc:
                outcomes.append(exc)
    limited = [e for e in outcomes if e is not None]
    assert limited, "the second request within a minute must be refused"
    assert all(isinstance(e, RateLimited) and e.retry_after == 30.0 and e.status == 429 for e in limited)


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    backend = OpenAICompatible("gone", base_url=f"http://127.0.0.1:{port}/v1", model="m")
    async with runtime():
        with pytest.raises(Unavailable) as info:
            await backend.complete(QUERY)
    assert info.value.status is None and isinstance(info.value.__cause__, httpx.ConnectError)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("name", ["stall", "a-stall"])
async def test_stall_is_a_read_timeout(faults_fleet: FleetProcess, name: str, stream: bool) -> None:
    backend = make(faults_fleet, name, stream=stream, timeout=HttpTimeouts(read=0.2))
    start = anyio.current_time()
    async with runtime():
        with pytest.raises(Timeout) as info:
            await backend.complete(QUERY)
    assert isinstance(info.value.__cause__, httpx.ReadTimeout)
    assert anyio.current_time() - start < 2.0


async def test_pool_exhaustion_is_a_pool_timeout(faults_fleet: FleetProcess) -> None:
    http = HttpConfig(max_connections=1)
    stalled = make(faults_fleet, "stall", http=http, timeout=HttpTimeouts(read=10.0))
    waiting = make(faults_fleet, "ok", http=http, timeout=HttpTimeouts(pool=0.2))
    async with runtime(), anyio.create_task_group() as tg:
        tg.start_soon(stalled.complete, QUERY)
        await anyio.sleep(0.1)  # the only connection is now busy with the stalled request
        with pytest.raises(Timeout) as info:
            await waiting.complete(QUERY)
        assert isinstance(info.value.__cause__, httpx.PoolTimeout)
        tg.cancel_scope.cancel()


# --------------------------------------------------------------------------- cancellation


@pytest.mark.parametrize("name", ["slow", "a-slow"])
async def test_cancelled_attempt_is_a_disconnect_at_the_server(faults_fleet: FleetProcess, name: str) -> None:
    # "slow" answers after 2 s (nothing sent yet when cancelled); "a-slow" streams a token per 0.5 s
    backend = make(faults_fleet, name, stream=name.startswith("a-"))
    before = await settled_stats(faults_fleet, name)
    async with runtime() as resources:
        start = anyio.current_time()
        with anyio.move_on_after(0.2) as scope:
            await backend.complete(QUERY)
        elapsed = anyio.current_time() - start
        assert scope.cancelled_caught
        assert elapsed < 0.5  # the cancellation was prompt
        for pool in pools_of(resources, backend):
            assert not pool._requests
            assert all(c.is_closed() or c.is_idle() for c in pool.connections)
        assert host_clients(resources, backend).in_flight == [0] * HttpConfig().shards
    after = await settled_stats(faults_fleet, name)
    assert after["requests"] - before["requests"] == 1
    assert after["disconnected"] - before["disconnected"] == 1
    assert after["completed"] == before["completed"]


@pytest.mark.slow
@pytest.mark.parametrize(("max_connections", "clients_per_host"), [(10, 1), (16, 2)], ids=["one-client", "2-shards"])
async def test_a_thousand_cancelled_requests_leave_no_busy_connection(
    faults_fleet: FleetProcess, max_connections: int, clients_per_host: int
) -> None:
    workers, per_worker = 20, 50
    http = HttpConfig(
        max_connections=max_connections,
        max_keepalive_connections=max_connections,
        clients_per_host=clients_per_host,
    )
    backend = make(faults_fleet, "churn", http=http)
    before = await settled_stats(faults_fleet, "churn")
    cancelled = 0

    async def worker() -> None:
        nonlocal cancelled
        for _ in range(per_worker):
            with anyio.move_on_after(0.03) as scope:  # the fleet answers after 0.06 s
                await backend.complete(QUERY)
            cancelled += scope.cancelled_caught

    async with runtime() as resources:
        start = anyio.current_time()
        async with anyio.create_task_group() as tg:
            for _ in range(workers):
                tg.start_soon(worker)
        elapsed = anyio.current_time() - start
        host = host_clients(resources, backend)
        assert len(host.clients) == clients_per_host  # 20 workers: every shard was used
        assert host.in_flight == [0] * clients_per_host
        limits = http.shard_limits()
        for pool, shard_limits in zip(pools_of(resources, backend), limits, strict=True):
            assert not pool._requests  # no request is still queued or assigned
            assert len(pool.connections) <= (shard_limits.max_connections or 0)
            busy = [c for c in pool.connections if not (c.is_idle() or c.is_closed())]
            assert busy == []
        assert sum(len(pool.connections) for pool in pools_of(resources, backend)) <= max_connections
        # the pool still works: a normal call goes through at once
        with anyio.fail_after(2):
            assert (await make(faults_fleet, "ok", http=http).complete(QUERY)).text

    assert cancelled >= 0.9 * workers * per_worker
    assert elapsed < 15
    after = await settled_stats(faults_fleet, "churn")
    sent = after["requests"] - before["requests"]
    # How many reached the fleet before their cancellation depends on the machine's load (the
    # client is CPU bound; the others were cancelled while queued for one of the
    # connections or connecting). Every one that did is a disconnect there, none in flight.
    assert sent > 0
    assert after["disconnected"] - before["disconnected"] + after["completed"] - before["completed"] == sent


# --------------------------------------------------------------------------- the session's test fleet


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("name", ["alpha-us", "beta-us", "gamma-eu", "keyed-us", "keyed-gamma"])
async def test_canary_on_the_shared_test_fleet(
    fleet: FleetProcess, name: str, stream: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TEST_API_KEY_ENV, TEST_API_KEY)
    model = fleet.config.deployment(name).model
    cls = Anthropic if fleet.config.deployment(name).api == "anthropic" else OpenAICompatible
    backend = cls(name, base_url=fleet.base_url(name), model=model, api_key_env=TEST_API_KEY_ENV, stream=stream)
    async with runtime():
        response = await backend.complete(Query(CANARY_QUESTION))
    assert response.text == CANARY_ANSWER
    assert response.model == model
    assert not response.usage.estimated


async def test_race_through_a_runtime_cancels_the_loser_at_the_server(fleet: FleetProcess) -> None:
    from specexec import Policy, Runtime

    model = fleet.config.deployment("alpha-us").model
    fast = OpenAICompatible("alpha-us", base_url=fleet.base_url("alpha-us"), model=model, stream=True)
    slow = OpenAICompatible("slow-us", base_url=fleet.base_url("slow-us"), model=model)
    before = fleet.deployment_stats("slow-us")
    async with Runtime([fast, slow]) as rt:
        result = await rt.run(CANARY_QUESTION, Policy.race(["slow-us", "alpha-us"]))
        assert (result.backend, result.response.text) == ("alpha-us", CANARY_ANSWER)
        clients = list(rt._resources.items().values())  # type: ignore[union-attr]
        assert len(clients) == 1  # both backends share the runtime's client for the fleet's host
    assert clients[0].is_closed  # closed with the runtime
    after = await settled_stats(fleet, "slow-us")
    assert after["disconnected"] - before["disconnected"] == 1
    assert after["completed"] == before["completed"]


async def test_down_and_stalled_on_the_shared_test_fleet(fleet: FleetProcess) -> None:
    down = OpenAICompatible("down-us", base_url=fleet.base_url("down-us"), model="m")
    stalled = OpenAICompatible(
        "stall-us", base_url=fleet.base_url("stall-us"), model="m", timeout=HttpTimeouts(read=0.1)
    )
    async with runtime():
        with pytest.raises(Unavailable):
            await down.complete(QUERY)
        with pytest.raises(Timeout):
            await stalled.complete(QUERY)


# --------------------------------------------------------------------------- secrets


async def test_the_key_never_leaks(
    faults_fleet: FleetProcess, caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]
) -> None:
    caplog.set_level(logging.DEBUG)  # httpx and httpcore log every request at DEBUG
    log = logging.getLogger("specexec.tests")
    seen: list[str] = []
    async with runtime():
        for name in ["ok", "a-ok", "auth", "a-auth", "e500", "a-o529", "reset", "malformed", "s401", "strict"]:
            for stream in (False, True):
                backend = make(faults_fleet, name, stream=stream, timeout=HttpTimeouts(read=0.2))
                seen += [repr(backend), str(backend), repr(vars(backend))]
                try:
                    response = await backend.complete(QUERY)
                    seen.append(repr(response))
                except BackendError as exc:
                    seen += [str(exc), repr(exc), repr(vars(exc)), "".join(traceback.format_exception(exc))]
                    log.exception("attempt at %s failed", name)
        with pytest.raises(Timeout) as info:
            await make(faults_fleet, "stall", timeout=HttpTimeouts(read=0.1)).complete(QUERY)
        seen.append("".join(traceback.format_exception(info.value)))
        with pytest.raises(AuthError) as refused:
            await make(faults_fleet, "auth", key_env=WRONG_KEY_ENV).complete(QUERY)
        seen.append("".join(traceback.format_exception(refused.value)))
    out = capsys.readouterr()
    assert caplog.records  # logging was captured
    for text in [*seen, caplog.text, out.out, out.err]:
        assert FAKE_KEY not in text
        assert "SECRETSECRET" not in text
        assert WRONG_KEY not in text
