"""The service examples (``examples/fastapi_service``, ``examples/trio_service.py``) as real processes.

Used by their tests and by the load benchmark (``specexec.bench.service_load``):
``start_service`` launches one on a free loopback port, pointed at a fleet's port through a
copy of the example's own ``backends.toml`` (and optionally ``router.toml``) with the values
changed, and waits until ``GET /healthz`` answers as the process it started (another process
on a port it chose moves it to another port) — polling with a bounded deadline. A
``ServiceProcess`` is a context manager that stops it (SIGTERM, then SIGKILL) and removes its
files; on a failed start its stderr is in the error.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from types import TracebackType
from typing import Literal

import httpx

from ._ports import free_port
from .fleet import Constant, Deployment, FleetConfig
from .fleet._process import stop_process

__all__ = [
    "CANARY",
    "EXAMPLES",
    "KINDS",
    "ServiceProcess",
    "ServiceStartError",
    "example_fleet_config",
    "free_port",
    "service_argv",
    "start_service",
    "write_configs",
]

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
"""The repository's ``examples`` directory."""
Kind = Literal["fastapi", "trio"]
KINDS: tuple[Kind, ...] = ("fastapi", "trio")
"""``fastapi``: uvicorn on uvloop; ``trio``: hypercorn's trio worker."""
START_TIMEOUT = 30.0
"""Seconds a service may take to answer ``/healthz``."""
PORT_TRIES = 5
"""Free ports ``start_service`` tries when the one it chose turns out held by another process."""
_EXAMPLE_FLEET = "127.0.0.1:8100"  # where the shipped backends.toml points


CANARY = "What is 2 + 2? Answer with a number only."
"""A question the example fleet's deployments answer with exactly ``"4"``."""
_MODEL = "alpha-mini-2025-01-15"  # the model backends.toml pins


def example_fleet_config(ttft_us: float = 0.005, ttft_eu: float = 0.010) -> FleetConfig:
    """A fleet with the two deployments the example's ``backends.toml`` names (``alpha-us``,
    ``alpha-eu``): constant time to first token (seconds), then 12 tokens at 0.5 ms, no faults."""

    def dep(name: str, region: str, ttft: float) -> Deployment:
        return Deployment(
            name=name,
            provider="alpha",
            region=region,
            model=_MODEL,
            latency=Constant(value=ttft),
            per_token=0.0005,
            output_tokens=12,
            answers={CANARY: "4"},
        )

    return FleetConfig(deployments=(dep("alpha-us", "us-east", ttft_us), dep("alpha-eu", "eu-west", ttft_eu)))


class ServiceStartError(RuntimeError):
    """A service example exited or did not get ready in time; the message holds its stderr."""


def write_configs(
    directory: Path,
    fleet_port: int,
    *,
    rpm: float | None = None,
    limit_usd: float | None = None,
) -> dict[str, str]:
    """Copies of the example's TOML files in ``directory``: ``backends.toml`` pointed at the fleet
    on ``fleet_port`` (and every backend's ``rpm`` set to ``rpm``), ``router.toml`` with the tenant
    budget's ``limit_usd``. Returns the environment variables that make a service read them."""
    source = EXAMPLES / "fastapi_service"
    backends = (source / "backends.toml").read_text(encoding="utf-8")
    if _EXAMPLE_FLEET not in backends:
        raise ValueError(f"{source / 'backends.toml'} no longer points at {_EXAMPLE_FLEET}: update {__file__}")
    backends = backends.replace(_EXAMPLE_FLEET, f"127.0.0.1:{fleet_port}")
    if rpm is not None:
        backends, n = re.subn(r"rpm = [0-9.]+", f"rpm = {rpm:g}", backends)
        if n == 0:
            raise ValueError(f"no `rpm = ...` in {source / 'backends.toml'} to change")
    router = (source / "router.toml").read_text(encoding="utf-8")
    if limit_usd is not None:
        router, n = re.subn(r"limit_usd = [0-9.]+", f"limit_usd = {limit_usd!r}", router)
        if n != 1:
            raise ValueError(f"expected one `limit_usd = ...` in {source / 'router.toml'}, found {n}")
    (directory / "backends.toml").write_text(backends, encoding="utf-8")
    (directory / "router.toml").write_text(router, encoding="utf-8")
    return {"SPECEXEC_BACKENDS": str(directory / "backends.toml"), "SPECEXEC_ROUTER": str(directory / "router.toml")}


def service_argv(kind: Kind, port: int) -> list[str]:
    """The command line that serves example ``kind`` on 127.0.0.1:``port``."""
    if kind == "fastapi":
        return [
            sys.executable, "-m", "uvicorn", "fastapi_service.app:app", "--app-dir", str(EXAMPLES),
            "--loop", "uvloop", "--host", "127.0.0.1", "--port", str(port), "--no-access-log",
        ]  # fmt: skip
    if kind == "trio":
        return [sys.executable, str(EXAMPLES / "trio_service.py"), "--host", "127.0.0.1", "--port", str(port)]
    raise ValueError(f"unknown service kind {kind!r}; known: {', '.join(KINDS)}")


