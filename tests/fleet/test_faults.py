"""Every fault kind happens at rate 1.0 and never at 0; partial rates are seeded."""

from __future__ import annotations

import itertools
import json
import time
from typing import Any

import httpx
import pytest

from specexec.bench.fleet import FleetProcess
from specexec.bench.fleet._faults import FAILURE_KINDS, MODIFIER_KINDS

MODEL = "m-2025-01-01"
CHAT: dict[str, Any] = {"model": MODEL, "messages": [{"role": "user", "content": "hi"}]}
MESSAGES: dict[str, Any] = {**CHAT, "max_tokens": 16}


def chat(http: httpx.Client, fleet: FleetProcess, name: str, timeout: float = 5.0, **extra: Any) -> httpx.Response:
    return http.post(fleet.base_url(name) + "/chat/completions", json={**CHAT, **extra}, timeout=timeout)


def messages(http: httpx.Client, fleet: FleetProcess, name: str, **extra: Any) -> httpx.Response:
    return http.post(fleet.base_url(name) + "/messages", json={**MESSAGES, **extra})


def faults_of(fleet: FleetProcess, name: str) -> dict[str, int]:
    out: dict[str, int] = fleet.deployment_stats(name)["faults"]
    return out


@pytest.mark.parametrize(("name", "status"), [("f-error_500", 500), ("f-error_503", 503), ("f-overloaded_529", 529)])
def test_error_statuses(fault_fleet: FleetProcess, http: httpx.Client, name: str, status: int) -> None:
    fault_fleet.reset()
    for _ in range(3):
        r = chat(http, fault_fleet, name)
        assert r.status_code == status
        assert r.json()["error"]["type"] == "server_error"
        assert r.headers["x-request-id"]
    assert faults_of(fault_fleet, name) == {name[2:]: 3}


