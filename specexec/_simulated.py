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
from collections.abc import AsyncIterator, Callable, Mapping, Sequence

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
from ._query import Query, Response, StreamChunk, Usage, estimate_input_tokens

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


def split_reply(text: str, n: int) -> list[str]:
    """``text`` as the pieces of ``n`` tokens (one piece when ``n`` is 0): as even as can be and
    the first one never empty. A reply shorter than ``n`` characters gets one character a piece
    and some empty pieces (token steps that bring no text) between them, never first."""
    if not n:
        return [text]
    size = len(text)
    if size >= n:
        return [text[i * size // n : (i + 1) * size // n] for i in range(n)]
    return [text[-(-i * size // n) : -(-(i + 1) * size // n)] for i in range(n)]  # ceil bounds: text first


class StreamDraw:
    """One call of ``stream(query)`` drawn at once, for discrete-event drivers: the TTFT (scaled
    at the start), the raw gaps between pieces (``gap * factor(now)`` at each piece), and the
    outcome — the pieces (``split_reply``), the drawn fault, or ``None`` (it stalls)."""

    __slots__ = ("gaps", "outcome", "ttft")

    def __init__(self, ttft: float, gaps: list[float], outcome: list[str] | BackendError | None) -> None:
        self.ttft, self.gaps, self.outcome = ttft, gaps, outcome


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
    - Streaming (``stream``): with ``ttft`` (seconds or a distribution) the first of
      ``output_tokens`` pieces of the reply comes after a drawn TTFT and each next one
      ``token_time`` later (both scaled by slowdowns; ``split_reply``: a reply shorter than
      ``output_tokens`` characters sends one character a piece, and the token steps left
      without text send nothing, so the first piece always has text and comes at the TTFT);
      faults come before the first token
      (after ``error_latency`` × the TTFT). Without ``ttft`` the stream is the whole reply in
      one piece after the drawn latency. With ``ttft``, ``complete`` takes as long as the stream.

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
        ttft: float | Distribution | None = None,
        token_time: float | Distribution = 0.0,
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
        self.ttft = _latency(ttft, f"{where}.ttft") if ttft is not None else None
        self.token_time = _latency(token_time, f"{where}.token_time")
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

    async def stream(self, query: Query) -> AsyncIterator[StreamChunk]:
        """Stream the reply (see the class docstring); cancellation is let through at once."""
        if self.ttft is None:
            response = await self.complete(query)
            yield StreamChunk(response.text, response.usage, response.model, "stop")
            return
        self.calls += 1
        rng = self._rng_for(query)
        ttft = self.ttft.sample(rng) * self._factor(anyio.current_time())
        n = min(self.output_tokens, query.max_tokens)
        gaps = [self.token_time.sample(rng) for _ in range(max(n - 1, 0))]
        try:
            await self._fault_or_wait(rng, ttft)
            text = self.reply(query) if callable(self.reply) else self.reply
            for i, piece in enumerate(split_reply(text, n)):
                if i:
                    await anyio.sleep(gaps[i - 1] * self._factor(anyio.current_time()))
                if piece:  # a reply shorter than n tokens leaves some steps without text: none is sent
                    yield StreamChunk(piece)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        self.completed += 1
        usage = Usage(input_tokens=estimate_input_tokens(query), output_tokens=n)
        yield StreamChunk(usage=usage, model=self.reported_model or self.model, finish_reason="stop")

    def _fault(self, rng: Rng) -> str | None:
        """The drawn fate of one call: ``"stall"``, a fault kind, or ``None`` (it answers)."""
        roll = rng.random()
        if roll < self.stall:
            return "stall"
        roll -= self.stall
        for kind, rate in self.errors.items():
            if roll < rate:
                return kind
            roll -= rate
        return None

    async def _fault_or_wait(self, rng: Rng, latency: float) -> None:
        """Stall, or fail with a drawn fault after ``error_latency`` × ``latency``, or sleep ``latency``."""
        fault = self._fault(rng)
        if fault == "stall":
            await anyio.sleep_forever()
        if fault is not None:
            await anyio.sleep(latency * self.error_latency)
            raise self._error(fault)
        await anyio.sleep(latency)

    def draw(self, query: Query, now: float) -> tuple[float, Response | BackendError | None]:
        """A call of ``complete(query)`` started at ``now`` as one event, for discrete-event drivers:
        after how many seconds it ends and with what — the response, the drawn fault, or ``None``
        (it stalls until cancelled, after ``inf`` seconds). The same draws as ``complete``; not for
        streaming simulations (with ``ttft``), whose pieces are separate events."""
        if self.ttft is not None:
            raise TypeError(f"backend {self.name!r} streams (ttft is set): draw() covers whole answers only")
        self.calls += 1
        rng = self._rng_for(query)
        latency = self.latency.sample(rng) * self._factor(now)
        fault = self._fault(rng)
        if fault == "stall":
            return math.inf, None
        if fault is not None:
            return latency * self.error_latency, self._error(fault)
        return latency, self._answer(query)

    def draw_stream(self, query: Query, now: float) -> StreamDraw:
        """A call of ``stream(query)`` started at ``now`` as events (see ``StreamDraw``): the same
        draws, in the same order, as ``stream``. For streaming simulations (with ``ttft``)."""
        if self.ttft is None:
            raise TypeError(f"backend {self.name!r} does not stream (no ttft): use draw()")
        self.calls += 1
        rng = self._rng_for(query)
        ttft = self.ttft.sample(rng) * self._factor(now)
        n = min(self.output_tokens, query.max_tokens)
        gaps = [self.token_time.sample(rng) for _ in range(max(n - 1, 0))]
        fault = self._fault(rng)
        if fault == "stall":
            return StreamDraw(ttft, gaps, None)
        if fault is not None:
            return StreamDraw(ttft * self.error_latency, gaps, self._error(fault))
        text = self.reply(query) if callable(self.reply) else self.reply
        return StreamDraw(ttft, gaps, split_reply(text, n))

    def slowdown(self, now: float) -> float:
        """The latency factor of the slowdowns active at ``now`` (1.0 without any)."""
        return self._factor(now)

    def stream_usage(self, query: Query) -> Usage:
        """The usage the last chunk of a completed ``stream(query)`` reports."""
        return Usage(input_tokens=estimate_input_tokens(query), output_tokens=min(self.output_tokens, query.max_tokens))

    def _answer(self, query: Query) -> Response:
        text = self.reply(query) if callable(self.reply) else self.reply
        usage = Usage(
            input_tokens=estimate_input_tokens(query), output_tokens=min(self.output_tokens, query.max_tokens)
        )
        return Response(text=text, usage=usage, model=self.reported_model or self.model)

    async def complete(self, query: Query) -> Response:
        """Sleep the drawn latency (on the loop clock), then answer or raise the drawn fault.

        Cancellation is let through at once (and counted in ``cancelled``).
        """
        if self.ttft is not None:  # a streaming simulation: the answer takes as long as its stream
            started = anyio.current_time()
            parts: list[str] = []
            first: float | None = None
            final = StreamChunk()
            async for chunk in self.stream(query):
                if chunk.text and first is None:
                    first = anyio.current_time() - started
                parts.append(chunk.text)
                final = chunk if chunk.usage is not None else final
            usage = final.usage or Usage()
            return Response("".join(parts), usage, model=final.model, ttft=first, finish_reason="stop")
        self.calls += 1
        rng = self._rng_for(query)
        latency = self.latency.sample(rng) * self._factor(anyio.current_time())
        try:
            await self._fault_or_wait(rng, latency)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        self.completed += 1
        return self._answer(query)

    def _error(self, kind: str) -> BackendError:
        message = f"simulated {kind}"
        if kind == "rate_limited":
            return RateLimited(message, retry_after=self.retry_after, backend=self.name, status=429)
        return ERROR_KINDS[kind](message, backend=self.name)
