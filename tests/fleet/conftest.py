"""Fixtures of the fleet's own tests: the shared ``fleet`` and a ``fault_fleet`` with every fault and event."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

if importlib.util.find_spec("specexec.bench") is None:  # repo root not on sys.path (no install, no `pythonpath`)
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from specexec.bench.fleet import (
    Brownout,
    Deployment,
    FleetConfig,
    FleetProcess,
    Outage,
    RateLimit,
    start_fleet_process,
)
from specexec.bench.fleet.pytest_fixtures import fleet  # noqa: F401  (the shared session fixture)

MODEL = "m-2025-01-01"


def _dep(name: str, *, api: str = "openai", region: str = "us-east", **kw: object) -> Deployment:
    return FleetConfig.from_builtins(
        {
            "deployments": [
                {"name": name, "provider": "p", "region": region, "model": MODEL, "api": api, "output_tokens": 4, **kw}
            ]
        }
    ).deployments[0]


def fault_fleet_config() -> FleetConfig:
    """One deployment per fault kind (rate 1.0), a calm one (all rates 0), quotas and events."""
    all_zero = {
        k: 0.0
        for k in (
            "error_500",
            "error_503",
            "overloaded_529",
            "reset",
            "malformed",
            "cut_short",
            "stall_after",
            "refusal",
            "context_window",
            "stall",
            "slow_drip",
            "wrong_model",
            "no_usage",
        )
    }
    deps = [
        _dep("calm", faults=all_zero),
        _dep("calm-a", api="anthropic", faults=all_zero),
        _dep("f-error_500", faults={"error_500": 1.0}),
        _dep("f-error_503", faults={"error_503": 1.0}),
        _dep("f-overloaded_529", faults={"overloaded_529": 1.0}),
        _dep("f-overloaded_529-a", api="anthropic", faults={"overloaded_529": 1.0}),
        _dep("f-reset", faults={"reset": 1.0}),
        _dep("f-malformed", faults={"malformed": 1.0}),
        _dep("f-malformed-a", api="anthropic", faults={"malformed": 1.0}),
        _dep("f-cut_short", faults={"cut_short": 1.0}, output_tokens=6),
        _dep("f-cut_short-a", api="anthropic", faults={"cut_short": 1.0}, output_tokens=6),
        _dep("f-stall_after", faults={"stall_after": 1.0, "stall_after_tokens": 2}, output_tokens=6),
        _dep("f-stall_after-a", api="anthropic", faults={"stall_after": 1.0, "stall_after_tokens": 2}, output_tokens=6),
        _dep("f-refusal", faults={"refusal": 1.0}),
        _dep("f-refusal-a", api="anthropic", faults={"refusal": 1.0}),
        _dep("f-context_window", faults={"context_window": 1.0}),
        _dep("f-context_window-a", api="anthropic", faults={"context_window": 1.0}),
        _dep("f-stall", faults={"stall": 1.0}),
        _dep("f-slow_drip", faults={"slow_drip": 1.0, "slow_drip_interval": 0.1}, output_tokens=3),
        _dep("f-wrong_model", faults={"wrong_model": 1.0}),
        _dep("f-drift", faults={"wrong_model": 1.0, "drift_model": "m-2024-12-31"}),
        _dep("f-no_usage", faults={"no_usage": 1.0}),
        _dep("f-no_usage-a", api="anthropic", faults={"no_usage": 1.0}),
        _dep("f-half", faults={"error_500": 0.5}),
        _dep("seeded", latency={"kind": "lognormal", "median": 0.004, "sigma": 0.5}),
        _dep("quota", rpm=3, retry_after=7),
        _dep("quota-a", api="anthropic", rpm=2),
        _dep("strict", strict_model=True),
        _dep("brown-us", latency={"kind": "constant", "value": 0.02}),
        _dep("ap-1", region="ap-south"),
        _dep("ap-2", api="anthropic", region="ap-south"),
        _dep("eu-1", region="eu-west"),
        _dep("out-reset", region="eu-west"),
        _dep("rl", region="eu-west"),
        _dep("slow", latency={"kind": "constant", "value": 0.15}),
    ]
    events = (  # events[0] is the brownout window the tests look up
        Brownout(deployments=("brown-us",), start=0.25, end=0.55, factor=5.0),
        Outage(region="ap-south"),
        Outage(deployments=("out-reset",), mode="reset"),
        RateLimit(deployments=("rl",), retry_after=3.0),
    )
    return FleetConfig(deployments=tuple(deps), events=events, seed=7).validated()


@pytest.fixture(scope="session")
def fault_fleet() -> Iterator[FleetProcess]:
    """A fleet whose deployments each misbehave in one way (see :func:`fault_fleet_config`)."""
    with start_fleet_process(fault_fleet_config()) as proc:
        yield proc


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    """A plain httpx client (no proxies from the environment, no retries)."""
    with httpx.Client(timeout=5.0, trust_env=False) as client:
        yield client
