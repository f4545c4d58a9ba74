"""The probe daemon's config: ``[[backends]]`` and ``[health]`` as in ``specexec.config``, plus ``[probe]``.

The file is a superset of ``specexec.config.RuntimeConfig`` (one format for services and
the daemon; a service reading the same file with ``Runtime.from_config`` ignores
``[probe]``)::

    [[backends]]
    kind = "openai"
    name = "mini-us"
    model = "gpt-4o-mini-2024-07-18"
    api_key_env = "OPENAI_API_KEY"
    input_price = 0.15
    output_price = 0.60

    [probe]
    interval = 60.0                 # seconds between probes of a backend (1 to 86400)
    jitter = 0.1                    # each wait is interval × (1 ± jitter), uniformly
    timeout = 10.0                  # a probe still running after this is cut (a "timeout" failure; 0.05 to 600)
    max_concurrent = 8              # probes in flight at once, over all backends (1 to 1024)
    daily_budget = 0.50             # USD per UTC day; probing stops when it is spent
    query = { prompt = "ping", max_tokens = 1 }
    snapshot = "/var/lib/specexec/probes.msgpack"
    snapshot_interval = 10.0        # seconds between snapshot writes (1 to 86400)

    [probe.canary]                  # optional: a question with a known answer
    query = { prompt = "What is 2 + 2? Answer with a number only.", max_tokens = 4 }
    expect = "4"
    every = 10                      # the first probe and every 10th after it is the canary

    [probe.backends.mini-us]        # optional per-backend overrides
    interval = 15.0
    pinned_model = "gpt-4o-mini-2024-07-18"

    [eval]                          # optional: continuous evaluation (see EvalSettings)
    file = "evals/starter.toml"     # a `specexec eval` file (relative to this config file)
    interval = 3600.0               # seconds between two runs (60 to 604800); runs never overlap
    daily_budget = 0.20             # USD per UTC day for eval calls (required); when spent, it stops until midnight
    jobs = 2                        # calls in flight (1 to 64)
    sample = 10                     # cases per class per run, a rotating window (default: every case)
    backends = ["mini-us"]          # which backends to evaluate (default: each class's candidates probed here)

Errors name the file and the key path
(``PolicyError: probes.toml: Expected `float` >= 1.0 (at $.probe.interval)``).

Bounds (the ``MIN_*``/``MAX_*`` constants; every value must also be finite: ``nan`` and
``inf`` are refused): ``interval`` 1 s to 1 day (faster is load on the provider and its rate
limits, not information); ``timeout`` 50 ms to 10 min (below a network round trip every
probe would time out); ``snapshot_interval`` 1 s to 1 day (each write is two fsyncs; services
poll every few seconds, so writing more often buys nothing and a tiny value would make the
daemon a busy loop of disk writes); ``window`` and ``stale_after`` 1 s to 7 days;
``slices`` 1 to 60 (memory: each slice holds four HDR histograms, ~0.11 MB, per probe
query per backend); ``max_concurrent`` 1 to 1024 (each probe in flight holds a connection);
``daily_budget`` up to 1,000,000 USD (leave it out for no limit); ``[eval]``: ``interval`` 60 s
to 7 days (a run is many calls: more often is spend, not information), ``jobs`` 1 to 64,
``sample`` 1 to 100,000 cases, ``timeout`` as ``[probe] timeout``, ``daily_budget`` required
(0 to 1,000,000 USD: an eval on a schedule is always cost-bounded).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated

import msgspec

from specexec import Backend, PolicyError, Query, Response
from specexec.config import OTHER_SECTIONS, RuntimeConfig, decode_toml, keyed_table_error
from specexec.verifiers import Verdict, VerifierSpec, check

from ._expect import contains_answer, normalise

__all__ = [
    "DEFAULT_BIND",
    "DEFAULT_EVAL_INTERVAL",
    "DEFAULT_EVAL_JOBS",
    "DEFAULT_EVAL_TIMEOUT",
    "DEFAULT_INTERVAL",
    "DEFAULT_JITTER",
    "DEFAULT_MAX_CONCURRENT",
    "DEFAULT_MIN_SAMPLES",
    "DEFAULT_PORT",
    "DEFAULT_QUERY",
    "DEFAULT_SLICES",
    "DEFAULT_SNAPSHOT_INTERVAL",
    "DEFAULT_TIMEOUT",
    "DEFAULT_WINDOW",
    "MAX_CONCURRENT",
    "MAX_DAILY_BUDGET",
    "MAX_EVAL_INTERVAL",
    "MAX_EVAL_JOBS",
    "MAX_EVAL_SAMPLE",
    "MAX_INTERVAL",
    "MAX_SLICES",
    "MAX_SNAPSHOT_INTERVAL",
    "MAX_TIMEOUT",
    "MAX_WINDOW",
    "MIN_EVAL_INTERVAL",
    "MIN_INTERVAL",
    "MIN_SNAPSHOT_INTERVAL",
    "MIN_TIMEOUT",
    "MIN_WINDOW",
    "BackendOverride",
    "Canary",
    "EvalSettings",
    "ProbeConfig",
    "ProbeSettings",
    "TargetSettings",
    "valid_host",
]

DEFAULT_INTERVAL = 60.0
"""Seconds between two probes of one backend."""
MIN_INTERVAL = 1.0
"""The shortest probe interval a config may ask for (seconds)."""
MAX_INTERVAL = 86_400.0
"""The longest probe interval (a day)."""
MIN_TIMEOUT = 0.05
"""The shortest probe timeout (seconds): below a network round trip every probe would time out."""
MAX_TIMEOUT = 600.0
"""The longest probe timeout (seconds)."""
MIN_SNAPSHOT_INTERVAL = 1.0
"""The shortest time between snapshot writes (seconds): each is two fsyncs; services poll every few seconds."""
MAX_SNAPSHOT_INTERVAL = 86_400.0
"""The longest time between snapshot writes (a day)."""
MIN_WINDOW = 1.0
"""The shortest latency window and ``stale_after`` (seconds)."""
MAX_WINDOW = 604_800.0
"""The longest latency window and ``stale_after`` (7 days)."""
MAX_SLICES = 60
"""The most slices of a latency window (each costs ~0.11 MB per probe query per backend)."""
MAX_CONCURRENT = 1024
"""The most probes in flight at once (each holds a connection)."""
MAX_DAILY_BUDGET = 1_000_000.0
"""The largest daily budget, USD (leave ``daily_budget`` out for no limit)."""
DEFAULT_JITTER = 0.1
"""Each wait between probes is ``interval × (1 ± jitter)`` (uniform), so backends drift apart."""
DEFAULT_TIMEOUT = 10.0
"""Seconds a probe may run before it is cut and counted as a ``timeout`` failure."""
DEFAULT_MAX_CONCURRENT = 8
"""Probes in flight at once, over all backends."""
DEFAULT_WINDOW = 1800.0
"""Seconds of probe results the daemon's latency histograms hold (30 probes at the default interval)."""
DEFAULT_SLICES = 6
"""Rotating slices of the latency window."""
DEFAULT_MIN_SAMPLES = 5
"""Samples the daemon's window needs before it reports quantiles."""
DEFAULT_BIND = "127.0.0.1"
"""The HTTP endpoints listen on loopback unless another address is given explicitly."""
DEFAULT_PORT = 9470
"""The HTTP port (``0``: any free port)."""
DEFAULT_SNAPSHOT_INTERVAL = 10.0
"""Seconds between two snapshot-file writes (one more is written at shutdown)."""
DEFAULT_QUERY = Query("ping", max_tokens=1)
"""The probe query: one short message, one output token."""
DEFAULT_EVAL_INTERVAL = 3600.0
"""Seconds between two continuous-eval runs."""
MIN_EVAL_INTERVAL = 60.0
"""The shortest continuous-eval interval (seconds): a run is many calls; more often is spend, not information."""
MAX_EVAL_INTERVAL = 604_800.0
"""The longest continuous-eval interval (7 days)."""
DEFAULT_EVAL_JOBS = 2
"""Eval calls in flight at once."""
MAX_EVAL_JOBS = 64
"""The most eval calls in flight at once."""
MAX_EVAL_SAMPLE = 100_000
"""The most cases per class in one eval run."""
DEFAULT_EVAL_TIMEOUT = 60.0
"""Seconds one eval call may take before it is cut (an error, not a failed case)."""


