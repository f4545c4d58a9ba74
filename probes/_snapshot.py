"""What the daemon publishes: the ``/v1/health`` report and the ``/v1/snapshot`` (msgpack) document.

Both are msgspec Structs. A snapshot is the health report plus, per backend and per probe
query (``ping``: the plain probe query; ``canary``: the canary question), the latency and
TTFT windows as HdrHistogram's standard compressed encoding (base64 text, observed and
censored separately, as ``specexec._health.LatencyWindow.encode`` makes them), so a receiver
can merge them into its own histograms (``LatencyWindow.merge_encoded``) and get the same
quantiles. ``specexec.HealthFeed`` reads a subset of these fields; keep the two in step
(fields may be added; a change of meaning or shape bumps ``SNAPSHOT_VERSION``).

Versions: 2 keeps one histogram per probe query (``BackendSnapshot.queries``); version 1
had one per backend that mixed the ping and the canary. ``decode_snapshot`` reads both (a
version-1 entry becomes a ``ping`` query when it had no canary, else its histograms are
dropped: they cannot be split).

Continuous evaluation (``[eval]``) adds ``eval`` (``EvalView``: per task class and backend, the
last run's pass rate, Wilson interval, cases and the bar) and each backend's ``drift_reasons``;
both have defaults, so a version-2 document without them (an older daemon) reads as before,
and an older reader ignores them.

Times are Unix seconds (``*_at``) or seconds (``age``: since the last finished probe, at
``generated_at``). The snapshot file is written atomically (temp file, fsync, rename), so
a reader sees the old or the new file, never half of one; the daemon resumes from it on
restart.
"""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Literal

import msgspec

__all__ = [
    "CANARY",
    "PING",
    "READABLE_SNAPSHOT_VERSIONS",
    "SNAPSHOT_MEDIA_TYPE",
    "SNAPSHOT_VERSION",
    "BackendSnapshot",
    "BackendView",
    "BudgetView",
    "EncodedHistogram",
    "EvalResultView",
    "EvalView",
    "HealthReport",
    "QuerySnapshot",
    "QueryView",
    "Snapshot",
    "decode_snapshot",
    "encode_snapshot",
    "read_snapshot_file",
    "remove_orphans",
    "write_atomic",
]

# One version for the writer (this daemon) and the reader (specexec.HealthFeed), so they cannot drift.
from specexec._feed import CANARY as CANARY
from specexec._feed import PING as PING
from specexec._feed import READABLE_SNAPSHOT_VERSIONS as READABLE_SNAPSHOT_VERSIONS
from specexec._feed import SNAPSHOT_VERSION as SNAPSHOT_VERSION

SNAPSHOT_MEDIA_TYPE = "application/vnd.msgpack"
"""The ``Content-Type`` of ``GET /v1/snapshot``."""

State = Literal["healthy", "degraded", "unhealthy", "unknown"]
Circuit = Literal["closed", "open", "half_open"]
CanaryResult = Literal["passed", "failed"]


class EncodedHistogram(msgspec.Struct, frozen=True):
    """A latency window's observed and censored histograms, each HdrHistogram-compressed, base64."""

    observed: str
    censored: str


class QueryView(msgspec.Struct, frozen=True, kw_only=True):
    """One probe query of one backend in ``/v1/health``: its latency over the daemon's window.

    ``p50``/``p90``/``p99``/``ttft_p50`` (seconds; ``None`` below ``min_samples``), ``samples``
    in the window (timeouts included, as censored samples), and ``latency_sum``/``latency_count``
    (``ttft_*``) of its successful probes since the first start.
    """

    p50: float | None
    p90: float | None
    p99: float | None
    ttft_p50: float | None
    samples: int
    latency_sum: float
    latency_count: int
    ttft_sum: float
    ttft_count: int


class QuerySnapshot(QueryView, frozen=True, kw_only=True):
    """One probe query in ``/v1/snapshot``: its view plus the encoded latency and TTFT windows."""

    latency: EncodedHistogram
    ttft: EncodedHistogram