def test_reset_aborts_the_connection(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    fault_fleet.reset()
    for _ in range(2):
        with pytest.raises((httpx.RemoteProtocolError, httpx.ReadError)):
            chat(http, fault_fleet, "f-reset")
    st = fault_fleet.deployment_stats("f-reset")
    assert st["faults"] == {"reset": 2}
    assert (st["requests"], st["completed"], st["disconnected"], st["by_status"]) == (2, 0, 0, {})


def test_malformed_bodies(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    r = chat(http, fault_fleet, "f-malformed")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)
    r = chat(http, fault_fleet, "f-malformed", stream=True)
    assert r.status_code == 200
    first = r.text.split("\n\n")[0]
    assert first.startswith("data: ")
    with pytest.raises(json.JSONDecodeError):
        json.loads(first.removeprefix("data: "))
    r = messages(http, fault_fleet, "f-malformed-a")
    assert r.status_code == 200
    with pytest.raises(json.JSONDecodeError):
        json.loads(r.text)


def test_cut_short_ends_the_stream_without_a_finish_reason(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    # what llama.cpp's server does to a running stream when another request takes its slot
    fault_fleet.reset()
    r = chat(http, fault_fleet, "f-cut_short", stream=True, stream_options={"include_usage": True})
    assert r.status_code == 200 and r.text.endswith("data: [DONE]\n\n")
    chunks = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
    assert all(choice["finish_reason"] is None for c in chunks for choice in c["choices"])
    assert all(c["choices"] for c in chunks)  # no usage chunk either
    tokens = [c["choices"][0]["delta"].get("content") for c in chunks[1:]]
    assert len(tokens) == 3 and all(tokens)  # half of the 6 planned tokens
    r = http.post(fault_fleet.base_url("f-cut_short-a") + "/messages", json={**MESSAGES, "stream": True})
    events = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: ")]
    kinds = [e["type"] for e in events]
    assert kinds[-1] == "message_stop" and kinds.count("content_block_delta") == 3
    (delta,) = [e for e in events if e["type"] == "message_delta"]
    assert delta["delta"]["stop_reason"] is None
    whole = chat(http, fault_fleet, "f-cut_short").json()  # not streamed: answered whole
    assert whole["choices"][0]["finish_reason"] == "stop"
    assert faults_of(fault_fleet, "f-cut_short") == {"cut_short": 2}


def test_context_window_is_openais_exact_400(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    for stream in (False, True):
        r = chat(http, fault_fleet, "f-context_window", stream=stream)
        assert r.status_code == 400
        assert r.json() == {
            "error": {
                "message": "This model's maximum context length is 128000 tokens. However, your messages resulted "
                "in 130000 tokens. Please reduce the length of the messages.",
                "type": "invalid_request_error",
                "param": "messages",
                "code": "context_length_exceeded",
            }
        }
    r = messages(http, fault_fleet, "f-context_window-a")
    assert r.status_code == 400
    assert r.json() == {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 208310 tokens > 200000 maximum"},
    }


def test_stall_holds_until_the_client_leaves(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    fault_fleet.reset()
    t0 = time.monotonic()
    with pytest.raises(httpx.ReadTimeout):
        chat(http, fault_fleet, "f-stall", timeout=0.2)
    assert 0.2 <= time.monotonic() - t0 < 2.0
    st = wait_until_idle(fault_fleet, "f-stall")
    assert st["faults"] == {"stall": 1}
    assert (st["requests"], st["completed"], st["disconnected"], st["by_status"]) == (1, 0, 1, {})


def wait_until_idle(fleet: FleetProcess, name: str) -> dict[str, Any]:
    """The deployment's stats once its in-flight count is back to 0 (bounded: 2 s)."""
    for _ in range(200):
        st: dict[str, Any] = fleet.deployment_stats(name)
        if st["in_flight"] == 0:
            return st
        time.sleep(0.01)
    raise AssertionError(f"{name} still has requests in flight: {st}")


def test_slow_drip_paces_the_stream(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    arrivals = []
    t0 = time.monotonic()
    with http.stream(
        "POST", fault_fleet.base_url("f-slow_drip") + "/chat/completions", json={**CHAT, "stream": True}
    ) as r:
        for line in r.iter_lines():
            if line.startswith("data: {") and '"content":"' in line and '"content":""' not in line:
                arrivals.append(time.monotonic() - t0)
    assert len(arrivals) == 3  # output_tokens = 3
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    assert all(g >= 0.08 for g in gaps), gaps  # slow_drip_interval = 0.1 (loop-time granularity: 1 ms)
    t0 = time.monotonic()
    assert chat(http, fault_fleet, "f-slow_drip").status_code == 200
    assert time.monotonic() - t0 >= 0.29  # not streamed: the whole reply after 3 × 0.1 s


def test_wrong_model(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    assert chat(http, fault_fleet, "f-wrong_model").json()["model"] == MODEL + "-drifted"
    assert chat(http, fault_fleet, "f-drift").json()["model"] == "m-2024-12-31"
    r = chat(http, fault_fleet, "f-wrong_model", stream=True)
    models = {json.loads(ln[6:])["model"] for ln in r.text.splitlines() if ln.startswith("data: {")}
    assert models == {MODEL + "-drifted"}


def test_no_usage(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    doc = chat(http, fault_fleet, "f-no_usage").json()
    assert "usage" not in doc and doc["choices"][0]["message"]["content"]
    r = chat(http, fault_fleet, "f-no_usage", stream=True, stream_options={"include_usage": True})
    chunks = [json.loads(ln[6:]) for ln in r.text.splitlines() if ln.startswith("data: {")]
    assert chunks and all("usage" not in c and c["choices"] for c in chunks)
    doc = messages(http, fault_fleet, "f-no_usage-a").json()
    assert "usage" not in doc and doc["content"][0]["text"]


def test_no_fault_at_rate_zero(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    fault_fleet.reset()
    for _ in range(20):
        r = chat(http, fault_fleet, "calm")
        assert r.status_code == 200
        doc = r.json()
        assert doc["model"] == MODEL and doc["usage"]["completion_tokens"] == 4
        r = messages(http, fault_fleet, "calm-a")
        assert r.status_code == 200 and r.json()["usage"]["output_tokens"] == 4
    r = chat(http, fault_fleet, "calm", stream=True, stream_options={"include_usage": True})
    assert r.text.endswith("data: [DONE]\n\n") and '"usage":{' in r.text
    for name in ("calm", "calm-a"):
        st = fault_fleet.deployment_stats(name)
        assert st["faults"] == {}
        assert st["by_status"] == {"200": 20 + (name == "calm")}


def test_partial_rate_is_seeded(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    def pattern() -> list[int]:
        fault_fleet.reset()  # reseeds every draw
        return [chat(http, fault_fleet, "f-half").status_code for _ in range(24)]

    first = pattern()
    assert first == pattern()
    assert set(first) == {200, 500}
    assert fault_fleet.deployment_stats("f-half")["faults"] == {"error_500": first.count(500)}


def test_fault_kinds_are_documented() -> None:
    assert set(FAILURE_KINDS) | set(MODIFIER_KINDS) == {
        "error_500",
        "error_503",
        "overloaded_529",
        "reset",
        "malformed",
        "cut_short",
        "context_window",
        "stall",
        "slow_drip",
        "wrong_model",
        "no_usage",
    }