Interval = Annotated[float, msgspec.Meta(ge=MIN_INTERVAL, le=MAX_INTERVAL)]
Jitter = Annotated[float, msgspec.Meta(ge=0.0, lt=1.0)]
Timeout = Annotated[float, msgspec.Meta(ge=MIN_TIMEOUT, le=MAX_TIMEOUT)]
SnapshotInterval = Annotated[float, msgspec.Meta(ge=MIN_SNAPSHOT_INTERVAL, le=MAX_SNAPSHOT_INTERVAL)]
Span = Annotated[float, msgspec.Meta(ge=MIN_WINDOW, le=MAX_WINDOW)]
PositiveInt = Annotated[int, msgspec.Meta(ge=1)]
Slices = Annotated[int, msgspec.Meta(ge=1, le=MAX_SLICES)]
Concurrency = Annotated[int, msgspec.Meta(ge=1, le=MAX_CONCURRENT)]
USD = Annotated[float, msgspec.Meta(ge=0.0, le=MAX_DAILY_BUDGET)]
Port = Annotated[int, msgspec.Meta(ge=0, le=65535)]
EvalInterval = Annotated[float, msgspec.Meta(ge=MIN_EVAL_INTERVAL, le=MAX_EVAL_INTERVAL)]
EvalJobs = Annotated[int, msgspec.Meta(ge=1, le=MAX_EVAL_JOBS)]
EvalSample = Annotated[int, msgspec.Meta(ge=1, le=MAX_EVAL_SAMPLE)]

