"""Measuring helpers shared by ``benchmarks.overhead`` and ``benchmarks.http``.

Small and dependency-free: percentiles of per-call samples, the two event loops the library
supports (trio, asyncio + uvloop) under one name each, a plain-text table, and a note about
the machine the figures came from. Nothing here asserts a target: the scripts report.
"""

from __future__ import annotations

import math
import os
import platform
import sys
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import anyio

T = TypeVar("T")

#: The event loops a benchmark runs on: CLI name → (anyio backend, backend options).
LOOPS: dict[str, tuple[str, dict[str, Any]]] = {
    "trio": ("trio", {}),
    "asyncio": ("asyncio", {"use_uvloop": True}),
}

#: How each loop is named in reports.
LOOP_LABELS = {"trio": "trio", "asyncio": "asyncio+uvloop"}


def loops_for(choice: str) -> list[str]:
    """The loops a ``--backend trio|asyncio|both`` option selects, in report order."""
    return ["trio", "asyncio"] if choice == "both" else [choice]


def run_on(loop: str, main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main()`` to completion on ``loop`` (``"trio"`` or ``"asyncio"``, the latter with uvloop)."""
    backend, options = LOOPS[loop]
    return anyio.run(main, backend=backend, backend_options=options)


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The ``q``-quantile (0 ≤ q ≤ 1) of already sorted values, nearest-rank (no interpolation)."""
    if not sorted_values:
        return math.nan
    rank = max(1, math.ceil(q * len(sorted_values)))
    return sorted_values[min(rank, len(sorted_values)) - 1]


@dataclass(frozen=True)
class Summary:
    """Median, p99 and mean of per-call samples, in microseconds, and how many samples."""

    n: int
    median_us: float
    p99_us: float
    mean_us: float

    def as_dict(self) -> dict[str, float]:
        """The summary as plain data (for ``--json``), rounded to 0.01 µs."""
        return {k: (round(v, 2) if isinstance(v, float) else v) for k, v in asdict(self).items()}


def summarize_ns(samples_ns: Sequence[int]) -> Summary:
    """Summarize per-call samples given in nanoseconds."""
    values = sorted(s / 1000.0 for s in samples_ns)
    mean = sum(values) / len(values) if values else math.nan
    return Summary(len(values), percentile(values, 0.5), percentile(values, 0.99), mean)


def summarize_s(samples_s: Sequence[float]) -> Summary:
    """Summarize per-call samples given in seconds."""
    return summarize_ns([round(s * 1e9) for s in samples_s])


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, or NaN when the denominator is not positive."""
    return numerator / denominator if denominator > 0 else math.nan


def fmt(value: float, digits: int = 1) -> str:
    """A number for a table cell (``-`` for NaN)."""
    if math.isnan(value):
        return "-"
    return f"{value:,.{digits}f}"


def table(headers: Sequence[str], rows: Sequence[Sequence[str]], left: int = 1) -> str:
    """A Markdown table, columns padded to line up in a terminal too; the first ``left`` columns
    are left-aligned (labels), the others right-aligned (figures)."""
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]

    def line(cells: Sequence[str]) -> str:
        padded = (c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True)))
        return "| " + " | ".join(padded) + " |"

    sep = "|" + "|".join("-" * (w + 2) if i < left else "-" * (w + 1) + ":" for i, w in enumerate(widths)) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in rows)])


def machine_note() -> dict[str, Any]:
    """What the figures were measured on: CPUs, Python, the library versions that matter."""
    versions: dict[str, str] = {}
    for name in ("anyio", "trio", "uvloop", "httpx", "httpcore", "msgspec"):
        try:
            from importlib.metadata import version

            versions[name] = version(name)
        except Exception:  # pragma: no cover - a missing optional package
            versions[name] = "?"
    return {
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "versions": versions,
    }


def machine_line(note: dict[str, Any]) -> str:
    """``machine_note`` as one line for the text report."""
    v = note["versions"]
    libs = ", ".join(f"{k} {v[k]}" for k in v)
    return f"{note['cpus']} CPUs, Python {note['python']}, {libs}"
