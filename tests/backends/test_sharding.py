"""``HostClients``: a host's shared clients split into shards, least busy first, all closed by the runtime."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from specexec import Policy, PolicyError, Query, Runtime, Unavailable
from specexec._resources import Resources, _current
from specexec.backends import DEFAULT_CLIENTS_PER_HOST, DEFAULT_HTTP_CONFIG, HttpConfig, OpenAICompatible
from specexec.backends._http import MIN_CONNECTIONS_PER_SHARD, HostClients
from specexec.bench.fleet import FleetProcess
from specexec.bench.fleet.pytest_fixtures import CANARY_ANSWER, CANARY_QUESTION

TIMEOUT = httpx.Timeout(5.0)


def ssl_context_of(client: httpx.AsyncClient) -> Any:
    return client._transport._pool._ssl_context  # type: ignore[attr-defined]


def pool_limit_of(client: httpx.AsyncClient) -> Any:
    return client._transport._pool._max_connections  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- config


def test_default_shards() -> None:
    assert DEFAULT_HTTP_CONFIG.clients_per_host == DEFAULT_CLIENTS_PER_HOST == 8
    assert DEFAULT_HTTP_CONFIG.shards == 8
    limits = DEFAULT_HTTP_CONFIG.shard_limits()
    assert [x.max_connections for x in limits] == [13, 13, 13, 13, 12, 12, 12, 12]
    assert sum(x.max_keepalive_connections or 0 for x in limits) == DEFAULT_HTTP_CONFIG.max_keepalive_connections


def test_limits_are_split_evenly_and_keep_the_host_totals() -> None:
    config = HttpConfig(max_connections=26, max_keepalive_connections=5, keepalive_expiry=7.0, clients_per_host=3)
    limits = config.shard_limits()
    assert [x.max_connections for x in limits] == [9, 9, 8]
    assert [x.max_keepalive_connections for x in limits] == [2, 2, 1]
    assert {x.keepalive_expiry for x in limits} == {7.0}
    assert config.as_httpx().max_connections == 26  # a one-shot client is not sharded


@pytest.mark.parametrize(
    ("max_connections", "clients_per_host", "shards"),
    [(100, 8, 8), (100, 20, 12), (32, 8, 4), (16, 8, 2), (15, 8, 1), (10, 4, 1), (1, 8, 1), (100, 1, 1)],
)
def test_at_most_one_shard_per_eight_connections(max_connections: int, clients_per_host: int, shards: int) -> None:
    config = HttpConfig(max_connections=max_connections, clients_per_host=clients_per_host)
    assert config.shards == shards == len(config.shard_limits())
    assert sum(x.max_connections or 0 for x in config.shard_limits()) == max_connections
    assert MIN_CONNECTIONS_PER_SHARD == 8


@pytest.mark.parametrize("value", [0, -1, True])
def test_bad_clients_per_host(value: object) -> None:
    with pytest.raises(PolicyError, match=r"clients_per_host"):
        HttpConfig(clients_per_host=value)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- assignment


@pytest.mark.anyio
async def test_one_request_at_a_time_always_uses_the_first_shard() -> None:
    host = HostClients(HttpConfig(clients_per_host=4), TIMEOUT)
    try:
        for _ in range(5):
            shard, _ = host.acquire()
            assert shard == 0
            host.release(shard)
        assert len(host.clients) == 1  # the other shards were never created
    finally:
        await host.aclose()


@pytest.mark.anyio
async def test_requests_in_flight_go_to_the_least_busy_shard() -> None:
    host = HostClients(HttpConfig(max_connections=26, clients_per_host=3), TIMEOUT)  # shards of 9, 9, 8
    try:
        taken = [host.acquire()[0] for _ in range(8)]
        # the most free connections first, the lowest index on a tie
        assert taken == [0, 1, 0, 1, 2, 0, 1, 2]
        assert host.in_flight == [3, 3, 2]
        assert len(host.clients) == 3
        assert [pool_limit_of(c) for c in host.clients] == [9, 9, 8]
        assert len({id(ssl_context_of(c)) for c in host.clients}) == 1  # one SSL context for all shards
        host.release(1)
        assert host.acquire()[0] == 1  # the shard that freed a connection
        taken = [host.acquire()[0] for _ in range(18)]  # fill every shard
        assert taken == [0, 1, 2] * 6 and host.in_flight == [9, 9, 8]
        assert host.acquire()[0] == 0  # all full: queue on the least loaded, lowest index
        assert host.in_flight == [10, 9, 8]
        for shard, n in enumerate([10, 9, 8]):
            for _ in range(n):
                host.release(shard)
        assert host.in_flight == [0, 0, 0]
    finally:
        await host.aclose()


@pytest.mark.anyio
async def test_aclose_closes_every_shard_and_refuses_new_ones() -> None:
    host = HostClients(HttpConfig(max_connections=24, clients_per_host=3), TIMEOUT)  # shards of 8
    assert host.acquire()[0] == 0 and host.acquire()[0] == 1
    a, b = host.clients
    await host.aclose()
    assert host.is_closed and a.is_closed and b.is_closed
    with pytest.raises(RuntimeError, match="closed"):
        host.acquire()  # would have created the third shard


# --------------------------------------------------------------------------- over the wire


def backend(fleet: FleetProcess, name: str = "alpha-us", **kw: Any) -> OpenAICompatible:
    return OpenAICompatible(name, base_url=fleet.base_url(name), model=fleet.config.deployment(name).model, **kw)


async def _concurrently(n: int, call: Any) -> list[Any]:
    results: list[Any] = []

    async def one() -> None:
        try:
            results.append(await call())
        except Exception as exc:  # collected for the assertions
            results.append(exc)

    async with anyio.create_task_group() as tg:
        for _ in range(n):
            tg.start_soon(one)
    return results


@pytest.mark.anyio
async def test_the_runtime_spreads_concurrent_calls_and_closes_every_shard(fleet: FleetProcess) -> None:
    b = backend(fleet)
    async with Runtime([b]) as rt:
        answers = await _concurrently(12, lambda: rt.run(Query(CANARY_QUESTION), Policy.single("alpha-us")))
        assert [a.response.text for a in answers] == [CANARY_ANSWER] * 12
        (host,) = rt._resources.items().values()  # type: ignore[union-attr]
        assert isinstance(host, HostClients)
        assert len(host.clients) == 8  # 12 in flight used every shard
        assert host.in_flight == [0] * 8
        clients = host.clients
        assert not any(c.is_closed for c in clients)
    assert host.is_closed
    assert all(c.is_closed for c in clients)


@pytest.mark.anyio
async def test_one_client_per_host_when_asked(fleet: FleetProcess) -> None:
    b = backend(fleet, http=HttpConfig(clients_per_host=1))
    async with Runtime([b]) as rt:
        await _concurrently(8, lambda: rt.run(Query(CANARY_QUESTION), Policy.single("alpha-us")))
        (host,) = rt._resources.items().values()  # type: ignore[union-attr]
        assert len(host.clients) == 1


@pytest.mark.anyio
async def test_failed_and_cancelled_exchanges_give_their_shard_back(fleet: FleetProcess) -> None:
    down, slow = backend(fleet, "down-us"), backend(fleet, "slow-us")
    resources = Resources()
    token = _current.set(resources)  # what Runtime.run does around a run
    try:
        errors = await _concurrently(6, lambda: down.complete(Query("x")))
        assert len(errors) == 6 and all(isinstance(e, Unavailable) for e in errors)
        host = resources.items()[down._client_key]
        assert isinstance(host, HostClients)
        assert host.in_flight == [0] * 8  # however many shards the failures went through

        async def cancelled() -> None:
            with anyio.move_on_after(0.05):
                await slow.complete(Query("x"))  # answers after 0.5 s

        async with anyio.create_task_group() as tg:
            for _ in range(6):
                tg.start_soon(cancelled)
        assert host.in_flight == [0] * 8
        for pool in (c._transport._pool for c in host.clients):  # type: ignore[attr-defined]
            assert not pool._requests
    finally:
        _current.reset(token)
        with anyio.CancelScope(shield=True):
            await resources.aclose()
    assert host.is_closed and all(c.is_closed for c in host.clients)
