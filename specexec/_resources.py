"""Resources a ``Runtime`` owns on behalf of its backends (HTTP clients) and closes with it.

Backends reach the resources of the runtime that is running them through
``current_resources()``: the runtime sets it for the duration of each ``run`` (a context
variable, so it follows the run's tasks on trio and asyncio alike). Outside an entered
runtime it is ``None`` and a backend must make do on its own (e.g. a one-shot client).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from typing import Any, Protocol

from ._errors import RuntimeClosed

CLOSED_IN_FLIGHT = (
    "the Runtime was exited while this run was in flight (its HTTP clients are closed): exit it "
    "after the runs that use it have ended"
)


class AsyncClosable(Protocol):
    """Anything with ``aclose()``: an ``httpx.AsyncClient`` for instance."""

    async def aclose(self) -> None:
        """Release what it holds."""
        ...


class Resources:
    """Shared, lazily made objects keyed by name (one HTTP client per host, say); closed together."""

    def __init__(self) -> None:
        self._items: dict[str, Any] = {}
        self._closed = False

    def get_or_create(self, key: str, factory: Callable[[], AsyncClosable]) -> Any:
        """The object stored under ``key``, made by ``factory()`` on first use."""
        if self._closed:
            raise RuntimeClosed(CLOSED_IN_FLIGHT)
        item = self._items.get(key)
        if item is None:
            item = self._items[key] = factory()
        return item

    @property
    def closed(self) -> bool:
        """``aclose()`` has begun: what is held is closed, or being closed, under its users."""
        return self._closed

    def items(self) -> dict[str, Any]:
        """A copy of what is held, by key (for tests and diagnostics)."""
        return dict(self._items)

    async def aclose(self) -> None:
        """Close everything held, each once; the first error is raised after all were tried."""
        self._closed = True
        items, self._items = list(self._items.values()), {}
        first: BaseException | None = None
        for item in items:
            try:
                closer: Callable[[], Awaitable[None]] = item.aclose
                await closer()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first


_current: ContextVar[Resources | None] = ContextVar("specexec_resources", default=None)


def current_resources() -> Resources | None:
    """The resources of the runtime running the current task, or ``None`` outside one."""
    return _current.get()
