"""Issue 9 (HTTP): cut-short streams, billing after a 200, context-window errors, bounded
response memory, the idle-content timeout, key hygiene and connection errors naming the URL.

Over ``httpx.MockTransport`` (the loopback versions are in ``test_hardening_fleet.py``).
"""

from __future__ import annotations

import contextlib
import gzip
import json
import logging
import tracemalloc
import zlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest

from specexec import (
    AuthError,
    BackendError,
    BadRequest,
    BadResponse,
    ContextWindowExceeded,
    PolicyError,
    Query,
    Usage,
)
from specexec._query import estimate_input_tokens
from specexec.backends import Anthropic, HttpConfig, OpenAICompatible, _http, error_for_status

from ._helpers import ChunkStream, sse
from .conftest import FAKE_KEY

pytestmark = pytest.mark.anyio

KEY_ENV = "TEST_HARDENING_KEY"
QUERY = Query("Say hello.", max_tokens=50)
BOUND = estimate_input_tokens(QUERY)

ROLE = {"model": "m-1", "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}}]}


def chunk(text: str | None = None, finish: str | None = None) -> dict[str, Any]:
    delta = {} if text is None else {"content": text}
    return {"model": "m-1", "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}


A_START = {"type": "message_start", "message": {"model": "c-1", "usage": {"input_tokens": 25, "output_tokens": 1}}}


def a_delta(text: str) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": text}}


def a_msg_delta(stop: str | None) -> dict[str, Any]:
    return {"type": "message_delta", "delta": {"stop_reason": stop}, "usage": {"output_tokens": 3}}


A_STOP = {"type": "message_stop"}


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, FAKE_KEY)


def serving(respond: Any) -> httpx.AsyncClient:
    async def handler(request: httpx.Request) -> httpx.Response:
        return respond(request)  # type: ignore[no-any-return]

    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def openai(client: httpx.AsyncClient, **kw: Any) -> OpenAICompatible:
    kw.setdefault("api_key_env", KEY_ENV)
    kw.setdefault("stream", False)  # JSON bodies unless a test says stream=True
    return OpenAICompatible("oai", base_url="http://llm.test/v1", model="m", client=client, **kw)


def anthropic(client: httpx.AsyncClient, **kw: Any) -> Anthropic:
    kw.setdefault("api_key_env", KEY_ENV)
    kw.setdefault("stream", False)  # JSON bodies unless a test says stream=True
    return Anthropic("ant", base_url="http://claude.test/v1", model="c", client=client, **kw)


def streamed(body: bytes | list[bytes], **kw: Any) -> httpx.Response:
    chunks = body if isinstance(body, list) else [body]
    return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=ChunkStream(chunks, **kw))


# --------------------------------------------------------------------------- 3: cut-short streams


async def test_openai_stream_done_without_finish_reason_is_bad() -> None:
    # llama.cpp's server ends a running stream this way when another request arrives
    body = sse(ROLE, chunk("Hel"), chunk("lo"), "[DONE]")
    with pytest.raises(BadResponse, match="stream ended without a finish_reason") as info:
        await openai(serving(lambda r: streamed(body)), stream=True).complete(QUERY)
    assert info.value.partial_usage == Usage(input_tokens=BOUND, output_tokens=5, estimated=True)


async def test_openai_empty_stream_without_finish_reason_is_bad() -> None:
    with pytest.raises(BadResponse, match="without a finish_reason"):
        await openai(serving(lambda r: streamed(sse(ROLE, "[DONE]"))), stream=True).complete(QUERY)


