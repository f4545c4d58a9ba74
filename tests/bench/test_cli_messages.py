"""The CLI's messages: an unknown scenario lists every built-in, ``specexec fleet --help`` names itself."""

from __future__ import annotations

import io
import subprocess
import sys

import pytest

from specexec._cli import main as specexec_main
from specexec.bench.bench import main


def _run(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    code = main(argv, stdout=out, stderr=err)
    return code, out.getvalue(), err.getvalue()


def test_an_unknown_scenario_lists_every_built_in_and_no_stray_path() -> None:
    code, listed, _ = _run(["--list"])
    assert code == 0
    names = [line for line in listed.splitlines() if line and not line.startswith(" ")]
    assert {"routing", "ttft", "tail-at-scale"} <= set(names)
    code, out, err = _run(["nosuch"])
    assert code == 2 and out == ""
    assert err == f"specexec bench: no scenario 'nosuch': not a built-in ({', '.join(names)}) nor a file\n"


def test_fleet_help_names_the_command_it_was_run_as(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        specexec_main(["fleet", "--help"])
    assert info.value.code == 0
    assert capsys.readouterr().out.startswith("usage: specexec fleet ")
    module = subprocess.run(
        [sys.executable, "-m", "specexec.bench.fleet", "--help"], capture_output=True, text=True, timeout=60
    )
    assert module.returncode == 0 and module.stdout.startswith("usage: python -m specexec.bench.fleet ")
