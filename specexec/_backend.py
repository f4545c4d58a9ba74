"""The backend protocol, the shared base of the built-in backends, and ``CallableBackend``."""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, Protocol, cast, runtime_checkable

import msgspec

from ._checks import check_int, check_number
from ._errors import PolicyError
from ._health import BreakerConfig
from ._query import Query, Response, StreamChunk, Usage, estimate_input_tokens, estimate_tokens


class Limits(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A backend's limits: requests and tokens per minute, concurrent attempts (``None`` = none)."""

    rpm: float | None = None
    tpm: float | None = None
    max_concurrency: int | None = None

    def __post_init__(self) -> None:
        for field in ("rpm", "tpm"):
            value = getattr(self, field)
            if value is not None:
                check_number(value, f"$.{field}", gt=0.0, unit="per minute; leave it out for no limit")
        if self.max_concurrency is not None:
            check_int(
                self.max_concurrency,
                "$.max_concurrency",
                ge=1,
                why=" (0 would never admit an attempt; leave it out for no limit)",
            )


def worst_case_cost(backend: Backend, query: Query) -> float:
    """USD ``query`` may cost at ``backend``: its whole input bound (``count_input_tokens``, or the
    generic estimate) and ``max_tokens`` output at the backend's prices — what a reservation holds
    before the call is sent."""
    counter = getattr(backend, "count_input_tokens", None)
    tokens = int(counter(query)) if counter is not None else estimate_input_tokens(query)
    return (tokens * backend.input_price + query.max_tokens * backend.output_price) / 1e6


@runtime_checkable
class Backend(Protocol):
    """One model at one provider in one region.

    ``complete`` turns a ``Query`` into a ``Response`` or raises a ``BackendError``; it must
    let cancellation through (a cancelled attempt stops at once and releases what it holds).
    Optionally, ``async def stream(query) -> AsyncIterator[StreamChunk]`` (an async generator)
    yields the answer as it is generated; ``specexec.stream`` uses it (without it, the whole
    answer of ``complete`` is one chunk).
    Prices are USD per 1M tokens.
    """

    name: str
    provider: str
    region: str
    model: str
    input_price: float
    output_price: float

    async def complete(self, query: Query) -> Response:
        """Send ``query``; return the response or raise ``BackendError``."""
        ...


class BackendBase:
    """Identity, prices and limits shared by the built-in backends.

    Subclasses implement ``complete``. ``count_input_tokens`` is the estimate used for cost
    reservation; override it with a real tokenizer where one is available.
    ``context_window`` (tokens, optional): a candidate whose window cannot hold the query's
    input-token bound plus ``max_tokens`` is skipped before launch. ``breaker``: this
    backend's own circuit-breaker settings (default: the runtime's ``HealthConfig.breaker``).
    """

    def __init__(
        self,
        name: str,
        *,
        provider: str = "local",
        region: str = "local",
        model: str | None = None,
        input_price: float = 0.0,
        output_price: float = 0.0,
        limits: Limits | None = None,
        context_window: int | None = None,
        breaker: BreakerConfig | None = None,
    ) -> None:
        if not isinstance(name, str) or not name:
            raise PolicyError(f"backend name must be a non-empty string, got {name!r}", path="$.name")
        for field, price in (("input_price", input_price), ("output_price", output_price)):
            check_number(price, f"$.backends.{name}.{field}", ge=0.0, unit="USD per 1M tokens")
        if limits is not None and not isinstance(limits, Limits):
            raise PolicyError(
                f"limits must be a specexec.Limits, got {type(limits).__name__}", path=f"$.backends.{name}.limits"
            )
        if context_window is not None and (
            not isinstance(context_window, int) or isinstance(context_window, bool) or context_window < 1
        ):
            raise PolicyError(
                f"context_window must be a positive number of tokens, got {context_window!r}",
                path=f"$.backends.{name}.context_window",
            )
        if breaker is not None and not isinstance(breaker, BreakerConfig):
            raise PolicyError(
                f"breaker must be a BreakerConfig, got {type(breaker).__name__}", path=f"$.backends.{name}.breaker"
            )
        self.name = name
        self.provider = provider
        self.region = region
        self.model = model if model is not None else name
        self.input_price = float(input_price)
        self.output_price = float(output_price)
        self.limits = limits or Limits()
        self.context_window = context_window
        self.breaker = breaker

    def count_input_tokens(self, query: Query) -> int:
        """Upper bound on the input tokens ``query`` costs at this backend."""
        return estimate_input_tokens(query)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name} {self.model}@{self.provider}/{self.region}>"


CompleteFn = Callable[[Query], Awaitable[Response | str]] | Callable[[Query], AsyncIterator[str | StreamChunk]]


class CallableBackend(BackendBase):
    """A backend around any async function ``fn(query) -> Response | str``, or an async
    generator function ``fn(query)`` yielding ``str`` pieces (or ``StreamChunk``s): a streaming backend.

    A returned ``str`` (or the joined pieces) becomes a ``Response`` whose usage is estimated
    (and marked so) and whose model is this backend's pinned model.
    """

    def __init__(
        self,
        name: str,
        fn: CompleteFn,
        *,
        provider: str = "local",
        region: str = "local",
        model: str | None = None,
        input_price: float = 0.0,
        output_price: float = 0.0,
        limits: Limits | None = None,
        context_window: int | None = None,
        breaker: BreakerConfig | None = None,
    ) -> None:
        if not callable(fn):
            raise TypeError(f"CallableBackend {name!r}: fn must be an async function, got {fn!r}")
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
        self._fn = fn
        self._streams = inspect.isasyncgenfunction(fn)

    async def stream(self, query: Query) -> AsyncIterator[StreamChunk]:
        """The pieces an async generator function yields (a plain function's answer in one piece)."""
        if not self._streams:
            response = await self.complete(query)
            yield StreamChunk(response.text, response.usage, response.model, response.finish_reason)
            return
        pieces = cast("AsyncIterator[str | StreamChunk]", self._fn(query))
        try:
            async for piece in pieces:
                if isinstance(piece, StreamChunk):
                    yield piece
                elif isinstance(piece, str):
                    yield StreamChunk(piece)
                else:
                    raise TypeError(
                        f"CallableBackend {self.name!r}: the generator yielded {type(piece).__name__}, "
                        "expected str or StreamChunk"
                    )
        finally:
            await cast("Any", pieces).aclose()

    async def complete(self, query: Query) -> Response:
        """Call the wrapped function; wrap a plain string answer into a ``Response``."""
        if self._streams:
            parts: list[str] = []
            async for chunk in self.stream(query):
                parts.append(chunk.text)
            out: object = "".join(parts)
        else:
            out = await self._await(query)
        if isinstance(out, Response):
            return out
        if isinstance(out, str):
            usage = Usage(
                input_tokens=estimate_input_tokens(query),
                output_tokens=min(estimate_tokens(out), query.max_tokens),
                estimated=True,
            )
            return Response(text=out, usage=usage, model=self.model)
        raise TypeError(f"CallableBackend {self.name!r}: fn returned {type(out).__name__}, expected Response or str")

    async def _await(self, query: Query) -> object:
        pending = self._fn(query)
        if not inspect.isawaitable(pending):
            raise TypeError(f"CallableBackend {self.name!r}: fn must be async (return an awaitable), got {pending!r}")
        return await pending
