"""OpenAICompatible over httpx.MockTransport: the wire, streaming, usage, errors, secrets."""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import httpx
import pytest

from specexec import (
    AuthError,
    BackendBase,
    BackendError,
    BadRequest,
    BadResponse,
    Message,
    PolicyError,
    Query,
    RateLimited,
    Timeout,
    Unavailable,
)
from specexec._query import estimate_input_tokens
from specexec._resources import Resources, _current
from specexec.backends import HttpTimeouts, OpenAICompatible

from ._helpers import ChunkStream, mock_client, split_every, sse
from .conftest import FAKE_KEY

pytestmark = pytest.mark.anyio

BASE = "http://llm.test:8000/v1"
COMPLETION: dict[str, Any] = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "gpt-test-2024-01-01",
    "system_fingerprint": "fp_x",
    "choices": [
        {"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop", "logprobs": None}
    ],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3, "total_tokens": 15},
}


def backend(client: httpx.AsyncClient, **kw: Any) -> OpenAICompatible:
    kw.setdefault("api_key_env", "TEST_OPENAI_KEY")
    kw.setdefault("stream", False)  # these tests send and parse JSON bodies; streams say stream=True
    return OpenAICompatible("oai", base_url=BASE, model="gpt-test", client=client, **kw)


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", FAKE_KEY)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.Response(status, json=body, headers=headers)


def stream_response(chunks: list[bytes], status: int = 200, **kw: Any) -> httpx.Response:
    return httpx.Response(
        status,
        headers={"content-type": "text/event-stream", "x-request-id": "req-stream"},
        stream=ChunkStream(chunks, **kw),
    )


# --------------------------------------------------------------------------- the request


async def test_request_wire() -> None:
    client, rec = mock_client(lambda r: json_response(COMPLETION))
    b = backend(client, headers={"X-Extra": "1"})
    q = Query(
        messages=(Message("system", "be brief"), Message("user", "hi")),
        max_tokens=20,
        temperature=0.5,
        stop=("\n\n",),
    )
    await b.complete(q)
    request = rec.requests[-1]
    assert request.method == "POST"
    assert str(request.url) == f"{BASE}/chat/completions"
    assert request.headers["authorization"] == f"Bearer {FAKE_KEY}"
    assert request.headers["content-type"] == "application/json"
    assert request.headers["x-extra"] == "1"
    assert rec.last_json == {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_tokens": 20,
        "temperature": 0.5,
        "stop": ["\n\n"],
    }


async def test_request_omits_unset_params_and_key() -> None:
    client, rec = mock_client(lambda r: json_response(COMPLETION))
    b = backend(client, api_key_env=None)
    await b.complete(Query("hi"))
    assert rec.last_json == {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 256}
    assert "authorization" not in rec.requests[-1].headers


async def test_streaming_request_asks_for_usage() -> None:
    client, rec = mock_client(lambda r: stream_response([sse(CHUNK_HELLO, CHUNK_STOP, "[DONE]")]))
    await backend(client, stream=True).complete(Query("hi"))
    body = rec.last_json
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    assert rec.requests[-1].headers["accept"] == "text/event-stream"


# --------------------------------------------------------------------------- non-streamed answers


async def test_completion() -> None:
    client, _ = mock_client(lambda r: json_response(COMPLETION))
    response = await backend(client).complete(Query("hi"))
    assert response.text == "Hello!"
    assert response.model == "gpt-test-2024-01-01"
    assert response.finish_reason == "stop"
    assert response.usage.input_tokens == 12
    assert response.usage.output_tokens == 3
    assert response.usage.estimated is False
    assert response.ttft is None
    assert response.raw["system_fingerprint"] == "fp_x"  # extra fields are kept in raw


async def test_missing_usage_is_estimated() -> None:
    body = {k: v for k, v in COMPLETION.items() if k != "usage"}
    client, _ = mock_client(lambda r: json_response(body))
    q = Query("hello there")
    response = await backend(client).complete(q)
    assert response.usage.estimated is True
    assert response.usage.input_tokens == estimate_input_tokens(q)
    assert response.usage.output_tokens == len("Hello!")


