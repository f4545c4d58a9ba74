"""``Runtime``: the backends, their health, the hedge budgets and the resources runs share.

A runtime is cheap to make and is meant to live as long as the service. Enter it
(``async with Runtime(...) as rt``) so it can open resources (HTTP clients) and close them
again on exit; a runtime never entered gives its HTTP backends a one-shot client per call.
``specexec.run`` without ``runtime=`` uses the process-default runtime (``specexec.configure``
sets it; see ``_default``), whose clients are pooled per event loop without entering it.
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import anyio
from anyio.abc import TaskGroup
from anyio.streams.memory import MemoryObjectSendStream

from ._backend import Backend, BackendBase
from ._core import Resolved
from ._default import default_runtime as default_runtime
from ._default import loop_resources
from ._engine import Result, check_streamable, execute
from ._errors import PolicyError
from ._health import BackendHealth, BreakerConfig, CircuitBreaker, FailoverThrottle, HealthConfig, HedgeBudget
from ._health._budget import HedgeBudgetLike
from ._health._limits import Concurrency, RateLimit
from ._policy import HedgeBudgetConfig, Policy
from ._query import Query, as_query, estimate_input_tokens
from ._resources import Resources, _current
from ._stream import Stream
from ._trace import Trace, TraceSink
from ._warm_up import WarmUp, exercise_engine

if TYPE_CHECKING:
    from .routing import Router

_log = logging.getLogger("specexec")


class HealthFeedLike(Protocol):
    """Something that keeps a runtime's health current while the runtime is entered."""

    async def follow(self, runtime: Runtime) -> None:
        """Run until cancelled, updating ``runtime``'s backend health; must never raise."""
        ...


class SharedLimits(Protocol):
    """Rate limits shared beyond this process (``specexec.stores.RedisRateLimits``)."""

    def limiter(self, backend: str, kind: str, rate_per_minute: float) -> RateLimit:
        """The shared ``kind`` (``"rpm"`` / ``"tpm"``) limit of ``backend``."""
        ...

    def hedge_budget(self, config: HedgeBudgetConfig) -> HedgeBudgetLike:
        """The fleet-wide hedge budget of ``config``."""
        ...

    def concurrency(self, backend: str, limit: int) -> Concurrency:
        """The fleet-wide ``max_concurrency`` of ``backend``."""
        ...

    def breaker(self, backend: str, config: BreakerConfig) -> CircuitBreaker | None:
        """The fleet-wide circuit breaker of ``backend``, or ``None`` to keep the in-process one."""
        ...

    async def sync(self) -> None:
        """Sync once now (the runtime does it on entry, before any run); must never raise."""
        ...

    async def follow(self, runtime: Runtime) -> None:
        """Keep the shared limits in sync until cancelled; must never raise."""
        ...


class BackendState:
    """One backend as a runtime knows it: the backend, its live health, its failover throttle.

    The throttle (gRPC's retry throttling, per target): a launch *after a failure* may go to
    this backend only while its own recent attempts mostly succeed. A dead provider still
    fails over to healthy ones; when every backend fails, failovers stop instead of doubling
    the load on a sick fleet.
    """

    __slots__ = (
        "_counter", "backend", "context_window", "domain", "health", "input_price", "name", "output_price",
        "provider", "region", "throttle",
    )  # fmt: skip

    def __init__(self, backend: Backend, config: HealthConfig, shared_limits: SharedLimits | None = None) -> None:
        self.backend = backend
        self.name = backend.name
        self.provider = backend.provider
        self.region = backend.region
        self.domain = (backend.provider, backend.region)  # its failure domain: hedges prefer another
        self.input_price = backend.input_price
        self.output_price = backend.output_price
        self.throttle = FailoverThrottle()
        counter = getattr(backend, "count_input_tokens", None)
        generic = getattr(counter, "__func__", None) is BackendBase.count_input_tokens
        self._counter: Callable[[Query], int] | None = None if counter is None or generic else counter
        limits = getattr(backend, "limits", None)
        breaker: BreakerConfig | None = getattr(backend, "breaker", None)
        circuit = (
            shared_limits.breaker(backend.name, breaker if breaker is not None else config.breaker)
            if shared_limits is not None
            else None
        )
        self.health = BackendHealth(
            backend.name,
            config,
            rpm=getattr(limits, "rpm", None),
            tpm=getattr(limits, "tpm", None),
            max_concurrency=getattr(limits, "max_concurrency", None),
            breaker=breaker,
            rate_limiter=(
                (lambda kind, rate: shared_limits.limiter(backend.name, kind, rate))
                if shared_limits is not None
                else None
            ),
            concurrency=(
                shared_limits.concurrency(backend.name, limit)
                if shared_limits is not None and (limit := getattr(limits, "max_concurrency", None)) is not None
                else None
            ),
            circuit=circuit,
        )
        self.context_window: int | None = getattr(backend, "context_window", None)

    def input_tokens(self, query: Query, estimate: int | None = None) -> int:
        """Upper bound on the input tokens of ``query`` here: the backend's own count when it
        has one, else ``estimate`` (the generic bound, computed once per run by the engine)."""
        if self._counter is not None:
            return int(self._counter(query))
        return estimate if estimate is not None else estimate_input_tokens(query)

    def worst_case_cost(self, query: Query, estimate: int | None = None) -> float:
        """USD if ``query`` uses all its input estimate and ``max_tokens`` of output."""
        # the engine's estimate without a call to `input_tokens` when this backend has no counter (per launch)
        tokens = estimate if estimate is not None and self._counter is None else self.input_tokens(query, estimate)
        return (tokens * self.input_price + query.max_tokens * self.output_price) / 1e6