_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOSTNAME = re.compile(rf"(?=.{{1,253}}\Z){_LABEL}(?:\.{_LABEL})*\.?\Z")


def valid_host(host: str) -> bool:
    """Whether ``host`` is an IP address (v4 or v6) or a host name a listener can bind to."""
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return _HOSTNAME.match(host) is not None
    return True


class Canary(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A question with a known answer; a wrong answer marks the backend *degraded*, however fast.

    ``expect``: the answer must *occur in* the reply, compared loosely — both are NFKC-normalised,
    case-folded and their whitespace collapsed, the expectation is stripped of surrounding
    punctuation — and it must stand as a whole word and a whole number: ``expect = "4"``
    accepts ``4``, ``2 + 2 = 4``, ``The answer is 4.`` and ``**4**``, and rejects ``14``,
    ``40``, ``4.5``, ``0.4`` and ``-4`` (``four`` is not found in ``fourteen``). An
    expectation that is empty after normalising is a config error. ``verify``: verifiers as
    in a policy (``[{kind = "regex", pattern = "^4$"}]``) that must all accept — use it for
    precise checks (an exact reply, a format). Give one or both (both must pass). The first
    probe of a backend and every ``every``-th after it is the canary instead of the plain
    probe query.
    """

    query: Query
    expect: str | None = None
    verify: tuple[VerifierSpec, ...] = ()
    every: PositiveInt = 10

    def __post_init__(self) -> None:
        if self.expect is None and not self.verify:
            raise ValueError("a canary needs `expect` or `verify` (or both)")
        if self.expect is not None and not normalise(self.expect):
            raise ValueError(
                f"the canary's `expect` = {self.expect!r} is empty once punctuation and whitespace are"
                " stripped: give the answer's words or digits, or use `verify`"
            )

    async def verdict(self, response: Response) -> Verdict:
        """Whether ``response`` answers the canary correctly (``Verdict.reason`` says why not)."""
        if self.expect is not None and not contains_answer(response.text, self.expect):
            return Verdict(False, f"expected {self.expect!r} in the reply, got {response.text.strip()[:80]!r}")
        if self.verify:
            return await check(self.verify, self.query, response)
        return Verdict(True)


class BackendOverride(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[probe.backends.NAME]``: settings for one backend; unset fields inherit from ``[probe]``.

    ``canary = false`` turns a default canary off for this backend. ``pinned_model`` is the
    model id the provider should report (default: the backend's ``model``); a different
    reported id raises the drift flag. ``enabled = false`` stops probing this backend.
    """

    interval: Interval | None = None
    jitter: Jitter | None = None
    timeout: Timeout | None = None
    query: Query | None = None
    canary: Canary | bool | None = None
    pinned_model: str | None = None
    unhealthy_after: PositiveInt | None = None
    stale_after: Span | None = None
    enabled: bool = True

    def __post_init__(self) -> None:
        if self.canary is True:
            raise ValueError("canary = true says nothing: give a canary table, or false to turn a default one off")


class ProbeSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[probe]``: defaults for every backend, the daemon's window, budget, endpoints and snapshot.

    - ``interval`` / ``jitter`` / ``timeout``: the schedule (see the ``DEFAULT_*`` constants).
    - ``max_concurrent``: probes in flight at once; ``daily_budget``: USD per UTC day (``None``:
      unlimited) — probing stops when the next probe's worst case would not fit.
    - ``query``: the probe query; ``canary``: an optional ``Canary``.
    - ``unhealthy_after``: consecutive failed probes that make a backend *unhealthy* (1: the
      first failure does, so an outage is reported within two intervals).
    - ``stale_after``: seconds without a finished probe after which a backend reads *unknown*
      (default ``3 × interval × (1 + jitter) + timeout``).
    - ``window`` / ``slices`` / ``min_samples``: the daemon's latency histograms.
    - ``http`` / ``bind`` / ``port``: the HTTP endpoints (loopback unless ``bind`` says otherwise).
    - ``snapshot`` / ``snapshot_interval``: the snapshot file (``None``: none) and its cadence.
    - ``seed``: seeds the jitter (``None``: random).
    - ``backends``: per-backend overrides by name.
    """

    interval: Interval = DEFAULT_INTERVAL
    jitter: Jitter = DEFAULT_JITTER
    timeout: Timeout = DEFAULT_TIMEOUT
    max_concurrent: Concurrency = DEFAULT_MAX_CONCURRENT
    daily_budget: USD | None = None
    query: Query = DEFAULT_QUERY
    canary: Canary | None = None
    unhealthy_after: PositiveInt = 1
    stale_after: Span | None = None
    window: Span = DEFAULT_WINDOW
    slices: Slices = DEFAULT_SLICES
    min_samples: PositiveInt = DEFAULT_MIN_SAMPLES
    http: bool = True
    bind: str = DEFAULT_BIND
    port: Port = DEFAULT_PORT
    snapshot: str | None = None
    snapshot_interval: SnapshotInterval = DEFAULT_SNAPSHOT_INTERVAL
    seed: int | None = None
    backends: dict[str, BackendOverride] = {}

    def __post_init__(self) -> None:
        if not valid_host(self.bind):
            raise PolicyError(
                f"bind = {self.bind!r} is not an IP address or a host name (e.g. 127.0.0.1, ::1, localhost)",
                path="$.bind",
            )
        if self.snapshot is not None and "\x00" in self.snapshot:
            raise PolicyError("the snapshot path contains a NUL character", path="$.snapshot")


class EvalSettings(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """``[eval]``: run a ``specexec eval`` file on a schedule, within a daily budget (information only).

    - ``file``: the eval file (its ``[classes.*]``, datasets and bars; its own ``[[backends]]``
      are not used: the daemon's are). A relative path is relative to the daemon's config file.
    - ``interval``: seconds from the start of one run to the start of the next; a run that
      overruns is followed at once by the next (runs never overlap).
    - ``daily_budget``: USD per UTC day for eval calls, separate from ``[probe] daily_budget``.
      Each call's worst case is reserved first; a call that does not fit is not sent and the
      eval stops until the next UTC midnight (logged once).
    - ``jobs``: calls in flight at once; ``timeout``: seconds per call (a call cut is an error,
      not a failed case); ``sample``: cases per class per run, a window rotating through the
      dataset (default: every case).
    - ``backends``: the daemon's backends to evaluate; each class is run on those of its
      ``candidates`` (every backend when it names none) that are also probed here (default:
      every probed backend).
    """

    file: str
    daily_budget: USD
    interval: EvalInterval = DEFAULT_EVAL_INTERVAL
    jobs: EvalJobs = DEFAULT_EVAL_JOBS
    timeout: Timeout = DEFAULT_EVAL_TIMEOUT
    sample: EvalSample | None = None
    backends: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not self.file.strip():
            raise PolicyError("file must name the eval file (a specexec eval TOML)", path="$.file")
        if "\x00" in self.file:
            raise PolicyError("the eval file path contains a NUL character", path="$.file")
        if len(set(self.backends)) != len(self.backends):
            raise PolicyError(f"backends lists a name twice: {list(self.backends)}", path="$.backends")


class TargetSettings(msgspec.Struct, frozen=True):
    """One backend's effective probe settings (``[probe]`` merged with its override)."""

    name: str
    interval: float
    jitter: float
    timeout: float
    query: Query
    canary: Canary | None
    pinned_model: str | None
    unhealthy_after: int
    stale_after: float
    enabled: bool


def _names(extra: Sequence[str]) -> tuple[str, ...]:
    return (extra,) if isinstance(extra, str) else tuple(extra)  # extra="myapp": the section, not its letters


class ProbeConfig(RuntimeConfig, frozen=True, forbid_unknown_fields=True):
    """A probe daemon's config file: ``[[backends]]``, ``[health]`` (its ``breaker`` rules the
    probes' circuit state) and ``[probe]``.

    Load with ``ProbeConfig.load(path_or_text)``; errors are ``PolicyError`` with file and key path.
    """

    probe: ProbeSettings = ProbeSettings()
    eval: EvalSettings | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        known = {b.name for b in self.backends}
        for name in self.probe.backends:
            if name not in known:
                raise PolicyError(
                    f"no backend named {name!r} in [[backends]] (known: {', '.join(sorted(known)) or 'none'})",
                    path=f"$.probe.backends.{name}",
                )
        for i, name in enumerate(self.eval.backends if self.eval is not None else ()):
            if name not in known:
                raise PolicyError(
                    f"no backend named {name!r} in [[backends]] (known: {', '.join(sorted(known)) or 'none'})",
                    path=f"$.eval.backends[{i}]",
                )

    @classmethod
    def load(cls, source: str | Path, *, extra: Sequence[str] = ()) -> ProbeConfig:
        """Load from a TOML file path or TOML text.

        The file is the one services read: the other readers' sections (``specexec.config.OTHER_SECTIONS``
        other than ``[probe]`` and ``[eval]``: ``[routes]``, ``[router]``, ``[policies]``, ``[bench]``)
        and the top-level tables named in ``extra`` are ignored; any other unknown section is an error.

        A relative ``[eval] file`` is made relative to the config file's directory (to the
        working directory for TOML text).
        """
        others = sorted(OTHER_SECTIONS - set(cls.__struct_fields__))  # [routes], [router], [policies], [bench]
        try:
            config = decode_toml(source, cls, ignore=(*others, *_names(extra)), sections=True)
        except PolicyError as exc:
            if not exc.path.startswith("$.probe.backends[...]"):
                raise
            raise keyed_table_error(source, ("probe", "backends"), BackendOverride) or exc from None
        is_file = isinstance(source, Path) or ("\n" not in source and "=" not in source)  # as read_toml_source
        if config.eval is not None and is_file and not Path(config.eval.file).is_absolute():
            resolved = str(Path(source).parent / config.eval.file)
            config = msgspec.structs.replace(config, eval=msgspec.structs.replace(config.eval, file=resolved))
        return config

    def target(self, backend: Backend) -> TargetSettings:
        """The effective settings for ``backend`` (overrides by its name, if any)."""
        p = self.probe
        o = p.backends.get(backend.name, BackendOverride())
        interval = o.interval if o.interval is not None else p.interval
        jitter = o.jitter if o.jitter is not None else p.jitter
        timeout = o.timeout if o.timeout is not None else p.timeout
        if o.canary is False:
            canary = None
        elif isinstance(o.canary, Canary):
            canary = o.canary
        else:
            canary = p.canary
        stale_after = o.stale_after if o.stale_after is not None else p.stale_after
        if stale_after is None:
            stale_after = 3 * interval * (1 + jitter) + timeout
        pinned = o.pinned_model if o.pinned_model is not None else (getattr(backend, "model", None) or None)
        return TargetSettings(
            name=backend.name,
            interval=interval,
            jitter=jitter,
            timeout=timeout,
            query=o.query if o.query is not None else p.query,
            canary=canary,
            pinned_model=pinned,
            unhealthy_after=o.unhealthy_after if o.unhealthy_after is not None else p.unhealthy_after,
            stale_after=stale_after,
            enabled=o.enabled,
        )

    def api_key_envs(self) -> list[str]:
        """The environment variables that hold the backends' API keys (their values are redacted)."""
        return [env for b in self.backends if (env := getattr(b, "api_key_env", None))]