async def test_partial_usage_is_estimated() -> None:
    body = {**COMPLETION, "usage": {"prompt_tokens": 12}}
    client, _ = mock_client(lambda r: json_response(body))
    response = await backend(client).complete(Query("hi"))
    assert response.usage.input_tokens == 12
    assert response.usage.estimated is True


async def test_empty_content_is_a_valid_answer() -> None:
    body = {**COMPLETION, "choices": [{"index": 0, "message": {"role": "assistant", "content": ""}}]}
    client, _ = mock_client(lambda r: json_response(body))
    assert (await backend(client).complete(Query("hi"))).text == ""


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"{not json", "malformed"),
        (b"", "malformed"),
        (json.dumps({"model": "m"}).encode(), "choices"),
        (json.dumps({**COMPLETION, "choices": []}).encode(), "no choices"),
        (json.dumps({**COMPLETION, "choices": [{"message": {"role": "assistant"}}]}).encode(), "no message content"),
        (json.dumps({**COMPLETION, "choices": [{"message": {"content": 3}}]}).encode(), "malformed"),
        (json.dumps({"error": {"message": "oops"}}).encode(), "choices"),
    ],
)
async def test_bad_bodies(body: bytes, match: str) -> None:
    client, _ = mock_client(lambda r: httpx.Response(200, content=body, headers={"x-request-id": "req-9"}))
    with pytest.raises(BadResponse, match=match) as info:
        await backend(client).complete(Query("hi"))
    assert info.value.status == 200
    assert info.value.request_id == "req-9"
    assert info.value.backend == "oai"


# --------------------------------------------------------------------------- error statuses


@pytest.mark.parametrize(
    ("status", "kind"),
    [
        (400, BadRequest),
        (401, AuthError),
        (403, AuthError),
        (404, Unavailable),
        (408, Unavailable),
        (409, Unavailable),
        (422, BadRequest),
        (429, RateLimited),
        (500, Unavailable),
        (502, Unavailable),
        (503, Unavailable),
        (529, Unavailable),
    ],
)
@pytest.mark.parametrize("stream", [False, True])
async def test_error_status(status: int, kind: type[BackendError], stream: bool) -> None:
    def respond(request: httpx.Request) -> httpx.Response:
        # a provider echoing the key back must not leak it into our error
        body = {"error": {"message": f"no: {request.headers.get('authorization')}", "type": "x"}}
        return json_response(body, status, headers={"x-request-id": f"req-{status}", "retry-after": "3"})

    client, _ = mock_client(respond)
    with pytest.raises(kind) as info:
        await backend(client, stream=stream).complete(Query("hi"))
    error = info.value
    assert error.status == status
    assert error.request_id == f"req-{status}"
    assert error.backend == "oai"
    assert error.body is not None and '"error"' in error.body
    assert FAKE_KEY not in str(error) and FAKE_KEY not in repr(error)
    if isinstance(error, RateLimited):
        assert error.retry_after == 3.0


async def test_retry_after_ms_header() -> None:
    client, _ = mock_client(lambda r: httpx.Response(429, headers={"retry-after-ms": "1500"}))
    with pytest.raises(RateLimited) as info:
        await backend(client).complete(Query("hi"))
    assert info.value.retry_after == 1.5


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError, Unavailable),
        (httpx.ReadError, Unavailable),
        (httpx.RemoteProtocolError, Unavailable),
        (httpx.ConnectTimeout, Timeout),
        (httpx.ReadTimeout, Timeout),
        (httpx.PoolTimeout, Timeout),
        (httpx.WriteTimeout, Timeout),
    ],
)
async def test_transport_errors(exc: type[httpx.TransportError], kind: type[BackendError]) -> None:
    async def handler(request: httpx.Request) -> httpx.Response:
        raise exc("boom", request=request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(handler))
    with pytest.raises(kind) as info:
        await backend(client).complete(Query("hi"))
    assert info.value.backend == "oai"
    assert isinstance(info.value.__cause__, exc)


