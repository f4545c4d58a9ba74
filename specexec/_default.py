"""The process-default runtime: what ``specexec.run`` and ``specexec.stream`` use without ``runtime=``.

``specexec.configure(...)`` sets it — a ``Runtime``, a config file (``specexec.config``), or
backends — and until then it is an empty ``Runtime`` (policies may still hold backend
objects, which register on first use).

Theory of operation. The default runtime is never entered by the library, yet its HTTP
backends must pool connections, and a client must never be used from an event loop other
than the one it was made on (trio's and asyncio's differ; two threads may run two loops).
So each event loop that runs the default runtime gets its own ``Resources``, kept in an
``anyio.lowlevel.RunVar`` (scoped to the running loop) and made on the loop's first run.
The first time a loop gets them, a watcher is started on that loop — a trio *system task*,
or on asyncio a task that the loop's shutdown (``asyncio.run``, ``uvloop.run``, anyio's
runner) cancels — which closes the loop's clients as the loop ends, on that loop.
``await specexec.aclose()`` closes them earlier; a later run opens new ones. Neither trio
nor anyio offers a loop-scoped background task (a "system task") on both loops, hence the
two small branches below.

A default runtime the caller enters (``async with specexec.default_runtime():``) uses its
own resources while entered, like any ``Runtime``; its health feeds run only then.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sniffio
from anyio.lowlevel import RunVar

from ._resources import Resources

if TYPE_CHECKING:
    from ._backend import Backend
    from ._health import HealthConfig
    from ._runtime import Runtime
    from ._trace import TraceSink

__all__ = ["aclose", "configure", "default_runtime", "loop_resources"]

_log = logging.getLogger("specexec")

_runtime: Runtime | None = None
_lock = threading.Lock()


class _LoopState:
    """One event loop's pooled resources, per default runtime that ran on it, and its watcher."""

    __slots__ = ("pools", "watcher")

    def __init__(self) -> None:
        self.pools: dict[Runtime, Resources] = {}
        self.watcher: Any = None  # the asyncio task (kept: the loop holds tasks weakly); None on trio

    async def aclose(self) -> None:
        """Close every pool of this loop (each once); the first error is raised after all were tried."""
        pools, self.pools = list(self.pools.values()), {}
        first: Exception | None = None
        for resources in pools:
            try:
                await resources.aclose()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first

    async def close_quietly(self) -> None:
        """``aclose`` for the loop's shutdown: an error is logged, never raised."""
        try:
            await self.aclose()
        except Exception:
            _log.exception("specexec: closing the default runtime's HTTP clients as the event loop ended failed")


_loop_state: RunVar[_LoopState] = RunVar("specexec_default_resources")


def default_runtime() -> Runtime:
    """The process-wide runtime ``specexec.run`` and ``specexec.stream`` use when no
    ``runtime=`` is given (set it with ``specexec.configure``)."""
    rt = _runtime
    if rt is None:
        from ._runtime import Runtime

        with _lock:
            rt = _runtime
            if rt is None:
                rt = _install(Runtime())
    return rt


def configure(
    source: Runtime | str | Path | None = None,
    *,
    backends: Iterable[Backend] = (),
    health: HealthConfig | None = None,
    sinks: Iterable[TraceSink] = (),
) -> Runtime:
    """Set the process-default runtime and return it; call it once, at start-up (``RuntimeError``
    while the current default is entered).

    - ``configure(runtime)``: that ``Runtime`` becomes the default.
    - ``configure("specexec.toml")``: a runtime with the backends and ``[health]`` of a
      config file (or TOML text; see ``specexec.config``), plus any ``backends=`` given.
    - ``configure(backends=[...], health=..., sinks=[...])``: a runtime with these.
    - ``configure()``: a fresh, empty default.

    Policies may then name these backends in ``specexec.run(query, policy)``. The default's
    HTTP clients are pooled per event loop and closed when that loop ends (or on
    ``await specexec.aclose()``). Clients the previous default pooled stay open until then,
    for the runs still using them.
    """
    from ._runtime import Runtime

    if isinstance(source, Runtime):
        if backends or health is not None or sinks:
            raise TypeError(
                "configure takes either a Runtime or the parts of one (backends=, health=, sinks=), not both"
            )
        rt = source
    elif source is not None:
        rt = Runtime.from_config(source, sinks=list(sinks))
        if health is not None:
            raise TypeError("configure: a config file brings its own [health]; do not also pass health=")
        for backend in backends:
            rt.add_backend(backend)
    else:
        rt = Runtime(backends, health=health, sinks=list(sinks))
    with _lock:
        return _install(rt)


def _install(rt: Runtime) -> Runtime:
    global _runtime
    current = _runtime
    if current is not None and current is not rt and current._resources is not None:
        raise RuntimeError(
            "configure() while the default runtime is entered (`async with specexec.default_runtime()`): "
            "the entered one would stay open but unused; configure before entering it, or after it exits"
        )
    rt._loop_pooled = True
    _runtime = rt
    return rt


def loop_resources(rt: Runtime) -> Resources:
    """The resources runs of the (not entered) default runtime ``rt`` use on the running loop."""
    try:
        state = _loop_state.get()
    except LookupError:
        state = _LoopState()
        _loop_state.set(state)
        _watch(state)
    resources = state.pools.get(rt)
    if resources is None:
        resources = state.pools[rt] = Resources()
    return resources


def _watch(state: _LoopState) -> None:
    """Start the task that closes ``state``'s pools as the running loop ends."""
    if sniffio.current_async_library() == "trio":
        import trio

        async def close_at_exit() -> None:
            try:
                await trio.sleep_forever()
            finally:  # the main task ended: trio cancels system tasks
                with trio.CancelScope(shield=True):
                    await state.close_quietly()

        trio.lowlevel.spawn_system_task(close_at_exit, name="specexec: close the default runtime's clients")
    else:
        import asyncio

        async def close_when_cancelled() -> None:
            try:
                await asyncio.get_running_loop().create_future()
            except asyncio.CancelledError:  # the loop's shutdown cancels what is left
                await state.close_quietly()
                raise

        state.watcher = asyncio.get_running_loop().create_task(
            close_when_cancelled(), name="specexec: close the default runtime's clients"
        )


async def aclose() -> None:
    """Close the HTTP clients the default runtime pooled for the running event loop now.

    For services that shut their loop down themselves; loops ended by ``trio.run``,
    ``asyncio.run`` or ``uvloop.run`` close them anyway. A later run opens new clients.
    """
    state = _loop_state.get(None)
    if state is not None:
        await state.aclose()