@pytest.mark.parametrize("reason", ["abort", "error"])
async def test_an_aborted_finish_reason_is_bad(reason: str) -> None:
    # vLLM ends an engine-aborted stream with finish_reason "abort" and then [DONE]
    # (vllm-project/vllm#57082): not a complete answer either
    body = sse(ROLE, chunk("Hel"), chunk(None, reason), "[DONE]")
    with pytest.raises(BadResponse, match=f"finish_reason {reason!r}") as info:
        await openai(serving(lambda r: streamed(body)), stream=True).complete(QUERY)
    assert info.value.partial_usage == Usage(input_tokens=BOUND, output_tokens=3, estimated=True)
    completion = {"choices": [{"message": {"content": "Hel"}, "finish_reason": reason}]}
    with pytest.raises(BadResponse, match=f"finish_reason {reason!r}"):
        await openai(serving(lambda r: httpx.Response(200, json=completion))).complete(QUERY)


async def test_anthropic_stream_without_stop_reason_is_bad() -> None:
    body = sse(A_START, a_delta("Hi"), a_msg_delta(None), A_STOP)
    with pytest.raises(BadResponse, match="stream ended without a finish_reason") as info:
        await anthropic(serving(lambda r: streamed(body)), stream=True).complete(QUERY)
    # the provider already said how many input and output tokens it counted
    assert info.value.partial_usage == Usage(input_tokens=25, output_tokens=3, estimated=True)


async def test_complete_streams_still_pass() -> None:
    body = sse(ROLE, chunk("Hel"), chunk(None, "stop"), "[DONE]")
    response = await openai(serving(lambda r: streamed(body)), stream=True).complete(QUERY)
    assert response.text == "Hel" and response.finish_reason == "stop"
    body = sse(A_START, a_delta("Hi"), a_msg_delta("end_turn"), A_STOP)
    response = await anthropic(serving(lambda r: streamed(body)), stream=True).complete(QUERY)
    assert response.text == "Hi" and response.finish_reason == "end_turn"


# --------------------------------------------------------------------------- 4: billing after a 200


async def test_truncated_stream_carries_the_tokens_received() -> None:
    body = sse(ROLE, chunk("a"), chunk("b"), chunk("c"))  # no [DONE]: cut
    with pytest.raises(BadResponse, match="truncated") as info:
        await openai(serving(lambda r: streamed(body)), stream=True).complete(QUERY)
    assert info.value.partial_usage == Usage(input_tokens=BOUND, output_tokens=3, estimated=True)


async def test_reported_prompt_tokens_are_used_for_the_partial_usage() -> None:
    usage = {"model": "m-1", "choices": [], "usage": {"prompt_tokens": 7, "completion_tokens": 1}}
    body = sse(ROLE, chunk("ab"), usage, '{"error": {"type": "server_error", "message": "boom"}}')
    with pytest.raises(BadResponse, match="boom") as info:
        await openai(serving(lambda r: streamed(body)), stream=True).complete(QUERY)
    assert info.value.partial_usage == Usage(input_tokens=7, output_tokens=2, estimated=True)


async def test_read_error_mid_stream_carries_the_tokens_received() -> None:
    class Broken(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield sse(ROLE, chunk("xyz"))
            raise httpx.ReadError("connection reset")

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Broken())

    with pytest.raises(BackendError) as info:
        await openai(serving(respond), stream=True).complete(QUERY)
    assert info.value.partial_usage == Usage(input_tokens=BOUND, output_tokens=3, estimated=True)


@pytest.mark.parametrize("body", [b'{"choices": [{"mess', b"[]", b'{"choices": []}'], ids=["cut", "list", "empty"])
async def test_bad_non_streamed_200_is_billed_the_worst_case(body: bytes) -> None:
    with pytest.raises(BadResponse) as info:
        await openai(serving(lambda r: httpx.Response(200, content=body))).complete(QUERY)
    assert info.value.partial_usage == Usage(input_tokens=BOUND, output_tokens=QUERY.max_tokens, estimated=True)


async def test_errors_before_a_200_carry_no_usage() -> None:
    with pytest.raises(BackendError) as info:
        await openai(serving(lambda r: httpx.Response(503, content=b"{}"))).complete(QUERY)
    assert info.value.partial_usage is None


# --------------------------------------------------------------------------- 7: context window

