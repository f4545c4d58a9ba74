"""``RedisBudgetStore``: spend budgets shared by every process that points at one Redis.

Each tally (a budget key in one period window) is a Redis hash ``<prefix><key>:<window>`` with
``spent`` and ``reserved`` (USD). ``reserve`` is one Lua script — read both, compare with the
limit, add — so concurrent reservations from any number of processes never overshoot the limit.
``settle`` releases the reservation and adds the real cost in another script. Tallies expire
``ttl`` seconds after their last change (old windows clean themselves up).

On trio and on asyncio alike: redis-py's asyncio client serves asyncio; it has no trio support,
so under trio the synchronous client runs in a worker thread (``anyio.to_thread``, one call per
operation, bounded by a capacity limiter). Measured cost per ``reserve`` + ``settle``:
``python -m specexec.bench.redis_store``.

Failure never fails a run: when Redis cannot be reached (connection refused, reset, a timeout
of ``timeout`` seconds) the store falls back to an in-process tally — budgets are then per
process until Redis answers again — logs one WARNING per outage and one INFO when it recovers.
A reservation made locally is settled locally. A process that dies between ``reserve`` and
``settle`` leaves its reservation counted until the tally expires: the error is on the safe
side (less budget, never more).

On a Redis Cluster (``cluster=True``: redis-py's cluster client, ``url`` any node) each script
touches one key, so the tallies spread over the cluster's slots. A cluster that cannot serve a
slot (a master down, the cluster still forming) counts as an outage.
"""

from __future__ import annotations

import functools
import logging
import threading
from typing import Any

import anyio
import anyio.to_thread
import sniffio

from ..routing import InMemoryBudgetStore

_log = logging.getLogger("specexec")

