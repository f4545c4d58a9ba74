"""Scheduled events (brownouts, outages, rate limits) on the fleet's clock."""

from __future__ import annotations

from dataclasses import dataclass

from ._config import Brownout, Deployment, Event, Outage, RateLimit

__all__ = ["Effects", "Schedule"]


@dataclass(frozen=True, slots=True)
class Effects:
    """What the events in force do to one request: a latency factor, an outage, a rate limit."""

    factor: float = 1.0
    outage: Outage | None = None
    rate_limit: RateLimit | None = None


_NONE = Effects()


class Schedule:
    """The fleet's scheduled events; :meth:`effects` tells what is in force for a deployment at a time.

    Overlapping brownouts multiply; the first outage (in config order) wins over a rate limit.
    """

    def __init__(self, events: tuple[Event, ...]) -> None:
        self.events = events

    def effects(self, deployment: Deployment, t: float) -> Effects:
        """The effects on ``deployment`` at ``t`` seconds on the fleet's clock."""
        if not self.events:
            return _NONE
        factor = 1.0
        outage: Outage | None = None
        rate_limit: RateLimit | None = None
        for ev in self.events:
            if not (ev.active_at(t) and ev.applies_to(deployment)):
                continue
            if isinstance(ev, Brownout):
                factor *= ev.factor
            elif isinstance(ev, Outage):
                outage = outage or ev
            else:
                rate_limit = rate_limit or ev
        return Effects(factor=factor, outage=outage, rate_limit=rate_limit)
