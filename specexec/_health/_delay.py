"""``HedgeDelay``: an adaptive hedge delay that holds still on a noisy estimate and moves on a shift.

A quantile delay (``"p95"``, ``"auto"``) read straight off the latency window is noisy where
the distribution is flat around the quantile: on the tail-at-scale mixture (94.9 % by 90 ms,
95.2 % by 250 ms) one window in twenty puts the p95's lower confidence bound in the slow
mode, and the window keeps it there until its samples age out (up to a minute). Those
stretches make the p99.9. Each refresh this estimator takes the raw estimate and returns:

- in steady state, the **median of the raw estimates of the last** ``history`` **refreshes**
  (three minutes at one a second): a stretch that lasts under half of that moves it little;
- after a **shift** (the caller's change detector: the recent window's median disagrees
  with the long window's by more than noise) the raw estimates are those of the short,
  recent window, and the history restarts from them: the median of the last
  ``shifted_history`` only, so a brownout is learnt in seconds, not minutes;
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
DEFAULT_MAX_STEP = 2.0
"""The most the delay moves in one refresh (a factor): ×5 takes three refreshes."""


class HedgeDelay:
    """A hedge delay smoothed over refreshes: a running median, restarted on a shift, with a bounded step."""

    __slots__ = ("_recent", "_shifted", "_sorted", "history", "max_step", "shifted_history", "value")

    def __init__(
        self,
        history: int = DEFAULT_HISTORY,
        shifted_history: int = DEFAULT_SHIFTED_HISTORY,
        max_step: float = DEFAULT_MAX_STEP,
    ) -> None:
        if history < 1 or not 1 <= shifted_history <= history or not max_step > 1.0:
            raise ValueError("need history >= 1, 1 <= shifted_history <= history and max_step > 1")
        self.history = history
        self.shifted_history = shifted_history
        self.max_step = max_step
        self.value: float | None = None
        """The delay last returned (``None`` before the first update or after ``reset``)."""
        self._recent: deque[float] = deque()  # raw estimates, oldest first
        self._sorted: list[float] = []  # the same, sorted (for the median)
        self._shifted = False

    def reset(self) -> None:
        """Forget everything (the window went cold): the next update starts afresh."""
        self.value = None
        self._recent.clear()
        self._sorted.clear()
        self._shifted = False

    def update(self, raw: float, shifted: bool = False) -> float:
        """The delay after a refresh whose raw estimate is ``raw`` seconds; ``shifted``: the
        caller's change detector says the latency moved (``raw`` is then the recent window's)."""
        if shifted and not self._shifted:  # a shift starts: what was learnt before is stale
            self._recent.clear()
            self._sorted.clear()
        self._shifted = shifted
        self._recent.append(raw)
        insort(self._sorted, raw)
        if len(self._recent) > self.history:
            old = self._recent.popleft()
            del self._sorted[bisect_left(self._sorted, old)]
        target = self._median(self.shifted_history if shifted else self.history)
        previous = self.value
        if previous is not None and previous > 0.0:
            target = min(max(target, previous / self.max_step), previous * self.max_step)
        self.value = target
        return target

    def _median(self, last: int) -> float:
        """The median of the last ``last`` raw estimates (the upper middle one of an even count: the
        newer, while a window warms up and its bound rises)."""
        values = self._sorted if last >= len(self._recent) else sorted(list(self._recent)[-last:])
        return values[len(values) // 2]
