"""``ProbeDaemon``: probes every backend on its schedule and publishes one view of their health.

It ties the pieces together: the ``Scheduler`` (probe loops), a ``ProbeState`` per backend,
the ``DailyBudget``, the continuous eval (``EvalRunner``, with ``[eval]``), the HTTP endpoints
(``_http``) and the snapshot file (``_snapshot``).
Written on anyio: it runs on trio (tests in virtual time) and on asyncio with uvloop (the
command line's default).

Run it inside a task group::

    daemon = ProbeDaemon(ProbeConfig.load("probes.toml"))
    async with anyio.create_task_group() as tg:
        await tg.start(daemon.run)      # listening and probing from here on
        ...
        tg.cancel_scope.cancel()        # clean stop: a final snapshot is written

Cancellation: ``run`` returns only by cancellation; by then every probe, eval call and
connection it started has ended, the HTTP clients are closed and (with a snapshot path) the final
snapshot is on disk.
"""

from __future__ import annotations

import enum
import logging
import os
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import anyio
import msgspec
from anyio.abc import SocketAttribute, SocketStream, TaskGroup, TaskStatus
from anyio.streams.stapled import MultiListener

from specexec import Backend, PolicyError
from specexec._errors import redact
from specexec._health import HealthConfig
from specexec._resources import Resources

from ._budget import DailyBudget
from ._config import ProbeConfig, valid_host
from ._eval import EvalRunner
from ._http import Endpoints, HttpServer
from ._metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from ._metrics import render
from ._schedule import Scheduler, Target
from ._snapshot import (
    SNAPSHOT_MEDIA_TYPE,
    SNAPSHOT_VERSION,
    BudgetView,
    HealthReport,
    Snapshot,
    encode_snapshot,
    read_snapshot_file,
    remove_orphans,
    write_atomic,
)
from ._state import ProbeState

__all__ = ["ProbeDaemon"]

_log = logging.getLogger("specexec.probes")
_JSON = "application/json"


class _Unset(enum.Enum):
    UNSET = enum.auto()


_UNSET = _Unset.UNSET


def _build_backends(config: ProbeConfig) -> list[Backend]:
    """Every ``[[backends]]`` entry built; a ``ValueError`` without a key path gets the entry's."""
    built: list[Backend] = []
    for index, entry in enumerate(config.backends):
        try:
            built.append(entry.build())
        except PolicyError:
            raise
        except ValueError as exc:
            raise PolicyError(f"backend {entry.name!r}: {exc}", path=f"$.backends[{index}]") from None
    return built


