"""``HealthFeed``: follow a probe daemon and merge its measurements into a runtime's health.

>>> runtime = specexec.Runtime(backends, feeds=[specexec.HealthFeed("http://127.0.0.1:9470")])
>>> async with runtime:     # the feed polls in the background while the runtime is entered
...     await runtime.run(query, policy)

The wire format is the daemon's snapshot (``probes/_snapshot.py``, msgpack); this module
reads only the fields it needs, so the daemon may add fields freely (a change of meaning
bumps the version, which is checked). It reads versions 1 and 2: a service upgraded before
its daemon keeps working.

A daemon with continuous evaluation (``[eval]``) also publishes per task class and backend pass
rates: ``HealthFeed.eval()`` / ``eval_result(task_class, backend)`` hand them to the
application, and a backend below a class's bar has ``RemoteHealth.drift`` set with its
``drift_reasons``. That is information: routing does not change by itself (a service that
wants to act on it does so deliberately, e.g. by alerting or by loading other routes).
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import anyio
import msgspec

from ._health import LatencyWindow

if TYPE_CHECKING:
    from ._httpx import httpx
    from ._runtime import Runtime

__all__ = [
    "CANARY",
    "PING",
    "READABLE_SNAPSHOT_VERSIONS",
    "SNAPSHOT_VERSION",
    "HealthFeed",
    "RemoteBudget",
    "RemoteEval",
    "RemoteEvalResult",
    "RemoteHealth",
    "RemoteQuery",
]

SNAPSHOT_VERSION = 2
"""The probe snapshot version the daemon writes: one latency histogram per probe query."""
READABLE_SNAPSHOT_VERSIONS = (1, 2)
"""The snapshot versions this feed (and the daemon, resuming) reads; version 1 had one histogram
per backend, mixing the ping and the canary."""
PING = "ping"
"""The plain probe query's name in a snapshot's ``queries`` (the one a feed merges)."""
CANARY = "canary"
"""The canary question's name in a snapshot's ``queries``."""

DEFAULT_MAX_SNAPSHOT_BYTES = 16 << 20
"""The largest snapshot a feed reads (decoded bytes; ``HealthFeed(max_bytes=)``): a daemon's is a
few kilobytes per backend, so anything near this is a broken or hostile source."""

_log = logging.getLogger("specexec.feed")


class _Histogram(msgspec.Struct, frozen=True):
    observed: str
    censored: str


class RemoteQuery(msgspec.Struct, frozen=True, kw_only=True):
    """What the daemon said about one probe query of a backend: quantiles over its window (seconds)."""

    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    samples: int = 0
    latency: _Histogram | None = None


class RemoteHealth(msgspec.Struct, frozen=True, kw_only=True):
    """What the probe daemon last said about one backend — information for the application.

    ``state`` (``healthy`` / ``degraded`` / ``unhealthy`` / ``unknown``), ``circuit`` (the
    daemon's breaker, fed by probes), ``model`` (pinned) and ``reported_model``, ``drift``,
    ``p50``/``p90``/``p99`` (the ping's, from a version-2 daemon; all probes mixed from a
    version-1 one) and ``success_rate`` over the daemon's window, ``queries`` (per probe
    query: ``ping``, ``canary``; empty from a version-1 daemon), the last error's kind and
    Unix time, and ``age``: seconds since the daemon's last finished probe of it, as of the
    moment ``HealthFeed.remote`` is called.
    """

    state: str
    circuit: str = "closed"
    model: str | None = None
    reported_model: str | None = None
    drift: bool = False
    p50: float | None = None
    p90: float | None = None
    p99: float | None = None
    success_rate: float | None = None
    last_error_kind: str | None = None
    last_error_at: float | None = None
    age: float | None = None
    queries: dict[str, RemoteQuery] = {}
    latency: _Histogram | None = None  # version 1: the backend's one (mixed) window
    drift_reasons: tuple[str, ...] = ()


class RemoteEvalResult(msgspec.Struct, frozen=True, kw_only=True):
    """One task class on one backend in the daemon's continuous eval, from its last run that
    answered a case: ``passed`` of ``cases``, ``pass_rate`` with its 95 % Wilson interval
    ``(low, high)``, the class's ``bar`` (``min_pass_rate``) and ``below_bar``, the ``model``
    reported and the ``pinned_model`` (``model_changed`` when they differ), ``errors`` (failed
    calls) and ``skipped`` (not sent: budget) apart, and ``last_run_at`` (Unix time)."""

    passed: int = 0
    cases: int = 0
    errors: int = 0
    skipped: int = 0
    pass_rate: float | None = None
    low: float = 0.0
    high: float = 1.0
    bar: float = 0.0
    below_bar: bool = False
    model: str | None = None
    pinned_model: str | None = None
    model_changed: bool = False
    last_run_at: float | None = None


class RemoteBudget(msgspec.Struct, frozen=True, kw_only=True):
    """The continuous eval's daily budget: ``limit`` and ``spent`` USD today, ``exhausted`` until ``resets_at``."""

    limit: float | None = None
    spent: float = 0.0
    exhausted: bool = False
    resets_at: float | None = None


