"""End to end over real loopback HTTP: the daemon probing the mock provider fleet, services following it.

The fleet (``benchmarks.fleet``, asyncio + uvloop, a subprocess) serves OpenAI- and
Anthropic-style deployments (see ``benchmarks/fleet/pytest_fixtures.py``). The daemon runs
in-process (on trio and on asyncio + uvloop) or as the ``python -m specexec.probes`` command.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from specexec import HealthFeed, Policy, Query, Runtime
from specexec.bench.fleet import Constant, Deployment, FleetConfig, FleetProcess, start_fleet_process
from specexec.bench.fleet.pytest_fixtures import CANARY_ANSWER, CANARY_QUESTION
from specexec.probes import ProbeConfig, decode_snapshot, read_snapshot_file

from ._support import REAL_BACKENDS, eventually, running

ROOT = Path(__file__).resolve().parents[2]
ALPHA = "alpha-mini-2025-01-15"
FAKE_KEY = "sk-probe-FAKEKEY-0123456789abcdef"
FAKE_KEY_ENV = "SPECEXEC_PROBE_TEST_FAKE_KEY"


def openai(fleet: FleetProcess, name: str, *, model: str = ALPHA, **extra: str) -> str:
    lines = [
        "[[backends]]",
        'kind = "openai"',
        f'name = "{name}"',
        f'base_url = "{fleet.base_url(name)}"',
        f'model = "{model}"',
        "input_price = 0.15",
        "output_price = 0.60",
        *(f"{k} = {v}" for k, v in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def fleet_config(fleet: FleetProcess, probe: str = "") -> str:
    return (
        openai(fleet, "alpha-us")
        + openai(fleet, "alpha-eu")
        + openai(fleet, "beta-us")  # serves beta-large-2025-03-01: drift from the pinned alpha model
        + openai(fleet, "down-us")
        + openai(fleet, "stall-us")
        + '[[backends]]\nkind = "anthropic"\nname = "gamma-eu"\n'
        + f'base_url = "{fleet.base_url("gamma-eu")}"\nmodel = "gamma-haiku-20250101"\napi_key_env = "{FAKE_KEY_ENV}"\n'
        + "[health]\nmin_samples = 1\nprobe_min_samples = 1\n"
        + "[probe]\ninterval = 1.0\njitter = 0.0\ntimeout = 2.0\nport = 0\nmin_samples = 1\n"
        + probe
        + "[probe.backends.stall-us]\ntimeout = 0.5\n"  # the others get time for a cold start on a busy machine
        + f'[probe.backends.alpha-us.canary]\nquery = {{ prompt = "{CANARY_QUESTION}", max_tokens = 4 }}\n'
        + f'expect = "{CANARY_ANSWER}"\n'
        + f'[probe.backends.alpha-eu.canary]\nquery = {{ prompt = "{CANARY_QUESTION}", max_tokens = 4 }}\n'
        + 'expect = "5"\n'
    )


# -- in-process daemon, trio and asyncio + uvloop ----------------------------------------------


@pytest.fixture(params=REAL_BACKENDS)
def anyio_backend(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    return request.param  # type: ignore[no-any-return]


@pytest.mark.anyio
async def test_the_daemon_reports_the_fleet_and_a_service_orders_by_probed_latency(
    fleet: FleetProcess, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(FAKE_KEY_ENV, FAKE_KEY)
    path = tmp_path / "probes.toml"
    path.write_text(fleet_config(fleet))
    config = ProbeConfig.load(path)
    service = Runtime.from_config(path)  # the same file: [[backends]] and [health]; [probe] is ignored
    async with running(config, wall_clock=time.time) as daemon:
        # Three rounds, so that one cold first probe (connection set-up) does not decide the median.
        await eventually(lambda: min(s.probes for s in daemon.states.values()) >= 3)
        report = daemon.health_report()
        assert daemon.url is not None
        feed = HealthFeed(daemon.url, timeout=2.0)
        assert await feed.poll_once(service)
    b = report.backends
    assert {n: v.state for n, v in b.items()} == {
        "alpha-us": "healthy",
        "alpha-eu": "degraded",  # the canary's answer is "4", we expect "5"
        "beta-us": "healthy",
        "down-us": "unhealthy",
        "stall-us": "unhealthy",
        "gamma-eu": "healthy",
    }
    assert (b["alpha-us"].canary, b["alpha-eu"].canary) == ("passed", "failed")
    assert (b["beta-us"].drift, b["beta-us"].reported_model, b["beta-us"].model) == (
        True,
        "beta-large-2025-03-01",
        ALPHA,
    )
    assert not b["alpha-us"].drift and b["alpha-us"].reported_model == ALPHA
    assert (b["down-us"].last_error_kind, b["stall-us"].last_error_kind) == ("unavailable", "timeout")
    assert b["alpha-us"].cost > 0
    # The service: beta-us (20 ms) is listed first, alpha-eu (10 ms) is degraded, alpha-us (5 ms) wins.
    before = {n: d["requests"] for n, d in fleet.stats()["deployments"].items()}
    async with service:
        now = anyio.current_time()
        assert all(service.health(n).latency.count(now) == 0 for n in service.backends)  # no real traffic yet
        result = await service.run(
            Query("hello", max_tokens=4), Policy.failover(["beta-us", "alpha-eu", "alpha-us"], order="latency")
        )
    after = {n: d["requests"] for n, d in fleet.stats()["deployments"].items()}
    assert result.backend == "alpha-us"
    assert {n: after[n] - before[n] for n in after if after[n] != before[n]} == {"alpha-us": 1}
    assert feed.remote("beta-us") is not None and feed.remote("beta-us").drift  # type: ignore[union-attr]


@pytest.fixture
def solo_fleet() -> Iterator[tuple[FleetConfig, FleetProcess]]:
    config = FleetConfig(
        deployments=(Deployment(name="solo", provider="p", region="r", model="solo-1", latency=Constant(value=0.002)),)
    ).validated()
    with start_fleet_process(config) as proc:
        yield config, proc


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [REAL_BACKENDS[1]], indirect=True)
async def test_a_deployment_going_away_and_coming_back_is_followed(
    solo_fleet: tuple[FleetConfig, FleetProcess],
) -> None:
    fleet_cfg, proc = solo_fleet
    config = ProbeConfig.load(
        openai(proc, "solo", model="solo-1")
        + "[probe]\ninterval = 1.0\njitter = 0.0\ntimeout = 0.5\nhttp = false\nmin_samples = 1\n"
    )
    async with running(config, wall_clock=time.time) as daemon:
        state = daemon.states["solo"]
        await eventually(lambda: state.state(time.time()) == "healthy")
        proc.close()  # the whole provider goes away: connections are refused
        gone = time.monotonic()
        await eventually(lambda: state.state(time.time()) == "unhealthy", timeout=4.0)
        assert time.monotonic() - gone <= 2 * 1.0 + 0.5
        assert state.health.last_error_kind == "unavailable"
        with start_fleet_process(fleet_cfg, port=proc.port):  # back on the same address
            back = time.monotonic()
            await eventually(lambda: state.state(time.time()) == "healthy", timeout=4.0)
            assert time.monotonic() - back <= 2 * 1.0 + 0.5
        assert state.successes >= 2 and state.errors.get("unavailable", 0) >= 1


# -- the command line ----------------------------------------------------------------------------


@contextmanager
def daemon_process(config: Path, tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> Iterator[Any]:
    """``python -m specexec.probes`` in a subprocess; yields ``(process, url, stderr path)`` once it listens."""
    ready = tmp_path / "ready.json"
    stderr_path = tmp_path / "daemon.stderr"
    child_env = {**os.environ, **(env or {}), "PYTHONPATH": str(ROOT)}
    with open(stderr_path, "wb") as stderr, open(tmp_path / "daemon.stdout", "wb") as stdout:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "specexec.probes",
                "--config",
                str(config),
                "--port",
                "0",
                "--ready-file",
                str(ready),
                *args,
            ],
            cwd=ROOT,
            env=child_env,
            stdout=stdout,
            stderr=stderr,
        )
    try:
        deadline = time.monotonic() + 20
        while not ready.exists():
            assert proc.poll() is None, stderr_path.read_text()
            assert time.monotonic() < deadline, "the daemon did not start"
            time.sleep(0.02)
        yield proc, json.loads(ready.read_text())["url"], stderr_path
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def _wait(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_the_command_serves_stops_cleanly_and_never_shows_an_api_key(fleet: FleetProcess, tmp_path: Path) -> None:
    config = tmp_path / "probes.toml"
    snapshot = tmp_path / "probes.msgpack"
    key_env = f'api_key_env = "{FAKE_KEY_ENV}"'
    config.write_text(
        openai(fleet, "alpha-us", api_key_env=f'"{FAKE_KEY_ENV}"')
        + openai(fleet, "keyed-us", api_key_env=f'"{FAKE_KEY_ENV}"')  # wants another key: 401
        + f'[[backends]]\nkind = "anthropic"\nname = "keyed-gamma"\nbase_url = "{fleet.base_url("keyed-gamma")}"\n'
        + f'model = "gamma-haiku-20250101"\n{key_env}\n'
        + "[probe]\ninterval = 1.0\njitter = 0.0\ntimeout = 1.0\nsnapshot_interval = 1.0\nmin_samples = 1\n"
    )
    outputs: list[bytes] = []
    with daemon_process(
        config, tmp_path, "--snapshot", str(snapshot), "--log-level", "DEBUG", env={FAKE_KEY_ENV: FAKE_KEY}
    ) as (proc, url, stderr_path):
        with httpx.Client(base_url=url, trust_env=False, timeout=5) as client:
            assert url.startswith("http://127.0.0.1:")
            assert client.get("/healthz").status_code == 200

            def probed() -> bool:
                return all(b["probes"] >= 2 for b in client.get("/v1/health").json()["backends"].values())

            _wait(probed)
            for path in ("/healthz", "/v1/health", "/v1/snapshot", "/metrics"):
                response = client.get(path)
                assert response.status_code == 200
                outputs.append(response.content)
            health = json.loads(outputs[1])
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        stderr = stderr_path.read_bytes()
    outputs += [stderr, snapshot.read_bytes()]
    assert health["backends"]["alpha-us"]["state"] == "healthy"
    assert health["backends"]["keyed-us"]["last_error_kind"] == "auth"
    assert health["backends"]["keyed-gamma"]["last_error_kind"] == "auth"
    assert decode_snapshot(outputs[2]).backends["alpha-us"].probes >= 2
    final = read_snapshot_file(snapshot)
    assert final is not None and final.backends["alpha-us"].probes >= 2
    assert b"SIGTERM received" in stderr and b"final snapshot written" in stderr
    assert b"DEBUG" in stderr  # the most talkative level was on
    for output in outputs:
        assert FAKE_KEY.encode() not in output
        assert FAKE_KEY[:16].encode() not in output


def test_command_line_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from specexec._cli import main as specexec_main

    good = tmp_path / "good.toml"
    good.write_text('[[backends]]\nkind = "simulated"\nname = "a"\n')
    assert specexec_main(["probe", "--config", str(good), "--check"]) == 0
    assert "ok (1 backend(s))" in capsys.readouterr().out
    bad = tmp_path / "bad.toml"
    bad.write_text("[probe]\ninterval = 0.1\n")
    assert specexec_main(["probe", "--config", str(bad)]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "$.probe.interval" in err
    assert specexec_main(["probe"]) == 2  # --config is required


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", [REAL_BACKENDS[0]], indirect=True)
async def test_killing_the_daemon_leaves_the_service_working_with_health_aging_to_unknown(
    fleet: FleetProcess, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    config = tmp_path / "probes.toml"
    config.write_text(
        openai(fleet, "alpha-us") + "[health]\nmin_samples = 1\nprobe_min_samples = 1\n"
        "[probe]\ninterval = 1.0\njitter = 0.0\ntimeout = 1.0\nmin_samples = 1\n"
    )
    caplog.set_level(logging.INFO, logger="specexec.feed")
    with daemon_process(config, tmp_path) as (proc, url, _):
        feed = HealthFeed(url, interval=0.1, max_age=2.0, timeout=0.5)
        service = Runtime.from_config(config, feeds=[feed])
        async with service:
            health = service.health("alpha-us")
            await eventually(lambda: health.quantile(0.5, anyio.current_time()) is not None)
            proc.kill()  # no clean shutdown, no goodbye
            proc.wait(5)
            killed = time.monotonic()
            await eventually(lambda: feed.failures >= 3)
            assert health.quantile(0.5, anyio.current_time()) is not None  # fresh enough for now
            result = await service.run(Query("hi", max_tokens=4), Policy.single("alpha-us"))
            assert result.backend == "alpha-us"
            # Live traffic now knows the backend (one sample = min_samples); the probe data ages out:
            await eventually(lambda: health.probe_latency.quantile(0.5, anyio.current_time()) is None, timeout=4.0)
            assert time.monotonic() - killed <= 2.0 + 0.5  # max_age after the last probe, which came before the kill
            assert feed.remote("alpha-us") is None and not feed.reachable
            result = await service.run(Query("hi", max_tokens=4), Policy.single("alpha-us"))
            assert result.backend == "alpha-us"
    warnings = [r.getMessage() for r in caplog.records if r.name == "specexec.feed" and r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "unreachable" in warnings[0]


def test_a_daemon_that_cannot_bind_exits_with_status_1() -> None:
    from specexec.probes._cli import _os_error

    error = OSError(98, "Address already in use")
    assert _os_error(ExceptionGroup("tg", [ExceptionGroup("inner", [error])])) is error
    assert _os_error(ExceptionGroup("tg", [error, ValueError("other")])) is None
    assert _os_error(ValueError("x")) is None


def test_after_kill_9_a_restart_removes_orphan_temp_files_and_revisions_keep_growing(tmp_path: Path) -> None:
    config = tmp_path / "probes.toml"
    snapshot = tmp_path / "probes.msgpack"
    config.write_text(
        '[[backends]]\nkind = "simulated"\nname = "a"\nlatency = 0.001\n'
        "[probe]\ninterval = 1.0\njitter = 0.0\ntimeout = 1.0\nmin_samples = 1\n"
        "snapshot_interval = 3600.0\n"  # the file on disk is only the one written at the first clean stop
    )

    def revision(url: str) -> int:
        return int(httpx.get(url + "/v1/health", trust_env=False, timeout=5).json()["revision"])

    runs = [tmp_path / f"run{i}" for i in range(3)]
    for run in runs:
        run.mkdir()
    with daemon_process(config, runs[0], "--snapshot", str(snapshot)) as (proc, url, _):
        _wait(lambda: revision(url) > 0 and read_health(url)["backends"]["a"]["probes"] >= 1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
    written = read_snapshot_file(snapshot)
    assert written is not None
    with daemon_process(config, runs[1], "--snapshot", str(snapshot)) as (proc, url, _):
        first = revision(url)
        assert first > written.revision
        _wait(lambda: read_health(url)["backends"]["a"]["probes"] >= written.backends["a"].probes + 2)
        served = revision(url)
        assert served > first
        proc.kill()  # SIGKILL: no final snapshot; pretend it died in the middle of a write, too
        proc.wait(5)
    orphan = tmp_path / ".probes.msgpack.x7k2q9.tmp"
    orphan.write_bytes(b"half a snapshot")
    on_disk = read_snapshot_file(snapshot)
    assert on_disk is not None and on_disk.revision == written.revision < served  # the file is older
    with daemon_process(config, runs[2], "--snapshot", str(snapshot)) as (proc, url, stderr_path):
        assert revision(url) > served
        assert not orphan.exists()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(10) == 0
        assert b"removed 1 orphan temp file" in stderr_path.read_bytes()
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def read_health(url: str) -> Any:
    return httpx.get(url + "/v1/health", trust_env=False, timeout=5).json()
