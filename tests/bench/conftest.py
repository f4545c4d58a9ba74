"""Shared helpers of the benchmark CLI's tests: small scenarios written to temporary files."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from specexec.bench.fleet.pytest_fixtures import fleet as fleet  # the session's shared test fleet

SMALL = """
# A small scenario for tests: two simulated backends.

seed = 1
baseline = "single"

[workload]
arrivals = "poisson"
rate = 100.0
requests = 400

[[backends]]
kind = "simulated"
name = "a"
provider = "pa"
region = "r1"
latency = { kind = "lognormal", median = 0.02, sigma = 0.3 }

[[backends]]
kind = "simulated"
name = "b"
provider = "pb"
region = "r2"
seed = 1
latency = { kind = "lognormal", median = 0.03, sigma = 0.3 }

[policies.single]
mode = "single"
candidates = ["a"]

[policies.hedge]
mode = "hedge"
candidates = ["a", "b"]
delay = "p90"
budget = { max_extra_load = 0.1 }
"""
"""A valid two-backend scenario (400 requests at 100/s)."""


@pytest.fixture
def write_scenario(tmp_path: Path) -> Callable[[str, str], Path]:
    """``write_scenario(text, name="s")`` writes ``tmp_path/NAME.toml`` and returns its path."""

    def write(text: str, name: str = "s") -> Path:
        path = tmp_path / f"{name}.toml"
        path.write_text(text, encoding="utf-8")
        return path

    return write