class RemoteEval(msgspec.Struct, frozen=True, kw_only=True):
    """The daemon's continuous eval: ``results`` by task class, then backend (``RemoteEvalResult``),
    the eval's ``name``, ``runs`` so far, ``last_run_at`` / ``next_run_at`` (Unix time) and its budget."""

    name: str = ""
    interval: float = 0.0
    runs: int = 0
    last_run_at: float | None = None
    next_run_at: float | None = None
    budget: RemoteBudget = RemoteBudget()
    results: dict[str, dict[str, RemoteEvalResult]] = {}

    def below_bar(self) -> list[tuple[str, str]]:
        """The ``(task class, backend)`` pairs whose last pass rate is below the class's bar."""
        return [(cls, b) for cls, per in sorted(self.results.items()) for b, r in sorted(per.items()) if r.below_bar]


class _Snapshot(msgspec.Struct, frozen=True):
    version: int
    generated_at: float
    backends: dict[str, RemoteHealth] = {}
    eval: RemoteEval | None = None


_decoder = msgspec.msgpack.Decoder(_Snapshot)


class _Entry:
    __slots__ = ("fresh_until", "health", "observed_at")

    def __init__(self, health: RemoteHealth, fresh_until: float, observed_at: float) -> None:
        self.health = health
        self.fresh_until = fresh_until  # loop time at which this data becomes unknown
        self.observed_at = observed_at  # loop time of the poll that brought it


def _probe_histogram(version: int, remote: RemoteHealth) -> _Histogram | None:
    """The latency window a service takes: the ping's (version 2), or the backend's one (version 1)."""
    if version == 1:
        return remote.latency
    ping = remote.queries.get(PING)
    return ping.latency if ping is not None else None


def _empty_like(window: LatencyWindow) -> LatencyWindow:
    return LatencyWindow(
        window.window,
        window.slices,
        window.min_samples,
        window.significant_figures,
        max_refresh_interval=window.max_refresh_interval,
    )


