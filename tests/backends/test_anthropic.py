"""Anthropic (Messages API) over httpx.MockTransport: the wire, streaming events, usage, errors."""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest

from specexec import (
    AuthError,
    BackendError,
    BadRequest,
    BadResponse,
    Message,
    Query,
    RateLimited,
    Unavailable,
)
from specexec._query import estimate_input_tokens
from specexec.backends import DEFAULT_ANTHROPIC_VERSION, Anthropic

from ._helpers import ChunkStream, mock_client, split_every, sse
from .conftest import FAKE_KEY

pytestmark = pytest.mark.anyio

BASE = "http://claude.test/v1"
MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-test-20240101",
    "content": [
        {"type": "thinking", "thinking": "hmm", "signature": "x"},
        {"type": "text", "text": "Hello"},
        {"type": "text", "text": " there"},
    ],
    "stop_reason": "end_turn",
    "stop_sequence": None,
    "usage": {"input_tokens": 10, "output_tokens": 4, "cache_read_input_tokens": 2},
}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ANTHROPIC_API_KEY", FAKE_KEY)


def backend(client: httpx.AsyncClient, **kw: Any) -> Anthropic:
    kw.setdefault("stream", False)  # these tests send and parse JSON bodies; streams say stream=True
    return Anthropic("claude", base_url=BASE, model="claude-test", client=client, **kw)


def stream_response(chunks: list[bytes], **kw: Any) -> httpx.Response:
    return httpx.Response(
        200, headers={"content-type": "text/event-stream", "request-id": "req_s"}, stream=ChunkStream(chunks, **kw)
    )


async def test_request_wire() -> None:
    client, rec = mock_client(lambda r: httpx.Response(200, json=MESSAGE))
    q = Query(
        messages=(
            Message("system", "be brief"),
            Message("user", "hi"),
            Message("assistant", "hello"),
            Message("system", "and kind"),
            Message("user", "again"),
        ),
        max_tokens=50,
        temperature=0.2,
        stop=("END",),
    )
    await backend(client).complete(q)
    request = rec.requests[-1]
    assert str(request.url) == f"{BASE}/messages"
    assert request.headers["x-api-key"] == FAKE_KEY
    assert request.headers["anthropic-version"] == DEFAULT_ANTHROPIC_VERSION
    assert "authorization" not in request.headers
    assert rec.last_json == {
        "model": "claude-test",
        "messages": [
            {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"},
            {"role": "user", "content": "again"},
        ],
        "max_tokens": 50,
        "system": "be brief\n\nand kind",
        "temperature": 0.2,
        "stop_sequences": ["END"],
    }


async def test_request_without_system_and_custom_version() -> None:
    client, rec = mock_client(lambda r: stream_response([named(*EVENTS)]))
    await backend(client, anthropic_version="2099-01-01", stream=True).complete(Query("hi"))
    assert rec.requests[-1].headers["anthropic-version"] == "2099-01-01"
    body = rec.last_json
    assert "system" not in body and "temperature" not in body
    assert body["stream"] is True


async def test_message() -> None:
    client, _ = mock_client(lambda r: httpx.Response(200, json=MESSAGE))
    response = await backend(client).complete(Query("hi"))
    assert response.text == "Hello there"
    assert response.model == "claude-test-20240101"
    assert response.finish_reason == "end_turn"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 4)  # cache reads are input too
    assert response.usage.estimated is False
    assert response.raw["id"] == "msg_1"


async def test_message_without_usage_is_estimated() -> None:
    body = {k: v for k, v in MESSAGE.items() if k != "usage"}
    client, _ = mock_client(lambda r: httpx.Response(200, json=body))
    q = Query("hi")
    response = await backend(client).complete(q)
    assert response.usage.estimated is True
    assert response.usage.input_tokens == estimate_input_tokens(q)


@pytest.mark.parametrize(
    "body",
    [b"{", b'{"type": "message", "model": "m"}', b'{"content": "not a list"}', b'{"type":"error","error":{}}'],
)
async def test_bad_bodies(body: bytes) -> None:
    client, _ = mock_client(lambda r: httpx.Response(200, content=body, headers={"request-id": "req_b"}))
    with pytest.raises(BadResponse) as info:
        await backend(client).complete(Query("hi"))
    assert info.value.request_id == "req_b"


@pytest.mark.parametrize(
    ("status", "kind"),
    [(400, BadRequest), (401, AuthError), (429, RateLimited), (500, Unavailable), (529, Unavailable)],
)
async def test_error_status(status: int, kind: type[BackendError]) -> None:
    body = {"type": "error", "error": {"type": "overloaded_error", "message": f"key {FAKE_KEY}"}}
    client, _ = mock_client(
        lambda r: httpx.Response(status, json=body, headers={"request-id": "req_e", "retry-after": "12"})
    )
    with pytest.raises(kind) as info:
        await backend(client).complete(Query("hi"))
    assert info.value.request_id == "req_e"
    assert FAKE_KEY not in str(info.value)
    if isinstance(info.value, RateLimited):
        assert info.value.retry_after == 12.0