CONTEXT_BODIES = {
    "openai": {
        "error": {
            "message": "This model's maximum context length is 128000 tokens. However, your messages resulted in "
            "130000 tokens. Please reduce the length of the messages.",
            "type": "invalid_request_error",
            "param": "messages",
            "code": "context_length_exceeded",
        }
    },
    "openai-code-only": {
        "error": {"message": "too much", "type": "invalid_request_error", "code": "context_length_exceeded"}
    },
    "vllm": {
        "object": "error",
        "message": "This model's maximum context length is 4096 tokens. However, you requested 5000 tokens "
        "(4000 in the messages, 1000 in the completion). Please reduce the length of the messages or completion.",
        "type": "BadRequestError",
        "code": 400,
    },
    "vllm-longer": {"message": "The prompt (total length 5000) is longer than the model's context length (4096)."},
    "llamacpp": {
        "error": {
            "code": 400,
            "message": "the request exceeds the available context size, try increasing it",
            "type": "exceed_context_size_error",
            "n_prompt_tokens": 5000,
            "n_ctx": 4096,
        }
    },
    "llamacpp-old": {"error": {"code": 400, "message": "input is larger than the max context size. skipping"}},
    "anthropic": {
        "type": "error",
        "error": {"type": "invalid_request_error", "message": "prompt is too long: 208310 tokens > 200000 maximum"},
    },
    "anthropic-max-tokens": {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "input length and `max_tokens` exceed context limit: 198000 + 8192 > 200000, "
            "decrease input length or `max_tokens` and try again",
        },
    },
    "tgi": {
        "error": "Input validation error: `inputs` tokens + `max_new_tokens` must be <= 4096. "
        "Given: 4000 `inputs` tokens and 200 `max_new_tokens`",
        "error_type": "validation",
    },
}


@pytest.mark.parametrize("status", [400, 413, 422])
@pytest.mark.parametrize("which", list(CONTEXT_BODIES))
def test_context_window_wordings(which: str, status: int) -> None:
    error = error_for_status(status, body=json.dumps(CONTEXT_BODIES[which]), backend="b")
    assert isinstance(error, ContextWindowExceeded) and not error.fatal, (which, error)
    assert error.kind == "context_window" and error.status == status
    assert "context window" in str(error)


def test_other_400s_stay_fatal_bad_requests() -> None:
    error = error_for_status(400, body=b'{"error": {"message": "Invalid value for temperature", "code": null}}')
    assert type(error) is BadRequest and error.fatal


# --------------------------------------------------------------------------- 12: bounded response memory


def pieces(data: bytes, size: int = 65536) -> list[bytes]:
    """``data`` in network-sized chunks (as httpcore reads them)."""
    return [data[i : i + size] for i in range(0, len(data), size)]


def small() -> HttpConfig:
    """A 1 MiB response bound."""
    return HttpConfig(max_response_bytes=1 << 20)


async def test_a_huge_body_is_refused_at_the_bound() -> None:
    body = b'{"choices": [{"message": {"content": "' + b"x" * (3 << 20) + b'"}}]}'
    respond = lambda r: httpx.Response(200, stream=ChunkStream(pieces(body)))  # noqa: E731
    with pytest.raises(BadResponse, match="1048576") as info:
        await openai(serving(respond), http=small()).complete(QUERY)
    assert "max_response_bytes" in str(info.value)
    assert info.value.partial_usage == Usage(input_tokens=BOUND, output_tokens=QUERY.max_tokens, estimated=True)


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate"])
async def test_a_compression_bomb_is_stopped_without_inflating_it(encoding: str) -> None:
    inflated = 64 << 20  # 64 MiB of zeros against a 1 MiB bound
    if encoding == "gzip":
        packed = gzip.compress(b"\0" * inflated, compresslevel=9)
    else:
        c = zlib.compressobj(9, zlib.DEFLATED, -zlib.MAX_WBITS if encoding == "raw-deflate" else zlib.MAX_WBITS)
        packed = c.compress(b"\0" * inflated) + c.flush()
    header = "gzip" if encoding == "gzip" else "deflate"
    respond = lambda r: httpx.Response(200, headers={"content-encoding": header}, stream=ChunkStream(pieces(packed)))  # noqa: E731
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with pytest.raises(BadResponse, match="max_response_bytes"):
            await openai(serving(respond), http=small()).complete(QUERY)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert peak < 8 << 20, f"peak {peak} bytes while refusing a {inflated}-byte body"


