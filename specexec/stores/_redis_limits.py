"""``RedisRateLimits``: rate limits and hedge budgets shared by every process, by leases.

(Circuit breakers, with ``RedisRateLimits(url, breakers=True)``, are mirrored rather than leased:
one process's open breaker is seen by all within one ``interval``, with one half-open trial for
the fleet — see ``_redis_breakers``.)

(Hedge budgets work the same way: deposits are reported at each sync, and a hedge spends a
token leased from the fleet-wide Finagle budget — reserve + ``max_extra_load`` × deposits −
withdrawals over ``ttl``, kept in one-second buckets on Redis — so the reserve counts once for
the fleet, not once per process.)


The hot path never waits for Redis. Each process holds a small **lease** of permits per limit
and spends it locally (``wait_time`` / ``try_acquire``, the ``RateLimiter`` interface); a
background task (``follow``, started by the runtime while it is entered) syncs every
``interval`` seconds: it gives back the permits not used and asks for as many as the process
used in the last interval, twice over, plus one. On Redis the limit is the same GCRA as the
in-process ``RateLimiter`` (one TAT per limit, Redis's own clock, one Lua script per sync), and
a permit is granted only when the fleet-wide GCRA admits it, so **the fleet never exceeds the
limit**: over any ``t`` seconds it admits at most ``rate · t / 60 + burst`` units in all. The
price is latency of reuse: a permit leased to an idle process is back in the pool within one
``interval``; a process that has used its lease waits up to one ``interval`` for more (the
primary may wait ``limit_wait``; hedges never wait).

A runtime syncs once when it is entered, before any run. While Redis cannot be reached (and for
a backend registered after the runtime was entered, until the next sync) each process falls back to its own
in-process ``RateLimiter`` with the full limit (logged once per outage): a fleet of ``P``
processes may then admit up to ``P`` times the limit — the cost of never failing a run.

Keys, and a Redis Cluster (``cluster=True``). A script may touch only keys of one hash slot, so
what one script touches shares a hash tag: a rate limit is one key, ``<prefix><backend>:rpm``
(or ``:tpm``); a concurrency limit is ``<prefix>{<backend>}:slots`` and its ``:demand`` key; a
hedge budget ``<prefix>{hedge:<config>}`` and its one-second buckets; every breaker of a store
is ``<prefix>{breakers}:<backend>`` (one script syncs them all, so they share one slot).
"""

from __future__ import annotations

import logging
import math
import threading
import uuid
from typing import TYPE_CHECKING

import anyio

from .._health import BreakerConfig, ConcurrencyLimit, HedgeBudget, RateLimiter
from .._policy import HedgeBudgetConfig
from ._redis_breakers import KEEP_MS, MIN_TRIAL_LEASE, SYNC_BREAKERS, SharedBreaker

if TYPE_CHECKING:
    from .._runtime import Runtime

_log = logging.getLogger("specexec")

# KEYS[1]: the limit's TAT key. ARGV: interval (ms per unit), burst (units), returned, wanted.
_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local interval = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
tat = tat - tonumber(ARGV[3]) * interval
if tat < now then tat = now end
local room = math.floor((now + burst * interval - tat) / interval)
local grant = tonumber(ARGV[4])
if grant > room then grant = room end
if grant < 0 then grant = 0 end
tat = tat + grant * interval
redis.call('SET', KEYS[1], tostring(tat), 'PX', math.ceil(burst * interval) + 60000)
return grant
"""

# A fleet-wide Finagle budget: deposits and withdrawals in one-second buckets kept `ttl` seconds.
# KEYS[1]: the key prefix. ARGV: ttl (s), max_extra_load, reserve, deposits, returned, wanted.
_HEDGE_LEASE = """
local now = tonumber(redis.call('TIME')[1])
local ttl = tonumber(ARGV[1])
local dkey = KEYS[1] .. ':d:' .. now
local wkey = KEYS[1] .. ':w:' .. now
redis.call('INCRBYFLOAT', dkey, ARGV[4])
redis.call('EXPIRE', dkey, ttl + 2)
redis.call('INCRBYFLOAT', wkey, -tonumber(ARGV[5]))
redis.call('EXPIRE', wkey, ttl + 2)
local deposits, withdrawals = 0, 0
for s = now - ttl + 1, now do
  deposits = deposits + tonumber(redis.call('GET', KEYS[1] .. ':d:' .. s) or '0')
  withdrawals = withdrawals + tonumber(redis.call('GET', KEYS[1] .. ':w:' .. s) or '0')
