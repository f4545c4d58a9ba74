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
REFUSAL = "I'm sorry, but I can't help with that."


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


def _content_events(lines: list[str], api: str) -> list[str]:
    """The text pieces of an SSE stream's lines, in order (OpenAI chunks or Anthropic deltas)."""
    out: list[str] = []
    for ln in lines:
        if not ln.startswith("data: {"):
            continue
        event = json.loads(ln[6:])
        if api == "anthropic":
            if event["type"] == "content_block_delta":
                out.append(event["delta"]["text"])
        else:
            out += [c["delta"]["content"] for c in event["choices"] if c["delta"].get("content")]
    return out


@pytest.mark.parametrize(("name", "api"), [("f-stall_after", "openai"), ("f-stall_after-a", "anthropic")])
def test_stall_after_sends_n_tokens_then_holds_the_stream_until_the_client_leaves(
    fault_fleet: FleetProcess, http: httpx.Client, name: str, api: str
) -> None:
    # a stream that begins and then goes silent (a wedged GPU worker, a proxy holding the
    # connection): the first stall_after_tokens tokens, then nothing, never an end
    fault_fleet.reset()
    path = "/messages" if api == "anthropic" else "/chat/completions"
    lines: list[str] = []
    url = fault_fleet.base_url(name) + path
    # read until the stall times the client out
    body = {**MESSAGES, "stream": True}
    with pytest.raises(httpx.ReadTimeout), http.stream("POST", url, json=body, timeout=0.3) as r:
        assert r.status_code == 200
        for line in r.iter_lines():
            lines.append(line)
    assert len(_content_events(lines, api)) == 2  # stall_after_tokens = 2 of the 6 planned
    assert not any("[DONE]" in ln or "message_stop" in ln or 'finish_reason":"stop' in ln for ln in lines)
    st = wait_until_idle(fault_fleet, name)
    assert st["faults"] == {"stall_after": 1} and st["tokens_sent"] == 2
    assert (st["requests"], st["completed"], st["disconnected"], st["by_status"]) == (1, 0, 1, {"200": 1})


def test_stall_after_never_answers_a_request_not_streamed(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    fault_fleet.reset()
    with pytest.raises(httpx.ReadTimeout):
        chat(http, fault_fleet, "f-stall_after", timeout=0.2)
    st = wait_until_idle(fault_fleet, "f-stall_after")
    assert (st["requests"], st["completed"], st["disconnected"], st["tokens_sent"]) == (1, 0, 1, 0)


@pytest.mark.parametrize("stream", [False, True])
def test_refusal_answers_start_with_im_sorry(fault_fleet: FleetProcess, http: httpx.Client, stream: bool) -> None:
    fault_fleet.reset()
    r = chat(http, fault_fleet, "f-refusal", stream=stream)
    assert r.status_code == 200
    if stream:
        text = "".join(_content_events(r.text.splitlines(), "openai"))
        assert '"finish_reason":"stop"' in r.text
    else:
        doc = r.json()
        text = doc["choices"][0]["message"]["content"]
        assert doc["choices"][0]["finish_reason"] == "stop"
        assert doc["usage"]["completion_tokens"] == len(text.split())
    assert text == REFUSAL
    r = messages(http, fault_fleet, "f-refusal-a", stream=stream)
    text = "".join(_content_events(r.text.splitlines(), "anthropic")) if stream else r.json()["content"][0]["text"]
    assert text == REFUSAL
    assert faults_of(fault_fleet, "f-refusal") == {"refusal": 1}
    assert faults_of(fault_fleet, "f-refusal-a") == {"refusal": 1}


def test_refusal_replaces_a_tool_call_too(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}
    doc = chat(http, fault_fleet, "f-refusal", tools=[tool]).json()
    choice = doc["choices"][0]
    assert choice["message"]["content"] == REFUSAL and not choice["message"].get("tool_calls")
    assert choice["finish_reason"] == "stop"


def test_tokens_sent_counts_the_tokens_of_every_answer(fault_fleet: FleetProcess, http: httpx.Client) -> None:
    fault_fleet.reset()
    chat(http, fault_fleet, "calm")  # 4 tokens, whole
    chat(http, fault_fleet, "calm", stream=True)  # 4 tokens, streamed
    assert fault_fleet.deployment_stats("calm")["tokens_sent"] == 8


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
        "stall_after",
        "context_window",
        "stall",
        "slow_drip",
        "refusal",
        "wrong_model",
        "no_usage",
    }