class BackendView(msgspec.Struct, frozen=True, kw_only=True):
    """One backend in ``/v1/health``.

    ``state``: ``healthy``; ``degraded`` (the last canary got a wrong answer); ``unhealthy``
    (the last ``unhealthy_after`` probes failed); ``unknown`` (no probe finished in
    ``stale_after`` seconds, e.g. the budget is spent). ``circuit`` is a circuit breaker
    fed by the probes (``[health.breaker]`` rules). ``queries``: latency per probe query
    (``ping``, and ``canary`` when the backend has one); ``p50``/``p90``/``p99``/``ttft_p50``,
    ``samples`` and ``latency_*``/``ttft_*`` are the ``ping``'s (the canary is a longer
    question: mixing them would make a fast backend look slow); ``success_rate`` over the window;
    ``model`` the pinned id, ``reported_model`` the last one the provider reported; ``drift``
    when they differ, or when a continuous eval found the backend below a class's bar or
    reporting another model (``drift_reasons`` says which). ``successes``, ``failures``,
    ``errors`` (by kind), ``probes``, ``skipped`` (not sent: budget) and ``cost`` (USD) count since the first start.
    """

    provider: str
    region: str
    model: str | None
    state: State
    circuit: Circuit
    p50: float | None
    p90: float | None
    p99: float | None
    ttft_p50: float | None
    samples: int
    success_rate: float | None
    successes: int
    failures: int
    errors: dict[str, int]
    consecutive_failures: int
    last_error_kind: str | None
    last_error: str | None
    last_error_at: float | None
    last_success_at: float | None
    last_probe_at: float | None
    age: float | None
    reported_model: str | None
    drift: bool
    canary: CanaryResult | None
    canary_reason: str | None
    canary_at: float | None
    probes: int
    skipped: int
    cost: float
    interval: float
    latency_sum: float
    latency_count: int
    ttft_sum: float
    ttft_count: int
    queries: Mapping[str, QueryView] = {}
    drift_reasons: tuple[str, ...] = ()


class BackendSnapshot(BackendView, frozen=True, kw_only=True):
    """One backend in ``/v1/snapshot``: its health view with each query's encoded windows."""

    queries: Mapping[str, QuerySnapshot] = {}


class BudgetView(msgspec.Struct, frozen=True, kw_only=True):
    """The daily probe budget: ``limit`` (``None``: none) and ``spent`` USD on UTC ``day``.

    ``exhausted``: probing is stopped until ``resets_at`` (Unix time of the next UTC midnight).
    ``total``: USD spent on probes since the first start.
    """

    limit: float | None
    spent: float
    reserved: float
    day: int
    date: str
    exhausted: bool
    resets_at: float
    total: float


class EvalResultView(msgspec.Struct, frozen=True, kw_only=True):
    """One task class on one backend, from its last eval run that answered a case.

    ``pass_rate`` = ``passed`` / ``cases`` (the cases answered; ``None`` before any), ``low`` /
    ``high`` its 95 % Wilson interval, ``bar`` the class's ``min_pass_rate`` and ``below_bar``
    (exact: 8/10 is below 0.9), ``errors`` (failed calls) and ``skipped`` (not sent: budget) of
    that run apart, ``model`` the id the backend reported, ``pinned_model`` the daemon's pin,
    ``model_changed`` when they differ, ``last_run_at`` (Unix time the run started) and ``cost``
    (USD) of that run.
    """

    passed: int
    cases: int
    errors: int
    skipped: int
    pass_rate: float | None
    low: float
    high: float
    bar: float
    below_bar: bool
    model: str | None
    pinned_model: str | None
    model_changed: bool
    last_run_at: float
    cost: float


class EvalView(msgspec.Struct, frozen=True, kw_only=True):
    """``[eval]``: the continuous evaluation. ``results`` by task class, then backend.

    ``runs`` (started since the first start), ``last_run_at`` / ``next_run_at`` (Unix times the
    last run started and the next one is due; ``None``: none yet / running now), ``running``,
    ``interval`` (seconds), ``sample`` (cases per class per run; ``None``: all), ``skipped``
    (calls not sent: budget, since the first start), ``cost`` (USD since the first start),
    ``round`` (the rotating window's next
    position), and ``budget``: the eval's own daily budget.
    """

    name: str
    file: str
    interval: float
    sample: int | None
    runs: int
    round: int
    running: bool
    last_run_at: float | None
    next_run_at: float | None
    skipped: int
    cost: float
    budget: BudgetView
    results: dict[str, dict[str, EvalResultView]]