end
local balance = tonumber(ARGV[3]) + tonumber(ARGV[2]) * deposits - withdrawals
local grant = math.floor(balance + 1e-9)
if grant > tonumber(ARGV[6]) then grant = tonumber(ARGV[6]) end
if grant < 0 then grant = 0 end
redis.call('INCRBYFLOAT', wkey, grant)
return grant
"""

# Concurrency slots: a sorted set of (process, slot) members scored by when their lease ends.
# KEYS[1]: the set. ARGV: process id, wanted slots, limit, lease (ms), slots busy here.
# Returns {slots granted, the fair share}: a process holding more than its share (busy slots
# are never taken back) takes no new slot until it is back within it.
_SLOT_LEASE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local mine = redis.call('ZRANGE', KEYS[1], 0, -1)
local others = 0
for _, m in ipairs(mine) do
  if string.sub(m, 1, string.len(ARGV[1]) + 1) == ARGV[1] .. ':' then redis.call('ZREM', KEYS[1], m)
  else others = others + 1 end
end
-- a fair share among the processes that want slots (seen within a lease), never below what is busy
local dkey = KEYS[1] .. ':demand'
redis.call('ZREMRANGEBYSCORE', dkey, '-inf', now)
redis.call('ZADD', dkey, now + tonumber(ARGV[4]), ARGV[1])
redis.call('PEXPIRE', dkey, tonumber(ARGV[4]) + 1000)
local fair = math.ceil(tonumber(ARGV[3]) / redis.call('ZCARD', dkey))
local grant = tonumber(ARGV[3]) - others
if grant > tonumber(ARGV[2]) then grant = tonumber(ARGV[2]) end
local busy = tonumber(ARGV[5])
if grant > fair then grant = math.max(fair, busy) end
if grant < 0 then grant = 0 end
for i = 1, grant do redis.call('ZADD', KEYS[1], now + tonumber(ARGV[4]), ARGV[1] .. ':' .. i) end
redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[4]) + 1000)
return {grant, fair}
"""

DEFAULT_INTERVAL = 0.1
"""Seconds between two syncs of a process's leases with Redis."""


class LeasedRateLimiter:
    """One shared limit as this process sees it: a lease of permits spent locally (the
    ``RateLimiter`` interface), and the in-process fallback while there is no lease."""

    def __init__(self, key: str, rate_per_minute: float) -> None:
        self.key = key
        self.fallback = RateLimiter(rate_per_minute)
        self.rate_per_minute = rate_per_minute
        self.burst = self.fallback.burst
        self.leased = False  # True once Redis granted a lease (and while it answers)
        self.permits = 0.0
        self.used = 0.0  # units spent since the last sync

    def wait_time(self, now: float, amount: float = 1.0) -> float:
        """0 when ``amount`` can be spent now; ``inf`` if it exceeds the burst; else a wait."""
        if amount > self.burst:
            return math.inf
        if not self.leased:
            return self.fallback.wait_time(now, amount)
        return 0.0 if self.permits >= amount else DEFAULT_INTERVAL

    def try_acquire(self, now: float, amount: float = 1.0) -> bool:
        """Spend ``amount`` from the lease (or the fallback) if it is there."""
        if not self.leased:
            ok = self.fallback.try_acquire(now, amount)
        elif self.permits >= amount:
            self.permits -= amount
            ok = True
        else:
            ok = False
        if ok:
            self.used += amount
        return ok