class Runtime:
    """Owns per-backend state (health, limits), hedge budgets, trace sinks and resources.

    - ``backends``: the backends policies may name.
    - ``health``: windows, warm-up and breaker settings for every backend.
    - ``sinks``: callables that receive each finished ``Trace`` (e.g. ``JsonLinesSink``).
    - ``feeds``: health feeds (e.g. ``HealthFeed`` following a probe daemon) that run in the
      background while the runtime is entered, and stop when it exits.
    - ``shared_limits``: rate limits shared by every process (``specexec.stores.RedisRateLimits``;
      with ``breakers=True`` the circuit breakers too); synced in the background while the
      runtime is entered.

    ``await rt.run(query, policy)`` runs one query; when it returns or raises, every attempt
    it started has finished or been cancelled.
    """

    def __init__(
        self,
        backends: Iterable[Backend] = (),
        *,
        health: HealthConfig | None = None,
        sinks: Sequence[TraceSink] = (),
        feeds: Sequence[HealthFeedLike] = (),
        shared_limits: SharedLimits | None = None,
    ) -> None:
        self.health_config = health or HealthConfig()
        self.shared_limits = shared_limits
        self.sinks = list(sinks)
        self._states: dict[str, BackendState] = {}
        self._implicit: set[str] = set()  # names registered from policies' Backend objects
        self._resolved: weakref.WeakKeyDictionary[Policy, Resolved] = weakref.WeakKeyDictionary()
        self._last_resolved: tuple[Policy, Resolved] | None = None
        self._budgets: dict[HedgeBudgetConfig, HedgeBudgetLike] = {}
        self._resources: Resources | None = None
        self.feeds = list(feeds) + ([shared_limits] if shared_limits is not None else [])
        self._feed_group: TaskGroup | None = None
        self._loop_pooled = False  # the process default: resources per event loop while not entered
        for backend in backends:
            self.add_backend(backend)

    # -- backends ----------------------------------------------------------------------------

    def add_backend(self, backend: Backend) -> None:
        """Register ``backend`` under its name (a different backend with the same name is an error)."""
        self._register(backend, replaceable=False)

    def _register(self, backend: Backend, *, replaceable: bool) -> BackendState:
        if not (hasattr(backend, "complete") and isinstance(getattr(backend, "name", None), str)):
            raise PolicyError(f"not a backend (needs .name and async .complete): {backend!r}", path="$.backends")
        known = self._states.get(backend.name)
        if known is not None:
            if known.backend is backend:
                return known
            if not (replaceable and known.name in self._implicit):
                raise PolicyError(f"two different backends are named {backend.name!r}", path="$.backends")
        if replaceable:
            self._implicit.add(backend.name)
        state = self._states[backend.name] = BackendState(backend, self.health_config, self.shared_limits)
        return state

    @classmethod
    def from_config(cls, source: str | Path, **options: Any) -> Runtime:
        """A runtime with the backends and health settings of a TOML file (or text); see
        ``specexec.config``. ``options`` go to the constructor (``sinks=``, ``feeds=``, ...)."""
        from .config import RuntimeConfig

        config = RuntimeConfig.load(source, extra=options.pop("extra", ()))
        return cls(config.build_backends(), health=config.health, **options)

    @property
    def backends(self) -> dict[str, Backend]:
        """The registered backends by name."""
        return {name: s.backend for name, s in self._states.items()}

    def health(self, name: str) -> BackendHealth:
        """The live health of backend ``name``."""
        return self.state_for(name).health

    def state_for(self, backend: str | Backend) -> BackendState:
        """The state of a backend given by name or object.

        An object not registered yet is registered on first use; a later, different object
        with the same name replaces such an implicit registration (its health starts afresh),
        but never a backend given to the constructor or ``add_backend``.
        """
        if isinstance(backend, str):
            state = self._states.get(backend)
            if state is None:
                known = ", ".join(sorted(self._states)) or "none registered"
                hint = self._register_hint()
                raise PolicyError(f"unknown backend {backend!r}; known: {known}; {hint}", path="$.candidates")
            return state
        return self._register(backend, replaceable=True)

    def _register_hint(self) -> str:
        if self._loop_pooled:
            return (
                "register it at start-up with specexec.configure(backends=[...]) or "
                "specexec.configure('specexec.toml'), or pass runtime= to specexec.run"
            )
        return "give it to Runtime(backends=[...]) or runtime.add_backend(...)"

    def resolve(self, policy: Policy) -> Resolved:
        """The states of ``policy``'s candidates, a tuple (checked once per policy, then cached
        with what each run of it needs: its plan, its hedge budget)."""
        last = self._last_resolved  # the policy of the previous run, most often this one's
        if last is not None and last[0] is policy:
            return last[1]
        states = self._resolved.get(policy)
        if states is None:
            resolved = []
            for i, c in enumerate(policy.candidates):
                try:
                    resolved.append(self.state_for(c))
                except PolicyError as exc:
                    raise PolicyError(str(exc).rsplit(" (at ", 1)[0], path=f"$.candidates[{i}]") from None
            if policy.scorer is not None and isinstance(getattr(policy.scorer, "backend", None), str):
                self.state_for(policy.scorer.backend)  # type: ignore[union-attr]
            states = self._resolved[policy] = Resolved.of(resolved, policy, self)
        self._last_resolved = (policy, states)
        return states

    # -- shared scheduler state ----------------------------------------------------------------

    def hedge_budget(self, config: HedgeBudgetConfig) -> HedgeBudgetLike:
        """The hedge budget shared by every policy with this budget config."""
        budget = self._budgets.get(config)
        if budget is None:
            if self.shared_limits is not None:
                budget = self._budgets[config] = self.shared_limits.hedge_budget(config)
            else:
                budget = self._budgets[config] = HedgeBudget(config.max_extra_load, config.min_per_second, config.ttl)
        return budget

    def emit(self, trace: Trace) -> None:
        """Send a finished trace to every sink; a failing sink is logged, never raised."""
        for sink in self.sinks:
            try:
                sink(trace)
            except Exception:
                _log.exception("specexec: trace sink %r failed", sink)

    # -- running -----------------------------------------------------------------------------

    async def run(self, query: str | Query, policy: Policy | Router) -> Result:
        """Answer ``query`` under ``policy`` (or a ``Router``, which picks the route's policy).

        Raises ``NoAcceptableResponse``, ``DeadlineExceeded``, ``BudgetExceeded``, a fatal
        ``BackendError`` or ``PolicyError`` (an unknown backend name, before anything is sent).
        When it returns or raises, every attempt it started has finished or been cancelled;
        cancelling the caller cancels them and the cancellation propagates.
        """
        if not isinstance(policy, Policy):
            from .routing import Router

            if not isinstance(policy, Router):
                raise TypeError(f"policy must be a specexec.Policy or Router, got {type(policy).__name__}")
            q = as_query(query)
            token = _current.set(self._run_resources())
            try:
                return await policy._execute(self, q)  # the router decides, then calls the one engine
            finally:
                _current.reset(token)
        q = as_query(query)
        states = self.resolve(policy)
        token = _current.set(self._run_resources())
        try:
            return await execute(self, q, policy, states)
        finally:
            _current.reset(token)

    def stream(self, query: str | Query, policy: Policy | Router) -> Stream:
        """Stream the answer to ``query`` under ``policy``: ``async with rt.stream(q, p) as s:
        async for delta in s: ...``; ``s.result`` after the end. The attempts race to their
        first token (or a verified prefix); the caller reads only the committed attempt's text.
        A ``Router`` decides the route first, then streams its policy (``Router.stream``).
        When the ``async with`` exits, every attempt it started has finished or been cancelled."""
        if not isinstance(policy, Policy):
            from .routing import Router

            if isinstance(policy, Router):
                return policy.stream(query, self)
            raise TypeError(f"policy must be a specexec.Policy or Router, got {type(policy).__name__}")
        check_streamable(policy)
        q = as_query(query)
        states = self.resolve(policy)

        async def start(sink: MemoryObjectSendStream[str]) -> Result:
            token = _current.set(self._run_resources())
            try:
                return await execute(self, q, policy, states, sink)
            finally:
                _current.reset(token)

        return Stream(start)

    async def warm_up(self, *, open_clients: bool = True) -> None:
        """Do now, on the running loop, what the first run would do on the request path.

        Imports what runs need on this event loop (a throwaway single, race, hedge and stream
        over local callables: none of this runtime's backends is called, no trace reaches its
        sinks), then lets each backend with an ``async def warm_up()`` prepare itself: the HTTP
        backends exercise their HTTP path once against a listener of their own on 127.0.0.1
        and, with ``open_clients`` (the default) in an entered runtime or the process default,
        create their host's shared client (its SSL context; no connection to the provider is
        opened and nothing is sent to it). Call it at start-up, on the loop that will serve;
        it may be called again (it then does little).
        """
        await exercise_engine()
        token = _current.set(self._run_resources() if open_clients else None)
        try:
            for state in list(self._states.values()):
                if isinstance(state.backend, WarmUp):
                    await state.backend.warm_up()
        finally:
            _current.reset(token)

    def _run_resources(self) -> Resources | None:
        """The resources a run uses: this runtime's own while entered; for the process
        default not entered, the running event loop's pool; otherwise none (one-shot clients)."""
        resources = self._resources
        if resources is None and self._loop_pooled:
            return loop_resources(self)
        return resources

    async def __aenter__(self) -> Runtime:
        if self._resources is not None:
            raise RuntimeError("this Runtime is already entered")
        self._resources = Resources()
        if self.shared_limits is not None:  # leases before the first run, so none starts on the fallback
            await self.shared_limits.sync()
        if self.feeds:
            group = anyio.create_task_group()
            await group.__aenter__()
            self._feed_group = group
            for feed in self.feeds:
                group.start_soon(feed.follow, self)
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        group, self._feed_group = self._feed_group, None
        try:
            if group is not None:
                group.cancel_scope.cancel()
                await group.__aexit__(None, None, None)
        finally:
            resources, self._resources = self._resources, None
            if resources is not None:
                await resources.aclose()


async def run(query: str | Query, policy: Policy | Router, *, runtime: Runtime | None = None) -> Result:
    """Answer ``query`` under ``policy`` (or a ``Router``) — hedged, raced, verified, within budget.

    Without ``runtime=`` the process-default runtime is used: the backends and config given to
    ``specexec.configure`` (backends given as objects in the policy register there on first
    use); its HTTP clients are pooled per event loop. When it returns or raises, every attempt it
    started has finished or been cancelled; the caller's cancellation propagates.
    """
    return await (runtime if runtime is not None else default_runtime()).run(query, policy)


async def warm_up(*, runtime: Runtime | None = None, open_clients: bool = True) -> None:
    """Warm up ``runtime`` (the process default without it) on the running loop: see ``Runtime.warm_up``.

    After it, the first run in the process imports nothing and finds its HTTP clients made.
    """
    await (runtime if runtime is not None else default_runtime()).warm_up(open_clients=open_clients)


def stream(query: str | Query, policy: Policy | Router, *, runtime: Runtime | None = None) -> Stream:
    """Stream the answer to ``query`` under ``policy`` (see ``Runtime.stream``)."""
    return (runtime if runtime is not None else default_runtime()).stream(query, policy)