class ServiceProcess:
    """A running service example; ``url`` is its base URL. ``close()`` (or leaving ``with``) stops it."""

    def __init__(self, kind: Kind, process: subprocess.Popen[bytes], port: int, workdir: Path) -> None:
        self.kind = kind
        self.process = process
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self._workdir = workdir
        self.output = ""  # everything it wrote, once closed

    @property
    def pid(self) -> int:
        """The service's process id."""
        return self.process.pid

    def stderr_text(self) -> str:
        """What the service wrote (stdout and stderr) so far; after ``close``, all of it."""
        path = self._workdir / "stderr.log"
        return path.read_text(encoding="utf-8", errors="replace") if path.exists() else self.output

    def close(self, timeout: float = 10.0) -> int:
        """Stop the service (SIGTERM: a graceful shutdown; SIGKILL after ``timeout`` s); its exit status
        (0 after a graceful shutdown)."""
        status = stop_process(self.process, timeout)
        if self._workdir.exists():
            self.output = self.stderr_text()
            shutil.rmtree(self._workdir, ignore_errors=True)
        return status

    def __enter__(self) -> ServiceProcess:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def start_service(
    kind: Kind, env: Mapping[str, str], *, port: int | None = None, timeout: float = START_TIMEOUT
) -> ServiceProcess:
    """Start example ``kind`` with ``env`` added to this process's environment (``write_configs``'s
    variables, ``SPECEXEC_REDIS_URL``) and wait until ``/healthz`` answers 200, at most ``timeout`` s.

    The service answering must be the process started here (``/healthz`` reports its ``worker``
    pid): test workers start services in parallel, and a port from ``free_port`` can be taken by
    another one's before this one binds. On a port chosen here the start then moves to another
    free port (at most ``PORT_TRIES`` in all); on a ``port`` given, it raises ``ServiceStartError``."""
    tries = PORT_TRIES if port is None else 1
    for _ in range(tries):
        chosen = free_port() if port is None else port
        service = _start_on(kind, env, chosen, timeout)
        if service is not None:
            return service
    held = f"port {port}" if port is not None else f"each of {tries} free ports in turn"
    raise ServiceStartError(f"the {kind} service example could not bind: {held} is held by another process")


def _start_on(kind: Kind, env: Mapping[str, str], port: int, timeout: float) -> ServiceProcess | None:
    """``start_service`` on ``port``: the ready service, or ``None`` when another process answered
    there and ours exited (it could not bind)."""
    workdir = Path(tempfile.mkdtemp(prefix=f"specexec-{kind}-service-"))
    child_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), child_env.get("PYTHONPATH", "")) if p)
    try:
        with open(workdir / "stderr.log", "wb") as err:
            proc = subprocess.Popen(
                service_argv(kind, port), stdin=subprocess.DEVNULL, stdout=err, stderr=err, env=child_env, cwd=ROOT
            )
    except BaseException:
        shutil.rmtree(workdir, ignore_errors=True)
        raise
    service = ServiceProcess(kind, proc, port, workdir)
    deadline = time.monotonic() + timeout
    someone_else = False  # a 200 from another process: ours cannot bind and will exit
    try:
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while True:
                worker = _healthy_worker(client, service.url)
                if worker == str(proc.pid):
                    return service
                someone_else = someone_else or worker is not None
                rc = proc.poll()
                if rc is not None and someone_else:
                    service.close(timeout=2.0)
                    return None
                if rc is not None or time.monotonic() > deadline:
                    why = f"exited with status {rc}" if rc is not None else f"did not answer /healthz in {timeout:g} s"
                    if someone_else:
                        why += f" (another process answers on port {port})"
                    raise ServiceStartError(
                        f"the {kind} service example {why}; its output:\n{service.stderr_text().strip() or '(empty)'}"
                    )
                time.sleep(0.05)  # a poll interval, not a timing assumption: the deadline bounds the wait
    except BaseException:
        service.close(timeout=2.0)
        raise


def _healthy_worker(client: httpx.Client, url: str) -> str | None:
    """The ``worker`` (a pid) of the service answering ``GET /healthz`` 200 at ``url`` ("" when it
    names none), or ``None`` when nothing answers 200."""
    try:
        response = client.get(f"{url}/healthz")
    except httpx.TransportError:
        return None
    if response.status_code != 200:
        return None
    try:
        body = response.json()
    except ValueError:
        return ""
    worker = body.get("worker") if isinstance(body, dict) else None
    return str(worker) if worker is not None else ""
