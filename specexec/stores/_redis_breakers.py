"""``SharedBreaker``: one backend's circuit breaker as every process sharing a Redis sees it.

Theory of operation. Each process keeps its own ``CircuitBreaker`` (the hot path reads only
local memory: ``allow`` and ``would_allow`` never wait for Redis) and mirrors the **fleet's
episode** of the backend, kept in one Redis hash per backend, ``<prefix>{breakers}:<backend>``
(``{breakers}``: a Redis Cluster hash tag, so one script can sync them all):

- ``gen`` — the episode: a new one starts at each open from closed or half-open, and at each
  close (Redis's clock in ms, at least the previous ``gen`` + 1, so it only grows);
- ``until`` (Redis ms; 0 = closed) and ``reason`` (``failures``, ``retry-after``, ``auth``, or the
  reason a caller gave ``trip``) — open until then, half-open after;
- ``trial`` and ``trial_until`` — who holds the fleet's **one half-open trial** and until when.

At every sync (``RedisRateLimits.sync``, every ``interval`` s, one Lua script for all the
breakers of a process) a process publishes what changed locally since the last one and reads
the episode back; a local open or close also wakes the sync task at once (breakers only, at
most once per interval), so news leaves the process without waiting for the interval:

- **An open** (a local trip: failures, a 429's Retry-After, refused credentials, or any
  ``trip`` — a probe, a feed, an operator) is merged by *the longest open wins*: it starts a new
  episode when the fleet's breaker is closed or half-open, and extends an open one when it ends
  later. Durations travel as "ms from now" and are placed on Redis's clock, so processes'
  clocks never need to agree. Every process sees a trip within one ``interval`` plus the
  duration of a sync (the reader's next one) and a Redis round trip (the tripper's wake-up).
  Without the wake-up (a runtime not entered, a trip right after an early sync) it is
  ``2 × interval`` plus two syncs.
- **Half-open: one trial for the fleet.** A process whose half-open breaker is asked for an
  attempt refuses it and asks for the trial lease at its next sync; one process gets it (for
  ``max(3 × interval, 1 s)``, renewed at each sync while it is wanted or its trial is in
  flight; see ``MIN_TRIAL_LEASE``) and its next attempt is the trial. One trial, not one per
  process: ten workers each sending a trial would be ten requests at a backend that was just
  failing, and a 429'd quota would be hit ten times again. The cost: the trial starts up to
  one ``interval`` later than a local breaker's. A lease not used by the next sync is given
  back; the lease of a process that died ends by itself within ``max(3 × interval, 1 s)``.
- **A close** (the trial succeeded) closes the episode it was the trial of — never a newer one
  (a close arriving after another process reopened is ignored) — and every process closes at
  its next sync. A failed trial reopens: a new episode, seen by all like any open.

Nothing is stuck open by a process that dies: an open ends at ``until`` whoever is alive, the
trial lease by its own expiry, and the record itself expires an hour after its open period (it
only keeps ``gen`` in order). While Redis cannot be reached each process runs its breaker
alone — the in-process rules, its own half-open trial — and publishes what happened meanwhile
when Redis answers again; a Redis that lost its data (restarted without persistence) gets the
open breakers back from the processes that mirror them.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

from .._health import BreakerConfig, CircuitBreaker

MIN_TRIAL_LEASE = 1.0
"""The shortest half-open trial lease (s): a live holder late to renew (a loaded machine) keeps its
trial, rather than a second process starting another; a dead holder delays the fleet's trial this long."""

KEEP_MS = 3_600_000
"""How long a breaker record outlives its open period in Redis (ms)."""