class LeasedConcurrency:
    """A fleet-wide concurrency limit as this process sees it (the ``ConcurrencyLimit`` interface):
    attempts take slots leased from Redis; a lease ends ``3 × interval`` after its last renewal, so a
    process that dies frees its slots within that time. While several processes want slots, each
    is leased at most a fair share (the limit over the processes asking), never fewer than it has
    busy; and past its share it takes no new slot, so a busy process with work always waiting
    cannot starve the others for longer than its attempts in flight last."""

    def __init__(self, key: str, limit: int) -> None:
        self.key = key
        self.limit = limit
        self.fallback = ConcurrencyLimit(limit)
        self.leased = False
        self.slots = 0  # slots this process holds
        self.share = limit  # its fair share at the last sync: no new slot past it
        self._in_use = 0

    @property
    def in_use(self) -> int:
        """Slots taken by attempts of this process (leased or on the fallback)."""
        return self._in_use + self.fallback.in_use

    @property
    def available(self) -> int | None:
        """Slots free to this process now."""
        if not self.leased:
            return self.fallback.available
        return max(min(self.slots, self.share) - self.in_use, 0)

    def try_acquire(self) -> bool:
        """Take a slot if one is free (and this process is within its fair share)."""
        if not self.leased:
            return self.fallback.try_acquire()
        if self.in_use >= min(self.slots, self.share):
            return False
        self._in_use += 1
        return True

    def release(self) -> None:
        """Give a slot back."""
        if self.fallback.in_use > 0:  # taken while on the fallback
            self.fallback.release()
        elif self._in_use > 0:
            self._in_use -= 1
        else:
            raise RuntimeError("LeasedConcurrency.release() without a matching try_acquire()")


class LeasedHedgeBudget:
    """A fleet-wide hedge budget as this process sees it (the ``HedgeBudget`` interface): hedges
    spend leased tokens; deposits are reported at the next sync; the fallback while there is no lease."""

    def __init__(self, key: str, config: HedgeBudgetConfig) -> None:
        self.key = key
        self.config = config
        self.fallback = HedgeBudget(config.max_extra_load, config.min_per_second, config.ttl)
        self.leased = False
        self.tokens = 0.0
        self.deposits = 0.0  # requests since the last sync
        self.spent = 0.0  # hedges since the last sync

    def deposit(self, now: float) -> None:
        """One request: it earns ``max_extra_load`` hedges for the fleet."""
        self.deposits += 1.0
        self.fallback.deposit(now)

    def balance(self, now: float) -> float:
        """Tokens this process can spend now."""
        return self.tokens if self.leased else self.fallback.balance(now)

    def try_withdraw(self, now: float) -> bool:
        """Spend one token for a hedge if there is one."""
        if not self.leased:
            ok = self.fallback.try_withdraw(now)
        elif self.tokens >= 1.0 - 1e-9:
            self.tokens -= 1.0
            ok = True
        else:
            ok = False
        self.spent += ok
        return ok


