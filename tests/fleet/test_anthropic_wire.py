"""The Anthropic Messages wire format: raw httpx checks, and the official SDK when it is installed."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from specexec.bench.fleet import FleetProcess
from specexec.bench.fleet.pytest_fixtures import CANARY_ANSWER, CANARY_QUESTION, TEST_API_KEY

HEADERS = {"x-api-key": "unused", "anthropic-version": "2023-06-01"}
BODY: dict[str, Any] = {
    "model": "claude-whatever",
    "max_tokens": 5,
    "messages": [{"role": "user", "content": "hi there"}],
}


def sse_events(text: str) -> list[tuple[str, dict[str, Any]]]:
    """``(event, data)`` pairs of an ``event:``/``data:`` stream."""
    out = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.splitlines())
        out.append((fields["event"], json.loads(fields["data"])))
    return out


def test_message_non_streaming(fleet: FleetProcess, http: httpx.Client) -> None:
    r = http.post(fleet.base_url("gamma-eu") + "/messages", json=BODY, headers=HEADERS)
    assert r.status_code == 200
    assert r.headers["request-id"].startswith("req_gamma-eu_")
    doc = r.json()
    assert doc["type"] == "message" and doc["role"] == "assistant"
    assert doc["model"] == "gamma-haiku-20250101"
    assert doc["content"] == [{"type": "text", "text": "lorem ipsum dolor sit amet"}]
    assert doc["stop_reason"] == "max_tokens"
    assert doc["usage"] == {"input_tokens": 2, "output_tokens": 5}


def test_message_system_prompt_and_blocks(fleet: FleetProcess, http: httpx.Client) -> None:
    body = {
        "model": "x",
        "max_tokens": 100,
        "system": [{"type": "text", "text": "you are terse"}],
        "messages": [{"role": "user", "content": [{"type": "text", "text": CANARY_QUESTION}]}],
    }
    doc = http.post(fleet.base_url("gamma-eu") + "/messages", json=body, headers=HEADERS).json()
    assert doc["content"][0]["text"] == CANARY_ANSWER
    assert doc["stop_reason"] == "end_turn"
    assert doc["usage"]["input_tokens"] == 3 + len(CANARY_QUESTION.split())


def test_message_streaming_event_sequence(fleet: FleetProcess, http: httpx.Client) -> None:
    r = http.post(fleet.base_url("gamma-eu") + "/messages", json={**BODY, "stream": True}, headers=HEADERS)
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/event-stream")
    events = sse_events(r.text)
    names = [name for name, _ in events]
    assert names == [
        "message_start",
        "content_block_start",
        "ping",
        *["content_block_delta"] * 5,
        "content_block_stop",
        "message_delta",
        "message_stop",
    ]
    for name, data in events:
        assert data["type"] == name
    start = events[0][1]["message"]
    assert start["model"] == "gamma-haiku-20250101" and start["content"] == []
    assert start["usage"]["input_tokens"] == 2
    deltas = [d["delta"] for n, d in events if n == "content_block_delta"]
    assert all(d["type"] == "text_delta" for d in deltas)
    assert "".join(d["text"] for d in deltas) == "lorem ipsum dolor sit amet"
    message_delta = events[-2][1]
    assert message_delta["delta"]["stop_reason"] == "max_tokens"
    assert message_delta["usage"] == {"output_tokens": 5}


def test_errors_in_anthropic_format(fleet: FleetProcess, fault_fleet: FleetProcess, http: httpx.Client) -> None:
    r = http.post(fleet.base_url("keyed-gamma") + "/messages", json=BODY, headers=HEADERS)
    assert r.status_code == 401
    assert r.json() == {
        "type": "error",
        "error": {"type": "authentication_error", "message": "Incorrect API key provided"},
    }
    r = http.post(
        fleet.base_url("keyed-gamma") + "/messages", json=BODY, headers={**HEADERS, "x-api-key": TEST_API_KEY}
    )
    assert r.status_code == 200
    r = http.post(fleet.base_url("gamma-eu") + "/messages", content=b"{nope", headers=HEADERS)
    assert r.status_code == 400 and r.json()["error"]["type"] == "invalid_request_error"
    r = http.post(fleet.base_url("gamma-eu") + "/messages", json={"model": "x", "messages": []}, headers=HEADERS)
    assert r.status_code == 400 and "max_tokens" in r.json()["error"]["message"]
    r = http.post(fault_fleet.base_url("f-overloaded_529-a") + "/messages", json=BODY, headers=HEADERS)
    assert r.status_code == 529
    assert r.json()["error"]["type"] == "overloaded_error"
    assert r.headers["request-id"]


def test_models_list(fleet: FleetProcess, http: httpx.Client) -> None:
    doc = http.get(fleet.base_url("gamma-eu") + "/models", headers=HEADERS).json()
    assert [m["id"] for m in doc["data"]] == ["gamma-haiku-20250101"]
    assert doc["data"][0]["type"] == "model" and doc["has_more"] is False


@pytest.mark.slow  # importing the anthropic SDK alone takes seconds here
def test_official_sdk(fleet: FleetProcess, fault_fleet: FleetProcess) -> None:
    anthropic = pytest.importorskip("anthropic")
    base = fleet.base_url("gamma-eu").removesuffix("/v1")  # the SDK appends /v1/messages itself
    with anthropic.Anthropic(base_url=base, api_key="x", max_retries=0) as c:
        msg = c.messages.create(model="m", max_tokens=3, messages=[{"role": "user", "content": "hi"}])
        assert msg.content[0].text == "lorem ipsum dolor"
        assert msg.stop_reason == "max_tokens"
        assert (msg.usage.input_tokens, msg.usage.output_tokens) == (1, 3)
        assert msg.model == "gamma-haiku-20250101"
        with c.messages.stream(model="m", max_tokens=50, messages=[{"role": "user", "content": "hi"}]) as stream:
            text = "".join(stream.text_stream)
            final = stream.get_final_message()
        assert text == "lorem ipsum dolor sit amet consectetur adipiscing elit"
        assert final.stop_reason == "end_turn" and final.usage.output_tokens == 8
        assert [m.id for m in c.models.list()] == ["gamma-haiku-20250101"]
    base = fault_fleet.base_url("f-overloaded_529-a").removesuffix("/v1")
    with (
        anthropic.Anthropic(base_url=base, api_key="x", max_retries=0) as c,
        pytest.raises(anthropic.InternalServerError) as e,
    ):
        c.messages.create(model="m", max_tokens=3, messages=[{"role": "user", "content": "hi"}])
    assert e.value.status_code == 529
    base = fleet.base_url("keyed-gamma").removesuffix("/v1")
    with (
        anthropic.Anthropic(base_url=base, api_key="wrong", max_retries=0) as c,
        pytest.raises(anthropic.AuthenticationError),
    ):
        c.messages.create(model="m", max_tokens=3, messages=[{"role": "user", "content": "hi"}])