async def test_read_error_mid_stream_keeps_status_and_request_id() -> None:
    class Broken(ChunkStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield sse(CHUNK_HELLO)
            raise httpx.ReadError("connection reset")

    client, _ = mock_client(lambda r: httpx.Response(200, headers={"x-request-id": "req-r"}, stream=Broken([])))
    with pytest.raises(Unavailable) as info:
        await backend(client, stream=True).complete(Query("hi"))
    assert (info.value.status, info.value.request_id) == (200, "req-r")


# --------------------------------------------------------------------------- secrets


async def test_missing_env_var_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TEST_OPENAI_KEY")
    client, rec = mock_client(lambda r: json_response(COMPLETION))
    with pytest.raises(AuthError, match="TEST_OPENAI_KEY") as info:
        await backend(client).complete(Query("hi"))
    assert not info.value.fatal  # this backend's key: the run goes on with the others
    assert "export" in str(info.value)
    assert rec.requests == []  # nothing was sent


async def test_empty_env_var_is_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_OPENAI_KEY", "")
    client, _ = mock_client(lambda r: json_response(COMPLETION))
    with pytest.raises(AuthError, match="TEST_OPENAI_KEY"):
        await backend(client).complete(Query("hi"))


async def test_key_is_read_at_call_time(monkeypatch: pytest.MonkeyPatch) -> None:
    client, rec = mock_client(lambda r: json_response(COMPLETION))
    b = backend(client)
    monkeypatch.setenv("TEST_OPENAI_KEY", "sk-rotated-000000")
    await b.complete(Query("hi"))
    assert rec.requests[-1].headers["authorization"] == "Bearer sk-rotated-000000"


def test_key_passed_as_env_name_is_refused_without_echo() -> None:
    with pytest.raises(PolicyError) as info:
        OpenAICompatible("oai", base_url=BASE, model="m", api_key_env=FAKE_KEY)
    assert FAKE_KEY not in str(info.value)
    assert "NAME of an environment variable" in str(info.value)


def test_repr_has_no_key() -> None:
    b = OpenAICompatible("oai", base_url=BASE, model="m", api_key_env="TEST_OPENAI_KEY")
    assert FAKE_KEY not in repr(b) and FAKE_KEY not in str(b)
    assert FAKE_KEY not in repr(vars(b))


async def test_no_secret_in_logs(caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    caplog.set_level(logging.DEBUG)
    client, _ = mock_client(lambda r: json_response({"error": f"bad {FAKE_KEY}"}, 401))
    with pytest.raises(AuthError) as info:
        await backend(client).complete(Query("hi"))
    logging.getLogger("test").error("attempt failed: %s", info.value, exc_info=info.value)
    out = capsys.readouterr()
    assert FAKE_KEY not in caplog.text
    assert FAKE_KEY not in out.out + out.err


async def test_sensitive_user_headers_are_redacted_too() -> None:
    client, _ = mock_client(lambda r: json_response({"echo": r.headers["api-key"]}, 500))
    b = backend(client, api_key_env=None, headers={"api-key": "azure-literal-key-123"})
    with pytest.raises(Unavailable) as info:
        await b.complete(Query("hi"))
    assert "azure-literal-key-123" not in str(info.value)


@pytest.mark.parametrize("url", ["ftp://x/v1", "not a url", "/v1", ""])
def test_bad_base_url(url: str) -> None:
    with pytest.raises(PolicyError, match="base_url"):
        OpenAICompatible("oai", base_url=url, model="m")


def test_is_a_backend() -> None:
    b = OpenAICompatible("oai", base_url=BASE + "/", model="m", input_price=1, output_price=2)
    assert isinstance(b, BackendBase)
    assert (b.name, b.provider, b.region, b.model, b.base_url) == ("oai", "openai", "default", "m", BASE)
    assert b.count_input_tokens(Query("abc")) == estimate_input_tokens(Query("abc"))


# --------------------------------------------------------------------------- streaming

CHUNK_ROLE = {
    "id": "c",
    "object": "chat.completion.chunk",
    "model": "gpt-test-2024-01-01",
    "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}],
}
CHUNK_HELLO = {**CHUNK_ROLE, "choices": [{"index": 0, "delta": {"content": "Hel"}, "finish_reason": None}]}
CHUNK_LO = {**CHUNK_ROLE, "choices": [{"index": 0, "delta": {"content": "lo!"}, "finish_reason": None}]}
CHUNK_STOP = {**CHUNK_ROLE, "choices": [{"index": 0, "delta": {}, "finish_reason": "length"}]}
CHUNK_USAGE = {**CHUNK_ROLE, "choices": [], "usage": {"prompt_tokens": 9, "completion_tokens": 2}}


@pytest.mark.parametrize("chunk_size", [1, 7, 64, 100_000])
async def test_stream_reassembly(chunk_size: int) -> None:
    body = sse(CHUNK_ROLE, CHUNK_HELLO, CHUNK_LO, CHUNK_STOP, CHUNK_USAGE, "[DONE]")
    stream = ChunkStream(split_every(body, chunk_size))
    client, _ = mock_client(lambda r: httpx.Response(200, stream=stream))
    response = await backend(client, stream=True).complete(Query("hi"))
    assert response.text == "Hello!"
    assert response.model == "gpt-test-2024-01-01"
    assert response.finish_reason == "length"
    assert response.usage.input_tokens == 9
    assert response.usage.output_tokens == 2
    assert response.usage.estimated is False
    assert response.ttft is not None and response.ttft >= 0
    assert response.raw is None
    assert stream.closed


async def test_stream_ttft_is_time_to_first_content(anyio_backend: tuple[str, dict[str, object]]) -> None:
    class Slow(ChunkStream):
        async def __aiter__(self):  # type: ignore[no-untyped-def]
            yield sse(CHUNK_ROLE)  # no content: not the first token
            await anyio.sleep(0.05)
            yield sse(CHUNK_HELLO)
            await anyio.sleep(0.05)
            yield sse(CHUNK_LO, CHUNK_STOP, "[DONE]")

    client, _ = mock_client(lambda r: httpx.Response(200, stream=Slow([])))
    start = anyio.current_time()
    response = await backend(client, stream=True).complete(Query("hi"))
    total = anyio.current_time() - start
    assert response.ttft is not None
    assert 0.04 <= response.ttft < total
    assert total >= 0.09


async def test_stream_without_usage_is_estimated() -> None:
    client, _ = mock_client(lambda r: stream_response([sse(CHUNK_HELLO, CHUNK_LO, CHUNK_STOP, "[DONE]")]))
    response = await backend(client, stream=True).complete(Query("hi"))
    assert response.text == "Hello!"
    assert response.usage.estimated is True
    assert response.usage.output_tokens == len("Hello!")


async def test_stream_ignores_other_choices_and_keep_alives() -> None:
    other = {**CHUNK_ROLE, "choices": [{"index": 1, "delta": {"content": "zzz"}}]}
    body = b": keep-alive\n\n" + sse(CHUNK_HELLO, other, CHUNK_LO, CHUNK_STOP, "[DONE]")
    client, _ = mock_client(lambda r: stream_response([body]))
    assert (await backend(client, stream=True).complete(Query("hi"))).text == "Hello!"


async def test_truncated_stream() -> None:
    client, _ = mock_client(lambda r: stream_response([sse(CHUNK_HELLO, CHUNK_LO)]))
    with pytest.raises(BadResponse, match="truncated") as info:
        await backend(client, stream=True).complete(Query("hi"))
    assert info.value.status == 200
    assert info.value.request_id == "req-stream"


async def test_stream_cut_mid_chunk() -> None:
    client, _ = mock_client(lambda r: stream_response([sse(CHUNK_HELLO)[:-10]]))
    with pytest.raises(BadResponse):
        await backend(client, stream=True).complete(Query("hi"))


async def test_stream_without_choices() -> None:
    client, _ = mock_client(lambda r: stream_response([sse(CHUNK_USAGE, "[DONE]")]))
    with pytest.raises(BadResponse, match="no choices"):
        await backend(client, stream=True).complete(Query("hi"))


async def test_malformed_stream_chunk() -> None:
    client, _ = mock_client(lambda r: stream_response([sse(CHUNK_HELLO, "{oops", "[DONE]")]))
    with pytest.raises(BadResponse, match="malformed stream chunk"):
        await backend(client, stream=True).complete(Query("hi"))


@pytest.mark.parametrize(
    ("error", "kind"),
    [
        ({"message": "internal", "type": "server_error"}, BadResponse),
        ({"message": "busy", "type": "overloaded_error"}, Unavailable),
        ({"message": "slow down", "code": "rate_limit_exceeded"}, RateLimited),
    ],
)
async def test_error_chunk_in_stream(error: dict[str, str], kind: type[BackendError]) -> None:
    client, _ = mock_client(lambda r: stream_response([sse(CHUNK_HELLO, {"error": error})]))
    with pytest.raises(kind) as info:
        await backend(client, stream=True).complete(Query("hi"))
    assert info.value.status == 200


async def test_done_then_hang_returns_without_waiting_for_eof() -> None:
    stream = ChunkStream([sse(CHUNK_HELLO, CHUNK_STOP, "[DONE]")], then_hang=True)
    client, _ = mock_client(lambda r: httpx.Response(200, stream=stream))
    with anyio.fail_after(5):
        response = await backend(client, stream=True).complete(Query("hi"))
    assert response.text == "Hel"
    assert stream.closed


# --------------------------------------------------------------------------- cancellation and clients


@pytest.mark.parametrize("stream", [False, True])
async def test_cancellation_closes_the_response(stream: bool) -> None:
    body = ChunkStream([sse(CHUNK_HELLO)], then_hang=True)
    client, _ = mock_client(lambda r: httpx.Response(200, stream=body))
    with anyio.move_on_after(0.05) as scope:
        await backend(client, stream=stream).complete(Query("hi"))
    assert scope.cancelled_caught
    assert body.sent == 1
    assert body.closed


async def test_cancellation_propagates() -> None:
    body = ChunkStream([], then_hang=True)
    client, _ = mock_client(lambda r: httpx.Response(200, stream=body))
    cancelled = anyio.get_cancelled_exc_class()
    seen: list[BaseException] = []
    with anyio.CancelScope() as scope:
        scope.cancel()
        try:
            await backend(client, stream=True).complete(Query("hi"))
        except BaseException as exc:  # the cancellation itself, not a BackendError
            seen.append(exc)
            raise
    assert scope.cancelled_caught
    assert len(seen) == 1 and isinstance(seen[0], cancelled)


async def test_read_timeout_is_a_timeout() -> None:
    body = ChunkStream([sse(CHUNK_HELLO)], then_hang=True)

    async def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, stream=body)

    # MockTransport does not enforce timeouts; a real one does (see the e2e tests). Here we only
    # check that the per-request timeout is passed through to httpx.
    seen: list[object] = []

    async def recording(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return await handler(request)

    client = httpx.AsyncClient(transport=httpx.MockTransport(recording))
    with anyio.move_on_after(0.01):
        await backend(client, timeout=HttpTimeouts(connect=1, read=2, write=3, pool=4)).complete(Query("hi"))
    assert seen == [{"connect": 1, "read": 2, "write": 3, "pool": 4}]


async def test_user_client_is_not_closed() -> None:
    client, _ = mock_client(lambda r: json_response(COMPLETION))
    await backend(client).complete(Query("hi"))
    assert not client.is_closed


async def test_shared_client_per_host_within_a_runtime() -> None:
    resources = Resources()
    token = _current.set(resources)
    try:
        a = OpenAICompatible("a", base_url="http://h.test:8000/a/v1", model="m")
        b = OpenAICompatible("b", base_url="http://h.test:8000/b/v1", model="m")
        c = OpenAICompatible("c", base_url="http://h.test:9000/v1", model="m")
        d = OpenAICompatible("d", base_url="https://h.test/v1", model="m")
        ca, cb, cc, cd = (x._shared_clients() for x in (a, b, c, d))
        assert ca is cb
        assert ca is not cc and cc is not cd
        assert set(resources.items()) == {
            "httpx:http://h.test:8000",
            "httpx:http://h.test:9000",
            "httpx:https://h.test:443",
        }
    finally:
        _current.reset(token)
    await resources.aclose()
    assert ca is not None and ca.is_closed


async def test_no_runtime_no_shared_client() -> None:
    assert OpenAICompatible("a", base_url=BASE, model="m")._shared_clients() is None
