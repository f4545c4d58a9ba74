"""The OpenAI wire format, checked with the official ``openai`` client against the shared test fleet."""

from __future__ import annotations

import asyncio
import json

import openai
import pytest
from openai.types.chat import ChatCompletionMessageParam

from specexec.bench.fleet import FleetProcess
from specexec.bench.fleet.pytest_fixtures import CANARY_ANSWER, CANARY_QUESTION, TEST_API_KEY

USER: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello there fleet"}]


def client(fleet: FleetProcess, name: str, api_key: str = "unused") -> openai.OpenAI:
    return openai.OpenAI(base_url=fleet.base_url(name), api_key=api_key, max_retries=0, timeout=5.0)


def test_chat_completion_non_streaming(fleet: FleetProcess) -> None:
    with client(fleet, "alpha-us") as c:
        raw = c.chat.completions.with_raw_response.create(model="whatever", messages=USER, max_tokens=5)
        r = raw.parse()
    assert raw.headers["x-request-id"].startswith("req_alpha-us_")
    assert r.object == "chat.completion"
    assert r.id and r.created > 0
    assert r.model == "alpha-mini-2025-01-15"  # the deployment's model, whatever was asked
    choice = r.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "lorem ipsum dolor sit amet"
    assert choice.finish_reason == "length"  # cut at max_tokens=5 (the deployment plans 8)
    assert r.usage is not None
    assert (r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens) == (3, 5, 8)


def test_full_reply_stops_and_max_completion_tokens(fleet: FleetProcess) -> None:
    with client(fleet, "alpha-us") as c:
        full = c.chat.completions.create(model="m", messages=USER)
        short = c.chat.completions.create(model="m", messages=USER, max_completion_tokens=2)
    assert full.choices[0].finish_reason == "stop"
    assert full.usage is not None and full.usage.completion_tokens == 8
    assert short.choices[0].message.content == "lorem ipsum"
    assert short.choices[0].finish_reason == "length"


def test_canary_answer(fleet: FleetProcess) -> None:
    with client(fleet, "beta-us") as c:
        r = c.chat.completions.create(model="m", messages=[{"role": "user", "content": CANARY_QUESTION}])
    assert r.choices[0].message.content == CANARY_ANSWER
    assert r.model == "beta-large-2025-03-01"


def test_echo_and_json_replies(fleet: FleetProcess) -> None:
    with client(fleet, "echo-us") as c:
        r = c.chat.completions.create(
            model="m",
            messages=[{"role": "system", "content": "be brief"}, {"role": "user", "content": "say  this back"}],
        )
    assert r.choices[0].message.content == "say  this back"
    assert r.usage is not None and r.usage.prompt_tokens == 5
    with client(fleet, "json-us") as c:
        r = c.chat.completions.create(model="m", messages=USER)
    assert json.loads(r.choices[0].message.content or "") == {
        "answer": "lorem ipsum dolor sit amet consectetur adipiscing"
    }


def test_streaming_with_usage(fleet: FleetProcess) -> None:
    with client(fleet, "alpha-us") as c:
        stream = c.chat.completions.create(
            model="m",
            messages=USER,
            max_tokens=4,
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    assert text == "lorem ipsum dolor sit"
    assert chunks[0].choices[0].delta.role == "assistant"
    finishes = [ch.choices[0].finish_reason for ch in chunks if ch.choices and ch.choices[0].finish_reason]
    assert finishes == ["length"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens, last.usage.total_tokens) == (3, 4, 7)
    assert all(ch.usage is None for ch in chunks[:-1])
    assert {ch.model for ch in chunks} == {"alpha-mini-2025-01-15"}
    assert len({ch.id for ch in chunks}) == 1


def test_streaming_without_usage_option(fleet: FleetProcess) -> None:
    with client(fleet, "alpha-eu") as c:
        chunks = list(c.chat.completions.create(model="m", messages=USER, stream=True))
    assert all(ch.usage is None for ch in chunks)
    assert all(ch.choices for ch in chunks)
    assert (
        "".join(ch.choices[0].delta.content or "" for ch in chunks)
        == "lorem ipsum dolor sit amet consectetur adipiscing elit"
    )


def test_models_list(fleet: FleetProcess) -> None:
    with client(fleet, "beta-us") as c:
        models = list(c.models.list())
        one = c.models.retrieve("beta-large-2025-03-01")
        with pytest.raises(openai.NotFoundError):
            c.models.retrieve("nope")
    assert [m.id for m in models] == ["beta-large-2025-03-01"]
    assert models[0].owned_by == "beta"
    assert one.id == "beta-large-2025-03-01"


def test_errors_map_to_client_exceptions(fleet: FleetProcess) -> None:
    with client(fleet, "down-us") as c, pytest.raises(openai.InternalServerError) as e503:
        c.chat.completions.create(model="m", messages=USER)
    assert e503.value.status_code == 503
    with client(fleet, "keyed-us", api_key="wrong") as c, pytest.raises(openai.AuthenticationError):
        c.chat.completions.create(model="m", messages=USER)
    with client(fleet, "keyed-us", api_key=TEST_API_KEY) as c:
        assert c.chat.completions.create(model="m", messages=USER).choices[0].message.content
    bad = openai.OpenAI(base_url=fleet.url + "/no-such-deployment/v1", api_key="x", max_retries=0)
    with bad, pytest.raises(openai.NotFoundError):
        bad.chat.completions.create(model="m", messages=USER)


def test_rate_limit_error_with_retry_after(fault_fleet: FleetProcess) -> None:
    fault_fleet.reset()
    with client(fault_fleet, "quota") as c:
        for _ in range(3):
            c.chat.completions.create(model="m", messages=USER)
        with pytest.raises(openai.RateLimitError) as e:
            c.chat.completions.create(model="m", messages=USER)
    assert e.value.response.headers["retry-after"] == "7"
    assert e.value.response.headers["retry-after-ms"] == "7000"
    assert e.value.code == "rate_limit_exceeded"


def test_async_client_streams_concurrently(fleet: FleetProcess) -> None:
    async def main() -> list[str]:
        async with openai.AsyncOpenAI(base_url=fleet.base_url("alpha-us"), api_key="x", max_retries=0) as c:

            async def one(i: int) -> str:
                stream = await c.chat.completions.create(
                    model="m",
                    messages=[{"role": "user", "content": f"question {i}"}],
                    max_tokens=3,
                    stream=True,
                )
                return "".join([ch.choices[0].delta.content or "" async for ch in stream if ch.choices])

            plain = await c.chat.completions.create(model="m", messages=USER, max_tokens=2)
            texts = await asyncio.gather(*(one(i) for i in range(8)))
            return [plain.choices[0].message.content or "", *texts]

    texts = asyncio.run(main())
    assert texts == ["lorem ipsum"] + ["lorem ipsum dolor"] * 8
