"""Per-policy counters and latency histograms, and their summary.

``Stats.record`` is called once per finished request and is kept small (it runs a million
times in a ``--sim`` run): two histogram records at most, a few counters, one pass over the
run's attempts. Latency is in microseconds inside the HdrHistogram (1 µs … 1 hour, 3
significant figures) and in seconds everywhere else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import msgspec
from hdrh.histogram import HdrHistogram

from specexec import Trace
from specexec._health._latency import _record_fast

from ._scenario import Phase

__all__ = ["LATE_SEND", "PERCENTILES", "PolicyStats", "Stats", "Summary", "mean_value", "new_histogram"]

LOWEST_MICROS = 1
HIGHEST_MICROS = 3_600_000_000
SIGNIFICANT_FIGURES = 3
PERCENTILES = (("p50", 50.0), ("p90", 90.0), ("p99", 99.0), ("p99.9", 99.9))
"""The latency percentiles every report shows (label, percentile)."""

_DEADLINE_KINDS = frozenset({"DeadlineExceeded", "timeout"})


def new_histogram() -> HdrHistogram:
    """An empty latency histogram (microseconds)."""
    return HdrHistogram(LOWEST_MICROS, HIGHEST_MICROS, SIGNIFICANT_FIGURES)


def mean_value(h: HdrHistogram) -> float:
    """``h.get_mean_value()`` — the same figure, bucket for bucket — from the non-zero buckets
    only: hdrh's own walks all ~23,000 buckets of a 1 µs–1 h histogram through its Python
    iterator (≈ 0.4 s a call here, once per policy and phase in every report)."""
    n: int = h.get_total_count()
    if not n:
        return 0.0
    total = 0
    for index, count in enumerate(_counts(h)):
        if count:
            value = h.get_highest_equivalent_value(h.get_value_from_index(index))  # what the iterator yields
            lowest = h.get_lowest_equivalent_value(value)
            total += count * (lowest + ((h.get_highest_equivalent_value(value) - lowest + 1) >> 1))
    return float(total) / n


def _counts(h: HdrHistogram) -> Sequence[int]:
    """The bucket counts as a list, read in one go through the buffer protocol (a ctypes array
    read item by item costs ≈ 1 µs an item)."""
    code = _WORD_CODES.get(h.word_size)
    if code is None:  # pragma: no cover - hdrh's word sizes are 2, 4 and 8
        return list(h.counts)
    return memoryview(h.counts).cast("B").cast(code).tolist()


_WORD_CODES: dict[int, Literal["H", "I", "Q"]] = {2: "H", 4: "I", 8: "Q"}


def _micros(seconds: float) -> int:
    return min(max(int(seconds * 1_000_000), LOWEST_MICROS), HIGHEST_MICROS)


class Summary(msgspec.Struct, kw_only=True):
    """What a report shows of one policy (or one phase of it). Latencies in seconds, costs in USD.

    ``latency`` holds ``p50``, ``p90``, ``p99``, ``p99.9``, ``max`` and ``mean`` of the answered
    requests (``None`` when none was answered); ``extra_load`` is the attempts beyond each
    request's first, per request (attempts per request − 1, not counting requests that could
    launch none, e.g. with every candidate's breaker open); ``attempts`` counts all of them;
    ``hedge_rate`` the share of requests that fired at least one timed hedge; ``wins`` the share
    of answered requests each backend won; ``failures`` counts failed requests by error;
    ``deadline_misses`` those that failed on a deadline or the workload's timeout; ``quality``
    the share of answered requests passing the scenario's quality check (``None`` without one);
    ``ttft`` the same percentiles of the time to first token of the answered requests that
    report one (``None`` when none did); ``cost_received_mean`` the mean cost per request with
    each cancelled attempt charged by the tokens it received (``None`` unless the driver
    measured it: streamed runs and backends that report TTFT); ``hedge_delay`` the ``p50`` and
    ``p90`` of the delay the hedged requests used — the time from the run's start to its first
    timed hedge (``None`` when no hedge fired).
    """

    requests: int
    ok: int
    success: float | None
    latency: dict[str, float | None]
    cost_mean: float
    cost_total: float
    cost_max: float
    attempts: int
    extra_load: float | None
    hedges: int
    hedge_rate: float | None
    wins: dict[str, float]
    failures: dict[str, int]
    deadline_misses: int
    quality: float | None
    ttft: dict[str, float | None] | None = None
    cost_received_mean: float | None = None
    hedge_delay: dict[str, float] | None = None


class Stats:
    """Counters and histograms of the requests of one policy run (or of one phase of it)."""

    __slots__ = (
        "attempts",
        "checked",
        "cost",
        "cost_max",
        "cost_received",
        "extra",
        "failed_latency",
        "failures",
        "good",
        "hedge_delay",
        "hedged",
        "hedges",
        "latency",
        "ok",
        "received_n",
        "requests",
        "ttft",
        "wins",
    )

    def __init__(self) -> None:
        self.latency = new_histogram()
        self.failed_latency = new_histogram()
        self.ttft = new_histogram()
        self.hedge_delay = new_histogram()  # µs from a hedged request's start to its first timed hedge
        self.requests = 0
        self.ok = 0
        self.attempts = 0
        self.extra = 0
        self.hedges = 0
        self.hedged = 0
        self.cost = 0.0
        self.cost_max = 0.0
        self.cost_received = 0.0
        self.received_n = 0
        self.wins: dict[str, int] = {}
        self.failures: dict[str, int] = {}
        self.checked = 0
        self.good = 0

    def record(
        self,
        latency: float,
        trace: Trace | None,
        error: str | None,
        good: bool | None,
        ttft: float | None = None,
        received_cost: float | None = None,
    ) -> None:
        """One finished request: ``latency`` from its intended send time; ``error`` the failure
        kind (``None`` if answered); ``good`` whether the answer passed the quality check;
        ``ttft`` its time to first token from the intended send time, if known;
        ``received_cost`` its cost with cancelled attempts charged by tokens received, if known."""
        self.requests += 1
        if received_cost is not None:
            self.cost_received += received_cost
            self.received_n += 1
        if error is None:
            self.ok += 1
            _record_fast(self.latency, _micros(latency))  # hdrh's record_value, 3x faster
            if ttft is not None:
                _record_fast(self.ttft, _micros(ttft))
            if good is not None:
                self.checked += 1
                self.good += good
        else:
            _record_fast(self.failed_latency, _micros(latency))
            self.failures[error] = self.failures.get(error, 0) + 1
        if trace is not None:
            launched = hedges = 0
            for a in trace.attempts:
                if a.outcome != "skipped":
                    launched += 1
                    if a.trigger == "hedge":
                        if not hedges and a.started is not None:
                            _record_fast(self.hedge_delay, _micros(a.started))
                        hedges += 1
            self.attempts += launched
            if launched > 1:
                self.extra += launched - 1
            if hedges:
                self.hedges += hedges
                self.hedged += 1
            cost = trace.cost
            self.cost += cost
            if cost > self.cost_max:
                self.cost_max = cost
            winner = trace.winner
            if winner is not None and error is None:
                self.wins[winner] = self.wins.get(winner, 0) + 1

    def merge(self, other: Stats) -> None:
        """Add ``other``'s requests to these."""
        self.latency.add(other.latency)
        self.failed_latency.add(other.failed_latency)
        self.ttft.add(other.ttft)
        self.hedge_delay.add(other.hedge_delay)
        for name in (
            "requests", "ok", "attempts", "extra", "hedges", "hedged", "cost", "checked", "good", "cost_received",
            "received_n",
        ):  # fmt: skip
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.cost_max = max(self.cost_max, other.cost_max)
        for mine, theirs in ((self.wins, other.wins), (self.failures, other.failures)):
            for k, v in theirs.items():
                mine[k] = mine.get(k, 0) + v

    def summary(self) -> Summary:
        """The figures a report shows."""
        n, ok = self.requests, self.ok
        latency: dict[str, float | None]
        if ok:
            h = self.latency
            values = h.get_percentile_to_value_dict([p for _, p in PERCENTILES])
            latency = {label: values[p] / 1e6 for label, p in PERCENTILES}
            latency["max"] = h.get_max_value() / 1e6
            latency["mean"] = mean_value(h) / 1e6
        else:
            latency = dict.fromkeys([*(label for label, _ in PERCENTILES), "max", "mean"])
        ttft: dict[str, float | None] | None = None
        if self.ttft.get_total_count():
            values = self.ttft.get_percentile_to_value_dict([p for _, p in PERCENTILES])
            ttft = {label: values[p] / 1e6 for label, p in PERCENTILES}
            ttft["max"] = self.ttft.get_max_value() / 1e6
            ttft["mean"] = mean_value(self.ttft) / 1e6
        hedge_delay: dict[str, float] | None = None
        if self.hedge_delay.get_total_count():
            delays = self.hedge_delay.get_percentile_to_value_dict([50.0, 90.0])
            hedge_delay = {"p50": delays[50.0] / 1e6, "p90": delays[90.0] / 1e6}
        misses = sum(v for k, v in self.failures.items() if k in _DEADLINE_KINDS)
        return Summary(
            requests=n,
            ok=ok,
            success=ok / n if n else None,
            latency=latency,
            cost_mean=self.cost / n if n else 0.0,
            cost_total=self.cost,
            cost_max=self.cost_max,
            attempts=self.attempts,
            extra_load=self.extra / n if n else None,
            hedges=self.hedges,
            hedge_rate=self.hedged / n if n else None,
            wins={k: v / ok for k, v in sorted(self.wins.items(), key=lambda kv: -kv[1])} if ok else {},
            failures=dict(sorted(self.failures.items())),
            deadline_misses=misses,
            quality=self.good / self.checked if self.checked else None,
            ttft=ttft,
            cost_received_mean=self.cost_received / self.received_n if self.received_n else None,
            hedge_delay=hedge_delay,
        )

    # -- shipping between processes ------------------------------------------------------

    def to_builtins(self) -> dict[str, Any]:
        """Plain data (histograms in HdrHistogram's compressed encoding), for ``from_builtins``."""
        return {
            "latency": self.latency.encode().decode("ascii"),
            "failed_latency": self.failed_latency.encode().decode("ascii"),
            "ttft": self.ttft.encode().decode("ascii"),
            "hedge_delay": self.hedge_delay.encode().decode("ascii"),
            "counters": [
                self.requests,
                self.ok,
                self.attempts,
                self.extra,
                self.hedges,
                self.hedged,
                self.checked,
                self.good,
            ],
            "cost": [self.cost, self.cost_max],
            "received": [self.cost_received, self.received_n],
            "wins": self.wins,
            "failures": self.failures,
        }

    @classmethod
    def from_builtins(cls, data: dict[str, Any]) -> Stats:
        """The inverse of ``to_builtins``."""
        s = cls()
        s.latency = HdrHistogram.decode(data["latency"])
        s.failed_latency = HdrHistogram.decode(data["failed_latency"])
        if "ttft" in data:
            s.ttft = HdrHistogram.decode(data["ttft"])
        if "hedge_delay" in data:
            s.hedge_delay = HdrHistogram.decode(data["hedge_delay"])
        s.requests, s.ok, s.attempts, s.extra, s.hedges, s.hedged, s.checked, s.good = data["counters"]
        s.cost, s.cost_max = data["cost"]
        s.cost_received, s.received_n = data.get("received", (0.0, 0))
        s.wins = dict(data["wins"])
        s.failures = dict(data["failures"])
        return s