async def test_missing_default_env_var(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY")
    client, rec = mock_client(lambda r: httpx.Response(200, json=MESSAGE))
    with pytest.raises(AuthError, match="ANTHROPIC_API_KEY"):
        await backend(client).complete(Query("hi"))
    assert rec.requests == []


# --------------------------------------------------------------------------- streaming

START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test-20240101",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 25, "output_tokens": 1},
    },
}
BLOCK_START = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
PING = {"type": "ping"}
DELTA_1 = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}
DELTA_JSON = {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": "{"}}
DELTA_2 = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "!"}}
BLOCK_STOP = {"type": "content_block_stop", "index": 0}
MSG_DELTA = {
    "type": "message_delta",
    "delta": {"stop_reason": "max_tokens", "stop_sequence": None},
    "usage": {"output_tokens": 15},
}
STOP = {"type": "message_stop"}
EVENTS: list[dict[str, Any]] = [START, BLOCK_START, PING, DELTA_1, DELTA_JSON, DELTA_2, BLOCK_STOP, MSG_DELTA, STOP]


def named(*events: dict[str, Any]) -> bytes:
    return sse(*events, event_names=[e["type"] for e in events])


@pytest.mark.parametrize("chunk_size", [1, 13, 100_000])
@pytest.mark.parametrize("with_event_lines", [True, False])
async def test_stream_reassembly(chunk_size: int, with_event_lines: bool) -> None:
    body = named(*EVENTS) if with_event_lines else sse(*EVENTS)
    stream = ChunkStream(split_every(body, chunk_size))
    client, _ = mock_client(lambda r: httpx.Response(200, stream=stream))
    response = await backend(client, stream=True).complete(Query("hi"))
    assert response.text == "Hello!"
    assert response.model == "claude-test-20240101"
    assert response.finish_reason == "max_tokens"
    assert (response.usage.input_tokens, response.usage.output_tokens) == (25, 15)
    assert response.usage.estimated is False
    assert response.ttft is not None and response.ttft >= 0
    assert stream.closed


async def test_stream_ttft(anyio_backend: tuple[str, dict[str, object]]) -> None:
    class Slow(ChunkStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield named(START, BLOCK_START)
            await anyio.sleep(0.05)
            yield named(DELTA_1)
            await anyio.sleep(0.05)
            yield named(MSG_DELTA, STOP)

    client, _ = mock_client(lambda r: httpx.Response(200, stream=Slow([])))
    start = anyio.current_time()
    response = await backend(client, stream=True).complete(Query("hi"))
    total = anyio.current_time() - start
    assert response.ttft is not None and 0.04 <= response.ttft < total


async def test_stream_without_usage_is_estimated() -> None:
    start = {"type": "message_start", "message": {"model": "claude-test-20240101"}}
    delta = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}}
    client, _ = mock_client(lambda r: stream_response([named(start, DELTA_1, delta, STOP)]))
    response = await backend(client, stream=True).complete(Query("hi"))
    assert response.text == "Hello"
    assert response.usage.estimated is True
    assert response.usage.output_tokens == len("Hello")


async def test_truncated_stream() -> None:
    client, _ = mock_client(lambda r: stream_response([named(START, DELTA_1, MSG_DELTA)]))
    with pytest.raises(BadResponse, match="truncated") as info:
        await backend(client, stream=True).complete(Query("hi"))
    assert (info.value.status, info.value.request_id) == (200, "req_s")


async def test_malformed_event() -> None:
    body = named(START) + b"event: content_block_delta\ndata: {nope\n\n" + named(STOP)
    client, _ = mock_client(lambda r: stream_response([body]))
    with pytest.raises(BadResponse, match="malformed"):
        await backend(client, stream=True).complete(Query("hi"))


@pytest.mark.parametrize(
    ("error_type", "kind"),
    [("api_error", BadResponse), ("overloaded_error", Unavailable), ("rate_limit_error", RateLimited)],
)
async def test_error_event(error_type: str, kind: type[BackendError]) -> None:
    error = {"type": "error", "error": {"type": error_type, "message": f"oops {FAKE_KEY}"}}
    client, _ = mock_client(lambda r: stream_response([named(START, DELTA_1, error)]))
    with pytest.raises(kind, match=error_type) as info:
        await backend(client, stream=True).complete(Query("hi"))
    assert FAKE_KEY not in str(info.value)


async def test_cancelled_stream_is_closed() -> None:
    stream = ChunkStream([named(START, DELTA_1)], then_hang=True)
    client, _ = mock_client(lambda r: httpx.Response(200, stream=stream))
    with anyio.move_on_after(0.05) as scope:
        await backend(client, stream=True).complete(Query("hi"))
    assert scope.cancelled_caught and stream.closed
