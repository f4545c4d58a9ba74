"""The fleet in a subprocess, for tests and benchmarks that run on trio (the fleet is asyncio)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from ._config import FleetConfig
from ._server import FleetStartError

if TYPE_CHECKING:  # imported lazily: the fleet's own process never needs an HTTP client
    import httpx

__all__ = ["DEFAULT_START_TIMEOUT", "FleetProcess", "start_fleet_process"]

#: Seconds :func:`start_fleet_process` waits for the fleet to be listening.
DEFAULT_START_TIMEOUT = 20.0

# The directory holding the ``benchmarks`` package: put on the child's PYTHONPATH.
_ROOT = Path(__file__).resolve().parents[2]


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> int:
    """Stop ``proc`` gracefully (SIGTERM), SIGKILL after ``timeout`` seconds; its exit status."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    return proc.returncode


class FleetProcess:
    """A running fleet subprocess (see :func:`start_fleet_process`); a context manager that stops it.

    ``port``, ``url`` and ``deployments`` (name → ``base_url``) come from its ready file;
    :meth:`stats`, :meth:`reset` and :meth:`healthz` are synchronous httpx calls.
    """

    def __init__(
        self, proc: subprocess.Popen[bytes], config: FleetConfig, workdir: Path, ready: Mapping[str, Any]
    ) -> None:
        self.process = proc
        self.config = config
        self.port: int = int(ready["port"])
        self.url: str = str(ready["url"])
        self.deployments: dict[str, str] = dict(ready["deployments"])
        self._workdir = workdir
        self._client: httpx.Client | None = None
        self._stderr = ""

    @property
    def pid(self) -> int:
        """The subprocess's pid."""
        return self.process.pid

    @property
    def returncode(self) -> int | None:
        """The exit status once it has stopped, else ``None``."""
        return self.process.poll()

    def base_url(self, deployment: str) -> str:
        """The ``base_url`` of ``deployment``: ``http://127.0.0.1:PORT/NAME/v1``."""
        try:
            return self.deployments[deployment]
        except KeyError:
            raise KeyError(f"no deployment {deployment!r} in this fleet (has {sorted(self.deployments)})") from None

    def _http(self) -> httpx.Client:
        import httpx

        if self._client is None:
            self._client = httpx.Client(base_url=self.url, timeout=10.0, trust_env=False)
        return self._client

    def stats(self) -> dict[str, Any]:
        """``GET /stats``: counters per deployment (see the package docs)."""
        r = self._http().get("/stats")
        r.raise_for_status()
        doc: dict[str, Any] = r.json()
        return doc

    def deployment_stats(self, deployment: str) -> dict[str, Any]:
        """The ``/stats`` entry of one deployment."""
        entry: dict[str, Any] = self.stats()["deployments"][deployment]
        return entry

    def reset(self) -> None:
        """``POST /reset``: zero the counters, reseed the draws, restart the event clock."""
        self._http().post("/reset").raise_for_status()

    def healthz(self) -> bool:
        """Whether ``GET /healthz`` answers 200."""
        import httpx

        try:
            return self._http().get("/healthz").status_code == 200
        except httpx.HTTPError:
            return False

    def stderr_text(self) -> str:
        """What the subprocess wrote to stderr so far (all of it, after :meth:`close`)."""
        path = self._workdir / "stderr.log"
        if path.exists():
            return path.read_text(encoding="utf-8", errors="replace")
        return self._stderr

    def close(self, timeout: float = 5.0) -> int | None:
        """Stop the fleet (SIGTERM, then SIGKILL after ``timeout`` seconds); returns its exit status."""
        if self._client is not None:
            self._client.close()
            self._client = None
        stop_process(self.process, timeout)
        if self._workdir.exists():
            self._stderr = self.stderr_text()
            shutil.rmtree(self._workdir, ignore_errors=True)
        return self.process.returncode

    def __enter__(self) -> FleetProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<FleetProcess pid={self.pid} url={self.url} deployments={sorted(self.deployments)}>"


def start_fleet_process(
    config: FleetConfig | str | os.PathLike[str],
    *,
    seed: int | None = None,
    port: int = 0,
    env: Mapping[str, str] | None = None,
    timeout: float = DEFAULT_START_TIMEOUT,
) -> FleetProcess:
    """Launch ``python -m specexec.bench.fleet`` on ``config`` and wait until it listens.

    ``config`` is a TOML path or a :class:`FleetConfig` (written to a temporary TOML).
    ``env`` adds variables to the child's environment (e.g. the ones ``api_key_env``
    names). Waits at most ``timeout`` seconds for the ready file; if the fleet exits or
    does not get ready in time, raises :class:`FleetStartError` with its stderr. The child
    exits by itself if this process dies. Use as ``with start_fleet_process(cfg) as fleet:``.
    """
    cfg = config.validated() if isinstance(config, FleetConfig) else FleetConfig.load(config)
    workdir = Path(tempfile.mkdtemp(prefix="specexec-fleet-"))
    try:
        config_path = workdir / "fleet.toml"
        if isinstance(config, FleetConfig):
            cfg.dump(config_path)
        else:
            shutil.copyfile(config, config_path)
        ready_path = workdir / "ready.json"
        argv = [
            sys.executable,
            "-m",
            "specexec.bench.fleet",
            "--config",
            str(config_path),
            "--port",
            str(port),
            "--ready-file",
            str(ready_path),
            "--exit-with-parent",
            str(os.getpid()),
        ]
        if seed is not None:
            argv += ["--seed", str(seed)]
        child_env = dict(os.environ)
        child_env.update(env or {})
        child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(_ROOT), child_env.get("PYTHONPATH", "")) if p)
        with open(workdir / "stdout.log", "wb") as out, open(workdir / "stderr.log", "wb") as err:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=err, env=child_env)
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise

    deadline = time.monotonic() + timeout
    while True:
        if ready_path.exists():
            try:
                ready = json.loads(ready_path.read_text(encoding="utf-8"))
            except (OSError, ValueError):  # pragma: no cover - written atomically, so not expected
                ready = None
            if ready is not None:
                return FleetProcess(proc, cfg.with_seed(seed) if seed is not None else cfg, workdir, ready)
        rc = proc.poll()
        if rc is not None or time.monotonic() > deadline:
            if rc is None:
                proc.kill()
                proc.wait()
            stderr = (workdir / "stderr.log").read_text(encoding="utf-8", errors="replace").strip()
            shutil.rmtree(workdir, ignore_errors=True)
            why = f"exited with status {rc}" if rc is not None else f"was not listening after {timeout:g} s"
            raise FleetStartError(f"the fleet subprocess {why}; its stderr:\n{stderr or '(empty)'}")
        time.sleep(0.01)