# KEYS: one record per breaker. ARGV[1]: trial lease (ms), ARGV[2]: KEEP_MS, then per breaker:
# owner, local remaining ms ('' = locally closed), reason, fresh (1: a local trip to publish),
# closed gen (a trial of that episode succeeded here; -1: none), wants the trial (1/0), local gen.
# Returns per breaker: gen, open (1/0), remaining ms (until - now), reason, holds the trial (1/0).
SYNC_BREAKERS = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease, keep = tonumber(ARGV[1]), tonumber(ARGV[2])
local out = {}
for i = 1, #KEYS do
  local a = 2 + (i - 1) * 7
  local owner, local_ms, reason = ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local fresh, closed, wants = ARGV[a + 4] == '1', tonumber(ARGV[a + 5]), ARGV[a + 6] == '1'
  local rec = redis.call('HMGET', KEYS[i], 'gen', 'until', 'reason', 'trial', 'trial_until')
  local gen, untl, why = tonumber(rec[1] or '0'), tonumber(rec[2] or '0'), rec[3] or ''
  local trial, trial_until = rec[4] or '', tonumber(rec[5] or '0')
  local gen0, changed = gen, false
  if not rec[1] and local_ms ~= '' and not fresh then
    -- no record (Redis restarted empty, or it expired): this process's mirror restores it
    gen, untl, why = tonumber(ARGV[a + 7]), now + tonumber(local_ms), reason
    if gen < 1 then gen = now end
    changed = true
  end
  if closed >= 1 and closed == gen and untl > 0 then
    -- a successful trial closes the episode it was the trial of, never a newer one
    gen, untl, why = math.max(now, gen + 1), 0, ''
    changed = true
  end
  if fresh and local_ms ~= '' then
    local u = now + tonumber(local_ms)
    if untl <= now then  -- closed or half-open: a new episode
      gen, untl, why = math.max(now, gen + 1), u, reason
      changed = true
    elseif u > untl then  -- open: the longest open wins
      untl, why = u, reason
      changed = true
    end
  end
  if gen ~= gen0 or trial_until <= now then trial = '' end  -- a new episode, or an expired lease
  local mine = 0
  if untl > 0 and untl <= now then
    if wants and (trial == '' or trial == owner) then
      trial, trial_until, mine, changed = owner, now + lease, 1, true
    elseif trial == owner then
      trial, changed = '', true  -- not used since the last sync: given back
    end
  elseif trial ~= '' then
    trial, changed = '', true
  end
  if changed then
    if trial == '' then trial_until = 0 end
    redis.call('HSET', KEYS[i], 'gen', gen, 'until', untl, 'reason', why, 'trial', trial, 'trial_until', trial_until)
    redis.call('PEXPIRE', KEYS[i], keep + math.max(untl - now, 0))
  end
  local open = 0
  if untl > 0 then open = 1 end
  out[#out + 1] = gen
  out[#out + 1] = open
  out[#out + 1] = untl - now
  out[#out + 1] = why
  out[#out + 1] = mine
end
return out
"""


class SharedBreaker(CircuitBreaker):
    """A ``CircuitBreaker`` that mirrors the fleet's breaker of one backend (see the module docstring).

    ``shared`` is ``True`` while Redis answered the last sync: a half-open breaker then lets an
    attempt through only in the process that ``holds_trial``. Otherwise (before the first sync,
    during an outage) it is exactly the in-process breaker.
    """

    def __init__(self, key: str, config: BreakerConfig | None = None) -> None:
        super().__init__(config)
        self.key = key
        self.owner = uuid.uuid4().hex
        self.shared = False
        self.holds_trial = False
        self.gen = 0  # the fleet episode this breaker mirrors (0: none known)
        self._fresh = False  # a local open not published yet
        self._closed_gen = -1  # an episode a local trial closed, not published yet
        self._wanted = False  # asked for an attempt while half-open since the last sync
        self._changes = 0  # local transitions (a sync does not overwrite one made while it ran)
        self.notify: Callable[[], None] | None = None
        """Called on a local open or close (news to publish): ``RedisRateLimits`` syncs its breakers at once."""

    # -- the hot path: local memory only --------------------------------------------------------

    def would_allow(self, now: float) -> bool:
        """Like ``CircuitBreaker.would_allow``; shared and half-open, only where the trial lease is held."""
        if not self._open:
            return True
        if self.shared and now >= self._open_until:
            self._wanted = True
            if not self.holds_trial:
                return False
        return super().would_allow(now)

    def allow(self, now: float) -> bool:
        """Like ``CircuitBreaker.allow``; shared and half-open, only where the trial lease is held."""
        if not self._open:
            return True
        if self.shared and now >= self._open_until:
            self._wanted = True
            if not self.holds_trial:
                return False
        return super().allow(now)

    def on_failure(self, now: float, retry_after: float | None = None) -> None:
        """Like ``CircuitBreaker.on_failure``; an open (or a longer one) is published at the next sync."""
        before = self._open_until if self._open else None
        super().on_failure(now, retry_after)
        self._note_open(before)

    def trip(self, now: float, duration: float, reason: str) -> None:
        """Like ``CircuitBreaker.trip`` (any caller: failures, auth, a probe, a feed); published at the next sync."""
        before = self._open_until if self._open else None
        super().trip(now, duration, reason)
        self._note_open(before)

    def _note_open(self, before: float | None) -> None:
        if self._open and (before is None or self._open_until > before):
            self._fresh = True
            self._changes += 1
            if self.notify is not None:
                self.notify()

    def _close(self) -> None:
        super()._close()
        self._closed_gen = self.gen
        self._fresh = False
        self._changes += 1
        if self.notify is not None:
            self.notify()

    # -- the sync (called by RedisRateLimits) ---------------------------------------------------

    def outgoing(self, now: float) -> tuple[list[object], tuple[bool, int, bool, int]]:
        """The script's arguments for this breaker at ``now``, and a mark to pass to ``merge``/``unshared``."""
        local_ms: object = round((self._open_until - now) * 1000) if self._open else ""
        wants = self._wanted or (self._open and self._trial_out)
        args: list[object] = [
            self.owner, local_ms, self.open_reason or "", int(self._fresh), self._closed_gen, int(wants), self.gen,
        ]  # fmt: skip
        mark = (self._fresh, self._closed_gen, self._wanted, self._changes)
        self._fresh, self._closed_gen, self._wanted = False, -1, False
        return args, mark

    def merge(self, now: float, mark: tuple[bool, int, bool, int], reply: list[object]) -> None:
        """Take the fleet's episode (``reply``: the script's five values for this breaker) at ``now``."""
        gen, is_open, remaining_ms, reason, mine = reply
        self.shared = True
        self.holds_trial = bool(mine)
        if self._changes != mark[3]:
            return  # a local transition while the script ran: kept, and published at the next sync
        gen = int(gen)  # type: ignore[call-overload]
        new_episode, self.gen = gen != self.gen, gen
        if int(is_open):  # type: ignore[call-overload]
            if not self._open or new_episode:
                self._trial_out = False
            self._open = True
            self._open_until = now + int(remaining_ms) / 1000  # type: ignore[call-overload]
            self.open_reason = reason.decode() if isinstance(reason, bytes) else str(reason)
        elif self._open:
            CircuitBreaker._close(self)  # the fleet closed it (a trial elsewhere succeeded): not republished

    def unshared(self, mark: tuple[bool, int, bool, int]) -> None:
        """Redis did not answer: run alone, and publish what was not published at the next sync that answers."""
        self.shared = False
        self.holds_trial = False
        fresh, closed_gen, wanted, _ = mark
        self._fresh = self._fresh or fresh
        if self._closed_gen < 0:
            self._closed_gen = closed_gen
        self._wanted = self._wanted or wanted
