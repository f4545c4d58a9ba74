"""``SimulatedBackend``: seeded latency, injected faults and usage, sleeping on the loop's clock.

It sleeps with ``anyio.sleep``, so under trio's ``MockClock`` a 40 ms answer takes exactly
40 ms of virtual time. Every draw comes from a seeded RNG; a query whose
``metadata["seed_key"]`` is set draws from an RNG seeded by (seed, key) instead, so a
benchmark's results do not depend on the order in which concurrent calls happen.
"""

from __future__ import annotations

import math
import random
import zlib
from collections.abc import Callable, Mapping, Sequence

import anyio
import msgspec

from ._backend import BackendBase, Limits
from ._checks import check_int, check_number, is_number
from ._distributions import Distribution, Rng, as_distribution
from ._errors import (
    AuthError,
    BackendError,
    BadRequest,
    BadResponse,
    PolicyError,
    RateLimited,
    Timeout,
    Unavailable,
)
from ._health import BreakerConfig
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


_MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_TWO_POW_MINUS_53 = 1.0 / (1 << 53)


def _mix(z: int) -> int:
    """splitmix64's finaliser: a well-spread 64-bit value from any 64-bit input."""
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
    z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK64
    return z ^ (z >> 31)


class KeyedRandom:
    """A splitmix64 stream with ``random``, ``uniform`` and ``gauss``: good enough for simulated
    latencies and ≈ 20× cheaper to make than ``random.Random`` (≈ 10 µs to seed), which
    matters when every simulated request draws from its own stream."""

    __slots__ = ("_spare", "_state")

    def __init__(self, state: int) -> None:
        self._state = state & _MASK64
        self._spare: float | None = None

    def random(self) -> float:
        """The next float in [0, 1)."""
        z = self._state = (self._state + _GOLDEN) & _MASK64  # splitmix64, inlined (hot)
        z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9 & _MASK64
        z = (z ^ (z >> 27)) * 0x94D049BB133111EB & _MASK64
        return ((z ^ (z >> 31)) >> 11) * _TWO_POW_MINUS_53

    def uniform(self, a: float, b: float) -> float:
        """A float in [a, b]."""
        return a + (b - a) * self.random()

    def gauss(self, mu: float = 0.0, sigma: float = 1.0) -> float:
        """A normal draw (Box–Muller, the second value kept for the next call)."""
        z = self._spare
        if z is None:
            u = 1.0 - self.random()
            radius = math.sqrt(-2.0 * math.log(u))
            angle = 2.0 * math.pi * self.random()
            z, self._spare = radius * math.cos(angle), radius * math.sin(angle)
        else:
            self._spare = None
        return mu + sigma * z


class Slowdown(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Between clock times ``start`` and ``end`` (loop clock seconds) latency is ``factor`` × normal."""

    start: float
    end: float
    factor: float

    def __post_init__(self) -> None:
        for field in ("start", "end"):  # infinite ends are fine: open-ended brownouts
            value = getattr(self, field)
            if not is_number(value) or math.isnan(value):
                raise PolicyError(
                    f"{field} must be a time in seconds on the loop clock, got {value!r}", path=f"$.{field}"
                )
        if not self.end >= self.start:
            raise PolicyError(
                f"a slowdown must end (got {self.end}) at or after it starts ({self.start})", path="$.end"
            )
        check_number(self.factor, "$.factor", gt=0.0, unit="times the normal latency")


def _latency(latency: object, path: str) -> Distribution:
    """``latency`` (seconds or a distribution) as a distribution, or ``PolicyError`` at ``path``."""
    if isinstance(latency, (int, float)) and not isinstance(latency, bool):
        check_number(latency, path, ge=0.0, unit="seconds, or a distribution")
    try:
        return as_distribution(latency)  # type: ignore[arg-type]
    except TypeError:
        raise PolicyError(f"latency must be seconds or a distribution, got {latency!r}", path=path) from None


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
        context_window: int | None = None,
        breaker: BreakerConfig | None = None,
    ) -> None:
        super().__init__(
            name,
            provider=provider,
            region=region,
            model=model,
            input_price=input_price,
            output_price=output_price,
            limits=limits,
            context_window=context_window,
            breaker=breaker,
        )
        where = f"$.backends.{name}"
        self.latency = _latency(latency, f"{where}.latency")
        self.errors = dict(errors or {})
        for kind, rate in self.errors.items():
            if kind not in ERROR_KINDS:
                raise PolicyError(
                    f"unknown error kind {kind!r}; known: {', '.join(sorted(ERROR_KINDS))}",
                    path=f"{where}.errors.{kind}",
                )
            check_number(rate, f"{where}.errors.{kind}", ge=0.0, le=1.0, what=f"the error rate for {kind!r}")
        check_number(stall, f"{where}.stall", ge=0.0, le=1.0, unit="a probability")
        if sum(self.errors.values()) + stall > 1.0:
            raise PolicyError(
                f"error and stall rates add up to more than 1 ({sum(self.errors.values()) + stall:g})",
                path=f"{where}.errors",
            )
        check_number(error_latency, f"{where}.error_latency", ge=0.0, unit="a multiple of the drawn latency")
        if retry_after is not None:
            check_number(retry_after, f"{where}.retry_after", ge=0.0, unit="seconds")
        check_int(output_tokens, f"{where}.output_tokens", ge=0)
        self.seed = seed
        self.error_latency = error_latency
        self.retry_after = retry_after
        self.stall = stall
        self.reply = reply
        self.output_tokens = output_tokens
        self.reported_model = reported_model
        self.slowdowns = tuple(slowdowns)
        self._rng = random.Random(seed)
        self._stream = _mix((seed & _MASK64) ^ (zlib.crc32(name.encode()) << 32))  # per (seed, name)
        self.calls = 0
        self.completed = 0
        self.cancelled = 0

    def _rng_for(self, query: Query) -> Rng:
        key = query.metadata.get("seed_key")
        if key is None:
            return self._rng
        key_bits = key if isinstance(key, int) else zlib.crc32(str(key).encode())
        return KeyedRandom(self._stream ^ (key_bits * _GOLDEN & _MASK64))

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
