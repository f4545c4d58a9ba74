"""A service example given a bad config file says what is wrong, where, and exits — no traceback.

Each example runs as a real process (as in ``test_services.py``); it stops before it binds its
port, so no fleet is needed.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from specexec.bench.services import KINDS, ROOT, Kind, free_port, service_argv, write_configs

pytestmark = pytest.mark.slow

CASES = {
    "router": ("router.toml", 'mode = "hedge"', 'mode = "hedj"', "$.routes.chat.mode"),
    "backends": ("backends.toml", "input_price = 0.15 ", 'input_price = "cheap" ', "$.backends[0].input_price"),
    "route-backend": ("router.toml", '"alpha-eu"]', '"alpha-euu"]', "$.routes.chat.candidates[1]"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("kind", KINDS)
def test_a_bad_config_file_is_a_clear_error_on_stderr(tmp_path: Path, kind: Kind, case: str) -> None:
    name, old, new, path = CASES[case]
    env = write_configs(tmp_path, fleet_port=1)
    file = tmp_path / name
    text = file.read_text(encoding="utf-8")
    assert old in text
    file.write_text(text.replace(old, new, 1), encoding="utf-8")
    child_env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
    child_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), child_env.get("PYTHONPATH", "")) if p)
    proc = subprocess.run(
        service_argv(kind, free_port()),
        env=child_env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode != 0, proc.stderr
    assert "Traceback" not in proc.stderr, proc.stderr
    assert f"{file}: " in proc.stderr and f"(at {path})" in proc.stderr, proc.stderr
