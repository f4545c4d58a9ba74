"""``LatencyWindow``: rotating HDR histograms of latency, censored samples, cached quantiles.

Latencies are recorded in two histograms per time slice: *observed* (the attempt finished,
its latency is known) and *censored* (the attempt was cancelled after ``t`` seconds, so its
latency is only known to be ``>= t``: the loser of a race). Quantiles come from the
Kaplan-Meier product-limit estimate over the window, so cancelling the slow attempts does
not drag the estimate down; they are computed at refresh time and cached, never on lookup.

Memory: a histogram (≈ 14 KB at 1 µs–1 h, 2 significant figures) exists only for a slice
that was recorded into, and is released when its slice leaves the window; a window that
was never recorded into holds none. Every window of one resolution shares one empty
histogram (``_layout``) for translating counts-array indices to values, so quantiles are
computed from the very same counts, bucket for bucket, as with histograms allocated up front.

Resolution, chosen for the job: 2 significant figures (buckets < 1 % wide: the error DESIGN
and the tests allow the delay and quantiles; 1 figure would be 3 %), 1 µs–1 h (the layout the
probe daemon ships its histograms in; a narrower range would save under 12 % and make every
merge of a daemon's histogram take hdrh's slow path), and 4-byte counts (half the memory of
hdrh's default 8): a bucket of one slice would need 2³² samples to overflow, and
``merge_encoded`` refuses a histogram that could take a slice there; windows that ever hold
2³² samples merge into 8-byte counts. The encoded form does not depend on the count width.
"""

from __future__ import annotations

import math
from array import array
from bisect import bisect_left, bisect_right
from collections.abc import Sequence
from ctypes import addressof
from functools import cache
from itertools import compress
from operator import or_
from typing import Literal

from hdrh.histogram import HdrHistogram
from pyhdrh import add_array  # hdrh's C helper, as hdrh.codec imports it

MICROS_PER_SECOND = 1_000_000
LOWEST_MICROS = 1
HIGHEST_MICROS = 3_600 * MICROS_PER_SECOND  # one hour
DEFAULT_QUANTILES = (0.5, 0.9, 0.95, 0.99)
WORD_SIZE = 4
"""Bytes per count in a window's histograms (hdrh's default is 8)."""
_MAX_COUNT = 2**32 - 1  # the largest count a 4-byte counter holds
_TYPECODES: dict[int, Literal["H", "I", "Q"]] = {2: "H", 4: "I", 8: "Q"}  # typecodes of hdrh's count widths
assert all(array(code).itemsize == size for size, code in _TYPECODES.items())

_NEVER = -(2**62)  # the epoch of a slice that was never used
_Z = 1.645  # one-sided 95 % lower confidence bound of a quantile (see _lookup)
_EPSILON = 1e-9  # float slack when comparing the estimated CDF with a quantile
MIN_AT_RISK = 10
"""Samples at risk below which a Kaplan–Meier step past a censored sample is not trusted (``hedge_quantile``)."""


def _micros(seconds: float) -> int:
    """``seconds`` as whole microseconds, clamped to the histogram's range."""
    micros = int(seconds * MICROS_PER_SECOND)  # branches, not min(max()): a third of the time, per attempt
    return LOWEST_MICROS if micros < LOWEST_MICROS else HIGHEST_MICROS if micros > HIGHEST_MICROS else micros


def _record_fast(histogram: HdrHistogram, micros: int) -> None:
    """``histogram.record_value(micros)`` in a third of the time (it runs once per attempt,
    losers included): the same counts index, with ``int.bit_length`` where hdrh formats the
    value with ``bin()`` to count leading zeros. ``micros`` is already within the range."""
    h = histogram
    bucket = (micros | h.sub_bucket_mask).bit_length() - h.unit_magnitude - h.sub_bucket_half_count_magnitude - 1
    index = ((bucket + 1) << h.sub_bucket_half_count_magnitude) + (micros >> (bucket + h.unit_magnitude))
    index -= h.sub_bucket_half_count
    h.counts[index] += 1
    h.total_count += 1
    if micros < h.min_value:
        h.min_value = micros
    if micros > h.max_value:
        h.max_value = micros


