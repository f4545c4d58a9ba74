"""Issue 10: ``OpenAICompatible.stream`` / ``Anthropic.stream`` yield ``StreamChunk``s over SSE
with every bound of the non-streamed path; over ``httpx.MockTransport`` (loopback versions in
``test_stream_fleet.py``)."""

from __future__ import annotations

import contextlib
import json
from typing import Any

import httpx
import pytest

from specexec import BadResponse, StreamChunk, Usage
from specexec.backends import HttpConfig

from ._helpers import ChunkStream, sse
from .test_hardening import (
    A_START,
    A_STOP,
    QUERY,
    ROLE,
    a_delta,
    a_msg_delta,
    anthropic,
    chunk,
    openai,
    serving,
    streamed,
)
from .test_hardening import _key as _key  # the API key variable, set for every test

pytestmark = pytest.mark.anyio

USAGE = {"model": "m-1", "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 3}}
OPENAI_BODY = sse(ROLE, chunk("Hel"), chunk("lo"), chunk(" you", "stop"), USAGE, "[DONE]")
ANTHROPIC_BODY = sse(A_START, a_delta("Hel"), a_delta("lo"), a_delta(" you"), a_msg_delta("end_turn"), A_STOP)


class Recording:
    """A MockTransport handler that answers each request with ``make()`` and keeps the requests."""

    def __init__(self, make: Any) -> None:
        self.make = make
        self.requests: list[httpx.Request] = []
        self.streams: list[ChunkStream] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        response: httpx.Response = self.make(request)
        if isinstance(response.stream, ChunkStream):
            self.streams.append(response.stream)
        return response


async def chunks_of(backend: Any) -> list[StreamChunk]:
    out: list[StreamChunk] = []
    async with contextlib.aclosing(backend.stream(QUERY)) as stream:
        async for piece in stream:
            out.append(piece)
    return out


CASES = [
    pytest.param(openai, OPENAI_BODY, "m-1", "stop", Usage(9, 3), id="openai"),
    pytest.param(anthropic, ANTHROPIC_BODY, "c-1", "end_turn", Usage(25, 3), id="anthropic"),
]


@pytest.mark.parametrize(("make", "body", "model", "finish", "usage"), CASES)
async def test_stream_yields_each_delta_then_usage_model_and_finish_reason(
    make: Any, body: bytes, model: str, finish: str, usage: Usage
) -> None:
    # one SSE event per network chunk: each text delta is its own StreamChunk, as it arrives
    events = [e + b"\n\n" for e in body.split(b"\n\n") if e]
    handler = Recording(lambda r: streamed(events))
    backend = make(serving(handler))  # a backend made with stream=False streams when asked to
    pieces = await chunks_of(backend)
    assert [p.text for p in pieces if p.text] == ["Hel", "lo", " you"]
    last = pieces[-1]
    assert (last.text, last.usage, last.model, last.finish_reason) == ("", usage, model, finish)
    sent = json.loads(handler.requests[0].content)
    assert sent["stream"] is True
    assert handler.requests[0].headers["accept"] == "text/event-stream"
    # the same stream read by complete() gives the concatenated text
    complete = await make(serving(lambda r: streamed(events)), stream=True).complete(QUERY)
    assert complete.text == "".join(p.text for p in pieces) == "Hello you"


@pytest.mark.parametrize(
    ("make", "body"),
    [
        pytest.param(openai, sse(ROLE, chunk("Hel"), chunk("lo"), "[DONE]"), id="openai"),
        pytest.param(anthropic, sse(A_START, a_delta("Hel"), a_delta("lo"), a_msg_delta(None), A_STOP), id="anthropic"),
    ],
)
async def test_stream_without_a_finish_reason_is_a_bad_response_with_partial_usage(make: Any, body: bytes) -> None:
    texts: list[str] = []
    with pytest.raises(BadResponse, match="finish_reason") as info:
        async with contextlib.aclosing(make(serving(lambda r: streamed(body))).stream(QUERY)) as stream:
            async for piece in stream:
                texts.append(piece.text)
    assert "".join(texts) == "Hello"  # the text came through before the stream was found cut short
    partial = info.value.partial_usage
    assert partial is not None and partial.estimated and partial.output_tokens >= 2


@pytest.mark.parametrize(
    ("make", "body"),
    [pytest.param(openai, OPENAI_BODY, id="openai"), pytest.param(anthropic, ANTHROPIC_BODY, id="anthropic")],
)
async def test_stream_past_max_response_bytes_is_a_bad_response(make: Any, body: bytes) -> None:
    backend = make(serving(lambda r: streamed(body)), http=HttpConfig(max_response_bytes=len(body) // 2))
    with pytest.raises(BadResponse, match="max_response_bytes") as info:
        await chunks_of(backend)
    assert info.value.partial_usage is not None


@pytest.mark.parametrize(
    ("make", "first"),
    [
        pytest.param(openai, sse(ROLE, chunk("Hel")), id="openai"),
        pytest.param(anthropic, sse(A_START, a_delta("Hel")), id="anthropic"),
    ],
)
async def test_closing_the_stream_closes_the_response_at_once(make: Any, first: bytes) -> None:
    handler = Recording(lambda r: streamed([first], then_hang=True))
    stream = make(serving(handler)).stream(QUERY)
    piece = await stream.__anext__()
    assert piece.text == "Hel" and not handler.streams[0].closed
    await stream.aclose()
    assert handler.streams[0].closed


@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
async def test_stream_http_error_status_is_mapped(make: Any) -> None:
    from specexec import Unavailable

    backend = make(serving(lambda r: httpx.Response(503, json={"error": {"message": "busy"}})))
    with pytest.raises(Unavailable, match="HTTP 503"):
        await chunks_of(backend)


# --------------------------------------------------------------------------- streaming underneath by default


@pytest.mark.parametrize(
    ("make", "body"),
    [pytest.param(openai, OPENAI_BODY, id="openai"), pytest.param(anthropic, ANTHROPIC_BODY, id="anthropic")],
)
async def test_complete_streams_by_default_and_stream_false_turns_it_off(make: Any, body: bytes) -> None:
    handler = Recording(lambda r: streamed(body))
    backend = make(serving(handler), stream=None)  # the constructors' default (the helpers pass False)
    assert backend.streaming is True  # stream=None (the default) means streamed underneath
    response = await backend.complete(QUERY)
    assert response.text == "Hello you" and response.ttft is not None
    sent = json.loads(handler.requests[0].content)
    assert sent["stream"] is True and handler.requests[0].headers["accept"] == "text/event-stream"
    if make is openai:
        assert sent["stream_options"] == {"include_usage": True}
    off = make(serving(handler), stream=False)
    assert off.streaming is False
    with pytest.raises(BadResponse):  # it asked for JSON; the SSE body is not a JSON answer
        await off.complete(QUERY)
    sent = json.loads(handler.requests[1].content)
    assert "stream" not in sent and handler.requests[1].headers["accept"] == "application/json"


def test_stream_must_be_a_bool_or_none() -> None:
    from specexec import PolicyError

    with pytest.raises(PolicyError, match="stream"):
        openai(serving(lambda r: streamed(b"")), stream="yes")


def test_config_leaves_stream_unset_by_default() -> None:
    from specexec.config import AnthropicConfig, OpenAIConfig

    assert OpenAIConfig(name="o", model="m").stream is None
    assert AnthropicConfig(name="a", model="c").stream is None


@pytest.mark.parametrize(
    ("make", "body", "text"),
    [
        pytest.param(
            openai,
            {"model": "m-1", "choices": [{"message": {"content": "whole"}, "finish_reason": "stop"}]},
            "whole",
            id="openai",
        ),
        pytest.param(
            anthropic,
            {"model": "c-1", "content": [{"type": "text", "text": "whole"}], "stop_reason": "end_turn"},
            "whole",
            id="anthropic",
        ),
    ],
)
async def test_a_server_that_ignores_stream_true_is_read_as_one_json_answer(make: Any, body: Any, text: str) -> None:
    # streaming is the default, so a server that answers a stream request with a JSON body
    # (some proxies and gateways do) must still work: its answer is one piece
    respond = lambda r: httpx.Response(200, json=body)  # noqa: E731
    assert (await make(serving(respond), stream=True).complete(QUERY)).text == text
    pieces = await chunks_of(make(serving(respond)))
    assert [p.text for p in pieces] == [text, ""] and pieces[-1].finish_reason is not None


async def test_the_last_chunk_carries_tool_calls_and_the_request_id() -> None:
    from specexec import Query, Tool, ToolCall

    call = {"index": 0, "id": "call_0", "type": "function", "function": {"name": "f", "arguments": '{"a": 1}'}}
    body = sse(
        {"id": "chatcmpl-7", "model": "m-1", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]},
        chunk(None, "tool_calls"),
        "[DONE]",
    )
    backend = openai(serving(lambda r: streamed(body)))
    async with contextlib.aclosing(backend.stream(Query("hi", tools=(Tool.of("f"),)))) as stream:
        pieces = [p async for p in stream]
    last = pieces[-1]
    assert last.tool_calls == (ToolCall("call_0", "f", {"a": 1}),) and last.request_id == "chatcmpl-7"