class ProbeDaemon:
    """The probe daemon for one config.

    - ``backends``: backend objects to probe instead of building them from ``[[backends]]``
      (tests pass ``SimulatedBackend`` objects); per-backend overrides still apply by name.
    - ``wall_clock``: Unix time (the budget's UTC day, published timestamps); injectable.
    - ``bind`` / ``port`` / ``snapshot`` / ``http``: override ``[probe]`` (``snapshot=None``: no file).

    The constructor builds everything ``run`` uses — every backend, the health config, each
    backend's probe state, the schedule and, with ``[eval]``, the eval file, its datasets and
    its class × backend pairs (``eval``) — and sends nothing, so constructing one is the
    complete check of a config (``specexec probe --check`` does exactly that). A value that
    cannot be built raises ``PolicyError`` with its key path (``ValueError`` for a bad
    ``bind``/``port`` argument).

    After ``run`` has started, ``url`` is the HTTP base URL (``None`` without HTTP).
    ``health_report()``, ``snapshot()`` and ``metrics()`` are what the endpoints serve.
    """

    def __init__(
        self,
        config: ProbeConfig,
        *,
        backends: Sequence[Backend] | None = None,
        wall_clock: Callable[[], float] = time.time,
        bind: str | None = None,
        port: int | None = None,
        snapshot: str | os.PathLike[str] | _Unset | None = _UNSET,
        http: bool | None = None,
    ) -> None:
        self.config = config
        p = config.probe
        self.wall_clock = wall_clock
        self.bind = bind if bind is not None else p.bind
        self.port = port if port is not None else p.port
        if not valid_host(self.bind):
            raise ValueError(f"bind must be an IP address or a host name, got {self.bind!r}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be 0 to 65535, got {self.port!r}")
        self.http = http if http is not None else p.http
        if isinstance(snapshot, _Unset):
            self.snapshot_path: Path | None = Path(p.snapshot) if p.snapshot else None
        else:
            self.snapshot_path = Path(snapshot) if snapshot is not None else None
        try:
            self.health_config = HealthConfig(
                window=p.window,
                slices=p.slices,
                min_samples=p.min_samples,
                breaker=config.health.breaker,
                probe_max_age=config.health.probe_max_age,
            )
        except PolicyError:
            raise
        except ValueError as exc:
            raise PolicyError(
                f"the daemon's health windows ([probe] window, slices, min_samples; [health] breaker,"
                f" probe_max_age): {exc}",
                path="$.probe",
            ) from None
        self.backends = list(backends) if backends is not None else _build_backends(config)
        names = [b.name for b in self.backends]
        if len(set(names)) != len(names):
            raise ValueError(f"two backends share a name among {names}")
        self.budget = DailyBudget(p.daily_budget)
        self.targets: dict[str, Target] = {}
        for backend in self.backends:
            settings = config.target(backend)
            state = ProbeState(
                settings,
                self.health_config,
                provider=getattr(backend, "provider", ""),
                region=getattr(backend, "region", ""),
            )
            self.targets[backend.name] = Target(backend, settings, state, seed=p.seed)
        self.eval: EvalRunner | None = None
        """The continuous evaluation (``[eval]``), or ``None``."""
        if config.eval is not None:
            probed = [b for b in self.backends if self.targets[b.name].settings.enabled]
            self.eval = EvalRunner(
                config.eval,
                probed,
                pinned={name: t.settings.pinned_model for name, t in self.targets.items()},
                states=self.states,
                wall_clock=wall_clock,
                secrets=self.secrets,
            )
        self._secret_envs = sorted(
            {env for b in self.backends if isinstance(env := getattr(b, "api_key_env", None), str)}
        )
        self.started_at = wall_clock()
        self._started_loop = 0.0
        self.url: str | None = None
        self.scheduler = Scheduler(
            list(self.targets.values()),
            max_concurrent=p.max_concurrent,
            budget=self.budget,
            wall_clock=self.wall_clock,
            redact=self.redact,
            secrets=self.secrets,
        )
        self._revision_value = 0  # the last revision published (see Snapshot.revision)
        self._changes_seen: int | None = None  # the targets' change count it was published for
        self._snapshot_failing = False  # an outage of the snapshot file is logged once

    # -- what is published ------------------------------------------------------------------

    @property
    def states(self) -> dict[str, ProbeState]:
        """Each backend's probe state, by name."""
        return {name: t.state for name, t in self.targets.items()}

    def secrets(self) -> list[str]:
        """The configured keys' values now (from the environment) and what else the backends send as
        credentials (``headers_env`` values, credential headers, ``base_url`` user info: ``HttpBackend.secrets``)."""
        found = [v for env in self._secret_envs if (v := os.environ.get(env))]
        for b in self.backends:
            own = getattr(b, "secrets", None)
            if callable(own):
                found += own()
        return found

    def redact(self, text: str) -> str:
        """``text`` without any API key (the configured keys verbatim, and anything key-like)."""
        return redact(text, self.secrets())

    def _budget_view(self, wall: float) -> BudgetView:
        return self.budget.view(wall)

    def _revision(self) -> int:
        """The published revision: bumped to ``max(previous + 1, Unix µs)`` when the data changed."""
        changes = sum(t.state.revision for t in self.targets.values())
        changes += self.eval.revision if self.eval is not None else 0
        if changes != self._changes_seen:
            self._changes_seen = changes
            self._revision_value = max(self._revision_value + 1, int(self.wall_clock() * 1e6))
        return self._revision_value

    def health_report(self) -> HealthReport:
        """``GET /v1/health``: the daemon and every backend, now."""
        now, wall = anyio.current_time(), self.wall_clock()
        return HealthReport(
            version=SNAPSHOT_VERSION,
            generated_at=wall,
            started_at=self.started_at,
            uptime=max(0.0, now - self._started_loop),
            revision=self._revision(),
            window=self.health_config.window,
            budget=self._budget_view(wall),
            backends={name: t.state.view(now, wall) for name, t in self.targets.items()},
            eval=self.eval.view(now, wall) if self.eval is not None else None,
        )

    def snapshot(self) -> Snapshot:
        """``GET /v1/snapshot``: the health report with every backend's encoded histograms, now."""
        now, wall = anyio.current_time(), self.wall_clock()
        return Snapshot(
            version=SNAPSHOT_VERSION,
            generated_at=wall,
            started_at=self.started_at,
            revision=self._revision(),
            window=self.health_config.window,
            budget=self._budget_view(wall),
            backends={name: t.state.snapshot(now, wall) for name, t in self.targets.items()},
            eval=self.eval.view(now, wall) if self.eval is not None else None,
        )

    def metrics(self) -> str:
        """``GET /metrics``: Prometheus text exposition (``MetricsUnavailable`` without prometheus_client)."""
        return render(self.health_report(), self.states)

    def endpoints(self) -> Endpoints:
        """The HTTP routes' bodies."""
        return Endpoints(
            healthz=lambda: (
                _JSON,
                msgspec.json.encode({"status": "ok", "uptime": anyio.current_time() - self._started_loop}),
            ),
            health=lambda: (_JSON, msgspec.json.encode(self.health_report())),
            snapshot=lambda: (SNAPSHOT_MEDIA_TYPE, encode_snapshot(self.snapshot())),
            metrics=lambda: (METRICS_CONTENT_TYPE, self.metrics().encode("utf-8")),
        )

    # -- the snapshot file -----------------------------------------------------------------

    def write_snapshot(self) -> bool:
        """Write the snapshot file now (atomically); ``False`` if it failed or there is none.

        A failure is logged as an ERROR once per outage (later failures at DEBUG), and the first
        write that works again at INFO.
        """
        if self.snapshot_path is None:
            return False
        try:
            write_atomic(self.snapshot_path, encode_snapshot(self.snapshot()))
        except OSError as exc:
            if self._snapshot_failing:
                _log.debug("snapshot: still cannot write %s: %s", self.snapshot_path, exc.strerror or exc)
            else:
                self._snapshot_failing = True
                _log.error(
                    "snapshot: cannot write %s: %s (retried every %g s; logged once until it works again)",
                    self.snapshot_path,
                    exc.strerror or exc,
                    self.config.probe.snapshot_interval,
                )
            return False
        if self._snapshot_failing:
            self._snapshot_failing = False
            _log.info("snapshot: writing %s works again", self.snapshot_path)
        return True

    def remove_orphans(self) -> None:
        """Remove temp files a killed writer of this snapshot file left behind (``.{name}.*.tmp``)."""
        if self.snapshot_path is None:
            return
        try:
            removed = remove_orphans(self.snapshot_path)
        except OSError as exc:
            _log.warning("snapshot: cannot look for orphan temp files next to %s: %s", self.snapshot_path, exc)
            return
        if removed:
            _log.info("snapshot: removed %d orphan temp file(s): %s", len(removed), ", ".join(p.name for p in removed))

    def resume(self) -> bool:
        """Resume from the snapshot file, if there is one: counters, last results, budget, histograms.

        Histograms are restored only from a snapshot younger than the window. Backends no
        longer configured are dropped. A bad file is logged and ignored (it is overwritten by
        the next write). Returns whether anything was restored.
        """
        if self.snapshot_path is None:
            return False
        try:
            snap = read_snapshot_file(self.snapshot_path)
        except ValueError as exc:
            _log.warning("snapshot: ignoring %s: %s", self.snapshot_path, exc)
            return False
        if snap is None:
            return False
        now, wall = anyio.current_time(), self.wall_clock()
        fresh = wall - snap.generated_at < self.health_config.window
        for name, entry in snap.backends.items():
            target = self.targets.get(name)
            if target is None:
                continue
            try:
                target.state.restore(entry, now=now, histograms=fresh)
            except ValueError as exc:
                _log.warning("snapshot: histograms of %s not restored: %s", name, exc)
            state = target.state  # a file written before these were redacted may quote a key
            for attribute in ("canary_reason", "last_error"):
                text = getattr(state, attribute)
                if text is not None:
                    setattr(state, attribute, self.redact(text))
        self.budget.restore(snap.budget.day, snap.budget.spent, snap.budget.total, wall)
        if self.eval is not None and snap.eval is not None:
            self.eval.restore(snap.eval, wall, results=snap.eval.file == self.eval.settings.file)
        self._revision_value = max(self._revision_value, snap.revision)
        self._changes_seen = None  # the next revision published is above the file's
        _log.info(
            "snapshot: resumed from %s (written %.0f s ago%s)",
            self.snapshot_path,
            max(0.0, wall - snap.generated_at),
            "" if fresh else "; histograms too old to restore",
        )
        return True

    async def _serve_http(self, listener: MultiListener[SocketStream], tg: TaskGroup) -> None:
        server = HttpServer(self.endpoints())
        async with listener:
            await listener.serve(server.handle, tg)

    async def _snapshot_loop(self) -> None:
        interval = self.config.probe.snapshot_interval
        while True:
            await anyio.sleep(interval)
            self.write_snapshot()

    # -- running ---------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[ProbeDaemon] = anyio.TASK_STATUS_IGNORED) -> None:
        """Resume, listen, probe, evaluate and write snapshots until cancelled (see the module docs).

        Reports itself through ``task_status`` once listening. Raises ``OSError`` if the HTTP
        address cannot be bound.
        """
        self._started_loop = anyio.current_time()
        self.resume()
        resources = Resources()
        self.scheduler.resources = resources
        started = False
        try:
            async with anyio.create_task_group() as tg:
                if self.http:
                    listener = await anyio.create_tcp_listener(local_host=self.bind, local_port=self.port)
                    port = listener.extra(SocketAttribute.local_port)
                    host = f"[{self.bind}]" if ":" in self.bind else self.bind
                    self.url = f"http://{host}:{port}"
                    tg.start_soon(self._serve_http, listener, tg)
                    _log.info("probe daemon: serving %s (/healthz, /v1/health, /v1/snapshot, /metrics)", self.url)
                tg.start_soon(self.scheduler.run)
                if self.eval is not None:
                    tg.start_soon(self.eval.run, name="continuous eval")
                if self.snapshot_path is not None:
                    # Only now: a daemon that could not bind (another instance holds the port)
                    # must not remove that instance's temp files.
                    self.remove_orphans()
                    tg.start_soon(self._snapshot_loop)
                enabled = sum(t.settings.enabled for t in self.targets.values())
                _log.info("probe daemon: probing %d backend(s)", enabled)
                task_status.started(self)
                started = True
        finally:
            # Only a daemon that ran writes: one that failed to start must not overwrite the
            # file of another instance that holds the port.
            if started and self.snapshot_path is not None and self.write_snapshot():
                _log.info("snapshot: final snapshot written to %s", self.snapshot_path)
            with anyio.move_on_after(2.0, shield=True):
                await resources.aclose()
