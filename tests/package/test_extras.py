"""The core installs no mock-fleet dependency: aiolimiter, uvloop and trio are extras.

Each case runs in a fresh interpreter where the modules are hidden (``sys.modules[name] = None``
makes their import fail as if they were not installed).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

from specexec.bench.fleet import FleetProcess

from ._subprocess import ROOT, run_fresh

HIDE = "import sys\nfor name in ('aiolimiter', 'uvloop', 'trio'):\n    sys.modules[name] = None\n"

LIBRARY = (
    HIDE
    + """
import asyncio, json
import specexec
from specexec.backends import OpenAICompatible

async def answer(query):
    return "4"

async def main(base_url, model):
    http = OpenAICompatible("alpha-us", base_url=base_url, model=model)
    a = await specexec.run("2+2?", specexec.Policy.single(specexec.CallableBackend("local", answer)))
    async with specexec.Runtime(backends=[http]) as rt:
        b = await rt.run("2+2?", specexec.Policy.single("alpha-us"))
    return [a.response.text, bool(b.response.text)]

print(json.dumps(asyncio.run(main(*sys.argv[1:]))))
"""
)


def test_the_library_imports_and_runs_without_the_fleet_extras(fleet: FleetProcess) -> None:
    out = run_fresh(LIBRARY, fleet.base_url("alpha-us"), fleet.config.deployment("alpha-us").model)
    assert out == ["4", True]


CLI = (
    HIDE
    + """
import contextlib, io, json
from specexec._cli import main
err = io.StringIO()
with contextlib.redirect_stderr(err):
    status = main(sys.argv[1:])
print(json.dumps([status, err.getvalue()]))
"""
)


def test_the_cli_says_which_extra_to_install() -> None:
    for command in ("demo", "bench", "eval", "fleet"):
        status, err = run_fresh(CLI, command, "--help")
        assert status == 2, command
        assert f"specexec {command}: needs " in err and "pip install 'specexec[fleet]'" in err, err
        assert "Traceback" not in err


def test_the_probe_daemon_runs_on_plain_asyncio_without_uvloop() -> None:
    options = "import json\nfrom specexec.probes._cli import loop_options\nprint(json.dumps(loop_options('asyncio')))"
    assert run_fresh(HIDE + options) == {}
    assert run_fresh(options) == {"use_uvloop": True}


def test_the_probe_daemon_on_trio_says_what_to_install(tmp_path: Path) -> None:
    config = tmp_path / "probes.toml"
    config.write_text('[[backends]]\nkind = "simulated"\nname = "a"\n', encoding="utf-8")
    status, err = run_fresh(CLI, "probe", "--loop", "trio", "--config", str(config))
    assert status == 2 and "--loop trio needs trio" in err and "pip install 'specexec[trio]'" in err


def test_the_extras() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    core = {dep.split(">")[0].split(";")[0].strip() for dep in project["dependencies"]}
    assert core.isdisjoint({"aiolimiter", "uvloop", "trio"})
    extras = project["optional-dependencies"]
    assert {"aiolimiter>=1.1", "trio>=0.25"} <= set(extras["fleet"])
    assert any(dep.startswith("uvloop") for dep in extras["fleet"]) and extras["uvloop"][0].startswith("uvloop")
    assert extras["trio"] == ["trio>=0.25"]
    # the README's quick start, ``pip install '.[plot]' && specexec demo``, gets what the demo needs
    assert "specexec[fleet]" in extras["plot"]
    assert "specexec[fleet]" in extras["test"]
