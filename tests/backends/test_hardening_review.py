"""The security review of the HTTP backends, over real loopback HTTP to tiny hostile servers:
secrets and absurd sizes in request ids and model ids, JSON-escaped keys in error bodies,
the bill of a stream cut short, empty deltas that are not progress and absurd usage counts."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import msgspec
import pytest

from specexec import (
    AuthError,
    BadResponse,
    NoAcceptableResponse,
    Policy,
    Query,
    Runtime,
    Timeout,
    Unavailable,
    Usage,
)
from specexec._query import estimate_input_tokens
from specexec.backends import Anthropic, HttpTimeouts, OpenAICompatible
from specexec.backends._anthropic import _MessageStream
from specexec.backends._http import CallInfo
from specexec.backends._openai import _ChatStream
from specexec.backends._sse import ServerSentEvent

from .conftest import FAKE_KEY
from .test_hardening_fleet import canned_server

pytestmark = pytest.mark.anyio

KEY_ENV = "SPECEXEC_REVIEW_KEY"
QUERY = Query("Say something.", max_tokens=16)
MAX_ID = 200


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


def head(status: int = 200, ctype: str = "application/json", body: bytes | None = None, extra: str = "") -> bytes:
    length = f"content-length: {len(body)}\r\n" if body is not None else ""
    text = f"HTTP/1.1 {status} X\r\ncontent-type: {ctype}\r\n{length}{extra}connection: close\r\n\r\n"
    return text.encode()


def once(*pieces: bytes) -> Any:
    async def body() -> AsyncIterator[bytes]:
        for piece in pieces:
            yield piece

    return body


def sse(obj: Any) -> bytes:
    return b"data: " + (obj if isinstance(obj, bytes) else json.dumps(obj).encode()) + b"\n\n"


def completion(model: str = "m", usage: str = '{"prompt_tokens": 3, "completion_tokens": 1}') -> bytes:
    choice = {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
    return b'{"id": "r", "model": %s, "choices": [%s], "usage": %s}' % (
        json.dumps(model).encode(),
        json.dumps(choice).encode(),
        usage.encode(),
    )


def chunk(model: str = "m", finish: str | None = None, **delta: Any) -> bytes:
    return sse({"id": "x", "model": model, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})


def openai(url: str, **kw: Any) -> OpenAICompatible:
    kw.setdefault("api_key_env", KEY_ENV)
    kw.setdefault("timeout", HttpTimeouts(connect=2.0, read=5.0, write=2.0, pool=5.0))
    return OpenAICompatible("h", base_url=url, model="m", **kw)


def anthropic(url: str, **kw: Any) -> Anthropic:
    kw.setdefault("api_key_env", KEY_ENV)
    kw.setdefault("timeout", HttpTimeouts(connect=2.0, read=5.0, write=2.0, pool=5.0))
    return Anthropic("h", base_url=url, model="m", **kw)


async def run_traced(backend: OpenAICompatible | Anthropic) -> tuple[Any, list[str]]:
    """Run ``QUERY`` on ``backend`` alone: the result (or the run's error) and the trace JSON."""
    traces: list[str] = []
    async with Runtime([backend], sinks=[lambda t: traces.append(t.to_json().decode())]) as rt:
        try:
            return await rt.run(QUERY, Policy.single(backend.name, deadline=10.0)), traces
        except NoAcceptableResponse as exc:
            return exc, traces


# --------------------------------------------------------------------------- 1: request ids and model ids


@pytest.mark.parametrize("header", ["x-request-id", "request-id"])
async def test_a_key_echoed_as_the_request_id_of_an_error_is_redacted(header: str) -> None:
    body = b"oops"
    async with canned_server(head(500, "text/plain", body, f"{header}: {FAKE_KEY}\r\n"), once(body)) as url:
        error, traces = await run_traced(openai(url, stream=False))
    assert isinstance(error, NoAcceptableResponse)
    cause = error.causes[0]
    assert isinstance(cause, Unavailable)
    assert cause.request_id is not None and "[REDACTED]" in cause.request_id
    for text in [str(cause), repr(cause), str(error), *traces, *(a.reason or "" for a in error.attempts)]:
        assert FAKE_KEY not in text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_a_key_echoed_as_the_request_id_and_model_of_an_answer_is_redacted(stream: bool) -> None:
    extra = f"x-request-id: {FAKE_KEY}\r\n"
    if stream:
        body = chunk(FAKE_KEY, content="hi") + chunk(FAKE_KEY, finish="stop") + sse(b"[DONE]")
        server = canned_server(head(200, "text/event-stream", None, extra), once(body))
    else:
        body = completion(model=FAKE_KEY)
        server = canned_server(head(200, "application/json", body, extra), once(body))
    async with server as url:
        result, traces = await run_traced(openai(url, stream=stream))
    assert result.response.text == "hi"
    assert result.response.model is not None and "[REDACTED]" in result.response.model
    assert result.response.request_id is not None and "[REDACTED]" in result.response.request_id
    # (``Response.raw`` stays the provider's body as sent: the caller asked for it)
    shown = msgspec.structs.replace(result.response, raw=None)
    for text in [repr(shown), *traces, result.trace.attempts[0].model or ""]:
        assert FAKE_KEY not in text


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_a_huge_model_id_and_request_id_are_cut_to_a_sane_length(stream: bool, api: str) -> None:
    huge = "M" * (1 << 20)
    extra = f"x-request-id: {'R' * 60000}\r\n"
    if api == "openai":
        body = chunk(huge, content="hi") + chunk(finish="stop") + sse(b"[DONE]") if stream else completion(model=huge)
    elif stream:
        body = b"".join(
            b"event: %s\n%s" % (e["type"].encode(), sse(e))
            for e in [
                {"type": "message_start", "message": {"model": huge, "id": "I" * 60000, "usage": {"input_tokens": 3}}},
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
                {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 1}},
                {"type": "message_stop"},
            ]
        )
    else:
        body = json.dumps({"model": huge, "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn"})
        body = body.encode()
    ctype = "text/event-stream" if stream else "application/json"
    async with canned_server(head(200, ctype, body, extra), once(body)) as url:
        backend = (openai if api == "openai" else anthropic)(url, stream=stream)
        result, traces = await run_traced(backend)
    assert result.response.text == "hi"
    assert result.response.model is not None and 0 < len(result.response.model) <= MAX_ID
    assert result.response.request_id is not None and 0 < len(result.response.request_id) <= MAX_ID
    assert all(len(t) < 20000 for t in traces)