_RESERVE = """
local spent = tonumber(redis.call('HGET', KEYS[1], 'spent') or '0')
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0')
if spent + reserved + tonumber(ARGV[1]) > tonumber(ARGV[2]) + 1e-12 then return 0 end
redis.call('HINCRBYFLOAT', KEYS[1], 'reserved', ARGV[1])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""
_SETTLE = """
local reserved = tonumber(redis.call('HGET', KEYS[1], 'reserved') or '0') - tonumber(ARGV[1])
if reserved < 1e-12 then reserved = 0 end
redis.call('HSET', KEYS[1], 'reserved', tostring(reserved))
redis.call('HINCRBYFLOAT', KEYS[1], 'spent', ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return 1
"""

DEFAULT_TTL = 40 * 86400
"""Seconds a tally is kept after its last change (longer than the longest period, a month)."""
DEFAULT_TIMEOUT = 0.25
"""Seconds a Redis call may take before the store falls back to local state."""


class RedisBudgetStore:
    """A ``routing.BudgetStore`` on Redis at ``url`` (e.g. ``"redis://127.0.0.1:6379/0"``).

    ``prefix`` namespaces the keys; ``ttl`` and ``timeout`` as in the module docstring;
    ``cluster=True`` for a Redis Cluster (``url`` names any of its nodes). Safe to share between
    runs and event loops of one process (a client per event-loop kind).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "specexec:budget:",
        ttl: int = DEFAULT_TTL,
        timeout: float = DEFAULT_TIMEOUT,
        cluster: bool = False,
    ) -> None:
        try:
            import redis  # noqa: F401  (the optional dependency, checked at construction)
        except ImportError:  # pragma: no cover - depends on the installation
            raise ImportError("RedisBudgetStore needs the redis package: pip install 'specexec[redis]'") from None
        if not isinstance(ttl, int) or ttl < 1:
            raise ValueError(f"ttl must be a positive number of seconds, got {ttl!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout!r}")
        self.url = url
        self.prefix = prefix
        self.ttl = ttl
        self.timeout = timeout
        self.cluster = cluster
        self._local = InMemoryBudgetStore()
        self._local_reserved: dict[tuple[str, int], float] = {}
        self._down = False
        self._sync: Any = None
        self._sync_lock = threading.Lock()
        self._async: dict[int, Any] = {}  # asyncio clients by event loop id
        self._limiter = anyio.CapacityLimiter(16)

    # -- the protocol ------------------------------------------------------------------------

    async def reserve(self, key: str, window: int, amount: float, limit: float) -> bool:
        """Add ``amount`` to the reservations if spent + reserved + amount fits ``limit`` (atomic across processes)."""
        try:
            ok = await self._script(_RESERVE, self._key(key, window), amount, limit, self.ttl)
        except _unreachable() as exc:
            self._outage(exc)
            if await self._local.reserve(key, window, amount, limit):
                tally = (key, window)
                self._local_reserved[tally] = self._local_reserved.get(tally, 0.0) + amount
                return True
            return False
        self._recovered()
        return bool(ok)

    async def settle(self, key: str, window: int, reserved: float, actual: float) -> None:
        """Release ``reserved`` and add ``actual`` to the spend (where the reservation was made)."""
        tally = (key, window)
        local = self._local_reserved.get(tally, 0.0)
        if local >= reserved - 1e-12 and local > 0:  # reserved during an outage: settle it here
            self._local_reserved[tally] = local - reserved
            await self._local.settle(key, window, reserved, actual)
            return
        try:
            await self._script(_SETTLE, self._key(key, window), reserved, actual, self.ttl)
        except _unreachable() as exc:
            self._outage(exc)
            await self._local.settle(key, window, 0.0, actual)
            return
        self._recovered()

    async def usage(self, key: str, window: int) -> tuple[float, float]:
        """``(spent, reserved)`` in USD: Redis's tally, or the local one during an outage."""
        try:
            values = await self._call("hmget", self._key(key, window), "spent", "reserved")
        except _unreachable() as exc:
            self._outage(exc)
            return await self._local.usage(key, window)
        self._recovered()
        spent, reserved = (float(v) if v is not None else 0.0 for v in values)
        return spent, reserved

    async def aclose(self) -> None:
        """Close the clients (the store can be used again afterwards: they reopen lazily)."""
        clients, self._async = list(self._async.values()), {}
        for client in clients:
            await client.aclose()
        with self._sync_lock:
            sync, self._sync = self._sync, None
        if sync is not None:
            sync.close()

    # -- plumbing ----------------------------------------------------------------------------

    def _key(self, key: str, window: int) -> str:
        return f"{self.prefix}{key}:{window}"

    async def _script(self, script: str, key: str, *args: object) -> Any:
        return await self._call("eval", script, 1, key, *args)

    async def _call(self, command: str, *args: object) -> Any:
        try:
            if sniffio.current_async_library() == "asyncio":
                client = self._asyncio_client()
                with anyio.fail_after(self.timeout):
                    return await getattr(client, command)(*args)
            client = self._sync_client()
            return await anyio.to_thread.run_sync(lambda: getattr(client, command)(*args), limiter=self._limiter)
        except _moved() as exc:  # a cluster node asked for with the single-server client
            error = ValueError(
                f"the Redis at {_safe_url(self.url)} is a node of a Redis Cluster (it answered {type(exc).__name__}: "
                f"{exc}): pass cluster=True to the store (RedisBudgetStore, RedisRateLimits)"
            )
        raise error  # outside the handler: no chain to redis-py's error

    def _asyncio_client(self) -> Any:
        import asyncio

        import redis.asyncio

        loop_id = id(asyncio.get_running_loop())
        client = self._async.get(loop_id)
        if client is None:
            kind = redis.asyncio.RedisCluster if self.cluster else redis.asyncio.Redis
            client = self._async[loop_id] = kind.from_url(
                self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout
            )
        return client

    def _sync_client(self) -> Any:
        import redis

        with self._sync_lock:
            if self._sync is None:
                kind = redis.RedisCluster if self.cluster else redis.Redis
                self._sync = kind.from_url(self.url, socket_timeout=self.timeout, socket_connect_timeout=self.timeout)
            return self._sync

    _role = ("Redis budget store", "budgets")  # what the outage messages call this store and what it shares

    def _outage(self, exc: BaseException) -> None:
        if not self._down:
            self._down = True
            name, shared = self._role
            _log.warning(
                "specexec: %s at %s unreachable (%s: %s); %s are per process until it answers",
                name,
                _safe_url(self.url),
                type(exc).__name__,
                exc,
                shared,
            )

    def _recovered(self) -> None:
        if self._down:
            self._down = False
            name, shared = self._role
            _log.info("specexec: %s at %s answers again; %s are shared", name, _safe_url(self.url), shared)


@functools.cache
def _unreachable() -> tuple[type[BaseException], ...]:
    """The errors that mean "Redis did not answer" (imported lazily: ``import specexec`` needs no redis)."""
    import redis.exceptions

    return (
        redis.exceptions.ConnectionError,
        redis.exceptions.TimeoutError,
        redis.exceptions.ClusterError,  # a cluster that lost a slot's master, or is still forming
        redis.exceptions.RedisClusterException,  # no node of the cluster answered
        TimeoutError,
        OSError,
    )


@functools.cache
def _moved() -> tuple[type[BaseException], ...]:
    """What a cluster node answers for a key on another node (imported lazily, as ``_unreachable``)."""
    import redis.exceptions

    return (redis.exceptions.MovedError, redis.exceptions.AskError)


def _safe_url(url: str) -> str:
    """The URL without a password (``redis://:secret@host`` → ``redis://***@host``)."""
    if "@" in url:
        scheme, _, rest = url.partition("://")
        return f"{scheme}://***@{rest.rsplit('@', 1)[1]}"
    return url
