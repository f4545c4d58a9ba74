"""The seeded latency model: time to first token from a distribution, then a fixed time per token.

Each deployment draws from its own :class:`random.Random`, seeded from the fleet seed and
the deployment's name, so the same seed and the same request sequence give the same
latencies, and one deployment's traffic does not shift another's draws.
"""

from __future__ import annotations

import math
import random

from ._config import Constant, Deployment, Distribution, LogNormal, Mixture, Uniform

__all__ = ["LatencyModel", "sample", "seeded_rng"]


def seeded_rng(seed: int, name: str, stream: str) -> random.Random:
    """A generator for one deployment's ``stream`` ("latency", "faults"), reproducible from ``seed``.

    String seeds are hashed with SHA-512 by :class:`random.Random`, independently of
    ``PYTHONHASHSEED``.
    """
    return random.Random(f"{seed}/{name}/{stream}")


def sample(dist: Distribution, rng: random.Random) -> float:
    """One draw, in seconds, from ``dist`` (its slow tail included)."""
    if isinstance(dist, Constant):
        value = dist.value
    elif isinstance(dist, Uniform):
        value = rng.uniform(dist.low, dist.high)
    elif isinstance(dist, LogNormal):
        value = dist.median * math.exp(dist.sigma * rng.gauss(0.0, 1.0)) if dist.sigma else dist.median
    else:
        value = _sample_mixture(dist, rng)
    if dist.tail_prob and rng.random() < dist.tail_prob:
        value *= dist.tail_factor
    return value


def _sample_mixture(dist: Mixture, rng: random.Random) -> float:
    total = sum(c.weight for c in dist.components)
    x = rng.random() * total
    for c in dist.components:
        x -= c.weight
        if x < 0:
            return sample(c.dist, rng)
    return sample(dist.components[-1].dist, rng)


class LatencyModel:
    """The latency of one deployment: :meth:`ttft` draws a time to first token.

    A response of ``n`` tokens is finished ``ttft + n × per_token`` seconds after the
    request arrived; a stream sends its first token at ``ttft`` and one more every
    ``per_token`` seconds (both scaled by a brownout's factor).
    """

    def __init__(self, deployment: Deployment, seed: int) -> None:
        self.deployment = deployment
        self.seed = seed
        self.rng = seeded_rng(seed, deployment.name, "latency")

    @property
    def per_token(self) -> float:
        """Seconds between two output tokens."""
        return self.deployment.per_token

    def ttft(self) -> float:
        """Draw the next request's time to first token, in seconds."""
        return sample(self.deployment.latency, self.rng)

    def reseed(self) -> None:
        """Start the sequence of draws again (what ``POST /reset`` does)."""
        self.rng = seeded_rng(self.seed, self.deployment.name, "latency")