async def test_a_huge_request_id_of_an_error_is_cut_to_a_sane_length() -> None:
    body = b"oops"
    async with canned_server(head(503, "text/plain", body, f"x-request-id: {'R' * 60000}\r\n"), once(body)) as url:
        with pytest.raises(Unavailable) as info:
            await openai(url, stream=False).complete(QUERY)
    assert info.value.request_id is not None and len(info.value.request_id) <= MAX_ID
    assert len(str(info.value)) < 2000


async def test_a_key_json_escaped_in_a_401_body_is_redacted() -> None:
    escaped = "".join(f"\\u{ord(c):04x}" for c in FAKE_KEY)
    body = ('{"error": {"message": "bad key ' + escaped + '"}}').encode()
    async with canned_server(head(401, "application/json", body), once(body)) as url:
        with pytest.raises(AuthError) as info:
            await openai(url, stream=False).complete(QUERY)
    assert info.value.body is not None and "[REDACTED]" in info.value.body
    assert escaped not in str(info.value) and FAKE_KEY not in str(info.value)


# --------------------------------------------------------------------------- 2: a cut-short stream's bill


@pytest.mark.parametrize("delta", [{"content": "a"}, {"reasoning_content": "a"}], ids=["content", "reasoning"])
async def test_a_stream_of_many_tiny_deltas_cut_short_is_billed_at_most_max_tokens(delta: dict[str, str]) -> None:
    event = sse({"choices": [{"index": 0, "delta": delta}]})
    async with canned_server(head(200, "text/event-stream"), once(event * 5000)) as url:
        with pytest.raises(BadResponse, match="truncated") as info:
            await openai(url, stream=True).complete(QUERY)
    assert info.value.partial_usage == Usage(
        input_tokens=estimate_input_tokens(QUERY), output_tokens=QUERY.max_tokens, estimated=True
    )


async def test_a_cut_short_stream_costs_no_more_than_its_reservation() -> None:
    event = sse({"choices": [{"index": 0, "delta": {"content": "a"}}]})
    async with canned_server(head(200, "text/event-stream"), once(event * 5000)) as url:
        backend = openai(url, stream=True, input_price=1.0, output_price=1.0)
        async with Runtime([backend]) as rt:
            with pytest.raises(NoAcceptableResponse) as info:
                await rt.run(QUERY, Policy.single("h", deadline=10.0, max_cost=1.0))
    worst = (estimate_input_tokens(QUERY) + QUERY.max_tokens) / 1e6
    assert info.value.trace.cost <= worst + 1e-12


# --------------------------------------------------------------------------- 3: empty deltas are not progress


def _call() -> CallInfo:
    return CallInfo("h", 200, None, ())


@pytest.mark.parametrize(
    ("delta", "progress"),
    [
        ({"role": "assistant"}, False),
        ({"tool_calls": []}, False),
        ({"tool_calls": [{"index": 0}]}, False),
        ({"tool_calls": [{"index": 0, "function": {"arguments": ""}}]}, False),
        ({"content": ""}, False),
        ({"tool_calls": [{"index": 0, "function": {"arguments": "{"}}]}, True),
        ({"tool_calls": [{"index": 0, "id": "c1", "function": {"name": "f"}}]}, True),
        ({"reasoning_content": "hm"}, True),
        ({"content": "a"}, True),
    ],
)
async def test_only_openai_deltas_with_tokens_are_progress(delta: dict[str, Any], progress: bool) -> None:
    state = _ChatStream(QUERY, 0.0, _call())
    data = json.dumps({"choices": [{"index": 0, "delta": delta}]}).encode()
    state.feed(ServerSentEvent("message", data))
    assert state.deltas == (1 if progress else 0)


