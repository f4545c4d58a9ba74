"""A one-line progress display: requests done, rate, elapsed time, ETA.

Shown on stderr only when stdout is a terminal, and never in ``--json`` mode or under CI
(``CI`` set in the environment): piped and machine-read output stays clean.
"""

from __future__ import annotations

import os
import sys
import time
from typing import TextIO

__all__ = ["Progress", "progress_wanted"]


def progress_wanted(*, json_mode: bool, stdout: TextIO | None = None) -> bool:
    """Whether to show progress: stdout is a TTY, not ``--json``, and ``CI`` is not set."""
    stream = stdout if stdout is not None else sys.stdout
    if json_mode or os.environ.get("CI"):
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def _clock(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


class Progress:
    """``update(done)`` redraws ``label  done/total req  rate/s  elapsed  ETA`` at most
    ``1 / interval`` times a second; ``close()`` erases the line. Disabled: does nothing."""

    def __init__(
        self,
        label: str,
        total: int | None,
        *,
        enabled: bool,
        stream: TextIO | None = None,
        interval: float = 0.1,
    ) -> None:
        self.label = label
        self.total = total
        self.enabled = enabled
        self.stream = stream if stream is not None else sys.stderr
        self.interval = interval
        self.started = time.monotonic()
        self._next_draw = 0.0
        self._drawn = False

    def line(self, done: int, now: float | None = None) -> str:
        """The text of the progress line for ``done`` requests."""
        now = time.monotonic() if now is None else now
        elapsed = now - self.started
        rate = done / elapsed if elapsed > 0 else 0.0
        parts = [self.label]
        parts.append(f"{done:,}/{self.total:,} req" if self.total else f"{done:,} req")
        parts.append(f"{rate:,.0f} req/s")
        parts.append(f"elapsed {_clock(elapsed)}")
        if self.total and rate > 0:
            parts.append(f"ETA {_clock(max(0, self.total - done) / rate)}")
        return "  ".join(parts)

    def update(self, done: int) -> None:
        """Redraw if enabled and the last draw is at least ``interval`` old."""
        if not self.enabled:
            return
        now = time.monotonic()
        if now < self._next_draw:
            return
        self._next_draw = now + self.interval
        self.stream.write("\r\x1b[K" + self.line(done, now))
        self.stream.flush()
        self._drawn = True

    def close(self) -> None:
        """Erase the line (if one was drawn)."""
        if self._drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self._drawn = False
