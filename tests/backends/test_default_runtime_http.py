"""The process-default runtime's HTTP clients, over real loopback HTTP to the test fleet.

``specexec.run`` without ``runtime=`` pools connections per event loop (never sharing a client
between loops) and closes them when that loop ends or on ``specexec.aclose()``. The per-loop
tests run their own ``trio.run`` / ``asyncio.run`` / ``uvloop.run``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
import trio
import uvloop

import specexec
from specexec import _default
from specexec.backends import HttpTimeouts, OpenAICompatible
from specexec.backends._http import HostClients
from specexec.bench.fleet import FleetProcess
from specexec.bench.fleet.pytest_fixtures import CANARY_QUESTION


@pytest.fixture(autouse=True)
def _fresh_default() -> Iterator[None]:
    """Every test starts from, and leaves, an unconfigured process default."""
    saved = _default._runtime
    _default._runtime = None
    try:
        yield
    finally:
        _default._runtime = saved


def http_backend(proc: FleetProcess, name: str = "alpha-us") -> OpenAICompatible:
    return OpenAICompatible(
        name,
        base_url=proc.base_url(name),
        model=proc.config.deployment(name).model,
        timeout=HttpTimeouts(connect=2.0, read=5.0, write=2.0, pool=5.0),
    )


def pooled_host_clients() -> list[HostClients]:
    """The default runtime's HostClients in the running loop."""
    state = _default._loop_state.get(None)
    assert state is not None
    return [c for r in state.pools.values() for c in r.items().values() if isinstance(c, HostClients)]


# ------------------------------------------------------------------------- pooled HTTP clients


@pytest.mark.anyio
async def test_default_runtime_pools_http_connections(fleet: FleetProcess) -> None:
    backend = http_backend(fleet)
    policy = specexec.Policy.single(backend)
    for _ in range(5):
        result = await specexec.run(CANARY_QUESTION, policy)
        assert result.response.text == "4"
    (host,) = pooled_host_clients()
    (client,) = host.clients
    pool: Any = client._transport._pool  # type: ignore[attr-defined]
    assert len(pool.connections) == 1  # one keep-alive connection served all five calls
    await specexec.aclose()
    assert host.is_closed
    assert _default._loop_state.get(None) is None or not _default._loop_state.get(None).pools  # type: ignore[union-attr]


@pytest.mark.anyio
async def test_after_aclose_the_next_run_opens_new_clients(fleet: FleetProcess) -> None:
    policy = specexec.Policy.single(http_backend(fleet))
    await specexec.run(CANARY_QUESTION, policy)
    (first,) = pooled_host_clients()
    await specexec.aclose()
    await specexec.run(CANARY_QUESTION, policy)
    (second,) = pooled_host_clients()
    assert first.is_closed and not second.is_closed and second is not first
    await specexec.aclose()


def _run_in(loop: str, fn: Any) -> Any:
    if loop == "trio":
        return trio.run(fn)
    if loop == "asyncio+uvloop":
        return uvloop.run(fn())
    return asyncio.run(fn())


@pytest.mark.parametrize("loop", ["trio", "asyncio", "asyncio+uvloop"])
def test_pooled_clients_are_per_loop_and_closed_when_the_loop_ends(fleet: FleetProcess, loop: str) -> None:
    policy = specexec.Policy.single(http_backend(fleet))

    async def one_loop() -> HostClients:
        await specexec.run(CANARY_QUESTION, policy)
        await specexec.run(CANARY_QUESTION, policy)
        (host,) = pooled_host_clients()
        assert not host.is_closed
        return host

    first = _run_in(loop, one_loop)
    assert first.is_closed  # closed as that loop shut down, on that loop
    second = _run_in(loop, one_loop)
    assert second is not first and second.is_closed


def test_trio_and_asyncio_never_share_a_client(fleet: FleetProcess) -> None:
    policy = specexec.Policy.single(http_backend(fleet))
    seen: list[HostClients] = []

    async def on_asyncio() -> None:
        await specexec.run(CANARY_QUESTION, policy)
        seen.extend(pooled_host_clients())
        await trio_in_a_thread()

    async def on_trio() -> None:
        await specexec.run(CANARY_QUESTION, policy)
        seen.extend(pooled_host_clients())

    async def trio_in_a_thread() -> None:
        await asyncio.get_running_loop().run_in_executor(None, trio.run, on_trio)

    asyncio.run(on_asyncio())
    assert len(seen) == 2 and seen[0] is not seen[1]
    assert all(h.is_closed for h in seen)


@pytest.mark.anyio
async def test_an_entered_default_runtime_uses_its_own_resources(fleet: FleetProcess) -> None:
    rt = specexec.configure(backends=[http_backend(fleet)])
    async with rt:
        await specexec.run(CANARY_QUESTION, specexec.Policy.single("alpha-us"))
        assert rt._resources is not None and rt._resources.items()
        state = _default._loop_state.get(None)
        assert state is None or not state.pools
