"""Scenarios: what a benchmark runs — backends, scheduled events, workload and the policies compared.

A scenario is a TOML file (the built-in ones live in ``benchmarks/scenarios/``); its leading
comment paragraph is its description. Everything is validated at load time and every error
names the file and the key path::

    PolicyError: tail.toml: max_attempts must be an integer >= 1, got 0 (at $.policies.hedge.max_attempts)

Shape (every table but ``[policies]`` is optional)::

    seed = 1                         # seeds the arrivals, the query mix and every simulated draw
    baseline = "single"              # the policy the others are compared with (default: the first)

    [workload]
    arrivals = "poisson"             # or "constant": open loop, requests sent at their intended times
    rate = 100.0                     # requests per second
    requests = 20000                 # measured requests (after `warmup`); or duration = 300.0 (seconds)
    warmup = 0                       # first requests sent but not counted
    max_in_flight = 10000            # bound on concurrent requests (latency still counts from the intended time)
    timeout = 60.0                   # a request still running after this is cancelled and counted as failed
    max_tokens = 256                 # or a distribution, e.g. { kind = "uniform", low = 64, high = 512 }
    tenants = { a = 3.0, b = 1.0 }   # tenant mix (weights)
    [[workload.queries]]             # the query mix (weights); default: one short prompt
    prompt = "What is 2 + 2? Answer with a number only."
    weight = 1.0

    [[backends]]                     # specexec.config entries (simulated for --sim/--live; the fleet
    kind = "simulated"               # serves them for --live)
    name = "a"
    latency = { kind = "lognormal", median = 0.04, sigma = 0.25 }

    # Without [[backends]] and [fleet] a scenario is for --target only (its policies name the
    # endpoints of the --target config). For a live-only scenario, the deployments of a fleet
    # config are the backends:
    # [fleet]
    # config = "default"             # benchmarks/fleet/default.toml, or a path (relative to this file)
    # prices = { alpha = [0.15, 0.60] }   # USD per 1M input/output tokens, by deployment or provider

    [health]                         # specexec.HealthConfig of each policy's fresh Runtime
    window = 60.0

    [[events]]                       # on the run's clock (seconds from its start)
    kind = "brownout"                # or "outage" (status, mode) or "rate_limit" (retry_after)
    region = "us-east"               # or backends = [...] or provider = "..."; none: every backend
    start = 60.0
    end = 120.0
    factor = 5.0

    [[phases]]                       # report windows (by intended send time)
    name = "brownout"
    start = 60.0
    end = 120.0

    [quality]                        # optional: the report's quality column
    verify = [{ kind = "regex", pattern = "^4$" }]   # what a good answer passes (verifier specs)
    pass_rate = { cheap = 0.8 }      # simulated backends: share of answers that are good

    [policies.single]                # each a specexec.Policy in its TOML shape (Policy.from_toml)
    mode = "single"
    candidates = ["a"]
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Annotated, Any, Literal

import msgspec

from specexec import Distribution, HealthConfig, Policy, PolicyError
from specexec._policy import _PolicyFile, from_file
from specexec._toml import decode_toml, read_toml_source, validation_error
from specexec.bench.fleet import FleetConfig, FleetConfigError
from specexec.config import BackendConfig, SimulatedConfig
from specexec.verifiers import VerifierSpec

__all__ = [
    "BUILTIN_DIR",
    "OWN_RUNNERS",
    "Brownout",
    "Event",
    "FleetSpec",
    "Outage",
    "Phase",
    "Quality",
    "QuerySpec",
    "RateLimitStorm",
    "Scenario",
    "Workload",
    "builtin_scenarios",
    "load_scenario",
    "resolve_scenario",
]

BUILTIN_DIR = Path(__file__).resolve().parents[1] / "scenarios"
"""Where the built-in scenarios live: ``specexec bench NAME`` finds ``NAME.toml`` here."""
OWN_RUNNERS: tuple[str, ...] = ("routing", "ttft")
"""The built-in scenarios that are programs, not TOML files: ``specexec bench NAME`` runs the
``main`` of module ``_NAME`` of this package (``--list`` shows its ``DESCRIPTION``)."""

DEFAULT_PROMPT = "What is 2 + 2? Answer with a number only."
"""The prompt of a workload that names none (the fleet's canary question)."""

_FINITE = 1e300  # msgspec takes no infinite bound: this refuses inf where the file says it (with its path)
Positive = Annotated[float, msgspec.Meta(gt=0.0, lt=_FINITE)]
NonNegative = Annotated[float, msgspec.Meta(ge=0.0, lt=_FINITE)]


class _Base(msgspec.Struct, frozen=True, forbid_unknown_fields=True, kw_only=True):
    """Base of the scenario structs: unknown keys are errors, values are immutable."""


# --------------------------------------------------------------------------- workload


class QuerySpec(_Base, frozen=True, kw_only=True):
    """One kind of query in the workload's mix: chosen with probability proportional to ``weight``.

    ``max_tokens`` and ``tenant`` override the workload's defaults for this kind. ``step`` names
    the workflow step the query is (``Query.metadata["step"]``: what a router's step rules read);
    a scenario with steps gets a per-step table in its report.
    """

    prompt: str = DEFAULT_PROMPT
    weight: Positive = 1.0
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | Distribution | None = None
    tenant: str | None = None
    step: Annotated[str, msgspec.Meta(min_length=1)] | None = None


class Workload(_Base, frozen=True, kw_only=True):
    """Open-loop arrivals and the query mix.

    Requests are sent at their *intended* times (``poisson``: exponential gaps; ``constant``:
    every ``1/rate`` seconds) whatever happens to earlier ones, and each latency is measured
    from that intended time. ``requests`` counts measured requests (the ``warmup`` first ones
    are sent but not counted); ``duration`` bounds the timeline in seconds (warm-up included);
    with both, whichever ends first. ``max_in_flight`` bounds concurrent requests; ``timeout``
    bounds each request.
    """

    arrivals: Literal["poisson", "constant"] = "poisson"
    rate: Positive = 100.0
    requests: Annotated[int, msgspec.Meta(ge=1)] | None = None
    duration: Positive | None = None
    warmup: Annotated[int, msgspec.Meta(ge=0)] = 0
    max_in_flight: Annotated[int, msgspec.Meta(ge=1)] = 10_000
    timeout: Positive = 60.0
    max_tokens: Annotated[int, msgspec.Meta(ge=1)] | Distribution = 256
    tenants: dict[str, float] = msgspec.field(default_factory=dict)
    queries: Annotated[tuple[QuerySpec, ...], msgspec.Meta(min_length=1)] = (QuerySpec(),)

    def __post_init__(self) -> None:
        if self.requests is None and self.duration is None:
            raise ValueError("give the workload's `requests` (a count) or `duration` (seconds)")

    def expected_requests(self) -> int:
        """Measured requests this workload sends (an estimate when only ``duration`` bounds it)."""
        by_duration = max(0, math.floor(self.duration * self.rate) - self.warmup) if self.duration is not None else None
        if self.requests is None:
            return by_duration or 0
        return self.requests if by_duration is None else min(self.requests, by_duration)


# --------------------------------------------------------------------------- events and phases


class _Event(_Base, tag_field="kind", frozen=True, kw_only=True):
    """Common fields of a scheduled event: active from ``start`` to ``end`` seconds of the run.

    It applies to the named ``backends``, or to every backend in ``region`` or of ``provider``
    (at most one of the three), or to every backend when none is given.
    """

    start: NonNegative = 0.0
    end: float = math.inf
    backends: tuple[str, ...] | None = None
    region: str | None = None
    provider: str | None = None

    def __post_init__(self) -> None:
        if not self.end > self.start:
            raise ValueError(f"event end ({self.end}) must be after its start ({self.start})")
        if sum(x is not None for x in (self.backends, self.region, self.provider)) > 1:
            raise ValueError("give at most one of `backends`, `region` and `provider`")

    def targets(self, backends: Iterable[tuple[str, str, str]]) -> list[str]:
        """The names among ``(name, provider, region)`` triples this event applies to."""
        out = []
        for name, provider, region in backends:
            if self.backends is not None:
                hit = name in self.backends
            elif self.region is not None:
                hit = region == self.region
            elif self.provider is not None:
                hit = provider == self.provider
            else:
                hit = True
            if hit:
                out.append(name)
        return out


class Brownout(_Event, tag="brownout", frozen=True, kw_only=True):
    """Latency ×``factor`` while active."""

    factor: Positive = 5.0


class Outage(_Event, tag="outage", frozen=True, kw_only=True):
    """Every request fails at once while active: an HTTP ``status`` (5xx) or, ``mode = "reset"``,
    a reset connection (both are ``Unavailable``)."""

    mode: Literal["error", "reset"] = "error"
    status: Annotated[int, msgspec.Meta(ge=500, le=599)] = 503


class RateLimitStorm(_Event, tag="rate_limit", frozen=True, kw_only=True):
    """Every request gets a 429 with ``Retry-After: retry_after`` while active."""

    retry_after: NonNegative = 1.0


Event = Brownout | Outage | RateLimitStorm
"""A scheduled event (tagged by ``kind``)."""


class Phase(_Base, frozen=True, kw_only=True):
    """A window of the run reported on its own: requests whose intended send time is in [start, end)."""

    name: str
    start: NonNegative = 0.0
    end: float = math.inf

    def __post_init__(self) -> None:
        if not self.end > self.start:
            raise ValueError(f"phase end ({self.end}) must be after its start ({self.start})")


# --------------------------------------------------------------------------- backends, quality


class FleetSpec(_Base, frozen=True, kw_only=True):
    """A live-only scenario's backends: the deployments of a fleet config (``"default"`` or a path).

    ``prices`` gives USD per 1M ``[input, output]`` tokens by deployment name or provider;
    ``seed`` overrides the fleet config's seed.
    """

    config: str = "default"
    seed: int | None = None
    prices: dict[str, tuple[float, float]] = msgspec.field(default_factory=dict)


class Quality(_Base, frozen=True, kw_only=True):
    """What the report's quality column measures: the share of answered requests whose answer
    passes ``verify``. In ``--sim``, a simulated backend gives its ``reply`` with probability
    ``pass_rate[name]`` (default 1) and a wrong answer (``wrong-<n>``, rarely the same twice)
    otherwise."""

    verify: tuple[VerifierSpec, ...] = ()
    pass_rate: dict[str, float] = msgspec.field(default_factory=dict)


class _ScenarioFile(_Base, frozen=True, kw_only=True):
    """The TOML shape of a scenario (policies are checked one by one afterwards, with their path)."""

    name: str | None = None
    description: str | None = None
    seed: int = 0
    baseline: str | None = None
    workload: Workload = Workload(requests=10_000)
    backends: tuple[BackendConfig, ...] = ()
    fleet: FleetSpec | None = None
    health: HealthConfig = HealthConfig()
    events: tuple[Event, ...] = ()
    phases: tuple[Phase, ...] = ()
    quality: Quality | None = None
    policies: dict[str, dict[str, Any]] = msgspec.field(default_factory=dict)


# --------------------------------------------------------------------------- the scenario


class Scenario(msgspec.Struct, frozen=True, kw_only=True):
    """A loaded, validated scenario (see the module docs for the TOML shape).

    ``fleet`` is the fleet config of a live-only scenario (its events included); otherwise
    ``backends`` holds the ``[[backends]]`` entries. ``policies`` keeps the file's order.
    """

    name: str
    description: str
    source: str | None
    seed: int
    baseline: str
    workload: Workload
    backends: tuple[BackendConfig, ...]
    fleet: FleetConfig | None
    prices: dict[str, tuple[float, float]]
    health: HealthConfig
    events: tuple[Event, ...]
    phases: tuple[Phase, ...]
    quality: Quality | None
    policies: dict[str, Policy]

    @property
    def backend_identities(self) -> list[tuple[str, str, str]]:
        """``(name, provider, region)`` of every backend (fleet deployments included)."""
        if self.fleet is not None:
            return [(d.name, d.provider, d.region) for d in self.fleet.deployments]
        return [(b.name, b.provider or _default_provider(b), b.region) for b in self.backends]

    @property
    def backend_names(self) -> list[str]:
        """The names policies may use as candidates."""
        return [name for name, _, _ in self.backend_identities]

    @property
    def simulated(self) -> bool:
        """Whether ``--sim`` can run it (every backend is ``kind = "simulated"``)."""
        return self.fleet is None and bool(self.backends) and all(isinstance(b, SimulatedConfig) for b in self.backends)

    def with_options(
        self,
        *,
        requests: int | None = None,
        duration: float | None = None,
        rate: float | None = None,
        warmup: int | None = None,
        seed: int | None = None,
        policies: Sequence[str] | None = None,
        baseline: str | None = None,
    ) -> Scenario:
        """A copy with command-line overrides applied (a count replaces a duration and vice versa)."""
        workload = self.workload
        if requests is not None:
            _check(requests >= 1, f"--requests must be >= 1, got {requests}", "--requests")
            workload = msgspec.structs.replace(workload, requests=requests, duration=None)
        if duration is not None:
            _check(duration > 0, f"--duration must be > 0 seconds, got {duration}", "--duration")
            workload = msgspec.structs.replace(workload, duration=duration, requests=None)
        if rate is not None:
            _check(rate > 0, f"--rate must be > 0 requests/s, got {rate}", "--rate")
            workload = msgspec.structs.replace(workload, rate=rate)
        if warmup is not None:
            _check(warmup >= 0, f"--warmup must be >= 0, got {warmup}", "--warmup")
            workload = msgspec.structs.replace(workload, warmup=warmup)
        chosen = self.policies
        if policies is not None:
            unknown = [p for p in policies if p not in self.policies]
            _check(
                not unknown,
                f"unknown policy {', '.join(map(repr, unknown))}; this scenario has: {', '.join(self.policies)}",
                "--policies",
            )
            _check(bool(policies), "--policies names no policy", "--policies")
            chosen = {p: self.policies[p] for p in dict.fromkeys(policies)}
        base = baseline if baseline is not None else self.baseline
        if base not in chosen:
            _check(
                baseline is None, f"baseline {base!r} is not among the policies run: {', '.join(chosen)}", "--baseline"
            )
            base = next(iter(chosen))
        return msgspec.structs.replace(
            self,
            workload=workload,
            seed=self.seed if seed is None else seed,
            policies=chosen,
            baseline=base,
        )


def _check(ok: bool, message: str, option: str) -> None:
    if not ok:
        raise PolicyError(message, path=option)


def backend_kind(b: BackendConfig) -> str:
    """The ``kind`` tag of a ``[[backends]]`` entry."""
    tag = type(b).__struct_config__.tag
    return tag if isinstance(tag, str) else type(b).__name__


def _default_provider(b: BackendConfig) -> str:
    return "sim" if isinstance(b, SimulatedConfig) else backend_kind(b)


# --------------------------------------------------------------------------- loading


def builtin_scenarios() -> dict[str, Path]:
    """The shipped scenarios by name (``benchmarks/scenarios/*.toml``)."""
    return {p.stem: p for p in sorted(BUILTIN_DIR.glob("*.toml"))}


def resolve_scenario(name_or_path: str) -> Path:
    """A built-in scenario's file for its name, else ``name_or_path`` as a file path.

    Raises ``PolicyError`` naming the built-ins when neither exists.
    """
    builtin = builtin_scenarios().get(name_or_path)
    if builtin is not None:
        return builtin
    path = Path(name_or_path)
    if path.is_file():
        return path
    known = ", ".join([*builtin_scenarios(), *OWN_RUNNERS])
    raise PolicyError(f"no scenario {name_or_path!r}: not a built-in ({known}) nor a file", path="$")


def load_scenario(source: str | Path) -> Scenario:
    """Load and validate a scenario from a built-in name, a TOML file path or TOML text.

    Every error is a ``PolicyError`` naming the file and the key path.
    """
    if isinstance(source, str) and "\n" not in source and "=" not in source:
        source = resolve_scenario(source)
    text, origin = read_toml_source(source)
    raw = decode_toml(text if origin is None else Path(origin), _ScenarioFile)
    base_dir = Path(origin).parent if origin is not None else Path.cwd()
    stem = Path(origin).stem if origin is not None else "scenario"

    def fail(message: str, path: str) -> PolicyError:
        return PolicyError(message, path=path, source=origin)

    if raw.backends and raw.fleet is not None:
        raise fail("give either [[backends]] or [fleet], not both", "$.fleet")
    seen: set[str] = set()
    for i, b in enumerate(raw.backends):
        if b.name in seen:
            raise fail(f"two backends are named {b.name!r}", f"$.backends[{i}].name")
        seen.add(b.name)
    fleet = _load_fleet(raw.fleet, base_dir, fail) if raw.fleet is not None else None
    identities = (
        [(d.name, d.provider, d.region) for d in fleet.deployments]
        if fleet is not None
        else [(b.name, b.provider or _default_provider(b), b.region) for b in raw.backends]
    )
    names = [n for n, _, _ in identities]
    _check_events(raw.events, identities, fail)
    # msgspec names a bad dict value's path "[...]": these are checked here, with the key.
    for name, weight in raw.workload.tenants.items():
        if not weight > 0:
            raise fail(f"a tenant's weight must be > 0, got {weight!r}", f"$.workload.tenants.{name}")
    if raw.quality is not None:
        for name, rate in raw.quality.pass_rate.items():
            if name not in names:
                raise fail(f"unknown backend {name!r}; known: {', '.join(names)}", f"$.quality.pass_rate.{name}")
            if not 0.0 <= rate <= 1.0:
                raise fail(f"a pass rate is within [0, 1], got {rate!r}", f"$.quality.pass_rate.{name}")
    if raw.fleet is not None:
        deployments = {n for n, _, _ in identities}
        providers = {p for _, p, _ in identities}
        for key, price in raw.fleet.prices.items():
            if key not in deployments and key not in providers:
                raise fail(f"{key!r} is neither a deployment nor a provider of the fleet", f"$.fleet.prices.{key}")
            if min(price) < 0:
                raise fail(f"prices are >= 0 (USD per 1M tokens), got {list(price)!r}", f"$.fleet.prices.{key}")
    policies = _load_policies(raw.policies, set(names) if identities else None, origin)
    baseline = raw.baseline if raw.baseline is not None else next(iter(policies))
    if baseline not in policies:
        raise fail(f"baseline {baseline!r} is not one of the policies: {', '.join(policies)}", "$.baseline")
    if fleet is not None and raw.events:
        fleet = msgspec.structs.replace(fleet, events=fleet.events + _fleet_events(raw.events, identities))
    prices = {k: (float(v[0]), float(v[1])) for k, v in (raw.fleet.prices if raw.fleet else {}).items()}
    return Scenario(
        name=raw.name or stem,
        description=raw.description if raw.description is not None else leading_comment(text),
        source=origin,
        seed=raw.seed,
        baseline=baseline,
        workload=raw.workload,
        backends=raw.backends,
        fleet=fleet,
        prices=prices,
        health=raw.health,
        events=raw.events,
        phases=raw.phases,
        quality=raw.quality,
        policies=policies,
    )


def leading_comment(text: str) -> str:
    """The first paragraph of the ``#`` comment block a TOML file starts with, as one line."""
    lines: list[str] = []
    for line in text.splitlines():
        stripped = line.strip()
        if not stripped and not lines:
            continue
        if not stripped.startswith("#"):
            break
        body = stripped.lstrip("#").strip()
        if not body:
            if lines:
                break
            continue
        lines.append(body)
    return " ".join(lines)


def _load_fleet(spec: FleetSpec, base_dir: Path, fail: Any) -> FleetConfig:
    try:
        if spec.config == "default":
            fleet = FleetConfig.default()
        else:
            path = Path(spec.config)
            fleet = FleetConfig.load(path if path.is_absolute() else base_dir / path)
    except FleetConfigError as exc:
        raise PolicyError(exc.detail, path=exc.path, source=exc.source) from None
    except OSError as exc:
        raise fail(f"cannot read the fleet config: {exc.strerror}", "$.fleet.config") from None
    return fleet if spec.seed is None else fleet.with_seed(spec.seed)


def _check_events(events: Sequence[Event], identities: list[tuple[str, str, str]], fail: Any) -> None:
    names = [n for n, _, _ in identities]
    regions = sorted({r for _, _, r in identities})
    providers = sorted({p for _, p, _ in identities})
    for i, ev in enumerate(events):
        for j, name in enumerate(ev.backends or ()):
            if name not in names:
                raise fail(f"unknown backend {name!r}; known: {', '.join(names)}", f"$.events[{i}].backends[{j}]")
        if ev.region is not None and ev.region not in regions:
            raise fail(f"no backend is in region {ev.region!r}; regions: {', '.join(regions)}", f"$.events[{i}].region")
        if ev.provider is not None and ev.provider not in providers:
            raise fail(
                f"no backend is of provider {ev.provider!r}; providers: {', '.join(providers)}",
                f"$.events[{i}].provider",
            )


def _load_policies(raw: dict[str, dict[str, Any]], names: set[str] | None, origin: str | None) -> dict[str, Policy]:
    if not raw:
        raise PolicyError("a scenario needs at least one [policies.NAME] table", path="$.policies", source=origin)
    policies: dict[str, Policy] = {}
    for key, table in raw.items():
        prefix = f"$.policies.{key}" if re.fullmatch(r"[A-Za-z0-9_-]+", key) else f"$.policies[{key!r}]"
        if not isinstance(table, dict):
            raise PolicyError(f"expected a table, got {type(table).__name__}", path=prefix, source=origin)
        table = {"name": key, **table}
        try:
            loaded = msgspec.convert(table, _PolicyFile)
            policy = from_file(loaded)
        except msgspec.ValidationError as exc:
            raise _rebase(validation_error(exc, None, _PolicyFile), prefix, origin) from None
        except PolicyError as exc:
            raise _rebase(exc, prefix, origin) from None
        if names is not None:
            for i, c in enumerate(policy.candidates):
                if c not in names:
                    raise PolicyError(
                        f"unknown backend {c!r}; known: {', '.join(sorted(names))}",
                        path=f"{prefix}.candidates[{i}]",
                        source=origin,
                    )
        judge = getattr(policy.scorer, "backend", None)
        if names is not None and isinstance(judge, str) and judge not in names:
            raise PolicyError(f"unknown judge backend {judge!r}", path=f"{prefix}.scorer.backend", source=origin)
        policies[key] = policy
    return policies


def _rebase(exc: PolicyError, prefix: str, origin: str | None) -> PolicyError:
    """``exc`` (whose path is relative to one policy) with its path under ``prefix`` and the file named."""
    message = str(exc)
    if exc.source and message.startswith(f"{exc.source}: "):
        message = message[len(exc.source) + 2 :]
    suffix = f" (at {exc.path})"
    if message.endswith(suffix):
        message = message[: -len(suffix)]
    return PolicyError(message, path=prefix + exc.path[1:], source=origin)


def _fleet_events(events: Sequence[Event], identities: list[tuple[str, str, str]]) -> tuple[Any, ...]:
    """The scenario's events as fleet events (``benchmarks.fleet``), targeting deployments by name."""
    from specexec.bench.fleet import Brownout as FleetBrownout
    from specexec.bench.fleet import Outage as FleetOutage
    from specexec.bench.fleet import RateLimit as FleetRateLimit

    out: list[Any] = []
    for ev in events:
        targets = tuple(ev.targets(identities))
        if not targets:
            continue
        common: dict[str, Any] = {"start": ev.start, "end": ev.end, "deployments": targets}
        if isinstance(ev, Brownout):
            out.append(FleetBrownout(factor=ev.factor, **common))
        elif isinstance(ev, Outage):
            out.append(FleetOutage(mode=ev.mode, status=ev.status, **common))
        else:
            out.append(FleetRateLimit(retry_after=ev.retry_after, **common))
    return tuple(out)
