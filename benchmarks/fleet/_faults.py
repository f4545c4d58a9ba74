"""Fault injection: one seeded draw per request decides which configured faults happen."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, TypeAlias

from ._config import Deployment
from ._latency import seeded_rng

__all__ = ["FAILURE_KINDS", "MODIFIER_KINDS", "FailureKind", "FaultInjector", "FaultPlan"]

#: A fault that replaces the normal answer.
FailureKind: TypeAlias = Literal[
    "reset",
    "stall",
    "context_window",
    "error_500",
    "error_503",
    "overloaded_529",
    "malformed",
    "cut_short",
    "stall_after",
]

#: Failing faults, in precedence order: when several fire, the first one happens.
FAILURE_KINDS: tuple[FailureKind, ...] = (
    "reset",
    "stall",
    "context_window",
    "error_500",
    "error_503",
    "overloaded_529",
    "malformed",
    "cut_short",
    "stall_after",
)

#: Faults that change a normal answer; any combination can happen at once.
MODIFIER_KINDS: tuple[str, ...] = ("slow_drip", "wrong_model", "no_usage", "refusal")


@dataclass(frozen=True, slots=True)
class FaultPlan:
    """What goes wrong with one request: at most one ``failure`` and any of the modifiers."""

    failure: FailureKind | None = None
    slow_drip: bool = False
    wrong_model: bool = False
    no_usage: bool = False
    refusal: bool = False

    @property
    def kinds(self) -> list[str]:
        """The names of the faults in this plan (as counted in ``/stats``)."""
        out: list[str] = [self.failure] if self.failure else []
        if self.failure is None:  # a failure replaces the answer the modifiers would change
            out += [k for k in MODIFIER_KINDS if getattr(self, k)]
        return out


class FaultInjector:
    """Draws a :class:`FaultPlan` per request from the deployment's ``faults`` rates.

    Every configured kind is drawn independently (a rate of 0 draws nothing, so turning
    one fault on does not change the draws of the others' absence); the generator is
    seeded from the fleet seed and the deployment's name.
    """

    def __init__(self, deployment: Deployment, seed: int) -> None:
        self.deployment = deployment
        self.seed = seed
        self.rng = seeded_rng(seed, deployment.name, "faults")

    def reseed(self) -> None:
        """Start the sequence of draws again (what ``POST /reset`` does)."""
        self.rng = seeded_rng(self.seed, self.deployment.name, "faults")

    def _fires(self, rate: float) -> bool:
        return rate > 0.0 and self.rng.random() < rate

    def draw(self) -> FaultPlan:
        """Decide the faults of the next request."""
        f = self.deployment.faults
        fired = [kind for kind in FAILURE_KINDS if self._fires(getattr(f, kind))]
        return FaultPlan(
            failure=fired[0] if fired else None,
            slow_drip=self._fires(f.slow_drip),
            wrong_model=self._fires(f.wrong_model),
            no_usage=self._fires(f.no_usage),
            refusal=self._fires(f.refusal),
        )
