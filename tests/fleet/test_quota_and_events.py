"""``rpm`` quotas (aiolimiter) and scheduled events: brownout, outage, rate limit."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from specexec.bench.fleet import Brownout, FleetProcess

CHAT: dict[str, Any] = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


def chat(http: httpx.Client, fleet: FleetProcess, name: str) -> httpx.Response:
    return http.post(fleet.base_url(name) + "/chat/completions", json=CHAT)


def test_quota_openai(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    fault_fleet.reset()  # refills the quota
    assert [chat(http, fault_fleet, "quota").status_code for _ in range(5)] == [200, 200, 200, 429, 429]
    r = chat(http, fault_fleet, "quota")
    assert r.headers["retry-after"] == "7"
    assert r.json()["error"]["type"] == "requests"
    st = fault_fleet.deployment_stats("quota")
    assert st["quota_limited"] == 3
    assert st["by_status"] == {"200": 3, "429": 3}


def test_quota_anthropic_default_retry_after(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    fault_fleet.reset()
    url = fault_fleet.base_url("quota-a") + "/messages"
    body = {**CHAT, "max_tokens": 4}
    statuses = [http.post(url, json=body) for _ in range(3)]
    assert [r.status_code for r in statuses] == [200, 200, 429]
    r = statuses[-1]
    assert r.headers["retry-after"] == "30"  # 60 s / rpm (2)
    assert r.json() == {
        "type": "error",
        "error": {"type": "rate_limit_error", "message": "Rate limit reached: 2 requests per minute"},
    }


def test_brownout_multiplies_latency_within_its_window_only(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    window = fault_fleet.config.events[0]
    assert isinstance(window, Brownout)
    base = 0.02  # brown-us: constant 20 ms to first token, no per-token time
    fault_fleet.reset()  # restarts the event clock
    seen: dict[str, list[tuple[float, float]]] = {"before": [], "during": [], "after": []}
    for _ in range(100):  # bounded: ~0.55 s of fleet clock at ≥ 20 ms a request
        t0 = time.monotonic()
        r = chat(http, fault_fleet, "brown-us")
        elapsed = time.monotonic() - t0
        assert r.status_code == 200
        clock, ttft = float(r.headers["x-fleet-clock"]), float(r.headers["x-fleet-ttft"])
        phase = "before" if clock < window.start else "during" if clock < window.end else "after"
        seen[phase].append((ttft, elapsed))
        if phase == "after" and len(seen["after"]) >= 2:
            break
    assert all(len(v) >= 2 for v in seen.values()), {k: len(v) for k, v in seen.items()}
    for phase, factor in (("before", 1.0), ("during", window.factor), ("after", 1.0)):
        for ttft, elapsed in seen[phase]:
            assert ttft == pytest.approx(base * factor)
            assert elapsed >= base * factor * 0.95
    assert max(e for _, e in seen["before"] + seen["after"]) < base * window.factor
    st = fault_fleet.deployment_stats("brown-us")
    assert st["events"] == {"brownout": len(seen["during"])}


def test_outage_hits_its_region_only(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    fault_fleet.reset()
    r = chat(http, fault_fleet, "ap-1")
    assert r.status_code == 503 and r.json()["error"]["type"] == "server_error"
    r = http.post(fault_fleet.base_url("ap-2") + "/messages", json={**CHAT, "max_tokens": 3})
    assert r.status_code == 503 and r.json()["type"] == "error"
    assert chat(http, fault_fleet, "eu-1").status_code == 200
    assert fault_fleet.deployment_stats("ap-1")["events"] == {"outage": 1}
    assert fault_fleet.deployment_stats("eu-1")["events"] == {}


def test_outage_in_reset_mode(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
        chat(http, fault_fleet, "out-reset")


def test_scheduled_rate_limit(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    r = chat(http, fault_fleet, "rl")
    assert r.status_code == 429
    assert r.headers["retry-after"] == "3"
    assert r.headers["retry-after-ms"] == "3000"
