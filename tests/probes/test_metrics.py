"""``/metrics``: the Prometheus text exposition format 0.0.4, through prometheus_client, with real histograms."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import anyio
import httpx
import pytest

from specexec import SimulatedBackend
from specexec.probes._metrics import CONTENT_TYPE, MISSING, Buckets, MetricsUnavailable

from ._prometheus import parse
from ._support import REAL_BACKENDS, running, sim_config, virtual_time_backend


def test_the_content_type_is_text_0_0_4() -> None:
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
        (s, labels.get("backend"), labels.get("le")): v for s, labels, v in families["specexec_probe_latency_seconds"]
    }
    # A real histogram (cumulative buckets, GenAI bounds): it adds up across daemons and over time.
    assert latency[("specexec_probe_latency_seconds_bucket", "a", "0.04")] == 0
    assert latency[("specexec_probe_latency_seconds_bucket", "a", "0.08")] == 6
    assert latency[("specexec_probe_latency_seconds_bucket", "a", "+Inf")] == 6
    assert latency[("specexec_probe_latency_seconds_count", "a", None)] == 6
    assert latency[("specexec_probe_latency_seconds_sum", "a", None)] == pytest.approx(0.3)
    assert latency[("specexec_probe_latency_seconds_count", weird, None)] == 0
    window = {
        (labels["backend"], labels["quantile"]): v for _, labels, v in families["specexec_probe_window_latency_seconds"]
    }
    assert window[("a", "0.5")] == pytest.approx(0.05, rel=0.01)
    assert math.isnan(window[(weird, "0.99")])
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


def test_histogram_tallies_put_a_value_on_a_bound_in_that_bucket() -> None:
    buckets = Buckets((0.1, 0.5))
    for v in (0.05, 0.1, 0.3, 0.5, 2.0):
        buckets.observe(v)
    assert buckets.cumulative() == [("0.1", 2.0), ("0.5", 4.0), ("+Inf", 5.0)]
    assert (buckets.count, buckets.sum) == (5, pytest.approx(2.95))


@pytest.mark.parametrize("anyio_backend", REAL_BACKENDS)
async def test_without_prometheus_client_metrics_is_a_501_that_says_what_to_install(
    monkeypatch: pytest.MonkeyPatch, anyio_backend: Any
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)  # `import prometheus_client` raises ImportError
    config = sim_config('name = "a"\nlatency = 0.001', probe="interval = 1.0\nport = 0")
    async with running(config, http=True, wall_clock=time.time) as daemon:
        with pytest.raises(MetricsUnavailable, match=r"pip install 'specexec\[metrics\]'"):
            daemon.metrics()
        assert daemon.url is not None
        async with httpx.AsyncClient(base_url=daemon.url, trust_env=False) as client:
            metrics = await client.get("/metrics")
            health = await client.get("/v1/health")
    assert metrics.status_code == 501 and metrics.text == MISSING
    assert health.status_code == 200