class HealthReport(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/health``: the daemon and every backend, as JSON (``eval``: with ``[eval]``)."""

    version: int
    generated_at: float
    started_at: float
    uptime: float
    revision: int
    window: float
    budget: BudgetView
    backends: dict[str, BackendView]
    eval: EvalView | None = None


class Snapshot(msgspec.Struct, frozen=True, kw_only=True):
    """``GET /v1/snapshot`` and the snapshot file: the health report with encoded histograms.

    ``revision`` changes only when the data does (a probe result was recorded or a snapshot
    resumed: same revision, same data) and then grows to ``max(previous + 1, Unix time in
    microseconds)``. A restarted daemon resumes from its snapshot file's revision, so its
    revisions stay above the file's even if the wall clock was set back, and above every
    revision the previous run served (also those served after its last snapshot write, e.g.
    before a ``kill -9``) unless the clock was set back by more than the restart took.
    """

    version: int
    generated_at: float
    started_at: float
    revision: int
    window: float
    budget: BudgetView
    backends: dict[str, BackendSnapshot]
    eval: EvalView | None = None


class _BackendSnapshotV1(BackendView, frozen=True, kw_only=True):
    latency: EncodedHistogram
    ttft: EncodedHistogram


class _SnapshotV1(msgspec.Struct, frozen=True, kw_only=True):
    version: int
    generated_at: float
    started_at: float
    revision: int
    window: float
    budget: BudgetView
    backends: dict[str, _BackendSnapshotV1]


class _Version(msgspec.Struct, frozen=True):
    version: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(Snapshot)
_decoder_v1 = msgspec.msgpack.Decoder(_SnapshotV1)
_version_decoder = msgspec.msgpack.Decoder(_Version)


def encode_snapshot(snapshot: Snapshot) -> bytes:
    """A snapshot as msgpack bytes."""
    return _encoder.encode(snapshot)


def _from_v1(entry: _BackendSnapshotV1) -> BackendSnapshot:
    fields = {f: getattr(entry, f) for f in BackendView.__struct_fields__ if f != "queries"}
    queries: dict[str, QuerySnapshot] = {}
    if entry.canary is None:  # never a canary: the one window was the ping's
        queries[PING] = QuerySnapshot(
            p50=entry.p50,
            p90=entry.p90,
            p99=entry.p99,
            ttft_p50=entry.ttft_p50,
            samples=entry.samples,
            latency_sum=entry.latency_sum,
            latency_count=entry.latency_count,
            ttft_sum=entry.ttft_sum,
            ttft_count=entry.ttft_count,
            latency=entry.latency,
            ttft=entry.ttft,
        )
    return BackendSnapshot(**fields, queries=queries)


def decode_snapshot(data: bytes) -> Snapshot:
    """Decode msgpack bytes (snapshot version 1 or 2) into a ``Snapshot``; ``ValueError`` on anything else.

    A version-1 document keeps its ``version``; its backends' windows become ``ping`` queries
    where they held only pings (see the module docs).
    """
    try:
        version = _version_decoder.decode(data).version
        if version not in READABLE_SNAPSHOT_VERSIONS:
            raise ValueError(
                f"snapshot version {version} (this daemon reads {', '.join(map(str, READABLE_SNAPSHOT_VERSIONS))})"
            )
        if version == 1:
            old = _decoder_v1.decode(data)
            return Snapshot(
                version=old.version,
                generated_at=old.generated_at,
                started_at=old.started_at,
                revision=old.revision,
                window=old.window,
                budget=old.budget,
                backends={name: _from_v1(entry) for name, entry in old.backends.items()},
            )
        return _decoder.decode(data)
    except msgspec.DecodeError as exc:
        raise ValueError(f"not a probe snapshot: {exc}") from None


_TMP_SUFFIX = ".tmp"


def remove_orphans(path: str | os.PathLike[str]) -> list[Path]:
    """Remove the temp files ``write_atomic(path, ...)`` left behind when a writer was killed mid-write.

    Only regular files named ``.{name}.*.tmp`` in ``path``'s directory are removed (``name`` is
    ``path``'s file name): the pattern ``write_atomic`` creates, so other files are never
    touched. Call it only while no other process writes ``path``. Returns the removed files;
    a file that cannot be removed is skipped (``OSError`` only if the directory cannot be listed
    for another reason than not existing).
    """
    target = Path(path)
    prefix = f".{target.name}."
    removed: list[Path] = []
    try:
        names = os.listdir(target.parent)
    except FileNotFoundError:
        return removed
    for name in names:
        if not (name.startswith(prefix) and name.endswith(_TMP_SUFFIX) and len(name) > len(prefix) + len(_TMP_SUFFIX)):
            continue
        orphan = target.parent / name
        try:
            if stat.S_ISREG(orphan.lstat().st_mode):
                orphan.unlink()
                removed.append(orphan)
        except OSError:
            continue
    return removed


def write_atomic(path: str | os.PathLike[str], data: bytes) -> None:
    """Replace the file at ``path`` with ``data`` atomically: temp file, fsync, rename, fsync the directory.

    Readers see the old file or the new one, never a partial write; after a crash the file is
    one of the two. The file is world-readable (``0644``): it holds no secrets.

    Synchronous, on purpose: snapshot files are small (kilobytes) and local, so the write takes
    well under a millisecond plus the fsync, and the project's rules keep work off threads.
    """
    target = Path(path)
    directory = target.parent
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=_TMP_SUFFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            os.chmod(tmp, 0o644)  # mkstemp makes it 0600; services of other users read this file
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    with contextlib.suppress(OSError):  # not every platform/filesystem lets a directory be fsynced
        dir_fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)


def read_snapshot_file(path: str | os.PathLike[str]) -> Snapshot | None:
    """The snapshot in the file at ``path``, or ``None`` when there is no file.

    Raises ``ValueError`` when the file is not a readable snapshot.
    """
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ValueError(f"cannot read snapshot file: {exc.strerror}") from None
    return decode_snapshot(data)
