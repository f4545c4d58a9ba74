"""Issue 10: the request/response surface: tools, tool_choice, response_format, top_p, seed,
content parts and ``extra`` on the wire of both APIs; tool calls, finish_reason and request_id
back, streamed or not. Over ``httpx.MockTransport``."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest

from specexec import (
    BadResponse,
    ImagePart,
    Message,
    PolicyError,
    Query,
    TextPart,
    Tool,
    ToolCall,
)

from ._helpers import sse
from .test_hardening import A_START, A_STOP, ROLE, a_msg_delta, anthropic, chunk, openai, serving, streamed
from .test_hardening import _key as _key  # the API key variable, set for every test
from .test_stream_http import Recording

pytestmark = pytest.mark.anyio

WEATHER = Tool.of(
    "get_weather",
    {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    "The weather in a city.",
)
IMAGE = "data:image/png;base64,iVBORw0KGgo="
FULL = Query(
    messages=(
        Message("system", "Be brief."),
        Message("user", (TextPart("What is in this image?"), ImagePart.of(IMAGE))),
    ),
    max_tokens=20,
    top_p=0.9,
    tools=(WEATHER,),
    tool_choice="required",
    extra={"user": "u-1", "metadata": {"k": "v"}},
)

OPENAI_JSON = {
    "id": "chatcmpl-42",
    "model": "m-1",
    "choices": [
        {
            "index": 0,
            "finish_reason": "tool_calls",
            "message": {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city": "Paris"}'},
                    }
                ],
            },
        }
    ],
    "usage": {"prompt_tokens": 5, "completion_tokens": 7},
}
ANTHROPIC_JSON = {
    "id": "msg_42",
    "model": "c-1",
    "stop_reason": "tool_use",
    "content": [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}},
    ],
    "usage": {"input_tokens": 5, "output_tokens": 7},
}


async def test_openai_wire_carries_every_field_as_openai_takes_it() -> None:
    handler = Recording(lambda r: httpx.Response(200, json=OPENAI_JSON))
    response = await openai(serving(handler)).complete(FULL)
    sent = json.loads(handler.requests[0].content)
    assert sent["top_p"] == 0.9 and sent["tool_choice"] == "required"
    assert sent["tools"] == [
        {
            "function": {
                "name": "get_weather",
                "description": "The weather in a city.",
                "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
            },
            "type": "function",
        }
    ]
    assert sent["messages"][1]["content"] == [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image_url", "image_url": {"url": IMAGE}},
    ]
    assert sent["user"] == "u-1" and sent["metadata"] == {"k": "v"}  # extra, merged as it is
    assert response.tool_calls == (ToolCall("call_1", "get_weather", {"city": "Paris"}),)
    assert (response.text, response.finish_reason, response.request_id) == ("", "tool_calls", "chatcmpl-42")


async def test_openai_seed_and_response_format_are_sent() -> None:
    handler = Recording(lambda r: httpx.Response(200, json=OPENAI_JSON))
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": {"type": "object"}}}
    await openai(serving(handler)).complete(Query("hi", seed=7, response_format=fmt))
    sent = json.loads(handler.requests[0].content)
    assert sent["seed"] == 7 and sent["response_format"] == fmt
    assert "tools" not in sent and "top_p" not in sent  # unset fields are not sent


async def test_anthropic_wire_maps_tools_choice_images_and_extra() -> None:
    handler = Recording(lambda r: httpx.Response(200, json=ANTHROPIC_JSON))
    response = await anthropic(serving(handler)).complete(FULL)
    sent = json.loads(handler.requests[0].content)
    assert sent["system"] == "Be brief." and sent["top_p"] == 0.9
    assert sent["tools"] == [
        {
            "name": "get_weather",
            "description": "The weather in a city.",
            "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        }
    ]
    assert sent["tool_choice"] == {"type": "any"}
    assert sent["messages"][0]["content"] == [
        {"type": "text", "text": "What is in this image?"},
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
    ]
    assert sent["user"] == "u-1"
    assert response.tool_calls == (ToolCall("toolu_1", "get_weather", {"city": "Paris"}),)
    assert (response.text, response.finish_reason, response.request_id) == ("Checking.", "tool_use", "msg_42")


async def test_anthropic_refuses_a_seed_rather_than_dropping_it() -> None:
    handler = Recording(lambda r: httpx.Response(200, json=ANTHROPIC_JSON))
    with pytest.raises(PolicyError, match="seed") as info:
        await anthropic(serving(handler)).complete(Query("hi", seed=3))
    assert info.value.path == "$.query.seed" and not handler.requests


async def test_anthropic_tool_round_trip_messages() -> None:
    handler = Recording(lambda r: httpx.Response(200, json=ANTHROPIC_JSON))
    q = Query(
        messages=(
            Message("user", "Weather in Paris?"),
            Message("assistant", "", tool_calls=(ToolCall("toolu_1", "get_weather", {"city": "Paris"}),)),
            Message("tool", "sunny", tool_call_id="toolu_1"),
        ),
        tools=(WEATHER,),
    )
    await anthropic(serving(handler)).complete(q)
    sent = json.loads(handler.requests[0].content)["messages"]
    assert sent[1] == {
        "role": "assistant",
        "content": [{"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}],
    }
    assert sent[2] == {
        "role": "user",
        "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "sunny"}],
    }
    handler = Recording(lambda r: httpx.Response(200, json=OPENAI_JSON))
    await openai(serving(handler)).complete(q)
    sent = json.loads(handler.requests[0].content)["messages"]
    assert sent[1]["tool_calls"] == [
        {"id": "toolu_1", "type": "function", "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'}}
    ]
    assert sent[2] == {"role": "tool", "content": "sunny", "tool_call_id": "toolu_1"}


async def test_anthropic_response_format_is_a_forced_tool_whose_input_is_the_text() -> None:
    answer = dict(ANTHROPIC_JSON, content=[{"type": "tool_use", "id": "t", "name": "json_response", "input": {"a": 1}}])
    handler = Recording(lambda r: httpx.Response(200, json=answer))
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": schema}}
    response = await anthropic(serving(handler)).complete(Query("hi", response_format=fmt))
    sent = json.loads(handler.requests[0].content)
    assert sent["tool_choice"] == {"type": "tool", "name": "json_response"}
    assert sent["tools"][0]["input_schema"] == schema
    assert json.loads(response.text) == {"a": 1} and response.tool_calls == ()
    with pytest.raises(PolicyError, match="forced tool"):
        await anthropic(serving(handler)).complete(Query("hi", response_format=fmt, tools=(WEATHER,)))


@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
async def test_malformed_tool_arguments_are_a_bad_response(make: Any) -> None:
    if make is openai:
        body = json.loads(json.dumps(OPENAI_JSON))
        body["choices"][0]["message"]["tool_calls"][0]["function"]["arguments"] = '{"city": '
        respond = lambda r: httpx.Response(200, json=body)  # noqa: E731
    else:
        events = sse(
            A_START,
            {"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": "t", "name": "f"}},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": '{"a": '},
            },
            a_msg_delta("tool_use"),
            A_STOP,
        )
        respond = lambda r: streamed(events)  # noqa: E731
    with pytest.raises(BadResponse, match="malformed JSON arguments"):
        await make(serving(respond), stream=make is anthropic).complete(Query("hi", tools=(WEATHER,)))


async def test_streamed_tool_calls_are_reassembled() -> None:
    def piece(index: int, **fn: Any) -> dict[str, Any]:
        call: dict[str, Any] = {"index": index, "function": fn}
        if "name" in fn:
            call.update(id=f"call_{index}", type="function")
        return {"id": "chatcmpl-9", "model": "m-1", "choices": [{"index": 0, "delta": {"tool_calls": [call]}}]}

    body = sse(
        ROLE,
        piece(0, name="get_weather", arguments=""),
        piece(0, arguments='{"city":'),
        piece(0, arguments=' "Paris"}'),
        chunk(None, "tool_calls"),
        "[DONE]",
    )
    response = await openai(serving(lambda r: streamed(body)), stream=True).complete(Query("hi", tools=(WEATHER,)))
    assert response.tool_calls == (ToolCall("call_0", "get_weather", {"city": "Paris"}),)
    assert (response.finish_reason, response.request_id) == ("tool_calls", "chatcmpl-9")


async def test_anthropic_streamed_json_mode_streams_the_json_as_text() -> None:
    events = sse(
        A_START,
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "tool_use", "id": "t", "name": "json_response"},
        },
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": '{"a"'}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": ": 1}"}},
        a_msg_delta("tool_use"),
        A_STOP,
    )
    backend = anthropic(serving(lambda r: streamed(events)))
    q = Query("hi", response_format={"type": "json_object"})
    pieces = [p.text for p in await _stream(backend, q)]
    assert "".join(pieces) == '{"a": 1}'
    response = await anthropic(serving(lambda r: streamed(events)), stream=True).complete(q)
    assert response.text == '{"a": 1}' and response.tool_calls == ()


async def _stream(backend: Any, query: Query) -> list[Any]:
    import contextlib

    out = []
    async with contextlib.aclosing(backend.stream(query)) as s:
        async for p in s:
            out.append(p)
    return out


def test_query_stays_backwards_compatible_and_frozen() -> None:
    q = Query("hi")
    assert (q.tools, q.tool_choice, q.response_format, q.top_p, q.seed, q.extra) == ((), None, None, None, None, {})
    with pytest.raises(AttributeError):
        q.seed = 1  # type: ignore[misc]
    with pytest.raises(ValueError, match="response_format"):
        Query("hi", response_format={"type": "yaml"})
    with pytest.raises(ValueError, match="tool_choice"):
        Query("hi", tool_choice="sometimes")
    assert Query(messages=(Message("user", (TextPart("a"), ImagePart.of(IMAGE))),)).text == "a"
