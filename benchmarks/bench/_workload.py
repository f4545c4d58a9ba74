"""Open-loop arrivals and the query mix, seeded: the same seed gives the same requests in every run.

``requests(workload, seed)`` yields each request's number, its intended send time (seconds from
the start of the run) and its ``Query``. Arrival times do not depend on how fast earlier
requests are answered (open loop), and every query carries ``metadata["seed_key"] = index``
so simulated backends draw the same latency for request *i* whatever the scheduling order —
and under every policy (common random numbers make policy comparisons less noisy).
"""

from __future__ import annotations

import itertools
import random
from bisect import bisect_right
from collections.abc import Iterator
from typing import NamedTuple

from specexec import Query

from ._scenario import Workload

__all__ = ["Request", "requests"]


class Request(NamedTuple):
    """One request of a workload: its ``number`` (0, 1, …), intended send time ``at`` (seconds
    from the start), query, and whether it is measured (not warm-up)."""

    number: int
    at: float
    query: Query
    measured: bool


def requests(workload: Workload, seed: int) -> Iterator[Request]:
    """The workload's requests in send order (bounded by its ``requests`` and/or ``duration``).

    The first ``warmup`` requests come with ``measured=False``.
    """
    arrivals = random.Random(f"{seed}:arrivals")
    mix = random.Random(f"{seed}:mix")
    specs = workload.queries
    cumulative = list(itertools.accumulate(s.weight for s in specs))
    tenant_names = list(workload.tenants)
    tenant_cumulative = list(itertools.accumulate(workload.tenants.values()))
    total = workload.warmup + workload.requests if workload.requests is not None else None
    duration = workload.duration
    gap = 1.0 / workload.rate
    poisson = workload.arrivals == "poisson"
    expovariate = arrivals.expovariate
    rate = workload.rate
    t = 0.0
    index = 0
    while total is None or index < total:
        t = t + expovariate(rate) if poisson else index * gap
        if duration is not None and t >= duration:
            return
        spec = specs[bisect_right(cumulative, mix.random() * cumulative[-1])] if len(specs) > 1 else specs[0]
        size = spec.max_tokens if spec.max_tokens is not None else workload.max_tokens
        max_tokens = size if isinstance(size, int) else max(1, round(size.sample(mix)))
        tenant = spec.tenant
        if tenant is None and tenant_names:
            tenant = tenant_names[bisect_right(tenant_cumulative, mix.random() * tenant_cumulative[-1])]
        metadata: dict[str, object] = {"seed_key": index}
        if spec.step is not None:
            metadata["step"] = spec.step
        query = Query(prompt=spec.prompt, max_tokens=max_tokens, tenant=tenant, metadata=metadata)
        yield Request(index, t, query, index >= workload.warmup)
        index += 1
