"""Warm-up: do at start-up what a fresh process's first run would otherwise do on the request path.

The first run in a process pays for anyio's lazy imports of the running loop's backend (its
task groups, cancel scopes, memory streams, sockets: ≈ 10 ms, more on a loaded machine), and
an HTTP backend's first request for its client (an SSL context: loading the CA bundle costs
≈ 25 ms) and for httpcore's network backend. ``await runtime.warm_up()`` (or
``await specexec.warm_up()`` for the process default) does all of it in advance:

1. ``exercise_engine``: a single, a race whose loser is cancelled, a hedge and a stream over
   local callables, in a throwaway runtime of its own (none of your backends is called; no
   trace reaches your sinks; its health is discarded);
2. then each of the runtime's backends that has an ``async def warm_up()`` prepares itself;
   the HTTP backends make one exchange with a listener of their own on 127.0.0.1 (no request
   reaches a provider) and, with ``open_clients``, create their host's shared client.

Warm up on the event loop that will serve (the default runtime pools its clients per loop).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Protocol, runtime_checkable

import anyio

from ._query import Query


@runtime_checkable
class WarmUp(Protocol):
    """A backend that can prepare itself before its first call (``Runtime.warm_up`` calls it)."""

    async def warm_up(self) -> None:
        """Import and open what the first call needs, without calling the provider; must not raise
        for a provider that is down (it is not contacted)."""
        ...


async def _answer(query: Query) -> str:
    return "ok"


async def _never(query: Query) -> str:
    await anyio.sleep_forever()
    raise AssertionError("unreachable")  # pragma: no cover


async def _pieces(query: Query) -> AsyncIterator[str]:
    yield "o"
    yield "k"


async def exercise_engine() -> None:
    """Run the engine's paths once on the running loop, over local callables only."""
    from ._backend import CallableBackend
    from ._policy import Policy
    from ._runtime import Runtime

    backends = [
        CallableBackend("warm-up", _answer),
        CallableBackend("warm-up-never", _never),
        CallableBackend("warm-up-stream", _pieces),
    ]
    async with Runtime(backends) as rt:
        await rt.run("warm-up", Policy.single("warm-up"))
        await rt.run("warm-up", Policy.race(["warm-up-never", "warm-up"]))  # the loser is cancelled
        await rt.run("warm-up", Policy.hedge(["warm-up-never", "warm-up"], delay=0.0, budget=None))
        async with rt.stream("warm-up", Policy.single("warm-up-stream")) as stream:
            async for _ in stream:
                pass