class HealthFeed:
    """Follows a probe daemon and keeps ``runtime.health(name).probe_latency`` current.

    ``source`` is the daemon's base URL (``http://127.0.0.1:PORT``; ``GET /v1/snapshot`` is
    fetched) or the path of its snapshot file. Give it to a runtime (``Runtime(...,
    feeds=[feed])``): while the runtime is entered, ``follow`` polls every ``interval``
    seconds (each fetch bounded by ``timeout``, and by ``max_bytes`` decoded bytes: 16 MiB by
    default, beyond which the poll fails). ``poll_once`` does one poll (tests, or
    services that schedule polls themselves).

    **What a snapshot changes.** Only the *probe* latency window of each backend the runtime
    knows (backends the runtime does not know are ignored): on every poll it is replaced by
    the daemon's window of that backend's *ping* (the 1-token probe query; never the canary,
    a longer question whose latency would make a fast backend look slow) — cleared and
    re-filled from the snapshot's encoded histograms, so probe data is never counted twice —
    when the daemon calls the backend
    ``healthy``; for a backend the daemon calls ``unhealthy``, ``degraded`` or ``unknown`` it
    is emptied (no probe estimate: a fast 503 or a wrong answer must not make a backend look
    quick). ``BackendHealth.quantile`` then uses live traffic when it has enough samples and
    the probe window otherwise, as the health module defines; probe data needs the runtime's
    ``min_samples`` like live data. Give a runtime one feed: a second would replace the
    first one's probe data on every poll.

    **What it may not change.** The live windows, the runtime's circuit breakers and
    ``last_model``. A remote snapshot does not force a local breaker open: the daemon's view
    comes from one tiny request per interval, the breaker from this process's own traffic;
    letting every service trip on one probe failure would turn a probe blip into a
    fleet-wide outage and the breaker could not close again on local successes. The daemon's
    state, circuit, drift flag and reported model are kept as information: ``remote(name)``.

    **Staleness.** Data is as old as the daemon's last finished probe of the backend (the
    snapshot's ``age`` plus the snapshot's own age by the wall clock). ``max_age`` seconds
    after that it becomes *unknown*: the probe window is emptied and ``remote`` returns
    ``None`` — exactly then, whether or not the daemon is still reachable (a stopped daemon,
    a daemon whose budget is spent, a stale file). So data is never frozen "healthy".
    ``max_age`` should exceed the daemon's probe interval.

    **Continuous eval.** ``eval()`` is the daemon's ``[eval]`` results (per task class and
    backend: pass rate, Wilson interval, cases, the bar), ``eval_result(task_class, backend)``
    one of them; a backend below a bar also reads ``drift`` in ``remote(name)``. Information
    only: nothing in the runtime changes by itself. They follow the same staleness rule
    (``None`` once the snapshot that brought them is ``max_age`` old).

    **Failures.** An unreachable daemon (or an unreadable snapshot) is logged once per
    outage on the ``specexec.feed`` logger (and once more when it is back); ``follow`` and
    ``poll_once`` never raise (cancellation passes through), so a runtime's ``run()`` is never
    failed by its feed. ``wall_clock`` (Unix time) is injectable for tests.
    """

    def __init__(
        self,
        source: str | Path,
        *,
        interval: float = 5.0,
        max_age: float = 180.0,
        timeout: float = 2.0,
        max_bytes: int = DEFAULT_MAX_SNAPSHOT_BYTES,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        if not (interval > 0 and math.isfinite(interval)):
            raise ValueError(f"interval must be a positive number of seconds, got {interval!r}")
        if not max_age > 0:
            raise ValueError(f"max_age must be positive (seconds), got {max_age!r}")
        if not timeout > 0:
            raise ValueError(f"timeout must be positive (seconds), got {timeout!r}")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes <= 0:
            raise ValueError(f"max_bytes must be a positive integer (bytes), got {max_bytes!r}")
        text = str(source)
        self.url: str | None = None
        self.path: Path | None = None
        if isinstance(source, str) and source.startswith(("http://", "https://")):
            base = source.rstrip("/")
            self.url = base if base.endswith("/v1/snapshot") else base + "/v1/snapshot"
        else:
            self.path = Path(text)
        self.source = text
        self.interval = float(interval)
        self.max_age = float(max_age)
        self.timeout = float(timeout)
        self.max_bytes = max_bytes
        self.wall_clock = wall_clock
        self._entries: dict[str, _Entry] = {}
        self._eval: tuple[RemoteEval, float] | None = None  # (the eval, loop time it becomes unknown)
        self._filled: set[str] = set()  # backends whose probe window holds data from this feed
        self._client: httpx.AsyncClient | None = None
        self._outage_since: float | None = None
        self.last_success: float | None = None
        """Loop time of the last successful poll."""
        self.polls = 0
        self.failures = 0

    # -- public reading ---------------------------------------------------------------------

    @property
    def reachable(self) -> bool:
        """Whether the last poll succeeded."""
        return self._outage_since is None and self.last_success is not None

    def remote(self, name: str) -> RemoteHealth | None:
        """What the daemon last said about backend ``name`` (``age`` as of now), or ``None``
        when there is no fresh word of it (never reported, absent from the snapshot, or older
        than ``max_age``)."""
        entry = self._entries.get(name)
        if entry is None:
            return None
        now = anyio.current_time()
        if now >= entry.fresh_until:
            return None
        age = entry.health.age
        return msgspec.structs.replace(entry.health, age=None if age is None else age + (now - entry.observed_at))

    def eval(self) -> RemoteEval | None:
        """The daemon's continuous-eval results, or ``None`` (no ``[eval]``, nothing polled yet,
        or the snapshot that brought them is older than ``max_age``)."""
        if self._eval is None:
            return None
        found, fresh_until = self._eval
        return found if anyio.current_time() < fresh_until else None

    def eval_result(self, task_class: str, backend: str) -> RemoteEvalResult | None:
        """The last eval result of ``task_class`` on ``backend`` (``None``: none, or no fresh word)."""
        found = self.eval()
        return found.results.get(task_class, {}).get(backend) if found is not None else None

    # -- polling ----------------------------------------------------------------------------

    async def follow(self, runtime: Runtime) -> None:
        """Poll every ``interval`` seconds and expire data at exactly ``max_age``, until cancelled.

        Never raises (except cancellation); the HTTP client it opens is closed when it ends.
        """
        client = self._new_client() if self.url is not None else None
        self._client = client
        try:
            next_poll = anyio.current_time()
            while True:
                now = anyio.current_time()
                if now >= next_poll:
                    await self.poll_once(runtime)
                    next_poll = anyio.current_time() + self.interval
                else:
                    self._expire_safely(runtime)
                wake = min([next_poll, *(e.fresh_until for e in self._entries.values())])
                await anyio.sleep_until(wake)
        finally:
            self._client = None
            if client is not None:
                with anyio.CancelScope(shield=True):
                    await client.aclose()

    async def poll_once(self, runtime: Runtime) -> bool:
        """Fetch the snapshot once and merge it into ``runtime``; ``True`` if that worked.

        On failure the outage is logged (once) and only expiry is applied. Never raises
        (except cancellation).
        """
        self.polls += 1
        try:
            data: bytes | None = None
            with anyio.move_on_after(self.timeout):
                data = await self._fetch()
            if data is None:
                raise TimeoutError(f"no snapshot within {self.timeout:g} s")
            try:
                snapshot = _decoder.decode(data)
            except msgspec.DecodeError as exc:
                raise ValueError(f"not a probe snapshot: {exc}") from None
            if snapshot.version not in READABLE_SNAPSHOT_VERSIONS:
                readable = " and ".join(map(str, READABLE_SNAPSHOT_VERSIONS))
                raise ValueError(f"snapshot version {snapshot.version}, this feed reads {readable}")
        except Exception as exc:
            self._failed(exc)
            self._expire_safely(runtime)
            return False
        self._recovered()
        try:
            self._apply(runtime, snapshot)
        except Exception:  # a bug here must not stop the feed, nor a run
            _log.exception("specexec feed: merging the snapshot from %s failed", self.source)
            return False
        return True

    async def _fetch(self) -> bytes:
        if self.url is None:
            assert self.path is not None
            # A local snapshot file is a few kilobytes: read in place (no worker thread, which
            # the structured-concurrency rules forbid; it costs microseconds), within max_bytes.
            # Opened without blocking: a FIFO (or a device) on the path would block the event loop
            # itself in open() or read(); a snapshot is a regular file.
            fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            with os.fdopen(fd, "rb") as file:
                if not stat.S_ISREG(os.fstat(fd).st_mode):
                    raise OSError(f"{self.path} is not a regular file (a probe snapshot is one)")
                data = file.read(self.max_bytes + 1)
            if len(data) > self.max_bytes:
                raise ValueError(f"snapshot file larger than max_bytes ({self.max_bytes} bytes)")
            return data
        client = self._client
        if client is not None:
            return await self._get(client)
        async with self._new_client() as one_shot:
            return await self._get(one_shot)

    def _new_client(self) -> httpx.AsyncClient:
        # only a feed from a URL needs these, so ``import specexec`` does not
        from ._httpx import httpx, ssl_context
        from .backends._body import ACCEPT_ENCODING

        return httpx.AsyncClient(
            timeout=self.timeout,
            trust_env=False,
            follow_redirects=False,
            verify=ssl_context(trust_env=False),
            headers={"accept-encoding": ACCEPT_ENCODING},  # the encodings iter_body inflates in bounded steps
        )

    async def _get(self, client: httpx.AsyncClient) -> bytes:
        """The snapshot's body, at most ``max_bytes`` decoded bytes (a gzip bomb is stopped
        there, never inflated whole); larger is a failed poll."""
        from .backends._body import BodyTooLarge, iter_body

        assert self.url is not None
        async with client.stream("GET", self.url) as response:
            if response.status_code != 200:
                raise OSError(f"GET {self.url}: HTTP {response.status_code}")
            chunks: list[bytes] = []
            try:
                async with contextlib.aclosing(iter_body(response, self.max_bytes)) as body:
                    async for chunk in body:
                        chunks.append(chunk)
            except BodyTooLarge:
                raise ValueError(f"GET {self.url}: snapshot larger than max_bytes ({self.max_bytes} bytes)") from None
        return b"".join(chunks)

    # -- merging and expiry -----------------------------------------------------------------

    def _apply(self, runtime: Runtime, snapshot: _Snapshot) -> None:
        now = anyio.current_time()
        self.last_success = now
        snapshot_age = max(0.0, self.wall_clock() - snapshot.generated_at)
        self._eval = (snapshot.eval, now + self.max_age - snapshot_age) if snapshot.eval is not None else None
        for name in runtime.backends:
            remote = snapshot.backends.get(name)
            if remote is None or remote.age is None or not 0.0 <= remote.age < math.inf:
                self._forget(runtime, name)  # an age that is NaN or negative would be fresh forever
                continue
            fresh_until = now + self.max_age - (remote.age + snapshot_age)
            if now >= fresh_until:
                self._forget(runtime, name)
                continue
            self._entries[name] = _Entry(
                msgspec.structs.replace(remote, age=remote.age + snapshot_age), fresh_until, now
            )
            health = runtime.health(name)
            window = _empty_like(health.probe_latency)
            histogram = _probe_histogram(snapshot.version, remote)
            if remote.state == "healthy" and histogram is not None:
                try:
                    window.merge_encoded(histogram.observed, histogram.censored, now)
                except ValueError as exc:
                    _log.warning("specexec feed: bad latency histogram for %s from %s: %s", name, self.source, exc)
                    window = _empty_like(health.probe_latency)
            if window.count(now) or name in self._filled:
                health.probe_latency = window
            if window.count(now):
                self._filled.add(name)
            else:
                self._filled.discard(name)

    def expire(self, runtime: Runtime) -> None:
        """Make data older than ``max_age`` unknown now (``follow`` calls it at the exact times)."""
        now = anyio.current_time()
        for name, entry in list(self._entries.items()):
            if now >= entry.fresh_until:
                self._forget(runtime, name)

    def _expire_safely(self, runtime: Runtime) -> None:
        try:
            self.expire(runtime)
        except Exception:
            _log.exception("specexec feed: expiring probe data failed")

    def _forget(self, runtime: Runtime, name: str) -> None:
        self._entries.pop(name, None)
        if name in self._filled:
            self._filled.discard(name)
            health = runtime.health(name)
            health.probe_latency = _empty_like(health.probe_latency)

    # -- outage logging ---------------------------------------------------------------------

    def _failed(self, exc: Exception) -> None:
        self.failures += 1
        if self._outage_since is None:
            self._outage_since = anyio.current_time()
            reason = str(exc) or type(exc).__name__
            _log.warning(
                "specexec feed: probe daemon at %s unreachable (%s); probe data ages out after %g s "
                "(logged once until it is back)",
                self.source,
                reason,
                self.max_age,
            )

    def _recovered(self) -> None:
        if self._outage_since is not None:
            down = anyio.current_time() - self._outage_since
            self._outage_since = None
            _log.info("specexec feed: probe daemon at %s reachable again after %.1f s", self.source, down)
