"""Fixtures of the service-example tests: the loopback fleet, a real redis-server and service processes.

Everything is a real process on 127.0.0.1 and is stopped in a ``finally`` (a failing test leaks
nothing): the fleet (``start_fleet_process``), redis-server (``specexec.bench.redis_server``) and
the examples themselves (``specexec.bench.services.start_service``).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from specexec.bench.fleet import FleetProcess, start_fleet_process
from specexec.bench.services import CANARY as CANARY
from specexec.bench.services import Kind, ServiceProcess, example_fleet_config, start_service, write_configs


@pytest.fixture(scope="module")
def fleet() -> Iterator[FleetProcess]:
    """A quick fleet: TTFT 5 ms (us) and 10 ms (eu), 12 tokens at 0.5 ms each."""
    with start_fleet_process(example_fleet_config(0.005, 0.010)) as proc:
        yield proc


@pytest.fixture(scope="module")
def stalled_fleet() -> Iterator[FleetProcess]:
    """A fleet whose first token takes 120 s: a race that only a cancellation ends."""
    with start_fleet_process(example_fleet_config(120.0, 120.0)) as proc:
        yield proc


StartService = Callable[..., ServiceProcess]


@pytest.fixture
def services(tmp_path: Path) -> Iterator[StartService]:
    """``services(kind, fleet, **config)`` starts an example process; all are stopped (SIGTERM) after
    the test, and each must have shut down gracefully — its runtime closed, exit status 0 — or been
    killed (no leaked processes either way)."""
    started: list[ServiceProcess] = []

    def start(kind: Kind, fleet: FleetProcess, *, redis_url: str | None = None, **config: float) -> ServiceProcess:
        directory = tmp_path / f"service-{len(started)}"
        directory.mkdir()
        env = write_configs(directory, fleet.port, **config)
        if redis_url is not None:
            env["SPECEXEC_REDIS_URL"] = redis_url
        service = start_service(kind, env)
        started.append(service)
        return service

    statuses = []
    try:
        yield start
    finally:
        for service in started:
            statuses.append(service.close())
    for service, status in zip(started, statuses, strict=True):
        # uvicorn re-raises the SIGTERM it handled once it has shut down: -15 is its clean exit
        clean = (0, -signal.SIGTERM) if service.kind == "fastapi" else (0,)
        assert status in clean, f"the {service.kind} service did not shut down cleanly ({status}):\n{service.output}"
        if service.kind == "fastapi":
            assert "Application shutdown complete" in service.output  # the lifespan closed the runtime
