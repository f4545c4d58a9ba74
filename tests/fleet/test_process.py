"""``start_fleet_process`` and the CLI: ready file, seed, start errors, clean shutdown on SIGTERM."""

from __future__ import annotations

import json
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import httpx
import pytest

from specexec.bench.fleet import (
    DEFAULT_CONFIG_PATH,
    Deployment,
    Faults,
    FleetConfig,
    FleetConfigError,
    FleetStartError,
    start_fleet_process,
)

STALL = FleetConfig(
    deployments=(
        Deployment(name="ok", provider="p", region="r", model="m"),
        Deployment(name="stall", provider="p", region="r", model="m", faults=Faults(stall=1.0)),
    )
)
CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def test_sigterm_with_a_stalled_request_shuts_down_cleanly() -> None:
    # Show ResourceWarnings (unclosed servers and transports); asyncio logs destroyed pending tasks anyway.
    fleet = start_fleet_process(STALL, seed=5, env={"PYTHONWARNINGS": "always::ResourceWarning"})
    with fleet:
        assert fleet.config.seed == 5 and fleet.stats()["seed"] == 5
        assert set(fleet.deployments) == {"ok", "stall"}
        assert fleet.base_url("ok") == f"http://127.0.0.1:{fleet.port}/ok/v1"
        errors: list[BaseException] = []

        def stalled() -> None:
            try:
                httpx.post(fleet.base_url("stall") + "/chat/completions", json=CHAT, timeout=10, trust_env=False)
            except BaseException as e:
                errors.append(e)

        t = threading.Thread(target=stalled)
        t.start()
        for _ in range(200):
            if fleet.stats()["in_flight"] == 1:
                break
            time.sleep(0.01)
        assert fleet.stats()["in_flight"] == 1
        assert fleet.close() == 0  # SIGTERM: exit status 0
        t.join(5)
        assert errors and isinstance(errors[0], httpx.RemoteProtocolError)  # the server closed it
    assert fleet.returncode == 0
    assert fleet.stderr_text() == ""  # no "Task was destroyed", no ResourceWarning, no traceback


def test_start_error_carries_the_fleet_stderr() -> None:
    cfg = FleetConfig(
        deployments=(Deployment(name="k", provider="p", region="r", model="m", api_key_env="NOT_SET_ANYWHERE"),)
    )
    with pytest.raises(FleetStartError, match=r"exited with status 1[\s\S]*NOT_SET_ANYWHERE"):
        start_fleet_process(cfg)


def test_bad_config_file_fails_in_the_parent(tmp_path: Path) -> None:
    path = tmp_path / "fleet.toml"
    path.write_text('[[deployments]]\nname = "x"\n', encoding="utf-8")
    with pytest.raises(FleetConfigError, match=r"fleet\.toml: Object missing required field `provider`"):
        start_fleet_process(path)


def test_cli_ready_file_and_listening_line(tmp_path: Path) -> None:
    ready = tmp_path / "ready.json"
    root = Path(__file__).resolve().parents[2]
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "specexec.bench.fleet",
            "--config",
            str(DEFAULT_CONFIG_PATH),
            "--ready-file",
            str(ready),
        ],
        cwd=root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        port = json.loads(ready.read_text())["port"]
        assert line == f"fleet listening on http://127.0.0.1:{port}\n"
        doc = json.loads(ready.read_text())
        assert doc["deployments"]["gamma-ap"] == f"http://127.0.0.1:{port}/gamma-ap/v1"
        assert len(doc["deployments"]) == 6
        r = httpx.get(f"http://127.0.0.1:{port}/healthz", trust_env=False)
        assert r.json() == {"status": "ok", "deployments": 6}
    finally:
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=10)
    assert proc.returncode == 0, err
    assert err == ""


def _gone(pid: int) -> bool:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return True
    return "\nState:\tZ" in status  # a zombie nobody reaped has exited all the same


@pytest.mark.skipif(not Path("/proc").exists(), reason="needs /proc")
def test_fleet_exits_when_its_parent_dies(tmp_path: Path) -> None:
    script = (
        "import os, sys\n"
        "from specexec.bench.fleet import Deployment, FleetConfig, start_fleet_process\n"
        "cfg = FleetConfig(deployments=(Deployment(name='a', provider='p', region='r', model='m'),))\n"
        "fleet = start_fleet_process(cfg)\n"
        "print(fleet.pid, fleet._workdir, flush=True)\n"
        "os._exit(0)  # no cleanup: the fleet must notice by itself\n"
    )
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", script], cwd=root, capture_output=True, text=True, timeout=30)
    pid_text, workdir = out.stdout.split()
    pid = int(pid_text)
    shutil.rmtree(workdir, ignore_errors=True)  # what FleetProcess.close would have removed
    for _ in range(300):  # bounded: 3 s (the fleet checks its parent every 0.5 s)
        if _gone(pid):
            break
        time.sleep(0.01)
    assert _gone(pid)