async def test_a_compressed_body_within_the_bound_is_decoded() -> None:
    body = json.dumps({"choices": [{"message": {"content": "zipped"}, "finish_reason": "stop"}]}).encode()
    packed = gzip.compress(body)
    respond = lambda r: httpx.Response(200, headers={"content-encoding": "gzip"}, stream=ChunkStream(pieces(packed)))  # noqa: E731
    assert (await openai(serving(respond), http=small()).complete(QUERY)).text == "zipped"


async def test_an_endless_stream_is_refused_at_the_bound() -> None:
    class Endless(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield sse(ROLE)
            piece = sse(chunk("word ")) * 100
            while True:
                yield piece
                await anyio.lowlevel.checkpoint()

    def respond(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Endless())

    with pytest.raises(BadResponse, match="max_response_bytes") as info:
        await openai(serving(respond), stream=True, http=small()).complete(QUERY)
    usage = info.value.partial_usage
    assert usage is not None and usage.output_tokens >= QUERY.max_tokens


async def test_a_long_sse_line_is_refused_at_the_bound() -> None:
    pieces = [b"data: {"] + [b"x" * 65536] * 40  # 2.5 MiB without a line end
    with pytest.raises(BadResponse, match="max_response_bytes"):
        await openai(serving(lambda r: streamed(pieces)), stream=True, http=small()).complete(QUERY)


async def test_an_error_body_is_read_only_in_part() -> None:
    packed = gzip.compress(b"x" * (64 << 20))
    respond = lambda r: httpx.Response(500, headers={"content-encoding": "gzip"}, stream=ChunkStream(pieces(packed)))  # noqa: E731
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base = tracemalloc.get_traced_memory()[0]
        with pytest.raises(BackendError) as info:
            await openai(serving(respond)).complete(QUERY)
        peak = tracemalloc.get_traced_memory()[1] - base
    finally:
        tracemalloc.stop()
    assert info.value.status == 500 and info.value.body is not None
    assert peak < 8 << 20


@pytest.mark.parametrize("stream", [False, True], ids=["json", "sse"])
async def test_deeply_nested_json_is_a_bad_response(stream: bool) -> None:
    nested = b"[" * 100_000 + b"]" * 100_000
    if stream:
        respond = lambda r: streamed(b"data: " + nested + b"\n\n")  # noqa: E731
    else:
        respond = lambda r: httpx.Response(200, content=nested)  # noqa: E731
    for make in (openai, anthropic):
        with pytest.raises(BadResponse):
            await make(serving(respond), stream=stream).complete(QUERY)


def test_max_response_bytes_is_validated() -> None:
    assert HttpConfig().max_response_bytes == 8 << 20
    for bad in (0, -1, True, 1.5):
        with pytest.raises(PolicyError, match="max_response_bytes"):
            HttpConfig(max_response_bytes=bad)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- 15: key hygiene


def texts_of(error: BaseException) -> list[str]:
    """Everything an error shows or holds: str, repr, traceback, its chain, attributes two deep."""
    import traceback

    out = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    todo: list[tuple[object, int]] = [(error, 0)]
    while todo:
        obj, depth = todo.pop()
        if id(obj) in seen or obj is None:
            continue
        seen.add(id(obj))
        out += [repr(obj), str(obj)]
        if isinstance(obj, BaseException):
            todo += [(obj.__cause__, 0), (obj.__context__, 0)]
            tb = obj.__traceback__
            while tb is not None:  # what a reporter capturing frame locals (e.g. Sentry) would show
                if "/specexec/" in tb.tb_frame.f_code.co_filename:  # the library's frames, not the test's
                    out += [f"{name}={value!r}" for name, value in tb.tb_frame.f_locals.items()]
                tb = tb.tb_next
            for name in ("request", "response"):
                try:
                    held = getattr(obj, name)
                except (AttributeError, RuntimeError):
                    continue
                todo.append((held, depth + 1))
                out.append(repr(getattr(held, "headers", "")))
        if isinstance(obj, httpx.Request | httpx.Response):
            out.append(repr(list(obj.headers.raw)))
        if depth < 2:
            try:
                attrs = vars(obj)
            except TypeError:
                continue
            for value in attrs.values():
                todo.append((value, depth + 1))
    return out


def assert_no_key(error: BaseException, *keys: str) -> None:
    for text in texts_of(error):
        for key in keys:
            assert key not in text
            assert key.strip() not in text


@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
@pytest.mark.parametrize("bad", ["\x01", "\x7f", "é", "\n\n", "ab\ncd", "\t", "\u2028"])
async def test_control_or_non_ascii_keys_are_refused_naming_only_the_variable(
    make: Any, bad: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    key = FAKE_KEY[:8] + bad + FAKE_KEY[8:]
    monkeypatch.setenv(KEY_ENV, key)
    sent: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200)

    with pytest.raises(AuthError, match=KEY_ENV) as info:
        await make(serving(respond)).complete(QUERY)
    assert not sent
    assert "control or non-ASCII" in str(info.value)
    assert_no_key(info.value, key, FAKE_KEY, FAKE_KEY[8:])


@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
async def test_surrounding_whitespace_is_stripped_with_one_warning(
    make: Any, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="specexec")
    monkeypatch.setattr(_http, "_warned_env", set())  # once per variable and process: start afresh
    env = f"{KEY_ENV}_{make.__name__.upper()}"
    monkeypatch.setenv(env, f" {FAKE_KEY}\r\n")
    sent: list[httpx.Request] = []

    def respond(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]})

    backend = make(serving(respond), api_key_env=env)
    for _ in range(3):
        with contextlib.suppress(BackendError):  # Anthropic cannot parse an OpenAI body: only headers matter
            await backend.complete(QUERY)
    header = "authorization" if make is openai else "x-api-key"
    assert [r.headers[header] for r in sent] == [f"Bearer {FAKE_KEY}" if make is openai else FAKE_KEY] * 3
    warnings = [r for r in caplog.records if env in r.getMessage()]
    assert len(warnings) == 1 and warnings[0].levelno == logging.WARNING
    assert FAKE_KEY not in caplog.text


@pytest.mark.parametrize("value", ["a\nb", "a\r\nInjected: 1", "\0", "é"])
def test_header_values_with_control_characters_are_refused_at_build_time(value: str) -> None:
    client = serving(lambda r: httpx.Response(200))
    with pytest.raises(PolicyError, match="x-custom") as info:
        openai(client, headers={"X-Custom": value})
    assert value not in str(info.value)
    with pytest.raises(PolicyError, match="headers"):
        anthropic(client, headers={"X-Api-Key": FAKE_KEY + "\n"})


# --------------------------------------------------------------------------- 16/17: the error chain and the URL


@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
async def test_transport_error_chain_holds_no_key(make: Any) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError(f"cannot connect (sent {request.headers!r})", request=request)

    with pytest.raises(BackendError) as info:
        await make(serving(respond)).complete(QUERY)
    error = info.value
    assert isinstance(error.__cause__, httpx.ConnectError)  # the kind of cause is kept ...
    assert "cannot connect" in str(error.__cause__)  # ... and its message, redacted
    with pytest.raises(RuntimeError):
        error.__cause__.request  # noqa: B018  ... but not the request that holds the key
    assert_no_key(error, FAKE_KEY)
