"""The per-call fast path of the HTTP backends: what is built once, and what still follows changes."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from specexec import AuthError, BadResponse, Query, Unavailable
from specexec.backends import Anthropic, OpenAICompatible
from specexec.backends._http import CallInfo

from ._helpers import mock_client
from .conftest import FAKE_KEY

pytestmark = pytest.mark.anyio

BASE = "http://llm.test:8000/v1"
COMPLETION: dict[str, Any] = {
    "model": "gpt-test",
    "choices": [{"index": 0, "message": {"role": "assistant", "content": "Hello!"}, "finish_reason": "stop"}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 3},
}
MESSAGE: dict[str, Any] = {
    "id": "msg_1",
    "model": "claude-test",
    "content": [{"type": "text", "text": "Hello!"}],
    "stop_reason": "end_turn",
    "usage": {"input_tokens": 10, "output_tokens": 2},
}
ROTATED = "sk-test-ROTATEDROTATED99"


@pytest.fixture(autouse=True)
def _key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEST_PER_CALL_KEY", FAKE_KEY)


def openai(client: httpx.AsyncClient, **kw: Any) -> OpenAICompatible:
    kw.setdefault("stream", False)  # these tests answer with JSON bodies
    return OpenAICompatible(
        "oai", base_url=BASE, model="gpt-test", api_key_env="TEST_PER_CALL_KEY", client=client, **kw
    )


def anthropic(client: httpx.AsyncClient) -> Anthropic:
    return Anthropic(
        "ant", base_url=BASE, model="claude-test", api_key_env="TEST_PER_CALL_KEY", client=client, stream=False
    )


async def test_headers_are_built_once_per_key_value() -> None:
    client, rec = mock_client(lambda r: httpx.Response(200, json=COMPLETION))
    b = openai(client)
    await b.complete(Query("hi"))
    first = b._request_headers()
    await b.complete(Query("again"))
    assert b._request_headers() is first  # same key: nothing rebuilt
    assert [r.headers["authorization"] for r in rec.requests] == [f"Bearer {FAKE_KEY}"] * 2


@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
async def test_header_cache_follows_a_rotated_key(monkeypatch: pytest.MonkeyPatch, make: Any) -> None:
    client, rec = mock_client(lambda r: httpx.Response(200, json=COMPLETION if make is openai else MESSAGE))
    b = make(client)
    header = "authorization" if make is openai else "x-api-key"
    sent = [f"Bearer {k}" if make is openai else k for k in (FAKE_KEY, ROTATED, FAKE_KEY)]
    await b.complete(Query("hi"))
    monkeypatch.setenv("TEST_PER_CALL_KEY", ROTATED)  # rotated after the headers were cached
    await b.complete(Query("hi"))
    monkeypatch.setenv("TEST_PER_CALL_KEY", FAKE_KEY)  # and back
    await b.complete(Query("hi"))
    assert [r.headers[header] for r in rec.requests] == sent


async def test_a_key_removed_after_caching_is_still_an_auth_error(monkeypatch: pytest.MonkeyPatch) -> None:
    client, rec = mock_client(lambda r: httpx.Response(200, json=COMPLETION))
    b = openai(client)
    await b.complete(Query("hi"))
    monkeypatch.delenv("TEST_PER_CALL_KEY")
    with pytest.raises(AuthError, match="TEST_PER_CALL_KEY"):
        await b.complete(Query("hi"))
    assert len(rec.requests) == 1  # nothing sent without a key


async def test_the_rotated_key_is_redacted_from_errors(monkeypatch: pytest.MonkeyPatch) -> None:
    client, _ = mock_client(lambda r: httpx.Response(500, text=f"echo {r.headers['authorization']}"))
    b = openai(client)
    with pytest.raises(Unavailable) as first:
        await b.complete(Query("hi"))
    monkeypatch.setenv("TEST_PER_CALL_KEY", ROTATED)
    with pytest.raises(Unavailable) as second:
        await b.complete(Query("hi"))
    assert FAKE_KEY not in str(first.value) and first.value.body is not None
    assert ROTATED not in str(second.value) and second.value.body is not None


async def test_cached_headers_never_show_in_repr() -> None:
    client, _ = mock_client(lambda r: httpx.Response(200, json=COMPLETION))
    b = openai(client, headers={"api-key": "azure-literal-key-123"})
    await b.complete(Query("hi"))
    text = repr(b) + str(b) + repr(vars(b)) + repr(b._request_headers())
    assert FAKE_KEY not in text


async def test_user_headers_are_not_mutated_by_calls() -> None:
    client, _ = mock_client(lambda r: httpx.Response(200, json=COMPLETION))
    extra = {"X-Extra": "1"}
    b = openai(client, headers=extra)
    await b.complete(Query("hi"))
    assert extra == {"X-Extra": "1"}
    assert b._request_headers().headers["x-extra"] == "1"


async def test_the_url_is_parsed_once() -> None:
    client, rec = mock_client(lambda r: httpx.Response(200, json=COMPLETION))
    b = openai(client)
    assert isinstance(b._url, httpx.URL)
    await b.complete(Query("hi"))
    assert str(rec.requests[0].url) == "http://llm.test:8000/v1/chat/completions"


def test_call_info_reads_the_request_id_only_when_asked() -> None:
    headers = httpx.Headers({"x-request-id": "req-7"})
    call = CallInfo("b", 200, headers, ())
    assert call.request_id == "req-7"
    assert CallInfo("b", 200, None, ()).request_id is None
    error = call.bad("broken")
    assert isinstance(error, BadResponse) and error.request_id == "req-7"


async def test_stop_sequences_go_out_as_json_lists() -> None:
    client, rec = mock_client(lambda r: httpx.Response(200, json=COMPLETION))
    await openai(client).complete(Query("hi", stop=("\n", "END")))
    assert rec.last_json["stop"] == ["\n", "END"]
    await openai(client).complete(Query("hi"))
    assert "stop" not in rec.last_json
