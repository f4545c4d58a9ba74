"""``/metrics``: the Prometheus text exposition format 0.0.4, written by hand."""

from __future__ import annotations

import math
from typing import Any

import anyio
import pytest

from probes._metrics import CONTENT_TYPE, escape_help, escape_label_value, format_value
from specexec import SimulatedBackend

from ._prometheus import parse
from ._support import running, sim_config, virtual_time_backend


def test_escaping_and_values() -> None:
    assert escape_label_value('a"b\\c\nd') == 'a\\"b\\\\c\\nd'
    assert escape_help("x\\y\nz") == "x\\\\y\\nz"
    assert [format_value(v) for v in (1, 2.5, math.nan, math.inf, -math.inf, 1e-7)] == [
        "1",
        "2.5",
        "NaN",
        "+Inf",
        "-Inf",
        "1e-07",
    ]
    assert CONTENT_TYPE == "text/plain; version=0.0.4; charset=utf-8"


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, Any]]:
    return virtual_time_backend()


@pytest.mark.anyio
async def test_the_exposition_parses_and_carries_every_family() -> None:
    weird = 'we"ird\\name\nx'
    config = sim_config(probe="interval = 1.0\njitter = 0.0\ndaily_budget = 5.0")  # backends given below
    backends = [
        SimulatedBackend("a", 0.05, input_price=1.0, output_price=1.0),
        SimulatedBackend(weird, 0.05, errors={"rate_limited": 1.0}),
    ]
    async with running(config, backends) as daemon:
        await anyio.sleep_until(5.5)
        families = parse(daemon.metrics())
    assert families["specexec_probe_up"] == [("specexec_probe_up", {}, 1.0)]
    latency = {
        (s, labels.get("backend"), labels.get("quantile")): v
        for s, labels, v in families["specexec_probe_latency_seconds"]
    }
    assert latency[("specexec_probe_latency_seconds", "a", "0.5")] == pytest.approx(0.05, rel=0.01)
    assert latency[("specexec_probe_latency_seconds_count", "a", None)] == 6
    assert latency[("specexec_probe_latency_seconds_sum", "a", None)] == pytest.approx(0.3)
    assert math.isnan(latency[("specexec_probe_latency_seconds", weird, "0.99")])
    errors = {(labels["backend"], labels["kind"]): v for _, labels, v in families["specexec_probe_errors_total"]}
    assert errors == {(weird, "rate_limited"): 6.0}
    states = {(labels["backend"], labels["state"]): v for _, labels, v in families["specexec_probe_state"]}
    assert states[("a", "healthy")] == 1 and states[(weird, "unhealthy")] == 1 and states[(weird, "healthy")] == 0
    circuit = {(labels["backend"], labels["state"]): v for _, labels, v in families["specexec_probe_circuit_state"]}
    assert circuit[(weird, "open")] == 1 and circuit[("a", "closed")] == 1
    assert {labels["backend"]: v for _, labels, v in families["specexec_probe_model_drift"]} == {"a": 0, weird: 0}
    assert families["specexec_probe_budget_usd"][0][2] == 5.0
    assert families["specexec_probe_cost_usd_total"][0][2] > 0
    info = {labels["backend"]: labels for _, labels, _ in families["specexec_probe_backend_info"]}
    assert info["a"]["model"] == "a" and info["a"]["reported_model"] == "a"
    assert families["specexec_probe_success_total"] == [
        ("specexec_probe_success_total", {"backend": "a"}, 6.0),
        ("specexec_probe_success_total", {"backend": weird}, 0.0),
    ]
