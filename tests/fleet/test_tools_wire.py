"""Issue 10: the fleet serves tool calls and JSON mode, streamed or not; checked with the
official ``openai`` and ``anthropic`` clients, and end to end with specexec's backends."""

from __future__ import annotations

import json
from typing import Any

import anthropic
import openai
import pytest

from specexec import Query, Tool, ToolCall
from specexec.backends import Anthropic, OpenAICompatible
from specexec.bench.fleet import FleetProcess

WEATHER: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "days": {"type": "integer"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city"],
}
ARGS = {"city": "lorem", "days": 1, "unit": "c"}
OPENAI_TOOLS: Any = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
USER: Any = [{"role": "user", "content": "weather?"}]


def oai(fleet: FleetProcess, name: str = "alpha-us") -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet.base_url(name), api_key="unused", max_retries=0, timeout=5.0)


def claude(fleet: FleetProcess, name: str = "gamma-eu") -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=fleet.base_url(name).removesuffix("/v1"), api_key="unused", max_retries=0)


def test_openai_client_reads_a_tool_call(fleet: FleetProcess) -> None:
    with oai(fleet) as c:
        r = c.chat.completions.create(model="m", messages=USER, tools=OPENAI_TOOLS, tool_choice="required")
    choice = r.choices[0]
    assert choice.finish_reason == "tool_calls" and choice.message.content is None
    (call,) = choice.message.tool_calls or []
    assert call.type == "function" and call.function.name == "get_weather"
    assert json.loads(call.function.arguments) == ARGS


def test_openai_client_streams_a_tool_call(fleet: FleetProcess) -> None:
    with oai(fleet) as c:
        stream = c.chat.completions.create(model="m", messages=USER, tools=OPENAI_TOOLS, stream=True)
        pieces, names, finish = [], [], None
        for chunk in stream:
            for choice in chunk.choices:
                for call in choice.delta.tool_calls or []:
                    if call.function and call.function.name:
                        names.append(call.function.name)
                    if call.function and call.function.arguments:
                        pieces.append(call.function.arguments)
                finish = choice.finish_reason or finish
    assert names == ["get_weather"] and json.loads("".join(pieces)) == ARGS and finish == "tool_calls"


def test_openai_client_json_mode(fleet: FleetProcess) -> None:
    fmt: Any = {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}}
    with oai(fleet) as c:
        r = c.chat.completions.create(model="m", messages=USER, response_format=fmt)
        plain = c.chat.completions.create(model="m", messages=USER, response_format={"type": "json_object"})
    assert json.loads(r.choices[0].message.content or "") == ARGS
    assert set(json.loads(plain.choices[0].message.content or "")) == {"answer"}


def test_anthropic_client_reads_and_streams_a_tool_use(fleet: FleetProcess) -> None:
    tools: Any = [{"name": "get_weather", "input_schema": WEATHER}]
    with claude(fleet) as c:
        m = c.messages.create(model="m", max_tokens=50, messages=USER, tools=tools, tool_choice={"type": "any"})
        with c.messages.stream(model="m", max_tokens=50, messages=USER, tools=tools) as stream:
            final = stream.get_final_message()
    assert m.stop_reason == "tool_use"
    (block,) = m.content
    assert block.type == "tool_use" and block.name == "get_weather" and block.input == ARGS
    assert final.stop_reason == "tool_use"
    assert [b.type for b in final.content] == ["tool_use"] and final.content[0].input == ARGS  # type: ignore[union-attr]


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["trio", "asyncio"])
@pytest.mark.parametrize("stream", [True, False], ids=["sse", "json"])
async def test_specexec_backends_get_tool_calls_and_json_from_the_fleet(fleet: FleetProcess, stream: bool) -> None:
    q = Query("weather?", tools=(Tool.of("get_weather", WEATHER),), tool_choice="required")
    o = OpenAICompatible("alpha-us", base_url=fleet.base_url("alpha-us"), model="m", stream=stream)
    a = Anthropic("gamma-eu", base_url=fleet.base_url("gamma-eu"), model="m", api_key_env=None, stream=stream)
    for backend, finish in ((o, "tool_calls"), (a, "tool_use")):
        r = await backend.complete(q)
        assert r.tool_calls and r.tool_calls[0].name == "get_weather" and r.tool_calls[0].arguments == ARGS
        assert isinstance(r.tool_calls[0], ToolCall) and r.tool_calls[0].id
        assert r.finish_reason == finish and r.request_id
    fmt = {"type": "json_schema", "json_schema": {"name": "w", "schema": WEATHER}}
    for backend in (o, a):  # Anthropic: as a forced tool, whose input is the text
        r = await backend.complete(Query("weather?", response_format=fmt))
        assert json.loads(r.text) == ARGS and r.tool_calls == ()