@cache
def _layout(significant_figures: int) -> HdrHistogram:
    """The one empty histogram of this resolution that every window shares: it translates
    counts-array indices to values and stands for an empty slice. Never recorded into."""
    return HdrHistogram(LOWEST_MICROS, HIGHEST_MICROS, significant_figures, word_size=WORD_SIZE)


def _add(target: HdrHistogram, source: HdrHistogram) -> None:
    """``target.add(source)``, kept fast when only the count width differs (a decoded histogram
    has 8-byte counts, a slice 4-byte ones, and hdrh then re-records every index one by one)."""
    same_layout = (target.bucket_count, target.sub_bucket_count, target.unit_magnitude) == (
        source.bucket_count,
        source.sub_bucket_count,
        source.unit_magnitude,
    )
    if target.word_size == source.word_size or not same_layout or not source.total_count:
        target.add(source)
        return
    # Convert the counts to the target's width in C (array() refuses a count too wide for it:
    # OverflowError), then hdrh's own C array add. A Python loop over the indices costs
    # ≈ 0.6 ms a histogram here, this ≈ 0.05 ms.
    end = source.get_counts_array_index(source.max_value) + 1
    counts = memoryview(source.counts).cast("B").cast(_TYPECODES[source.word_size])[:end].tolist()
    converted = array(_TYPECODES[target.word_size], counts)
    add_array(addressof(target.counts), converted.buffer_info()[0], end, target.word_size)
    target.total_count += source.total_count
    target.max_value = max(target.max_value, source.max_value)
    target.min_value = min(target.min_value, source.min_value)


def _free(histogram: HdrHistogram | None, layout: HdrHistogram) -> None:
    """Let a histogram nobody else holds go at once: an hdrh histogram and its encoder refer to
    each other, so dropped whole it waits, counts and all, for the cyclic garbage collector;
    without its encoder it is freed as soon as its last reference goes. Never the shared one."""
    if histogram is not None and histogram is not layout:
        histogram.encoder = None


@cache
def _encoded_empty(significant_figures: int) -> str:
    """An empty histogram of this resolution in HdrHistogram's compressed base64 form."""
    return str(HdrHistogram(LOWEST_MICROS, HIGHEST_MICROS, significant_figures).encode().decode("ascii"))


def _check_quantile(q: float) -> None:
    if not 0.0 <= q <= 1.0:
        raise ValueError(f"a quantile is between 0 and 1, got {q!r}")


def kaplan_meier(observed: HdrHistogram, censored: HdrHistogram) -> tuple[list[int], list[float], list[float], int]:
    """The product-limit estimate of the latency CDF from two histograms of the same layout.

    Returns ``(indices, cdf, errors, trusted)``: the counts-array indices holding observed values,
    ascending, the estimated ``P(latency <= value)`` at each, and its standard error
    (Greenwood's formula; without censoring it is the binomial ``sqrt(F(1 − F)/n)``). At an
    index, the observed count ``d`` is processed before the censored count there:
    ``S *= 1 - d / at_risk``, then both leave the risk set (censored at ``t`` means "still
    running at ``t``"). Without censored samples this is the empirical CDF.

    The fourth value counts the leading points that are *trusted*: a point taken with fewer
    than ``MIN_AT_RISK`` samples at risk after a censored one is not (nor any after it) —
    there the curve stands on a few samples that outlived the censored ones, and the last of
    them takes all the mass left (``hedge_quantile``).

    Walks the counts arrays directly, visiting only non-empty indices: the histogram's
    recorded-value iterator costs ~7 ms per histogram here, this ~0.2 ms for both.
    """
    top = max(observed.max_value, censored.max_value)
    end = observed.get_counts_array_index(top) + 1 if top else 1
    events, losses = observed.counts[:end], censored.counts[:end]
    at_risk = observed.total_count + censored.total_count
    survival = 1.0
    greenwood = 0.0  # Σ d / (n (n − d)): Var(S(t)) ≈ S(t)² · greenwood
    indices: list[int] = []
    cdf: list[float] = []
    errors: list[float] = []
    trusted = -1  # -1: every point so far is trusted
    lost = False  # a censored sample has left the risk set
    for index in compress(range(end), map(or_, events, losses)):
        died = events[index]
        if died:
            if trusted < 0 and lost and at_risk < MIN_AT_RISK:
                trusted = len(indices)
            survival *= 1.0 - died / at_risk
            if at_risk > died:
                greenwood += died / (at_risk * (at_risk - died))
            indices.append(index)
            cdf.append(1.0 - survival)
            errors.append(survival * math.sqrt(greenwood))
        at_risk -= died + losses[index]
        lost = lost or losses[index] > 0
    return indices, cdf, errors, trusted if trusted >= 0 else len(indices)


