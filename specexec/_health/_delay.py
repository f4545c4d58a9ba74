"""``HedgeDelay``: an adaptive hedge delay that holds still on a noisy estimate and moves on a shift.

A quantile delay (``"p95"``, ``"auto"``) read straight off the latency window is noisy where
the distribution is flat around the quantile: on the tail-at-scale mixture (94.9 % by 90 ms,
95.2 % by 250 ms) one window in twenty puts the p95's lower confidence bound in the slow
mode, and the window keeps it there until its samples age out (up to a minute). Those
stretches make the p99.9. Each refresh this estimator takes the raw estimate and returns:

- in steady state, the **median of the raw estimates of the last** ``history`` **refreshes**
  (three minutes at one a second): a stretch that lasts under half of that moves it little;
- during a **shift** (the caller's change detector: the recent window's median disagrees
  with the long window's by more than noise) the raw estimates are those of the short,
  recent window, and the delay is the median of the last ``shifted_history`` of them, so a
  brownout is learnt in seconds, not minutes; when a shift of ``min_shift`` refreshes or
  more ends, its estimates replace the history (the level moved); a shorter one, a flicker
  of the detector, only joins it;
- always within ``max_step`` of the previous value (× or ÷ per refresh): no refresh moves
  the delay by more than that, whatever the estimate does.

Pure: no clock, no window; ``BackendHealth.hedge_delay`` feeds it once per refresh.
"""

from __future__ import annotations

from bisect import bisect_left, insort
from collections import deque

DEFAULT_HISTORY = 180
"""Raw estimates the steady-state median is over (refreshes: about three minutes at one a second)."""
DEFAULT_SHIFTED_HISTORY = 3
"""Raw estimates the median is over while a shift is being learnt."""
DEFAULT_MIN_SHIFT = 10
"""Refreshes a shift must last for its estimates to replace the history (fewer: a flicker)."""
DEFAULT_MAX_STEP = 2.0
"""The most the delay moves in one refresh (a factor): ×5 takes three refreshes."""


class HedgeDelay:
    """A hedge delay smoothed over refreshes: a running median, the recent estimates' during a
    shift (which replace the history if the shift lasted), and a bounded step."""

    __slots__ = ("_recent", "_shift", "_sorted", "history", "max_step", "min_shift", "shifted_history", "value")

    def __init__(
        self,
        history: int = DEFAULT_HISTORY,
        shifted_history: int = DEFAULT_SHIFTED_HISTORY,
        max_step: float = DEFAULT_MAX_STEP,
        min_shift: int = DEFAULT_MIN_SHIFT,
    ) -> None:
        if history < 1 or not 1 <= shifted_history <= history or not max_step > 1.0 or min_shift < 1:
            raise ValueError("need history >= 1, 1 <= shifted_history <= history, max_step > 1 and min_shift >= 1")
        self.history = history
        self.shifted_history = shifted_history
        self.max_step = max_step
        self.min_shift = min_shift
        self.value: float | None = None
        """The delay last returned (``None`` before the first update or after ``reset``)."""
        self._recent: deque[float] = deque()  # steady raw estimates, oldest first
        self._sorted: list[float] = []  # the same, sorted (for the median)
        self._shift: list[float] = []  # raw estimates of the shift under way, oldest first

    def reset(self) -> None:
        """Forget everything (the window went cold): the next update starts afresh."""
        self.value = None
        self._recent.clear()
        self._sorted.clear()
        self._shift.clear()

    def update(self, raw: float, shifted: bool = False) -> float:
        """The delay after a refresh whose raw estimate is ``raw`` seconds; ``shifted``: the
        caller's change detector says the latency moved (``raw`` is then the recent window's)."""
        if shifted:
            self._shift.append(raw)
            if len(self._shift) > self.history:
                del self._shift[0]
            target = sorted(self._shift[-self.shifted_history :])[min(len(self._shift), self.shifted_history) // 2]
        else:
            if self._shift:
                self._end_shift()
            self._add(raw)
            target = self._sorted[len(self._sorted) // 2]
        previous = self.value
        if previous is not None and previous > 0.0:
            target = min(max(target, previous / self.max_step), previous * self.max_step)
        self.value = target
        return target

    def _end_shift(self) -> None:
        """A shift is over: one of ``min_shift`` refreshes or more was a new level, and its
        estimates replace what was learnt before; a shorter one was a flicker of the
        detector, and its estimates join the history like any other."""
        if len(self._shift) >= self.min_shift:
            self._recent.clear()
            self._sorted.clear()
        for value in self._shift:
            self._add(value)
        self._shift.clear()

    def _add(self, raw: float) -> None:
        self._recent.append(raw)
        insort(self._sorted, raw)
        if len(self._recent) > self.history:
            del self._sorted[bisect_left(self._sorted, self._recent.popleft())]