@pytest.mark.parametrize(
    ("delta", "progress"),
    [
        ({"type": "text_delta", "text": ""}, False),
        ({"type": "input_json_delta", "partial_json": ""}, False),
        ({"type": "thinking_delta", "thinking": ""}, False),
        ({"type": "signature_delta", "signature": "abc"}, False),
        ({"type": "whatever"}, False),
        ({"type": "text_delta", "text": "a"}, True),
        ({"type": "input_json_delta", "partial_json": "{"}, True),
        ({"type": "thinking_delta", "thinking": "hm"}, True),
    ],
)
async def test_only_anthropic_deltas_with_tokens_are_progress(delta: dict[str, Any], progress: bool) -> None:
    state = _MessageStream(QUERY, 0.0, _call())
    data = json.dumps({"type": "content_block_delta", "index": 0, "delta": delta}).encode()
    state.feed(ServerSentEvent("content_block_delta", data))
    assert state.deltas == (1 if progress else 0)


@pytest.mark.parametrize("api", ["openai", "anthropic"])
async def test_empty_deltas_forever_end_in_an_idle_timeout_over_loopback(api: str) -> None:
    if api == "openai":
        first = chunk(role="assistant", content="")
        empty = chunk(tool_calls=[])
    else:
        first = b"event: message_start\n" + sse({"type": "message_start", "message": {"model": "m"}})
        empty = b"event: content_block_delta\n" + sse(
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": ""}}
        )

    async def body() -> AsyncIterator[bytes]:
        yield first
        for _ in range(400):  # 20 s of empty deltas at most; the client gives up after 0.3 s
            await anyio.sleep(0.05)
            yield empty

    async with canned_server(head(200, "text/event-stream"), body) as url:
        make = openai if api == "openai" else anthropic
        backend = make(url, stream=True, timeout=HttpTimeouts(read=5.0, idle=0.3))
        with anyio.fail_after(15):
            with pytest.raises(Timeout, match=r"HttpTimeouts.idle"):
                await backend.complete(QUERY)


# --------------------------------------------------------------------------- 4/5: usage counts


def _usage_stream(usage: str) -> bytes:
    return (
        chunk(content="hello")
        + chunk(finish="stop")
        + b'data: {"id": "x", "choices": [], "usage": '
        + usage.encode()
        + b"}\n\n"
        + sse(b"[DONE]")
    )


USAGES = {
    "whole-float": ('{"prompt_tokens": 3.0, "completion_tokens": 5.0}', Usage(3, 5, False)),
    "huge-but-sane": ('{"prompt_tokens": 1, "completion_tokens": 9000000000000000000}', Usage(1, 9 * 10**18)),
    "giant": ('{"prompt_tokens": 1, "completion_tokens": 1' + "0" * 400 + "}", None),
    "giant-input": ('{"prompt_tokens": 1' + "0" * 400 + ', "completion_tokens": 1}', None),
    "u64": ('{"prompt_tokens": 18446744073709551615, "completion_tokens": 18446744073709551615}', None),
    "e30": ('{"prompt_tokens": 1, "completion_tokens": 1e30}', None),
    "fraction": ('{"prompt_tokens": 1, "completion_tokens": 2.5}', None),
}


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
@pytest.mark.parametrize("kind", list(USAGES))
async def test_odd_usage_counts_keep_the_answer(kind: str, stream: bool) -> None:
    usage, expected = USAGES[kind]
    if stream:
        body = _usage_stream(usage)
        server = canned_server(head(200, "text/event-stream"), once(body))
    else:
        body = completion(usage=usage)
        server = canned_server(head(200, "application/json", body), once(body))
    async with server as url:
        response = await openai(url, stream=stream).complete(QUERY)
    assert response.text in ("hi", "hello")
    if expected is not None:
        assert response.usage == expected
    else:
        assert response.usage.estimated
        assert 0 <= response.usage.output_tokens <= QUERY.max_tokens
        assert 0 <= response.usage.input_tokens <= estimate_input_tokens(QUERY)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_odd_anthropic_usage_counts_keep_the_answer(stream: bool) -> None:
    giant = "1" + "0" * 400
    if stream:
        body = b"".join(
            b"event: %s\n%s" % (e["type"].encode(), sse(e))
            for e in [
                {"type": "message_start", "message": {"model": "m", "usage": {"input_tokens": 4.0}}},
                {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "hi"}},
                {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2.0}},
                {"type": "message_stop"},
            ]
        )
        ctype = "text/event-stream"
    else:
        body = (
            b'{"model": "m", "content": [{"type": "text", "text": "hi"}], "stop_reason": "end_turn", '
            b'"usage": {"input_tokens": 4, "output_tokens": %s, "cache_read_input_tokens": 2.0}}' % giant.encode()
        )
        ctype = "application/json"
    async with canned_server(head(200, ctype, None if stream else body), once(body)) as url:
        response = await anthropic(url, stream=stream).complete(QUERY)
    assert response.text == "hi"
    if stream:
        assert response.usage == Usage(4, 2, False)
    else:
        assert response.usage.estimated and response.usage.input_tokens == 6
        assert response.usage.output_tokens <= QUERY.max_tokens
