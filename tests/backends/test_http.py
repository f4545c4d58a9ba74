"""Config objects and the error mapping shared by the HTTP backends (one test per status)."""

from __future__ import annotations

import email.utils

import httpx
import pytest

from specexec import (
    AuthError,
    BackendError,
    BadRequest,
    BadResponse,
    PolicyError,
    RateLimited,
    Timeout,
    Unavailable,
)
from specexec._errors import redact
from specexec.backends import (
    BODY_EXCERPT_CHARS,
    DEFAULT_HTTP_CONFIG,
    DEFAULT_TIMEOUTS,
    HttpConfig,
    HttpTimeouts,
    error_for_status,
    error_for_transport,
    retry_after_seconds,
)

from .conftest import FAKE_KEY


@pytest.mark.parametrize(
    ("status", "kind", "fatal"),
    [
        (400, BadRequest, True),
        (404, Unavailable, False),
        (422, BadRequest, True),
        (401, AuthError, False),
        (403, AuthError, False),
        (429, RateLimited, False),
        (408, Unavailable, False),
        (409, Unavailable, False),
        (425, Unavailable, False),
        (500, Unavailable, False),
        (502, Unavailable, False),
        (503, Unavailable, False),
        (504, Unavailable, False),
        (529, Unavailable, False),
        (402, Unavailable, False),
        (405, Unavailable, False),
        (413, Unavailable, False),
        (302, BadResponse, False),
        (101, BadResponse, False),
    ],
)
def test_status_mapping(status: int, kind: type[BackendError], fatal: bool) -> None:
    error = error_for_status(status, headers={"x-request-id": "req-1"}, body=b'{"error": "nope"}', backend="b1")
    assert type(error) is kind
    assert error.fatal is fatal
    assert error.status == status
    assert error.backend == "b1"
    assert error.request_id == "req-1"
    assert error.body == '{"error": "nope"}'
    assert f"status={status}" in str(error)


def test_529_says_overloaded() -> None:
    assert "overloaded" in str(error_for_status(529))


def test_request_id_from_anthropic_header() -> None:
    assert error_for_status(500, headers={"request-id": "req_abc"}).request_id == "req_abc"
    assert error_for_status(500, headers={}).request_id is None


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after": " 0 "}, 0.0),
        ({"retry-after": "-3"}, 0.0),
        ({"retry-after-ms": "250"}, 0.25),
        ({"retry-after-ms": "250", "retry-after": "1"}, 0.25),
        ({"retry-after-ms": "junk", "retry-after": "2"}, 2.0),
        ({"retry-after": "soon"}, None),
        ({"retry-after": "inf"}, None),
        ({}, None),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], expected: float | None) -> None:
    assert retry_after_seconds(headers) == expected


def test_retry_after_http_date() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 30, usegmt=True)
    assert retry_after_seconds({"Retry-After": date}, now=now) == pytest.approx(30.0)
    error = error_for_status(429, headers={"Retry-After": date}, now=now)
    assert isinstance(error, RateLimited)
    assert error.retry_after == pytest.approx(30.0)


def test_retry_after_http_date_in_the_past_clamps_to_zero() -> None:
    now = 1_700_000_000.0
    date = email.utils.formatdate(now - 30, usegmt=True)
    assert retry_after_seconds({"Retry-After": date}, now=now) == 0.0


def test_retry_after_http_date_against_the_wall_clock() -> None:
    import time

    date = email.utils.formatdate(time.time() + 120, usegmt=True)
    seconds = retry_after_seconds({"Retry-After": date})
    assert seconds is not None
    assert 110 <= seconds <= 121


def test_429_without_retry_after() -> None:
    error = error_for_status(429)
    assert isinstance(error, RateLimited)
    assert error.retry_after is None


def test_body_excerpt_is_short_and_has_no_secrets() -> None:
    body = (
        f'{{"error": "bad key {FAKE_KEY}", "other": "sk-proj-abcdefghijkl", "api_key": "hunter2hunter2"}}' + "x" * 5000
    )
    error = error_for_status(401, body=body, secrets=[FAKE_KEY])
    assert error.body is not None
    assert len(error.body) <= BODY_EXCERPT_CHARS
    text = str(error) + repr(error)
    assert FAKE_KEY not in text
    assert "SECRETSECRET" not in text
    assert "sk-proj-abcdefghijkl" not in text
    assert "hunter2hunter2" not in text
    assert "[REDACTED]" in error.body


def test_empty_body_gives_no_excerpt() -> None:
    assert error_for_status(503, body=b"").body is None


