"""``Budget``: spend per key (tenant, feature, …) per calendar period, steering routes down.

Spend is tracked in a ``BudgetStore`` (one small async protocol; ``InMemoryBudgetStore`` by
default, a shared store across processes plugs in later). A routed run *reserves* its
route's worst case before it starts and *settles* to what it really cost when it ends, so
concurrent runs cannot overshoot the limit: the reservations count while in flight.

Periods reset on calendar boundaries in UTC (``"hour"``, ``"day"``, ``"month"``) or every
``N`` seconds counted from the Unix epoch. A store that fails is logged and skipped: a store
outage never fails a run.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Literal, Protocol

from .._errors import BudgetExceeded, PolicyError
from .._query import Query

_log = logging.getLogger("specexec.routing")
_EPSILON = 1e-12

Period = Literal["hour", "day", "month"]
KeyFn = Callable[[Query], str]


class BudgetStore(Protocol):
    """Where spend is kept: ``key`` and ``window`` (the period's start, Unix seconds) name one tally."""

    async def reserve(self, key: str, window: int, amount: float, limit: float) -> bool:
        """Atomically add ``amount`` to the open reservations if spent + reserved + amount fits ``limit``."""
        ...

    async def settle(self, key: str, window: int, reserved: float, actual: float) -> None:
        """Release ``reserved`` and add ``actual`` to the spend."""
        ...

    async def usage(self, key: str, window: int) -> tuple[float, float]:
        """``(spent, reserved)`` in USD."""
        ...


class InMemoryBudgetStore:
    """A ``BudgetStore`` in this process (a dict; old windows are dropped as new ones open)."""

    def __init__(self) -> None:
        self._tallies: dict[tuple[str, int], list[float]] = {}

    async def reserve(self, key: str, window: int, amount: float, limit: float) -> bool:
        """Reserve ``amount`` if it fits (no await inside: atomic on one event loop)."""
        tally = self._tally(key, window)
        if tally[0] + tally[1] + amount > limit + _EPSILON:
            return False
        tally[1] += amount
        return True

    async def settle(self, key: str, window: int, reserved: float, actual: float) -> None:
        """Release ``reserved``, add ``actual``."""
        tally = self._tally(key, window)
        tally[1] = max(tally[1] - reserved, 0.0)
        tally[0] += actual

    async def usage(self, key: str, window: int) -> tuple[float, float]:
        """``(spent, reserved)``."""
        tally = self._tallies.get((key, window))
        return (tally[0], tally[1]) if tally is not None else (0.0, 0.0)

    def _tally(self, key: str, window: int) -> list[float]:
        tally = self._tallies.get((key, window))
        if tally is None:
            for stale in [k for k in self._tallies if k[0] == key and k[1] < window]:
                del self._tallies[stale]
            tally = self._tallies[(key, window)] = [0.0, 0.0]
        return tally


class Downgrade:
    """When ``below`` or less of the budget is left: route ``r`` → ``routes[r]``, or every
    route → ``to`` (a route name, or ``"cheapest"``: the route with the lowest worst case)."""

    def __init__(self, below: float, routes: Mapping[str, str] | None = None, to: str | None = None) -> None:
        if not (isinstance(below, (int, float)) and 0 < below <= 1):
            raise PolicyError(f"below must be a fraction in (0, 1], got {below!r}", path="$.below")
        if (routes is None) == (to is None):
            raise PolicyError("a downgrade takes routes = {from = to} or to = route, exactly one", path="$")
        self.below = float(below)
        self.routes = dict(routes or {})
        self.to = to

    def unknown_route(self, routes: Collection[str]) -> tuple[str, str] | None:
        """``(what, key path under the rule)`` for a route this rule names that is not in
        ``routes`` (``"cheapest"`` is always a target), or ``None``."""
        for source, target in self.routes.items():
            if source not in routes:
                return f"downgrades from unknown route {source!r}", f".routes.{source}"
            if target != "cheapest" and target not in routes:
                return f"downgrades {source!r} to unknown route {target!r}", f".routes.{source}"
        if self.to is not None and self.to != "cheapest" and self.to not in routes:
            return f"downgrades to unknown route {self.to!r}", ".to"
        return None

    def apply(self, route: str, cheapest: Callable[[], str]) -> str:
        """The route ``route`` becomes under this rule."""
        if self.to is not None:
            return cheapest() if self.to == "cheapest" else self.to
        return self.routes.get(route, route)


def downgrade(below: float, routes: Mapping[str, str] | None = None, *, to: str | None = None) -> Downgrade:
    """A budget downgrade rule (see ``Downgrade``)."""
    return Downgrade(below, routes, to)


class BudgetState:
    """A budget as seen by one run: the key, the window, and what is left."""

    __slots__ = ("key", "limit", "remaining", "reset", "spent", "window")

    def __init__(self, key: str, window: int, reset: float, spent: float, reserved: float, limit: float) -> None:
        self.key, self.window, self.reset, self.limit = key, window, reset, limit
        self.spent = spent
        self.remaining = max(limit - spent - reserved, 0.0) / limit


class Budget:
    """A spend limit in USD per ``key`` per ``period`` that steers a router's routes.

    - ``period``: ``"hour"``, ``"day"``, ``"month"`` (UTC calendar boundaries) or seconds.
    - ``key``: ``"tenant"`` (``Query.tenant``), ``"feature"`` (``Query.metadata["feature"]``),
      any other metadata key, or a callable ``(query) -> str``; a missing value is ``"-"``.
    - ``downgrade``: ``Downgrade`` rules by remaining fraction; the most severe that applies wins.
    - ``exempt_priority``: queries with ``priority >=`` it are never downgraded.
    - ``store``: a ``BudgetStore`` (default: in process); ``clock``: Unix seconds (for tests).

    A run whose route's worst case no longer fits raises ``BudgetExceeded`` naming the key and
    the reset time.
    """

    def __init__(
        self,
        limit_usd: float,
        period: Period | float = "day",
        key: str | KeyFn = "tenant",
        *,
        downgrade: Sequence[Downgrade] = (),
        exempt_priority: int | None = None,
        store: BudgetStore | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if not (isinstance(limit_usd, (int, float)) and not isinstance(limit_usd, bool) and 0 < limit_usd < math.inf):
            raise PolicyError(f"limit_usd must be a positive number of USD, got {limit_usd!r}", path="$.limit_usd")
        if isinstance(period, str):
            if period not in ("hour", "day", "month"):
                raise PolicyError(f"period must be hour, day, month or seconds, got {period!r}", path="$.period")
        elif not (
            isinstance(period, (int, float))
            and not isinstance(period, bool)
            and 1 <= period < math.inf
            and float(period).is_integer()
        ):  # windows are named by their start in whole Unix seconds
            raise PolicyError(
                f"period must be hour, day, month or a whole number of seconds >= 1, got {period!r}", path="$.period"
            )
        if not (callable(key) or (isinstance(key, str) and key)):
            raise PolicyError(f"key must be a metadata name or a callable, got {key!r}", path="$.key")
        self.limit = float(limit_usd)
        self.period = period
        self.key = key
        self.downgrades = sorted(downgrade, key=lambda d: d.below)  # most severe first
        self.exempt_priority = exempt_priority
        self.store: BudgetStore = store if store is not None else InMemoryBudgetStore()
        self.clock = clock

    def key_for(self, query: Query) -> str:
        """The budget key of ``query``."""
        if callable(self.key):
            return str(self.key(query))
        value = query.tenant if self.key == "tenant" else query.metadata.get(self.key)
        return "-" if value is None else str(value)

    def window(self, now: float) -> tuple[int, float]:
        """``(start, reset)`` of the period containing ``now`` (Unix seconds, UTC)."""
        if not isinstance(self.period, str):
            start = math.floor(now / self.period) * self.period
            return int(start), start + self.period
        t = dt.datetime.fromtimestamp(now, dt.UTC)
        if self.period == "hour":
            begin = t.replace(minute=0, second=0, microsecond=0)
            end = begin + dt.timedelta(hours=1)
        elif self.period == "day":
            begin = t.replace(hour=0, minute=0, second=0, microsecond=0)
            end = begin + dt.timedelta(days=1)
        else:
            begin = t.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
            end = (begin + dt.timedelta(days=calendar.monthrange(t.year, t.month)[1])).replace(day=1)
        return int(begin.timestamp()), end.timestamp()

    async def state(self, query: Query) -> BudgetState | None:
        """What is left for ``query``'s key now (``None`` when the store cannot say)."""
        key = self.key_for(query)
        window, reset = self.window(self.clock())
        try:
            spent, reserved = await self.store.usage(key, window)
        except Exception:
            _log.exception("specexec: budget store failed reading %r; running without the budget", key)
            return None
        return BudgetState(key, window, reset, spent, reserved, self.limit)

    def steer(self, route: str, query: Query, state: BudgetState | None, cheapest: Callable[[], str]) -> str:
        """``route`` after the downgrade rules for what is left (unchanged for exempt queries)."""
        if state is None or not self.downgrades:
            return route
        if self.exempt_priority is not None and query.priority >= self.exempt_priority:
            return route
        for rule in self.downgrades:
            if state.remaining <= rule.below + _EPSILON:
                return rule.apply(route, cheapest)
        return route

    async def reserve(self, state: BudgetState | None, amount: float) -> bool:
        """Reserve ``amount`` for a run; raises ``BudgetExceeded`` when it does not fit.
        Returns whether a reservation was made (``False``: the store failed; run unbudgeted)."""
        if state is None:
            return False
        try:
            ok = await self.store.reserve(state.key, state.window, amount, self.limit)
        except Exception:
            _log.exception("specexec: budget store failed reserving for %r; running without the budget", state.key)
            return False
        if not ok:
            spent, reserved = await self._usage(state)
            reset = dt.datetime.fromtimestamp(state.reset, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
            raise BudgetExceeded(
                f"budget for {self._key_name()} {state.key!r} exhausted: ${spent:.6f} spent and ${reserved:.6f} "
                f"in flight of ${self.limit:g} this {self._period_name()}; this route needs up to ${amount:.6f}; "
                f"resets at {reset}"
            )
        return True

    async def settle(self, state: BudgetState, reserved: float, actual: float) -> None:
        """Release a run's reservation and book what it cost (a store failure is logged)."""
        try:
            await self.store.settle(state.key, state.window, reserved, actual)
        except Exception:
            _log.exception("specexec: budget store failed settling for %r", state.key)

    async def _usage(self, state: BudgetState) -> tuple[float, float]:
        try:
            return await self.store.usage(state.key, state.window)
        except Exception:
            return (state.spent, 0.0)

    @property
    def name(self) -> str:
        """What the budget is keyed by and its period (``"tenant/day"``, ``"key/600s"``): a name
        that holds no key value (the metrics' label)."""
        period = self.period if isinstance(self.period, str) else f"{self.period:g}s"
        return f"{self._key_name()}/{period}"

    def _key_name(self) -> str:
        return "key" if callable(self.key) else self.key

    def _period_name(self) -> str:
        return self.period if isinstance(self.period, str) else f"{self.period:g}s period"
