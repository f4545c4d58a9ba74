"""Latency distributions for simulated backends and benchmarks (seeded, TOML-loadable).

``LogNormal(0.04, 0.25)`` has a median of 40 ms; ``slow_tail(LogNormal(0.04, 0.25), 0.05, 10)``
is "95 % lognormal(40 ms) + 5 % ten times slower".
"""

from __future__ import annotations

import math
from typing import Literal, Protocol

import msgspec

from ._checks import check_number
from ._errors import PolicyError


class Rng(Protocol):
    """What a distribution draws from: ``random.Random`` or the simulator's keyed streams."""

    def random(self) -> float:
        """A float in [0, 1)."""
        ...

    def uniform(self, a: float, b: float) -> float:
        """A float in [a, b]."""
        ...

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        """A normal draw."""
        ...


class _Dist(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    def sample(self, rng: Rng) -> float:
        """Draw one value in seconds."""
        raise NotImplementedError


class Constant(_Dist, tag="constant", frozen=True):
    """Always ``value`` seconds."""

    value: float

    def __post_init__(self) -> None:
        check_number(self.value, "$.value", ge=0.0, unit="seconds")

    def sample(self, rng: Rng) -> float:
        """Return ``value``."""
        return self.value


class LogNormal(_Dist, tag="lognormal", frozen=True):
    """Log-normal with the given ``median`` (seconds) and ``sigma`` (of the underlying normal)."""

    median: float
    sigma: float = 0.25

    def __post_init__(self) -> None:
        check_number(self.median, "$.median", gt=0.0, unit="seconds")
        check_number(self.sigma, "$.sigma", ge=0.0)

    def sample(self, rng: Rng) -> float:
        """Draw ``median * exp(sigma * N(0, 1))``."""
        return self.median * math.exp(self.sigma * rng.gauss(0.0, 1.0))


class Uniform(_Dist, tag="uniform", frozen=True):
    """Uniform between ``low`` and ``high`` seconds."""

    low: float
    high: float

    def __post_init__(self) -> None:
        check_number(self.low, "$.low", ge=0.0, unit="seconds")
        check_number(self.high, "$.high", ge=0.0, unit="seconds")
        if self.high < self.low:
            raise PolicyError(f"uniform: high ({self.high}) must be >= low ({self.low})", path="$.high")

    def sample(self, rng: Rng) -> float:
        """Draw uniformly from [low, high]."""
        return rng.uniform(self.low, self.high)


class Scaled(_Dist, tag="scaled", frozen=True):
    """``base`` multiplied by ``factor`` (a slow mode: ``Scaled(base, 10)``)."""

    base: Distribution
    factor: float

    def __post_init__(self) -> None:
        check_number(self.factor, "$.factor", gt=0.0)

    def sample(self, rng: Rng) -> float:
        """Draw from ``base`` and scale."""
        return self.base.sample(rng) * self.factor


class Component(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One weighted part of a ``Mixture``."""

    weight: float
    dist: Distribution

    def __post_init__(self) -> None:
        check_number(self.weight, "$.weight", ge=0.0)


class Mixture(_Dist, tag="mixture", frozen=True):
    """Draw from one of ``components``, chosen with probability proportional to its weight."""

    components: tuple[Component, ...]

    def __post_init__(self) -> None:
        if not self.components:
            raise PolicyError("a mixture needs at least one component", path="$.components")
        total = sum(c.weight for c in self.components)
        if not 0 < total < math.inf:
            raise PolicyError(f"mixture weights must add up to a finite number > 0, got {total!r}", path="$.components")

    def sample(self, rng: Rng) -> float:
        """Pick a component by weight, then draw from it."""
        total = sum(c.weight for c in self.components)
        pick = rng.random() * total
        for c in self.components:
            pick -= c.weight
            if pick < 0:
                return c.dist.sample(rng)
        return self.components[-1].dist.sample(rng)


Distribution = Constant | LogNormal | Uniform | Scaled | Mixture
DistributionKind = Literal["constant", "lognormal", "uniform", "scaled", "mixture"]


def slow_tail(base: Distribution, probability: float = 0.05, factor: float = 10.0) -> Mixture:
    """``base`` most of the time, ``factor`` times slower with ``probability``."""
    check_number(probability, "$.probability", ge=0.0, le=1.0)
    return Mixture((Component(1.0 - probability, base), Component(probability, Scaled(base, factor))))


def as_distribution(latency: float | Distribution) -> Distribution:
    """A number of seconds becomes ``Constant``; a distribution passes through."""
    if isinstance(latency, (Constant, LogNormal, Uniform, Scaled, Mixture)):
        return latency
    if isinstance(latency, (int, float)) and not isinstance(latency, bool):
        return Constant(float(latency))
    raise TypeError(f"latency must be seconds (float) or a distribution, got {latency!r}")
