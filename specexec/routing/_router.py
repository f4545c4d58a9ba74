"""``Router``: picks a route for a query; each route is a ``Policy`` run on the one engine.

Theory of operation. Selectors are asked in order; the first confident answer names the
route (``default`` when none does). Rules (``slow = False``) are asked first, at once; when
``speculate=True`` and a slow selector is still to be asked, the *guessed* route (the one
most decided lately for similar traffic, by decayed counts; else the default) starts at
t = 0 while the slow selectors run. A decision that agrees lets the guess run on (no added latency); one that disagrees
cancels it (what it cost is counted in ``speculation_cost`` and in the result's cost) and
starts the chosen route. The router never launches attempts itself: every run, the guess,
the chosen route and an LLM router's own call, is ``specexec._engine.execute``.

A ``Budget`` steers the decision (downgrades by remaining fraction) and reserves each route
run's worst case in its store until the run settles.

Cancellation: when ``run`` returns or raises, every run it started has finished or been
cancelled; the caller's cancellation propagates.
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import msgspec

from .._clock import loop_clock
from .._engine import Result, execute
from .._errors import BudgetExceeded, PolicyError
from .._policy import Policy
from .._query import Query, as_query
from .._resources import _current
from .._trace import RouteDecision
from ._budget import Budget, BudgetState
from ._context import SelectContext, _Capture, held_to
from ._llm import LlmRouter
from ._selectors import Choice, Selector

if TYPE_CHECKING:
    from anyio.streams.memory import MemoryObjectSendStream

    from .._runtime import Runtime
    from .._stream import Stream

_log = logging.getLogger("specexec.routing")

SimilarFn = Callable[[Query], Hashable]
_MEMORY = 4096  # how many traffic classes the speculative guess remembers
_DECAY = 0.8  # weight of older decisions in the guess: about the last five count


def default_similar(query: Query) -> Hashable:
    """Traffic is "similar" when tenant, ``feature`` and ``step`` agree."""
    md = query.metadata
    return (query.tenant, md.get("feature"), md.get("step"))


def similar_by(keys: Sequence[str]) -> SimilarFn:
    """A ``similar`` function: traffic is similar when these agree — ``"tenant"``,
    ``"priority"``, or any ``Query.metadata`` key (``"feature"``, ``"step"``, ...)."""
    names = tuple(keys)
    if not names or not all(isinstance(k, str) and k for k in names):
        raise PolicyError(f"similar must be a non-empty list of key names, got {list(names)!r}", path="$.similar")

    def similar(query: Query) -> Hashable:
        md = query.metadata
        return tuple(query.tenant if k == "tenant" else query.priority if k == "priority" else md.get(k) for k in names)

    return similar


class _Guess:
    """The speculative run's outcome, and its own trace capture (for its exact cost)."""

    __slots__ = ("capture", "error", "result", "scope")

    def __init__(self, capture: _Capture) -> None:
        self.scope = anyio.CancelScope()
        self.capture = capture
        self.result: Result | None = None
        self.error: Exception | None = None


