"""specexec.config: one TOML format for backends (services, probe daemon, benchmarks)."""

from __future__ import annotations

from pathlib import Path

import pytest

import specexec
from specexec.backends import Anthropic, OpenAICompatible

CONFIG = """
[[backends]]
kind = "openai"
name = "mini"
base_url = "http://127.0.0.1:9/v1"
model = "m-2026-01-01"
api_key_env = "SPECEXEC_TEST_KEY"
region = "us"
input_price = 0.15
output_price = 0.6
limits = { rpm = 100, max_concurrency = 4 }

[[backends]]
kind = "anthropic"
name = "claude"
model = "c-20260101"

[[backends]]
kind = "simulated"
name = "sim"
latency = { kind = "lognormal", median = 0.04, sigma = 0.25 }
errors = { unavailable = 0.01 }

[health]
min_samples = 10

[probe]
interval = 5.0
"""


def test_runtime_from_config(tmp_path: Path) -> None:
    path = tmp_path / "backends.toml"
    path.write_text(CONFIG)
    rt = specexec.Runtime.from_config(path)
    backends = rt.backends
    assert isinstance(backends["mini"], OpenAICompatible) and isinstance(backends["claude"], Anthropic)
    assert isinstance(backends["sim"], specexec.SimulatedBackend)
    assert backends["mini"].input_price == 0.15 and backends["mini"].region == "us"
    assert rt.health_config.min_samples == 10
    assert rt.health("mini").concurrency.limit == 4


def test_backend_config_errors_say_where(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[backends]]\nkind = "simulated"\nname = "a"\n\n'
        '[[backends]]\nkind = "openai"\nname = "b"\ninput_price = "cheap"\n'
    )
    with pytest.raises(specexec.PolicyError) as info:
        specexec.config.load_backends(path)
    assert info.value.path == "$.backends[1].input_price" and str(path) in str(info.value)


def test_duplicate_and_unknown_kinds() -> None:
    with pytest.raises(specexec.PolicyError, match="two backends are named 'a'"):
        specexec.config.RuntimeConfig.load(
            '[[backends]]\nkind="simulated"\nname="a"\n[[backends]]\nkind="simulated"\nname="a"\n'
        )
    with pytest.raises(specexec.PolicyError, match="backends\\[0\\]"):
        specexec.config.RuntimeConfig.load('[[backends]]\nkind="carrier-pigeon"\nname="a"\n')