REQUEST = httpx.Request("POST", "http://127.0.0.1:1/v1/chat/completions")


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (httpx.ConnectError("[Errno 111] Connection refused", request=REQUEST), Unavailable),
        (httpx.ReadError("connection reset by peer", request=REQUEST), Unavailable),
        (httpx.WriteError("broken pipe", request=REQUEST), Unavailable),
        (httpx.RemoteProtocolError("peer closed connection", request=REQUEST), Unavailable),
        (httpx.ConnectTimeout("", request=REQUEST), Timeout),
        (httpx.ReadTimeout("", request=REQUEST), Timeout),
        (httpx.WriteTimeout("", request=REQUEST), Timeout),
        (httpx.PoolTimeout("", request=REQUEST), Timeout),
        (httpx.DecodingError("bad gzip", request=REQUEST), BadResponse),
    ],
)
def test_transport_mapping(exc: httpx.RequestError, kind: type[BackendError]) -> None:
    error = error_for_transport(exc, backend="b1")
    assert type(error) is kind
    assert not error.fatal
    assert error.backend == "b1"
    assert type(exc).__name__ in str(error)


def test_transport_error_message_is_redacted() -> None:
    exc = httpx.ConnectError(f"failed with {FAKE_KEY}", request=REQUEST)
    assert FAKE_KEY not in str(error_for_transport(exc, secrets=[FAKE_KEY]))


def test_defaults() -> None:
    assert HttpTimeouts() == DEFAULT_TIMEOUTS
    assert HttpConfig() == DEFAULT_HTTP_CONFIG
    timeout = HttpTimeouts(connect=1, read=2, write=3, pool=4).as_httpx()
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (1, 2, 3, 4)
    limits = HttpConfig(max_connections=5, max_keepalive_connections=2, keepalive_expiry=1).as_httpx()
    assert (limits.max_connections, limits.max_keepalive_connections, limits.keepalive_expiry) == (5, 2, 1)
    assert HttpTimeouts(read=None).as_httpx().read is None


@pytest.mark.parametrize("kwargs", [{"connect": 0}, {"read": -1}, {"pool": True}, {"write": "1"}])
def test_bad_timeouts(kwargs: dict[str, object]) -> None:
    with pytest.raises(PolicyError, match=r"at \$\."):
        HttpTimeouts(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs", [{"max_connections": 0}, {"max_keepalive_connections": -1}, {"keepalive_expiry": -1.0}]
)
def test_bad_http_config(kwargs: dict[str, object]) -> None:
    with pytest.raises(PolicyError):
        HttpConfig(**kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- encode/httpcore#1093


@pytest.mark.anyio
async def test_orphaned_connections_are_released() -> None:
    import httpcore

    from specexec.backends._http import release_orphaned_connections

    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=2)) as client:
        pool = client._transport._pool  # type: ignore[attr-defined]
        origin = httpcore.URL("http://127.0.0.1:9/").origin
        # the state a request cancelled in wait_for_connection leaves: a connection that never
        # connected, that no request refers to, holding a slot
        orphan = pool.create_connection(origin)
        # a connection assigned to a live (queued) request, not connected yet: must stay
        live_request = httpcore._async.connection_pool.AsyncPoolRequest(httpcore.Request("GET", "http://127.0.0.1:9/"))
        live = pool.create_connection(origin)
        live_request.assign_to_connection(live)
        pool._connections += [orphan, live]
        pool._requests.append(live_request)

        await release_orphaned_connections(client)
        assert pool._connections == [live]

        # and a queued request gets the freed slot at once
        queued = httpcore._async.connection_pool.AsyncPoolRequest(httpcore.Request("GET", "http://127.0.0.1:9/"))
        pool._requests.append(queued)
        pool._connections.append(pool.create_connection(origin))  # the slot is taken by another orphan
        await release_orphaned_connections(client)
        assert queued.connection is not None and queued.connection in pool._connections
        pool._requests.clear()
        pool._connections.clear()


@pytest.mark.anyio
async def test_release_is_a_no_op_for_other_transports() -> None:
    from specexec.backends._http import release_orphaned_connections

    async with httpx.AsyncClient(transport=httpx.MockTransport(lambda r: httpx.Response(200))) as client:
        await release_orphaned_connections(client)


@pytest.mark.parametrize(("status", "expected"), [(503, 3.0), (529, 3.0), (500, None), (502, None)])
def test_retry_after_on_503_and_529_is_kept(status: int, expected: float | None) -> None:
    from specexec import Unavailable
    from specexec.backends import error_for_status

    error = error_for_status(status, headers={"Retry-After": "3"}, backend="b")
    assert isinstance(error, Unavailable) and error.retry_after == expected


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        ("model task-classifier-v2 not found", "task-classifier-v2"),
        ("see disk-quota-exceeded", "disk-quota-exceeded"),
    ],
)
def test_redact_keeps_words_that_only_contain_sk_dash(text: str, kept: str) -> None:
    # Before: the key pattern matched "sk-" inside a word ("ta[REDACTED]"), so an error about a
    # model or a quota named like that lost the name a user needs to act on.
    assert kept in redact(text)


@pytest.mark.parametrize("before", ["", " ", "=", ":", '"', "'", "(", "Bearer ", "key=", "_"])
def test_redact_still_removes_a_key_at_the_start_of_a_word(before: str) -> None:
    assert FAKE_KEY not in redact(f"oops {before}{FAKE_KEY} here")