class LatencyWindow:
    """Latency over the last ``window`` seconds, in ``slices`` rotating HDR histograms.

    Values are seconds at the API and whole microseconds inside (1 µs … 1 hour, clamped).
    ``record`` and ``record_censored`` are cheap (one ``record_value`` and a float compare);
    ``quantile`` is a dict lookup in a cache that is recomputed lazily, at most every
    ``max_refresh_interval`` seconds and after each slice rotation (or on ``refresh``). A
    slice's data ages out ``window`` seconds after the slice began; after a whole idle
    window the histograms are empty. Quantiles are ``None`` while fewer than
    ``min_samples`` samples (observed + censored) are in the window.

    A slice's observed and censored histograms are allocated when it is first recorded
    into and released when it leaves the window (``held_histograms`` counts them).
    """

    __slots__ = (
        "_cache", "_cdf", "_censored", "_censored_merged", "_current_censored", "_current_observed", "_epoch",
        "_epochs", "_errors", "_hedge_cache", "_indices", "_largest", "_layout", "_observed", "_quantiles",
        "_refresh_due", "_slice_end", "_slice_length", "_slot", "_total", "_trusted", "_warm",
        "max_refresh_interval", "min_samples", "refreshes", "significant_figures", "slices", "window",
    )  # fmt: skip

    def __init__(
        self,
        window: float = 60.0,
        slices: int = 6,
        min_samples: int = 20,
        significant_figures: int = 2,
        quantiles: Sequence[float] = DEFAULT_QUANTILES,
        max_refresh_interval: float = 1.0,
    ) -> None:
        if not window > 0 or slices < 1 or min_samples < 1 or max_refresh_interval < 0:
            raise ValueError("need window > 0, slices >= 1, min_samples >= 1 and max_refresh_interval >= 0")
        if not 1 <= significant_figures <= 5:
            raise ValueError(f"significant_figures is 1 to 5, got {significant_figures!r}")
        for q in quantiles:
            _check_quantile(q)
        self.window = window
        self.slices = slices
        self.min_samples = min_samples
        self.significant_figures = significant_figures
        self.max_refresh_interval = max_refresh_interval
        self._slice_length = window / slices
        self._layout = _layout(significant_figures)
        self._epochs = [_NEVER] * slices
        # None: nothing recorded into that slot's slice (no histogram held).
        self._observed: list[HdrHistogram | None] = [None] * slices
        self._censored: list[HdrHistogram | None] = [None] * slices
        self._epoch = _NEVER
        self._slice_end = -math.inf  # the first record rotates into a slice
        self._slot = 0
        self._current_observed: HdrHistogram | None = None
        self._current_censored: HdrHistogram | None = None
        self._total = 0
        # The cache, rebuilt by refresh().
        self._quantiles = set(quantiles)
        self._warm = False
        self._indices: list[int] = []  # the Kaplan-Meier curve: counts-array indices and CDF
        self._cdf: list[float] = []
        self._errors: list[float] = []  # the CDF's standard errors (Greenwood)
        self._trusted = 0  # leading points of the curve hedge_quantile trusts
        self._hedge_cache: dict[tuple[float, float], float] = {}  # (q, max_margin) -> value
        self._largest = 0.0
        self._censored_merged: HdrHistogram | None = None
        self._cache: dict[float, float] = {}
        self._refresh_due = -math.inf
        self.refreshes = 0
        """How many times the cache was recomputed (``refresh``): a new estimate to act on."""

    def _new_histogram(self, word_size: int = WORD_SIZE) -> HdrHistogram:
        return HdrHistogram(LOWEST_MICROS, HIGHEST_MICROS, self.significant_figures, word_size=word_size)

    @property
    def held_histograms(self) -> int:
        """How many HDR histograms this window holds now (two at most per slice recorded into)."""
        return sum(h is not None for h in self._observed) + sum(h is not None for h in self._censored)

    def _observed_slice(self) -> HdrHistogram:
        """The current slice's observed histogram, allocated on first use."""
        histogram = self._current_observed
        if histogram is None:
            histogram = self._current_observed = self._observed[self._slot] = self._new_histogram()
        return histogram

    def _censored_slice(self) -> HdrHistogram:
        """The current slice's censored histogram, allocated on first use."""
        histogram = self._current_censored
        if histogram is None:
            histogram = self._current_censored = self._censored[self._slot] = self._new_histogram()
        return histogram

    # -- recording -------------------------------------------------------------------------

    def record(self, value: float, now: float) -> None:
        """Record an observed latency of ``value`` seconds."""
        if now >= self._slice_end:
            self._rotate(now)
        _record_fast(self._current_observed or self._observed_slice(), _micros(value))
        self._total += 1

    def record_censored(self, lower_bound: float, now: float) -> None:
        """Record an attempt cancelled after ``lower_bound`` seconds: its latency is at least that."""
        if now >= self._slice_end:
            self._rotate(now)
        _record_fast(self._current_censored or self._censored_slice(), _micros(lower_bound))
        self._total += 1

    def count(self, now: float) -> int:
        """Samples (observed + censored) in the window at ``now``."""
        if now >= self._slice_end:
            self._rotate(now)
        return self._total

    def _rotate(self, now: float) -> None:
        """Move to the slice holding ``now``; release the histograms of every slice that left the window.

        The slice moved into starts empty (no histogram until something is recorded), as do
        slots whose data is older than ``window``: their histograms are dropped, not kept
        zeroed (a fresh one costs ≈ 30 µs, once per slice at most, and an idle window then
        holds nothing).
        """
        # max(): never stay in the same slice because of float rounding at its end.
        epoch = max(math.floor(now / self._slice_length), self._epoch + 1)
        slot = epoch % self.slices
        oldest = epoch - self.slices + 1
        epochs, observed, censored = self._epochs, self._observed, self._censored
        total = 0
        for s in range(self.slices):
            if s == slot or epochs[s] < oldest:
                epochs[s] = _NEVER
                _free(observed[s], self._layout)
                _free(censored[s], self._layout)
                observed[s] = censored[s] = None
            else:
                o, c = observed[s], censored[s]
                total += (o.total_count if o is not None else 0) + (c.total_count if c is not None else 0)
        epochs[slot] = epoch
        self._epoch = epoch
        self._slot = slot
        self._slice_end = (epoch + 1) * self._slice_length
        self._current_observed = self._current_censored = None
        self._total = total
        self._refresh_due = -math.inf

    def _live_slots(self) -> list[int]:
        oldest = self._epoch - self.slices + 1
        return [slot for slot, epoch in enumerate(self._epochs) if epoch >= oldest]

    def _merged(self) -> tuple[HdrHistogram, HdrHistogram]:
        """The live slices merged: observed and censored histograms, to be read, never recorded into.

        Each is a fresh histogram holding the sum, or the shared empty ``_layout`` when no live
        slice holds samples of that kind (nothing is allocated for an empty window).
        """
        return self._sum(self._observed), self._sum(self._censored)

    def _sum(self, histograms: list[HdrHistogram | None]) -> HdrHistogram:
        held = [h for slot in self._live_slots() if (h := histograms[slot]) is not None and h.total_count]
        if not held:
            return self._layout
        total = sum(h.total_count for h in held)
        merged = self._new_histogram(WORD_SIZE if total <= _MAX_COUNT else 8)  # no bucket can overflow
        for histogram in held:
            _add(merged, histogram)
        return merged

    # -- quantiles -------------------------------------------------------------------------

    def _fresh(self, now: float) -> bool:
        """Rotate to ``now`` and recompute the curve if a refresh is due; whether the window is warm."""
        if now >= self._slice_end:
            self._rotate(now)
        if now >= self._refresh_due or (not self._warm and self._total >= self.min_samples):
            self.refresh(now)
        return self._warm

    def quantile(self, q: float, now: float) -> float | None:
        """The estimated ``q``-quantile in seconds, or ``None`` below ``min_samples``.

        O(1) between refreshes. When the upper tail is censored (the estimated CDF never
        reaches ``q``) this is a lower bound from the censored samples (``_censored_bound``).
        A ``q`` not configured is computed from the cached curve and cached from then on.
        """
        if not self._fresh(now):
            return None
        value = self._cache.get(q)
        if value is None:
            _check_quantile(q)
            self._quantiles.add(q)
            value = self._cache[q] = self._lookup(q)
        return value

    def hedge_quantile(self, q: float, now: float, max_margin: float = math.inf) -> float | None:
        """``quantile`` on the trusted part of the curve only: where censoring has left fewer
        than ``MIN_AT_RISK`` samples at risk, the lower bound from the censored samples
        (``_censored_bound``) instead. Under hedging a slow primary is cancelled just past
        the delay; the one that outlives the rest would otherwise take all their mass and
        lift the delay to a rare slow sample. ``max_margin`` caps how far (in CDF) the lower
        confidence bound may sit below ``q``: with few samples Greenwood's bound falls far
        below (the p87 for a p95 over 20 samples). Cached per refresh like ``quantile``."""
        if not self._fresh(now):
            return None
        key = (q, max_margin)
        value = self._hedge_cache.get(key)
        if value is None:
            _check_quantile(q)
            value = self._hedge_cache[key] = self._lookup(q, self._trusted, max_margin)
        return value

    def cdf(self, value: float, now: float) -> float | None:
        """The estimated ``P(latency <= value)`` (Kaplan–Meier, from the cached curve), or
        ``None`` below ``min_samples``; refreshed like ``quantile``."""
        if not self._fresh(now):
            return None
        index = self._layout.get_counts_array_index(_micros(value))
        position = bisect_right(self._indices, index)
        return self._cdf[position - 1] if position else 0.0

    def refresh(self, now: float) -> None:
        """Recompute the cached quantiles from the window at ``now`` (merge + Kaplan-Meier)."""
        if now >= self._slice_end:
            self._rotate(now)
        self._refresh_due = now + self.max_refresh_interval
        self.refreshes += 1
        self._warm = self._total >= self.min_samples
        if not self._warm:
            self._indices, self._cdf, self._errors, self._largest, self._cache = [], [], [], 0.0, {}
            self._trusted, self._hedge_cache = 0, {}
            return
        observed, censored = self._merged()
        self._indices, self._cdf, self._errors, self._trusted = kaplan_meier(observed, censored)
        self._hedge_cache = {}
        _free(self._censored_merged, self._layout)
        self._censored_merged = censored if censored.total_count else None  # keep no empty histogram
        self._largest = max(observed.get_max_value(), censored.get_max_value()) / MICROS_PER_SECOND
        _free(observed, self._layout)  # a merged copy (or the shared empty one): done with it
        self._cache = {q: self._lookup(q) for q in self._quantiles}

    def _lookup(self, q: float, end: int | None = None, max_margin: float = math.inf) -> float:
        """The one-sided 95 % lower confidence bound of the ``q``-quantile: the smallest value
        whose estimated CDF is within ``_Z`` standard errors (and at most ``max_margin``) of
        ``q``; when the curve stops short of that (the tail is censored), the lower bound of
        ``_censored_bound``.

        Why not the plain "CDF reaches ``q``": where the latency distribution is flat around
        ``q`` (a fast body and a slow mode, 94.9 % by 90 ms and 95.2 % by 250 ms) every value
        on the flat stretch is the ``q``-quantile within sampling error, and the plain
        estimate flips between its ends from one refresh to the next. Under hedging it is
        worse: slow primaries are cancelled (censored) just past the delay, the few samples
        that finish beyond carry large Kaplan–Meier weights, and one of them lifts the CDF
        over ``q`` — the delay jumps to a rare slow sample and stays there, since a longer
        delay lets more slow samples finish. The standard error (Greenwood's, which grows
        where few samples are left at risk) makes those sparse points count for what they
        are worth: the bound stays on the well-measured part of the curve. Where the
        distribution is steep it moves the estimate little (≈ 1 % at p95 of a lognormal(σ
        0.25) over 6,000 samples; ≈ 8 % over 100), always downwards: a hedge fires a little
        early rather than late, and the hedge budget caps the extra load.
        """
        if q >= 1.0:
            return self._largest
        cdf, errors = self._cdf, self._errors
        end = len(cdf) if end is None else end
        target = q - _EPSILON
        lowest = target - min(_Z * max(errors, default=0.0), max_margin)
        position = bisect_left(cdf, lowest, 0, end)  # none below can qualify
        while position < end and cdf[position] + min(_Z * errors[position], max_margin) < target:
            position += 1
        if position == end:
            return self._censored_bound(q, end)
        # The bucket's highest equivalent value, like get_value_at_percentile (every histogram
        # of this window has the same layout, so the shared one translates the index).
        histogram = self._layout
        value = histogram.get_highest_equivalent_value(histogram.get_value_from_index(self._indices[position]))
        return float(value) / MICROS_PER_SECOND

    def _censored_bound(self, q: float, end: int) -> float:
        """A lower bound of the ``q``-quantile when the Kaplan–Meier curve ends below ``q``.

        Past the last observed value the remaining survival mass ``S`` sits on the censored
        samples beyond it (each is known only to exceed its value; the product-limit
        estimator gives each ``S / n`` of them). The ``q``-quantile cannot be smaller than the
        value below which that known-slower mass still exceeds ``1 − q``: counting censored
        samples from the top until they carry ``1 − q`` of mass gives it. Under hedging that
        is just past the delay (where the slow primaries were cancelled), not the one rare
        sample cancelled seconds later — so the delay does not jump. ``end``: the points of the
        curve taken into account (the rest are ignored, as ``hedge_quantile`` does).
        """
        censored = self._censored_merged
        if censored is None:
            return self._largest
        start = self._indices[end - 1] + 1 if end else 0
        survival = 1.0 - self._cdf[end - 1] if end else 1.0
        counts = censored.counts
        top = censored.get_counts_array_index(censored.max_value) if censored.total_count else -1
        remaining = sum(counts[start : top + 1]) if top >= start else 0
        if remaining == 0 or survival <= 0.0:
            return self._largest
        needed = math.ceil((1.0 - q) / (survival / remaining) - 1e-9)  # censored samples carrying 1 - q
        seen = 0
        for index in range(top, start - 1, -1):
            seen += counts[index]
            if seen >= needed:
                value = censored.get_highest_equivalent_value(censored.get_value_from_index(index))
                return float(value) / MICROS_PER_SECOND
        return float(censored.get_highest_equivalent_value(censored.get_value_from_index(start))) / MICROS_PER_SECOND

    # -- shipping between processes --------------------------------------------------------

    def encode(self, now: float) -> tuple[str, str]:
        """The window's observed and censored histograms, each in HdrHistogram's compressed base64 form."""
        if now >= self._slice_end:
            self._rotate(now)
        observed, censored = self._merged()
        encoded = self._encoded(observed), self._encoded(censored)
        _free(observed, self._layout)
        _free(censored, self._layout)
        return encoded

    def _encoded(self, histogram: HdrHistogram) -> str:
        # The shared empty histogram is never encoded in place (encode() writes into its header).
        if histogram is self._layout:
            return _encoded_empty(self.significant_figures)
        return str(histogram.encode().decode("ascii"))

    def merge_encoded(self, observed: str, censored: str, now: float) -> None:
        """Add encoded histograms (as from ``encode``) to the current slice; they age out like new samples.

        Raises ``ValueError`` if either is not a valid encoding, holds values beyond 1 hour, or would
        take the current slice past 2³² − 1 samples (its 4-byte counts could overflow).
        """
        if now >= self._slice_end:
            self._rotate(now)
        try:
            decoded = [HdrHistogram.decode(encoded) for encoded in (observed, censored)]
        except Exception as exc:
            raise ValueError(f"not an encoded latency histogram: {exc!r}") from exc
        limit = self._layout.get_highest_equivalent_value(HIGHEST_MICROS)
        if any(histogram.get_max_value() > limit for histogram in decoded):
            raise ValueError("an encoded latency histogram holds values beyond 1 hour")
        for histogram, held in zip(decoded, (self._current_observed, self._current_censored), strict=True):
            if histogram.total_count + (held.total_count if held is not None else 0) > _MAX_COUNT:
                raise ValueError(f"an encoded latency histogram holds too many samples ({histogram.total_count})")
        for histogram, target in zip(decoded, (self._observed_slice, self._censored_slice), strict=True):
            if histogram.total_count:  # an empty one allocates nothing
                _add(target(), histogram)
                self._total += histogram.total_count
            _free(histogram, self._layout)
        self._refresh_due = -math.inf
