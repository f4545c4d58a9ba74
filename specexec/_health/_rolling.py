"""``RollingSums``: a few counters summed over a sliding time span, kept in time buckets."""

from __future__ import annotations

import math

_NEVER = -(2**62)  # the epoch of a bucket that was never used


class RollingSums:
    """Sums of ``fields`` counters over roughly the last ``span`` seconds.

    Time is cut in ``buckets`` buckets of ``span / buckets`` seconds; a sum covers the current
    bucket and the ``buckets - 1`` before it, so an amount counts for between
    ``span - span / buckets`` and ``span`` seconds after it was added. Cost: O(1) to add,
    O(buckets) to sum.
    """

    def __init__(self, span: float, buckets: int, fields: int) -> None:
        if not span > 0 or buckets < 1 or fields < 1:
            raise ValueError(f"need span > 0, buckets >= 1, fields >= 1; got {span!r}, {buckets!r}, {fields!r}")
        self._width = span / buckets
        self._fields = fields
        self._epochs = [_NEVER] * buckets
        self._sums = [[0.0] * fields for _ in range(buckets)]

    def add(self, now: float, field: int, amount: float = 1.0) -> None:
        """Add ``amount`` to counter ``field`` at time ``now``."""
        epoch = math.floor(now / self._width)
        slot = epoch % len(self._epochs)
        sums = self._sums[slot]
        if self._epochs[slot] != epoch:
            self._epochs[slot] = epoch
            sums[:] = [0.0] * self._fields
        sums[field] += amount

    def totals(self, now: float) -> list[float]:
        """Each counter summed over the live buckets at ``now``."""
        epoch = math.floor(now / self._width)
        oldest = epoch - len(self._epochs) + 1
        totals = [0.0] * self._fields
        for bucket_epoch, sums in zip(self._epochs, self._sums, strict=True):
            if oldest <= bucket_epoch <= epoch:
                for field, amount in enumerate(sums):
                    totals[field] += amount
        return totals

    def clear(self) -> None:
        """Forget everything."""
        self._epochs = [_NEVER] * len(self._epochs)
        for sums in self._sums:
            sums[:] = [0.0] * self._fields
