"""The built wheel: only the ``specexec`` namespace, no Markdown, the CLI's data files, a working CLI.

Builds with the project's build backend (hatchling) through ``pip wheel`` into a temporary
directory, then runs ``python -m specexec`` from the unpacked wheel (not from the checkout).
"""

from __future__ import annotations

import email.parser
import os
import subprocess
import sys
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from ._subprocess import ROOT

pytestmark = pytest.mark.slow  # a wheel build: ≈ 10–30 s


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("wheel")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", str(out), str(ROOT)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (path,) = out.glob("specexec-*.whl")
    yield path


def names(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as z:
        return z.namelist()


def test_only_specexec_and_its_dist_info_at_the_top(wheel: Path) -> None:
    top = {name.split("/")[0] for name in names(wheel)}
    (dist_info,) = top - {"specexec"}
    assert top == {"specexec", dist_info} and dist_info.startswith("specexec-") and dist_info.endswith(".dist-info")


def test_no_markdown_and_the_data_files_the_cli_needs(wheel: Path) -> None:
    files = set(names(wheel))
    assert not [n for n in files if n.lower().endswith(".md")]
    wanted = [
        *(f"specexec/bench/scenarios/{p.name}" for p in (ROOT / "benchmarks" / "scenarios").glob("*.toml")),
        *(f"specexec/bench/evals/{p.name}" for p in (ROOT / "benchmarks" / "evals").iterdir() if p.is_file()),
        "specexec/bench/fleet/default.toml",
        "specexec/probes/__main__.py",
        "specexec/__main__.py",
        "specexec/py.typed",
    ]
    assert len(wanted) > 10 and not sorted(set(wanted) - files)
    assert not [n for n in files if "/tests/" in n or n.startswith(("benchmarks/", "probes/", "tests/"))]


def test_the_core_requirements_have_no_fleet_or_trio_dependency(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        (meta,) = [n for n in z.namelist() if n.endswith(".dist-info/METADATA")]
        message = email.parser.Parser().parsestr(z.read(meta).decode())
    core = [r for r in message.get_all("Requires-Dist") or [] if "extra ==" not in r]
    assert sorted(r.split(">")[0] for r in core) == ["anyio", "hdrhistogram", "httpx", "msgspec", "sniffio"]
    assert {"fleet", "plot", "trio", "uvloop", "test"} <= set(message.get_all("Provides-Extra") or [])


def test_python_m_specexec_runs_from_the_wheel(wheel: Path, tmp_path: Path) -> None:
    with zipfile.ZipFile(wheel) as z:
        z.extractall(tmp_path)
    env = {**os.environ, "PYTHONPATH": str(tmp_path), "PYTHONDONTWRITEBYTECODE": "1"}

    def python(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, *args], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60, check=False
        )

    where = python("-c", "import specexec.bench.fleet as f; print(f.__file__); print(f.DEFAULT_CONFIG_PATH.is_file())")
    assert where.stdout.split() == [str(tmp_path / "specexec" / "bench" / "fleet" / "__init__.py"), "True"]
    done = python("-m", "specexec", "--help")
    assert done.returncode == 0 and done.stdout.startswith("usage: specexec {demo,bench,eval,fleet,probe}")
    for command in ("demo", "bench", "eval", "fleet", "probe"):
        sub = python("-m", "specexec", command, "--help")
        assert sub.returncode == 0 and "usage:" in sub.stdout, (command, sub.stderr)