LATE_SEND = 0.05
"""Seconds after its intended time past which the load driver counts a request as sent late."""


class PolicyStats:
    """The stats of one policy run: all measured requests, each scenario phase's share, and each
    workflow step's (``Query.metadata["step"]``; ``step_stats`` is empty when no query has one).

    ``late_sends`` counts the measured requests the load driver sent more than ``LATE_SEND``
    seconds after their intended time, ``max_send_lag`` the most late one was (seconds): a
    driver that falls behind (its own CPU saturated, or ``max_in_flight`` reached) measures
    its queue, not the policy."""

    __slots__ = ("late_sends", "max_send_lag", "phase_stats", "phases", "step_stats", "total")

    def __init__(self, phases: Sequence[Phase] = ()) -> None:
        self.total = Stats()
        self.phases = tuple((p.start, p.end) for p in phases)
        self.phase_stats = [Stats() for _ in phases]
        self.step_stats: dict[str, Stats] = {}
        self.late_sends = 0
        self.max_send_lag = 0.0

    def sent(self, lag: float) -> None:
        """A measured request went out ``lag`` seconds after its intended time."""
        if lag > LATE_SEND:
            self.late_sends += 1
        if lag > self.max_send_lag:
            self.max_send_lag = lag

    def record(
        self,
        at: float,
        latency: float,
        trace: Trace | None,
        error: str | None,
        good: bool | None,
        step: object = None,
        ttft: float | None = None,
        received_cost: float | None = None,
    ) -> None:
        """One finished request intended at ``at`` seconds, of workflow ``step`` (see ``Stats.record``)."""
        self.total.record(latency, trace, error, good, ttft, received_cost)
        for i, (start, end) in enumerate(self.phases):
            if start <= at < end:
                self.phase_stats[i].record(latency, trace, error, good, ttft, received_cost)
        if step is not None:
            key = str(step)
            stats = self.step_stats.get(key)
            if stats is None:
                stats = self.step_stats[key] = Stats()
            stats.record(latency, trace, error, good, ttft, received_cost)

    def to_builtins(self) -> dict[str, Any]:
        """Plain data for another process."""
        return {
            "total": self.total.to_builtins(),
            "phases": [list(p) for p in self.phases],
            "phase_stats": [s.to_builtins() for s in self.phase_stats],
            "step_stats": {k: s.to_builtins() for k, s in self.step_stats.items()},
            "late_sends": self.late_sends,
            "max_send_lag": self.max_send_lag,
        }

    @classmethod
    def from_builtins(cls, data: dict[str, Any]) -> PolicyStats:
        """The inverse of ``to_builtins``."""
        out = cls()
        out.total = Stats.from_builtins(data["total"])
        out.phases = tuple((float(a), float(b)) for a, b in data["phases"])
        out.phase_stats = [Stats.from_builtins(s) for s in data["phase_stats"]]
        out.step_stats = {k: Stats.from_builtins(s) for k, s in data.get("step_stats", {}).items()}
        out.late_sends = int(data.get("late_sends", 0))
        out.max_send_lag = float(data.get("max_send_lag", 0.0))
        return out