class Router:
    """Maps a query to a route name; each route is a ``Policy`` (which may hedge, race, cascade…).

    - ``routes``: route name → ``Policy``.
    - ``select``: selectors asked in order (``routing.rule``, ``classifier``, ``semantic``,
      ``trained``, ``llm``); the first confident decision wins; none → ``default``.
    - ``speculate``: start the likely route at t = 0 while slow selectors run (the likely
      route: the one most decided lately for similar traffic, each older decision weighing
      0.8 of the next; the default for traffic not seen yet).
    - ``budget``: a ``specexec.Budget`` that downgrades routes and refuses runs past its limit.
    - ``similar``: what makes traffic "similar" for the speculative guess (default: tenant,
      ``feature``, ``step``).

    A router is accepted wherever a policy is: ``await specexec.run(query, router)``.
    """

    def __init__(
        self,
        routes: Mapping[str, Policy],
        select: Sequence[Selector] = (),
        *,
        default: str,
        speculate: bool = False,
        budget: Budget | None = None,
        similar: SimilarFn = default_similar,
        name: str | None = None,
    ) -> None:
        if not routes:
            raise PolicyError("a router needs at least one route", path="$.routes")
        for route, policy in routes.items():
            if not isinstance(policy, Policy):
                raise PolicyError(
                    f"route {route!r} must be a specexec.Policy, got {policy!r}", path=f"$.routes.{route}"
                )
        if default not in routes:
            raise PolicyError(f"default {default!r} is not a route; routes: {', '.join(routes)}", path="$.default")
        for i, selector in enumerate(select):
            missing = [a for a in ("name", "slow", "threshold") if not hasattr(selector, a)]
            if not callable(getattr(selector, "select", None)) or missing:
                needs = ", ".join(["async .select", *(f".{a}" for a in missing)])
                raise PolicyError(f"not a selector (needs {needs}): {selector!r}", path=f"$.select[{i}]")
            target = getattr(selector, "route", None)
            if isinstance(target, str) and target not in routes:
                raise PolicyError(f"selector routes to unknown route {target!r}", path=f"$.select[{i}].route")
            if isinstance(selector, LlmRouter):  # its labels are the routes the model may answer
                for j, label in enumerate(selector.labels):
                    if label not in routes:
                        raise PolicyError(
                            f"LLM router label {label!r} names no route; routes: {', '.join(routes)}",
                            path=f"$.select[{i}].labels[{j}]",
                        )
        if budget is not None:
            for j, rule in enumerate(budget.downgrades):
                problem = rule.unknown_route(routes)
                if problem is not None:
                    what, where = problem
                    raise PolicyError(
                        f"budget downgrade below={rule.below:g}: {what}; routes: {', '.join(routes)}",
                        path=f"$.budget.downgrade[{j}]{where}",
                    )
        self.routes = dict(routes)
        self.selectors = list(select)
        self.default = default
        self.speculate = speculate
        self.budget = budget
        self.similar = similar
        self.name = name
        self._recent: OrderedDict[Hashable, dict[str, float]] = OrderedDict()
        self.source: Any = None  # the TOML shape, when loaded from TOML (for to_toml)
        self.origin: str | None = None  # the file it was loaded from (named by `check`'s errors)

    # -- loading -------------------------------------------------------------------------------

    @classmethod
    def from_toml(cls, source: str | Path, *, classifiers: Mapping[str, Any] | None = None, **options: Any) -> Router:
        """Load from a TOML file or text (see ``specexec.routing`` for the shape). Errors are
        ``PolicyError`` naming the file and key path. ``classifiers`` maps the names that
        ``kind = "classifier"`` selectors use to callables; ``options`` go to the embedder-based
        selectors (``embedder=``)."""
        from ._toml import load_router

        return load_router(source, classifiers=classifiers or {}, **options)

    def check(self, runtime: Runtime) -> None:
        """Check every route's policy against ``runtime``'s backends — at start-up, so that a route
        naming an unknown backend fails there, not on every request it gets. ``PolicyError`` naming
        the route's key path (``$.routes.<route>.candidates[i]``) and the router's file."""
        checks = [(f"route {route!r}", f"$.routes.{route}", policy) for route, policy in self.routes.items()]
        checks += [
            (f"selector {selector.name!r}", f"$.select[{i}].policy", selector.policy)
            for i, selector in enumerate(self.selectors)
            if isinstance(selector, LlmRouter)
        ]
        for what, path, policy in checks:
            try:
                runtime.resolve(policy)
            except PolicyError as exc:
                message = str(exc).rsplit(" (at ", 1)[0]
                raise PolicyError(f"{what}: {message}", path=f"{path}{exc.path[1:]}", source=self.origin) from None

    def to_toml(self) -> str:
        """The router as TOML (only for a router loaded from TOML: code-built selectors and
        policies holding objects have no TOML form)."""
        from ._toml import dump_router

        if self.source is None:
            raise PolicyError("only a router loaded with Router.from_toml can be written back as TOML", path="$")
        return dump_router(self.source)

    # -- deciding --------------------------------------------------------------------------------

    async def decide(self, query: str | Query, runtime: Runtime | None = None) -> RouteDecision:
        """The route ``query`` would take (selectors and budget downgrade; nothing is run but an
        LLM router's own call, which is traced)."""
        from .._runtime import default_runtime

        rt = runtime or default_runtime()
        q = as_query(query)
        now = loop_clock()
        t0 = now()
        capture = _Capture(rt)
        ctx = SelectContext(capture, now)
        state: BudgetState | None = None
        token = _current.set(rt._run_resources())  # pooled clients, as Runtime.run
        try:
            state = await self.budget.state(q) if self.budget is not None else None
            ctx.attach_budget(self.budget, state, lambda p, query: self._bound(p, query, rt))
            passed: list[str] = []
            decision = await self._choose(self.selectors, q, ctx, passed)
            return self._decision(q, decision, ctx, t0, state, rt, passed)
        finally:
            _current.reset(token)
            if self.budget is not None and state is not None and ctx.unbooked > 0:
                with anyio.CancelScope(shield=True):
                    await self.budget.settle(state, 0.0, ctx.unbooked)
            capture.flush(lambda trace: None)

    async def _choose(
        self, selectors: Sequence[Selector], q: Query, ctx: SelectContext, passed: list[str]
    ) -> tuple[Choice, str, list[str]] | None:
        for selector in selectors:
            try:
                choice = await selector.select(q, ctx)
            except Exception as exc:
                passed.append(f"{selector.name}: {type(exc).__name__}: {exc}")
                continue
            if choice is None:
                passed.append(f"{selector.name}: no decision")
            elif choice.route not in self.routes:
                passed.append(f"{selector.name}: unknown route {choice.route!r}")
            elif choice.confidence is not None and not choice.confidence >= selector.threshold:  # NaN: below any
                passed.append(
                    f"{selector.name}: {choice.route} at confidence {choice.confidence:.3g} < {selector.threshold:g}"
                )
            else:
                return choice, selector.name, passed
        return None

    def _decision(
        self,
        q: Query,
        chosen: tuple[Choice, str, list[str]] | None,
        ctx: SelectContext,
        t0: float,
        state: BudgetState | None,
        rt: Runtime,
        passed: list[str] | None = None,
    ) -> RouteDecision:
        if chosen is None:
            record = RouteDecision(self.default, "default", "no selector decided", passed=passed or [])
        else:
            choice, selector, why_passed = chosen
            record = RouteDecision(choice.route, selector, choice.why, choice.confidence, passed=why_passed)
        record.latency = ctx.now() - t0
        record.cost = ctx.cost
        step = q.metadata.get("step")
        record.step = None if step is None else str(step)
        self._steer(record, q, state, rt)
        return record

    def _steer(self, record: RouteDecision, q: Query, state: BudgetState | None, rt: Runtime) -> None:
        if self.budget is None or state is None:
            return
        record.budget_key, record.budget_remaining, record.budget = state.key, state.remaining, self.budget.name
        steered = self.budget.steer(record.name, q, state, lambda: self._cheapest(q, rt))
        if steered != record.name:
            if steered not in self.routes:
                raise PolicyError(f"budget downgrade names unknown route {steered!r}", path="$.budget.downgrade")
            record.requested, record.name = record.name, steered

    def _cheapest(self, q: Query, rt: Runtime) -> str:
        return min(self.routes, key=lambda r: self._bound(self.routes[r], q, rt))

    @staticmethod
    def _bound(policy: Policy, q: Query, rt: Runtime) -> float:
        """The most a run of ``policy`` can cost (``Policy.cost_bound``). A run under a budget is
        held to it (``held_to``): what it leaves out — a custom scorer's calls — is refused, not
        overspent."""
        return policy.cost_bound(q, lambda candidate, query: rt.state_for(candidate).worst_case_cost(query))

    def _room_for(self, selector: LlmRouter, q: Query, rt: Runtime) -> float:
        """The worst case of ``selector``'s call for ``q``; 0 when it cannot be made (an unknown
        backend: the call fails and the selector passes — routing never fails a run)."""
        try:
            return self._bound(selector.policy, selector.prompt(q), rt)
        except PolicyError:
            return 0.0

    def _similar_key(self, q: Query) -> Hashable | None:
        """``similar(q)`` as a dictionary key: an unhashable one (a list or dict in the metadata) by
        its JSON; ``None`` (nothing remembered) when ``similar`` raises — routing never fails a run."""
        try:
            key = self.similar(q)
            hash(key)
            return key
        except TypeError:
            try:
                return msgspec.json.encode(key, order="deterministic")
            except (TypeError, ValueError, msgspec.EncodeError):
                return repr(key)
        except Exception:
            _log.exception("specexec: the router's similar function failed; guessing the default route")
            return None

    def _guess(self, q: Query) -> str:
        """The route most decided lately for similar traffic (decayed counts), else the default."""
        key = self._similar_key(q)
        recent = self._recent.get(key) if key is not None else None
        return max(recent, key=recent.__getitem__) if recent else self.default

    def _remember(self, q: Query, route: str) -> None:
        key = self._similar_key(q)
        if key is None:
            return
        recent = self._recent.get(key)
        if recent is None:
            recent = self._recent[key] = {}
            if len(self._recent) > _MEMORY:
                self._recent.popitem(last=False)
        else:
            self._recent.move_to_end(key)
        for r in recent:
            recent[r] *= _DECAY
        recent[route] = recent.get(route, 0.0) + 1.0

    # -- running ---------------------------------------------------------------------------------

    async def run(self, query: str | Query, runtime: Runtime | None = None) -> Result:
        """Route and answer ``query`` (the same as ``specexec.run(query, router, runtime=...)``)."""
        from .._runtime import default_runtime

        return await (runtime or default_runtime()).run(query, self)

    def stream(self, query: str | Query, runtime: Runtime | None = None) -> Stream:
        """Route ``query`` and stream the route's answer: ``async with router.stream(q, rt) as s:
        async for delta in s: ...``; ``s.result`` after the end (``result.route``, the trace's
        route as for ``run``). The decision comes first — a stream does not speculate, since a
        wrong guess's tokens would already have reached the reader — then the route's policy
        streams through the one engine."""
        from .._runtime import default_runtime
        from .._stream import Stream

        rt = runtime or default_runtime()
        q = as_query(query)

        async def start(sink: MemoryObjectSendStream[str]) -> Result:
            token = _current.set(rt._run_resources())  # pooled clients, as Runtime.run
            try:
                return await self._execute(rt, q, sink)
            finally:
                _current.reset(token)

        return Stream(start)

    async def _execute(self, rt: Runtime, q: Query, sink: MemoryObjectSendStream[str] | None = None) -> Result:
        """Called by ``Runtime.run`` (resources already set): decide, run, trace; with a ``sink``
        (``stream``), the route's committed text goes there and nothing is speculated."""
        now = loop_clock()
        t0 = now()
        capture = _Capture(rt)
        ctx = SelectContext(capture, now)
        record = RouteDecision(self.default)
        state: BudgetState | None = None
        try:
            state = await self.budget.state(q) if self.budget is not None else None
            ctx.attach_budget(self.budget, state, lambda p, query: self._bound(p, query, rt))
            passed: list[str] = []
            fast = 0
            while fast < len(self.selectors) and not self.selectors[fast].slow:
                fast += 1
            chosen = await self._choose(self.selectors[:fast], q, ctx, passed)
            if chosen is None and self.speculate and sink is None and fast < len(self.selectors):
                record, result = await self._speculative(rt, capture, ctx, q, t0, state, passed, fast)
            else:
                if chosen is None:
                    chosen = await self._choose(self.selectors[fast:], q, ctx, passed)
                record = self._decision(q, chosen, ctx, t0, state, rt, passed)
                if self.speculate:
                    self._remember(q, record.name)
                record.started = now() - t0
                result = await self._run_route(rt, capture, ctx, q, record.name, state, sink=sink)
            return msgspec.structs.replace(
                result,
                route=record.name,
                latency=now() - t0,
                ttft=None if result.ttft is None else result.ttft + record.started,  # from the router's start too
                cost=result.cost + record.cost + record.speculation_cost,
            )
        finally:
            if self.budget is not None and state is not None and ctx.unbooked > 0:  # router calls not reserved
                with anyio.CancelScope(shield=True):
                    await self.budget.settle(state, 0.0, ctx.unbooked)
            capture.flush(lambda trace: setattr(trace, "route", record))

    async def _speculative(
        self,
        rt: Runtime,
        capture: _Capture,
        ctx: SelectContext,
        q: Query,
        t0: float,
        state: BudgetState | None,
        passed: list[str],
        fast: int,
    ) -> tuple[RouteDecision, Result]:
        guessed = self._guess(q)
        probe = RouteDecision(guessed)
        self._steer(probe, q, state, rt)
        guess = _Guess(capture.child())
        # the LLM routers still to answer are paid beside the guess: its max_cost leaves them room
        room = sum(self._room_for(s, q, rt) for s in self.selectors[fast:] if isinstance(s, LlmRouter))
        async with anyio.create_task_group() as tg:
            tg.start_soon(self._run_guess, guess, rt, ctx, q, probe.name, state, room)
            chosen = await self._choose(self.selectors[fast:], q, ctx, passed)
            record = self._decision(q, chosen, ctx, t0, state, rt, passed)
            if record.name != probe.name:
                guess.scope.cancel()
        self._remember(q, record.name)
        record.speculated = probe.name
        if record.name == probe.name:
            record.speculation = "hit"
            if guess.error is not None:
                raise guess.error
            assert guess.result is not None
            return record, guess.result
        record.speculation = "miss"
        record.speculation_cost = guess.capture.cost
        record.started = ctx.now() - t0
        spent = ctx.cost + record.speculation_cost  # the router's calls and the cancelled guess
        return record, await self._run_route(rt, capture, ctx, q, record.name, state, spent=spent)

    async def _run_guess(
        self,
        guess: _Guess,
        rt: Runtime,
        ctx: SelectContext,
        q: Query,
        route: str,
        state: BudgetState | None,
        room: float,
    ) -> None:
        with guess.scope:
            try:
                guess.result = await self._run_route(rt, guess.capture, ctx, q, route, state, spent=room)
            except Exception as exc:  # kept until the decision says whether it matters
                guess.error = exc

    async def _run_route(
        self,
        rt: Runtime,
        capture: _Capture,
        ctx: SelectContext,
        q: Query,
        route: str,
        state: BudgetState | None,
        *,
        spent: float | None = None,
        sink: MemoryObjectSendStream[str] | None = None,
    ) -> Result:
        """Run ``route``'s policy within what is left of its ``max_cost`` after ``spent`` (default:
        what the router's calls cost, ``ctx.cost``) and within the budget's reservation."""
        policy = self.routes[route]
        spent = ctx.cost if spent is None else spent
        if spent > 0 and policy.max_cost is not None:
            left = policy.max_cost - spent
            if left <= 0:
                raise BudgetExceeded(
                    f"routing spent (or keeps room for) ${spent:.6f} of route {route!r}'s "
                    f"max_cost=${policy.max_cost:g}: nothing left"
                )
            policy = msgspec.structs.replace(policy, max_cost=left)
        states = rt.resolve(policy)
        budget = self.budget
        reserved = 0.0
        booked = False
        if budget is not None and state is not None:
            reserved = self._bound(policy, q, rt)
            booked = await budget.reserve(state, reserved)
            if booked:
                policy = held_to(policy, reserved)  # the same states: a plan does not depend on max_cost
        run = capture.child()
        try:
            return await execute(cast("Runtime", run), q, policy, states, sink)
        finally:
            if booked and budget is not None and state is not None:
                actual = run.cost
                with anyio.CancelScope(shield=True):
                    await budget.settle(state, reserved, actual)


async def decide(router: Router, query: str | Query, runtime: Runtime | None = None) -> RouteDecision:
    """The decision ``router`` would make for ``query``, without running the route (dry run)."""
    return await router.decide(query, runtime)
