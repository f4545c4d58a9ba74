"""``DailyBudget``: what probes may cost per UTC day, enforced by reservation.

Before a probe is sent its worst case (input tokens + ``max_tokens`` output at the backend's
prices) is reserved; when it ends the reservation is settled to what it cost. A probe whose
worst case does not fit is not sent, and the budget reads *exhausted* until the next UTC
midnight: probing stops rather than crossing the limit. The day is ``floor(unix_time / 86400)``
(Unix time has no leap seconds, so this changes exactly at UTC midnight); the wall clock is
passed in, so tests move it freely.
"""

from __future__ import annotations

import datetime as _dt

from ._snapshot import BudgetView

SECONDS_PER_DAY = 86400
_EPSILON = 1e-12  # float slack when comparing money with the limit


def utc_day(wall: float) -> int:
    """Days since 1970-01-01 at Unix time ``wall`` (changes at UTC midnight)."""
    return int(wall // SECONDS_PER_DAY)


def day_label(day: int) -> str:
    """``"YYYY-MM-DD"`` of a ``utc_day`` number."""
    return (_dt.date(1970, 1, 1) + _dt.timedelta(days=day)).isoformat()


class DailyBudget:
    """USD per UTC day for probes (``limit=None``: unlimited, costs are still counted)."""

    def __init__(self, limit: float | None) -> None:
        if limit is not None and not limit >= 0:
            raise ValueError(f"limit must be >= 0 USD or None, got {limit!r}")
        self.limit = limit
        self.day: int | None = None
        self.spent = 0.0
        self.reserved = 0.0
        self.total = 0.0  # every day since the daemon started (or resumed): for metrics
        self._exhausted = False

    def _roll(self, wall: float) -> bool:
        """Move to the day of ``wall``; ``True`` when a new day began (spending starts afresh)."""
        day = utc_day(wall)
        if day == self.day:
            return False
        fresh = self.day is not None
        self.day = day
        self.spent = 0.0
        self._exhausted = False
        return fresh

    def try_reserve(self, amount: float, wall: float) -> bool:
        """Reserve ``amount`` USD at ``wall`` if it fits today; ``False`` (nothing reserved) otherwise.

        A refusal makes the budget exhausted for the rest of the day.
        """
        self._roll(wall)
        if self._exhausted:
            return False
        if self.limit is not None and self.spent + self.reserved + amount > self.limit + _EPSILON:
            self._exhausted = True
            return False
        self.reserved += amount
        return True

    def settle(self, reserved: float, cost: float, wall: float) -> None:
        """A probe that reserved ``reserved`` ended having cost ``cost`` (counted on the day of ``wall``).

        A cost is never negative: a negative (or nan) one counts as 0, so no probe can give budget back.
        """
        self._roll(wall)
        cost = cost if cost > 0.0 else 0.0
        self.reserved = max(0.0, self.reserved - reserved)
        self.spent += cost
        self.total += cost

    def exhausted(self, wall: float) -> bool:
        """Whether probing is stopped for the rest of the UTC day of ``wall``."""
        self._roll(wall)
        return self._exhausted

    def resets_at(self, wall: float) -> float:
        """Unix time of the next UTC midnight after ``wall``."""
        return float((utc_day(wall) + 1) * SECONDS_PER_DAY)

    def view(self, wall: float) -> BudgetView:
        """What is published about this budget at Unix time ``wall``."""
        exhausted = self.exhausted(wall)
        day = self.day if self.day is not None else 0
        return BudgetView(
            limit=self.limit,
            spent=self.spent,
            reserved=self.reserved,
            day=day,
            date=day_label(day),
            exhausted=exhausted,
            resets_at=self.resets_at(wall),
            total=self.total,
        )

    def restore(self, day: int, spent: float, total: float, wall: float) -> None:
        """Resume from a snapshot: today's spending carries over when the snapshot is from today."""
        self._roll(wall)
        self.total = max(self.total, total)
        if day == self.day:
            self.spent = max(self.spent, spent)
            if self.limit is not None and self.spent >= self.limit - _EPSILON:
                self._exhausted = True