class RedisRateLimits:
    """Rate limits (``Limits(rpm=, tpm=)``) shared through Redis at ``url``.

    ``Runtime(backends, shared_limits=RedisRateLimits(url))``: every backend's rpm/tpm limit is
    then one limit for all processes using the same Redis and ``prefix`` (keyed by backend name).
    ``breakers=True`` shares the circuit breakers too (``SharedBreaker``: one process's open
    breaker is seen by all within one ``interval``, at worst two; one half-open trial for the
    fleet); by default each process keeps its own. ``cluster=True`` for a Redis Cluster (``url``
    names any node; see the module docstring for the keys).
    """

    def __init__(
        self,
        url: str = "redis://127.0.0.1:6379/0",
        *,
        prefix: str = "specexec:limit:",
        interval: float = DEFAULT_INTERVAL,
        timeout: float = 0.25,
        breakers: bool = False,
        cluster: bool = False,
    ) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be > 0 seconds, got {interval!r}")
        from ._redis_budget import RedisBudgetStore

        # its clients, outage logging and fallback rules
        self._redis = RedisBudgetStore(url, timeout=timeout, cluster=cluster)
        self._redis._role = ("Redis shared limits", "rate limits, concurrency slots, hedge budgets and breakers")
        self.prefix = prefix
        self.interval = interval
        self.limiters: list[LeasedRateLimiter] = []
        self.budgets: dict[HedgeBudgetConfig, LeasedHedgeBudget] = {}
        self.slots: list[LeasedConcurrency] = []
        self.share_breakers = breakers
        self.breakers: list[SharedBreaker] = []
        self._wake: anyio.Event | None = None  # set by a breaker's news while `follow` waits
        self._wake_thread = 0  # the thread `follow` runs on (an Event is set only from its own loop)
        self._breakers_busy: anyio.Event | None = None  # set when the breaker sync under way ends
        self.process = uuid.uuid4().hex  # names this process's slot leases

    def limiter(self, backend: str, kind: str, rate_per_minute: float) -> LeasedRateLimiter:
        """The shared ``kind`` (``"rpm"`` / ``"tpm"``) limit of ``backend``."""
        made = LeasedRateLimiter(f"{self.prefix}{backend}:{kind}", rate_per_minute)  # one key: any cluster slot
        self.limiters.append(made)
        return made

    def concurrency(self, backend: str, limit: int) -> LeasedConcurrency:
        """The fleet-wide ``max_concurrency`` of ``backend``."""
        made = LeasedConcurrency(f"{self.prefix}{{{backend}}}:slots", limit)  # and its `:demand` key: one slot
        self.slots.append(made)
        return made

    def breaker(self, backend: str, config: BreakerConfig) -> SharedBreaker | None:
        """The fleet-wide circuit breaker of ``backend`` with ``config``; ``None`` (the in-process one)
        unless this store was made with ``breakers=True``."""
        if not self.share_breakers:
            return None
        made = SharedBreaker(f"{self.prefix}{{breakers}}:{backend}", config)  # one slot: one script syncs them all
        made.notify = self._news
        self.breakers.append(made)
        return made

    def _news(self) -> None:
        """A breaker opened or closed here: wake ``follow`` to publish it now (on its own thread only)."""
        wake = self._wake
        if wake is not None and threading.get_ident() == self._wake_thread:
            wake.set()

    def hedge_budget(self, config: HedgeBudgetConfig) -> LeasedHedgeBudget:
        """The fleet-wide hedge budget of ``config`` (one per distinct config)."""
        budget = self.budgets.get(config)
        if budget is None:
            name = f"{config.max_extra_load:g}:{config.min_per_second:g}:{config.ttl:g}"
            # its one-second buckets (`…:d:<s>`, `…:w:<s>`) share the key's cluster slot
            budget = self.budgets[config] = LeasedHedgeBudget(f"{self.prefix}{{hedge:{name}}}", config)
        return budget

    async def sync(self) -> None:
        """Give back unused permits and lease new ones, for every limit and budget, and share the
        breakers' changes; never raises."""
        await self._sync_breakers()
        await self._sync_limiters()
        await self._sync_slots()
        for budget in list(self.budgets.values()):
            config = budget.config
            returned = budget.tokens if budget.leased else 0.0
            deposits, wanted = budget.deposits, math.ceil(2 * budget.spent) + 1
            budget.tokens -= returned
            budget.deposits = budget.spent = 0.0
            try:
                granted = await self._redis._call(
                    "eval", _HEDGE_LEASE, 1, budget.key, math.ceil(config.ttl), config.max_extra_load,
                    config.min_per_second * config.ttl, deposits, returned, wanted,
                )  # fmt: skip
            except Exception as exc:  # any failure of Redis: fall back (cancellation is not an Exception)
                self._redis._outage(exc)
                budget.leased = False
                continue
            self._redis._recovered()
            budget.tokens += float(granted)
            budget.leased = True

    async def _sync_breakers(self) -> None:
        """One script for every breaker: publish local opens, closes and trial wishes; read the fleet's.

        One at a time (the wake-up of ``follow`` and an explicit ``sync`` may meet): a sync whose
        arguments were taken before another's reply would undo it (give back a lease just renewed)."""
        while self._breakers_busy is not None:
            await self._breakers_busy.wait()
        busy = self._breakers_busy = anyio.Event()
        try:
            await self._sync_breakers_once()
        finally:
            self._breakers_busy = None
            busy.set()

    async def _sync_breakers_once(self) -> None:
        breakers = list(self.breakers)
        if not breakers:
            return
        now = anyio.current_time()
        args: list[object] = []
        marks = []
        for breaker in breakers:
            out, mark = breaker.outgoing(now)
            args += out
            marks.append(mark)
        keys = [b.key for b in breakers]
        lease_ms = math.ceil(1000 * max(3 * self.interval, MIN_TRIAL_LEASE))
        try:
            reply = await self._redis._call("eval", SYNC_BREAKERS, len(keys), *keys, lease_ms, KEEP_MS, *args)
        except Exception as exc:  # any failure of Redis: run alone (cancellation is not an Exception)
            self._redis._outage(exc)
            for breaker, mark in zip(breakers, marks, strict=True):
                breaker.unshared(mark)
            return
        self._redis._recovered()
        now = anyio.current_time()
        for i, (breaker, mark) in enumerate(zip(breakers, marks, strict=True)):
            breaker.merge(now, mark, list(reply[5 * i : 5 * i + 5]))

    async def _sync_slots(self) -> None:
        lease_ms = math.ceil(3000 * self.interval)
        for conc in self.slots:
            busy = conc.in_use
            wanted = min(conc.limit, 2 * busy + 1)
            try:
                granted, share = (
                    int(x)
                    for x in await self._redis._call(
                        "eval", _SLOT_LEASE, 1, conc.key, self.process, wanted, conc.limit, lease_ms, busy
                    )
                )
            except Exception as exc:  # any failure of Redis: fall back (cancellation is not an Exception)
                self._redis._outage(exc)
                conc.leased = False
                continue
            self._redis._recovered()
            # Slots in use stay held (a lease never shrinks below them); the rest is what Redis granted.
            conc.slots = max(granted, conc.in_use)
            conc.share = share
            conc.leased = True

    async def _sync_limiters(self) -> None:
        for lim in self.limiters:
            interval_ms = 60_000.0 / lim.rate_per_minute
            wanted = math.ceil(2 * lim.used) + 1
            # Hand the unused permits back before the await: spent meanwhile, they would count twice.
            returned = lim.permits if lim.leased else 0.0
            lim.permits -= returned
            lim.used = 0.0
            try:
                granted = await self._redis._call("eval", _LEASE, 1, lim.key, interval_ms, lim.burst, returned, wanted)
            except Exception as exc:  # any failure of Redis: fall back (cancellation is not an Exception)
                self._redis._outage(exc)
                lim.leased = False
                continue
            self._redis._recovered()
            lim.permits += float(granted)
            lim.leased = True

    async def follow(self, runtime: Runtime) -> None:
        """Sync every ``interval`` seconds until cancelled (a runtime feed; the runtime synced on entry).

        A breaker's news (a local open or close) syncs the breakers at once, at most once per interval."""
        while True:
            deadline = anyio.current_time() + self.interval
            wake = self._wake = anyio.Event()
            self._wake_thread = threading.get_ident()
            with anyio.move_on_at(deadline):
                await wake.wait()
            self._wake = None
            if wake.is_set():  # news: publish the breakers now, the rest at the deadline
                await self._sync_breakers()
                await anyio.sleep_until(deadline)
            await self.sync()

    async def aclose(self) -> None:
        """Close the Redis clients."""
        await self._redis.aclose()
