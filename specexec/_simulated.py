"""``SimulatedBackend``: seeded latency, injected faults and usage, sleeping on the loop's clock.

It sleeps with ``anyio.sleep``, so under trio's ``MockClock`` a 40 ms answer takes exactly
40 ms of virtual time. Every draw comes from a seeded RNG; a query whose
``metadata["seed_key"]`` is set draws from an RNG seeded by (seed, key) instead, so a
benchmark's results do not depend on the order in which concurrent calls happen.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence

import anyio
import msgspec

from ._backend import BackendBase, Limits
from ._distributions import Distribution, as_distribution
from ._errors import (
    AuthError,
    BackendError,
    BadRequest,
    BadResponse,
    RateLimited,
    Timeout,
    Unavailable,
)
from ._query import Query, Response, Usage, estimate_input_tokens

ERROR_KINDS: dict[str, type[BackendError]] = {
    "rate_limited": RateLimited,
    "unavailable": Unavailable,
    "timeout": Timeout,
    "bad_response": BadResponse,
    "bad_request": BadRequest,
    "auth": AuthError,
}
"""Fault kinds ``SimulatedBackend(errors={kind: rate})`` can inject, and the error each raises."""


class Slowdown(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Between clock times ``start`` and ``end`` (loop clock seconds) latency is ``factor`` × normal."""

    start: float
    end: float
    factor: float


class SimulatedBackend(BackendBase):
    """A backend with a seeded latency distribution, fault injection and fixed usage.

    - ``latency``: seconds or a distribution (``LogNormal``, ``Mixture``, ``slow_tail(...)``).
    - ``errors``: ``{kind: probability}`` with kinds from ``ERROR_KINDS``; a failing call fails
      after ``error_latency`` × its drawn latency (fast failures by default).
    - ``stall``: probability that a call never answers (until cancelled).
    - ``reply``: the text, or a function of the query; ``output_tokens`` the usage reported
      (capped at the query's ``max_tokens``); ``reported_model`` the model id it claims.
    - ``slowdowns``: scheduled brownouts on the loop clock.

    ``calls``, ``completed`` and ``cancelled`` count what happened (for tests).
    """

    def __init__(
        self,
        name: str,
        latency: float | Distribution = 0.05,
        *,
        seed: int = 0,
        errors: Mapping[str, float] | None = None,
        error_latency: float = 0.2,
        retry_after: float | None = None,
        stall: float = 0.0,
        reply: str | Callable[[Query], str] = "ok",
        output_tokens: int = 16,
        reported_model: str | None = None,
        slowdowns: Sequence[Slowdown] = (),
        provider: str = "sim",
        region: str = "local",
        model: str | None = None,
        input_price: float = 0.0,
        output_price: float = 0.0,
        limits: Limits | None = None,
    ) -> None:
        super().__init__(
            name,
            provider=provider,
            region=region,
            model=model,
            input_price=input_price,
            output_price=output_price,
            limits=limits,
        )
        self.latency = as_distribution(latency)
        self.errors = dict(errors or {})
        for kind, rate in self.errors.items():
            if kind not in ERROR_KINDS:
                raise ValueError(
                    f"SimulatedBackend {name!r}: unknown error kind {kind!r}; known: {sorted(ERROR_KINDS)}"
                )
            if not 0.0 <= rate <= 1.0:
                raise ValueError(
                    f"SimulatedBackend {name!r}: error rate for {kind!r} must be within [0, 1], got {rate}"
                )
        if sum(self.errors.values()) + stall > 1.0:
            raise ValueError(f"SimulatedBackend {name!r}: error and stall rates add up to more than 1")
        self.seed = seed
        self.error_latency = error_latency
        self.retry_after = retry_after
        self.stall = stall
        self.reply = reply
        self.output_tokens = output_tokens
        self.reported_model = reported_model
        self.slowdowns = tuple(slowdowns)
        self._rng = random.Random(seed)
        self.calls = 0
        self.completed = 0
        self.cancelled = 0

    def _rng_for(self, query: Query) -> random.Random:
        key = query.metadata.get("seed_key")
        if key is None:
            return self._rng
        return random.Random(f"{self.seed}:{self.name}:{key}")

    def _factor(self, now: float) -> float:
        factor = 1.0
        for s in self.slowdowns:
            if s.start <= now < s.end:
                factor *= s.factor
        return factor

    async def complete(self, query: Query) -> Response:
        """Sleep the drawn latency (on the loop clock), then answer or raise the drawn fault.

        Cancellation is let through at once (and counted in ``cancelled``).
        """
        self.calls += 1
        rng = self._rng_for(query)
        latency = self.latency.sample(rng) * self._factor(anyio.current_time())
        roll = rng.random()
        try:
            if roll < self.stall:
                await anyio.sleep_forever()
            roll -= self.stall
            for kind, rate in self.errors.items():
                if roll < rate:
                    await anyio.sleep(latency * self.error_latency)
                    raise self._error(kind)
                roll -= rate
            await anyio.sleep(latency)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        self.completed += 1
        text = self.reply(query) if callable(self.reply) else self.reply
        usage = Usage(
            input_tokens=estimate_input_tokens(query), output_tokens=min(self.output_tokens, query.max_tokens)
        )
        return Response(text=text, usage=usage, model=self.reported_model or self.model)

    def _error(self, kind: str) -> BackendError:
        message = f"simulated {kind}"
        if kind == "rate_limited":
            return RateLimited(message, retry_after=self.retry_after, backend=self.name, status=429)
        return ERROR_KINDS[kind](message, backend=self.name)
