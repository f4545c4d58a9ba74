"""HTTP plumbing shared by the provider backends: config, client sharing, error mapping.

Config is two small frozen value objects with ``DEFAULT_*`` constants: ``HttpTimeouts``
(applied to every request of a backend) and ``HttpConfig`` (the connection pools of the
clients a backend creates).

Clients. A backend given ``client=`` uses it and never closes it. Otherwise, inside a
running ``Runtime`` (``specexec._resources.current_resources()`` is not ``None``), backends
share the clients of a ``HostClients`` per scheme+host+port, under the key
``"httpx:{scheme}://{host}:{port}"``: keep-alive connections are pooled across backends on
the same host and the runtime closes the clients. ``HostClients`` holds
up to ``HttpConfig.clients_per_host`` shards (8 by default, at most one per 8 connections),
each an ``httpx.AsyncClient`` with an even share of the host's ``max_connections``; each
request goes to the shard with the most free connections, so one request at a time always
uses shard 0 and its warm connection.
The first backend to need a host's clients makes them with its own ``HttpConfig``; later
backends on that host reuse them as they are. Outside a runtime each call opens and closes
a one-shot client: correct, but every call pays a TCP (and TLS) handshake.

Pooling and cancellation. A cancelled attempt closes its response, so its connection is
dropped (the server sees the disconnect) rather than returned busy to the pool. httpcore
1.0.x leaks a pool slot when a request is cancelled while waiting for a connection the pool
has just created for it (encode/httpcore#1093); after ``max_connections`` such leaks every
request fails with ``PoolTimeout``. A hedging client cancels constantly, so
``release_orphaned_connections`` repairs the pool after each failed or cancelled exchange.
On loopback, one httpx client costs ≈ 1 ms of client CPU per request at 1–4 in flight and
≈ 2–2.5 ms at 32: httpcore's pool does work proportional to its requests × connections
whenever a request is queued or a response closed. Sharding keeps each pool small (see
``HostClients``). The backends add only a few µs to what httpx itself costs.

Errors. ``error_for_status`` maps an HTTP status (and its headers and body) to a
``BackendError`` kind; ``error_for_transport`` maps an httpx transport exception and names
the URL (scheme, host, port, path). Both strip secrets from everything they put in the
error. A transport error is chained to a stand-in of the httpx exception (same type, same
redacted message, no ``request``), never to the original, whose request headers hold the
key. Once the provider answered 2xx, every error carries the tokens it bills
(``BackendError.partial_usage``).

Bounds. Every body is read within ``HttpConfig.max_response_bytes`` decoded bytes (error
bodies within 8 KiB), and an attempt that gets no content for ``HttpTimeouts.idle``
seconds is a ``Timeout``. API keys are checked when read from the environment (surrounding
whitespace stripped with a warning; control and non-ASCII characters refused), header
values given in ``headers=`` when the backend is built.
"""

from __future__ import annotations

import contextlib
import email.utils
import logging
import math
import os
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Iterable, Mapping, Sequence
from datetime import UTC
from typing import ClassVar, Protocol, cast

import anyio

from .._backend import BackendBase, Limits
from .._clock import loop_clock
from .._deadline import ATTEMPT_DEADLINE, DeadlineScope, deadline_scope
from .._errors import (
    AuthError,
    BackendError,
    BadRequest,
    BadResponse,
    ContextWindowExceeded,
    PolicyError,
    RateLimited,
    RuntimeClosed,
    Timeout,
    Unavailable,
    redact,
    redact_id,
)
from .._health import BreakerConfig
from .._httpx import httpcore, httpx, ssl_context
from .._query import Query, Response, StreamChunk, Usage, estimate_input_tokens, estimate_tokens
from .._resources import CLOSED_IN_FLIGHT, current_resources
from ._body import ACCEPT_ENCODING, BodyTooLarge, iter_body
from ._config import (
    DEFAULT_CLIENTS_PER_HOST as DEFAULT_CLIENTS_PER_HOST,
)
from ._config import (
    DEFAULT_CONNECT_TIMEOUT as DEFAULT_CONNECT_TIMEOUT,
)
from ._config import (
    DEFAULT_HTTP_CONFIG as DEFAULT_HTTP_CONFIG,
)
from ._config import (
    DEFAULT_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT,
)
from ._config import (
    DEFAULT_KEEPALIVE_EXPIRY as DEFAULT_KEEPALIVE_EXPIRY,
)
from ._config import (
    DEFAULT_MAX_CONNECTIONS as DEFAULT_MAX_CONNECTIONS,
)
from ._config import (
    DEFAULT_MAX_KEEPALIVE_CONNECTIONS as DEFAULT_MAX_KEEPALIVE_CONNECTIONS,
)
from ._config import (
    DEFAULT_MAX_RESPONSE_BYTES as DEFAULT_MAX_RESPONSE_BYTES,
)
from ._config import (
    DEFAULT_POOL_TIMEOUT as DEFAULT_POOL_TIMEOUT,
)
from ._config import (
    DEFAULT_READ_TIMEOUT as DEFAULT_READ_TIMEOUT,
)
from ._config import (
    DEFAULT_TIMEOUTS as DEFAULT_TIMEOUTS,
)
from ._config import (
    DEFAULT_WRITE_TIMEOUT as DEFAULT_WRITE_TIMEOUT,
)
from ._config import (
    MIN_CONNECTIONS_PER_SHARD as MIN_CONNECTIONS_PER_SHARD,
)
from ._config import (
    HttpConfig as HttpConfig,
)
from ._config import (
    HttpTimeouts as HttpTimeouts,
)
from ._cookies import skip_cookieless_responses
from ._network import use_fast_streams
from ._secrets import is_credential_header, url_secrets
from ._sse import ServerSentEvent, SSEDecoder

BODY_EXCERPT_CHARS = 300
"""Longest body excerpt put in an error (after secrets are removed)."""

DRAIN_TIMEOUT = 1.0
"""Seconds a finished stream (``[DONE]`` / ``message_stop`` seen) may take to reach EOF so
its connection can be reused; past that the connection is dropped and the answer returned."""

ERROR_BODY_TIMEOUT = 1.0
"""Seconds an error answer's body (at most 8 KiB, for its excerpt) may take — less when the
engine's ``attempt_timeout`` leaves less (half of what it leaves): past that the status's error
is raised with what was read. The status says what happened; a slow body must not turn it into
a ``Timeout`` that is charged the attempt's reservation."""

_ERROR_BODY_READ_LIMIT = 8192
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_NOT_PRINTABLE_ASCII = re.compile(r"[^\x20-\x7e]")
_log = logging.getLogger("specexec.backends")
_warned_env: set[str] = set()
_USER_AGENT = "specexec"


# --------------------------------------------------------------------------- error mapping


def request_id_from(headers: Mapping[str, str], secrets: Sequence[str] = ()) -> str | None:
    """The provider's request id (``x-request-id``, else Anthropic's ``request-id``), secrets
    removed and cut to ``MAX_ID_CHARS`` (``specexec._errors.redact_id``): a hostile or broken
    server may echo the key there, or send a huge value."""
    h = headers if isinstance(headers, httpx.Headers) else httpx.Headers(headers)
    return redact_id(h.get("x-request-id") or h.get("request-id") or None, secrets)


_JSON_ESCAPE = re.compile(r"\\u(d[89ab][0-9a-f]{2})\\u(d[c-f][0-9a-f]{2})|\\u([0-9a-f]{4})", re.I)


def _unescape(match: re.Match[str]) -> str:
    high, low, one = match.groups()
    if one is None:
        return chr(0x10000 + ((int(high, 16) - 0xD800) << 10) + (int(low, 16) - 0xDC00))
    code = int(one, 16)
    return match.group(0) if 0xD800 <= code <= 0xDFFF else chr(code)  # a lone surrogate stays escaped


def unescape_json(text: str) -> str:
    """``text`` with its JSON ``\\uXXXX`` escapes decoded (so a key spelled that way is redacted)."""
    return _JSON_ESCAPE.sub(_unescape, text) if "\\u" in text else text


def retry_after_seconds(headers: Mapping[str, str], *, now: float | None = None) -> float | None:
    """Seconds to wait before retrying, from ``retry-after-ms`` or ``Retry-After``; ``None`` if absent.

    ``Retry-After`` may be seconds or an HTTP-date (then it is counted from ``now``, the
    wall clock by default). Negative values (a date in the past) clamp to 0; unparsable
    values are ignored.
    """
    h = headers if isinstance(headers, httpx.Headers) else httpx.Headers(headers)
    millis = h.get("retry-after-ms")
    if millis:
        try:
            value = float(millis) / 1000.0
        except ValueError:
            value = math.nan
        if math.isfinite(value):
            return max(0.0, value)
    header = h.get("retry-after")
    if not header:
        return None
    header = header.strip()
    try:
        value = float(header)
    except ValueError:
        pass
    else:
        return max(0.0, value) if math.isfinite(value) else None
    try:
        when = email.utils.parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - (time.time() if now is None else now))


def excerpt(text: str | bytes, secrets: Iterable[str] = ()) -> str | None:
    """A short (≤ ``BODY_EXCERPT_CHARS``) excerpt of a body with secrets removed (JSON ``\\uXXXX``
    escapes decoded first); ``None`` if empty."""
    if isinstance(text, bytes):
        text = text[:_ERROR_BODY_READ_LIMIT].decode("utf-8", "replace")
    text = redact(unescape_json(text.strip()), secrets)
    if not text:
        return None
    if len(text) > BODY_EXCERPT_CHARS:
        text = text[: BODY_EXCERPT_CHARS - 1] + "…"
    return text


def error_for_status(
    status: int,
    *,
    headers: Mapping[str, str] | None = None,
    body: str | bytes = "",
    backend: str | None = None,
    secrets: Sequence[str] = (),
    now: float | None = None,
) -> BackendError:
    """The ``BackendError`` for a non-2xx HTTP answer.

    ======================================  ==========================  =====
    status                                  kind                        fatal
    ======================================  ==========================  =====
    429                                     ``RateLimited``             no   (``retry_after`` from the headers)
    408, 409, 425, 5xx (incl. 529)          ``Unavailable``             no   (503/529: ``retry_after`` from the headers)
    400, 413, 422 saying the context is     ``ContextWindowExceeded``   no   (a model with a larger window may answer)
    exceeded (see below)
    400, 422                                ``BadRequest``              yes
    401, 403                                ``AuthError``               no   (about this backend's key: it is taken out)
    404                                     ``Unavailable``             no   (this backend's model or ``base_url``
                                                                             is wrong: another may answer)
    any other 4xx (402, 405, 410, 413 …)    ``Unavailable``             no   (this backend cannot serve it; another may)
    anything else (1xx, 3xx: no redirects)  ``BadResponse``             no
    ======================================  ==========================  =====

    Context-window wordings recognised in the body (``CONTEXT_WINDOW_PATTERN``): OpenAI's
    ``context_length_exceeded`` code and "maximum context length is N tokens" (also vLLM's),
    vLLM's "is longer than the model's context length", llama.cpp's
    ``exceed_context_size_error`` / "exceeds the available context size" / "context size",
    Anthropic's "prompt is too long" and "input length and `max_tokens` exceed context
    limit", TGI's "`inputs` tokens + `max_new_tokens` must be <= N".
    """
    h = httpx.Headers(headers or {})
    request_id = request_id_from(h, secrets)
    body_excerpt = excerpt(body, secrets)

    def make(cls: type[BackendError], message: str, retry_after: float | None = None) -> BackendError:
        hint = f"; retry after {retry_after:.3g}s" if retry_after is not None else ""
        return cls(
            message + hint,
            backend=backend,
            status=status,
            request_id=request_id,
            body=body_excerpt,
            retry_after=retry_after,
        )

    if status == 429:
        return make(RateLimited, "rate limited (HTTP 429)", retry_after_seconds(h, now=now))
    if status in (401, 403):
        return make(AuthError, f"credentials refused (HTTP {status}): check the API key and its permissions")
    if status in (400, 413, 422) and _says_context_window(body):
        return make(
            ContextWindowExceeded,
            f"the input and max_tokens exceed the model's context window (HTTP {status}): shorten the "
            "prompt or lower max_tokens, or route to a model with a larger window",
        )
    if status == 404:  # OpenAI's model_not_found, a base_url with a wrong path: about this backend
        return make(Unavailable, "not found (HTTP 404): check this backend's base_url and model")
    if status in (400, 422):
        return make(BadRequest, f"request refused as invalid (HTTP {status})")
    if status in (408, 409, 425) or status >= 500:
        what = "overloaded" if status == 529 else "unavailable"
        retry_after = retry_after_seconds(h, now=now) if status in (503, 529) else None
        return make(Unavailable, f"backend {what} (HTTP {status})", retry_after)
    if 400 <= status < 500:
        return make(Unavailable, f"request refused by this backend (HTTP {status})")
    return make(BadResponse, f"unexpected HTTP status {status}")


CONTEXT_WINDOW_PATTERN = re.compile(
    r"context_length_exceeded|maximum context length|context length|exceed_context_size_error"
    r"|context size|exceeds? (?:the )?(?:available )?context|prompt is too long|exceed context limit"
    r"|`?inputs`? tokens \+ `?max_new_tokens`? must be <=|must have less than \d+ tokens",
    re.I,
)
"""What a 400/413/422 body says when the input and ``max_tokens`` do not fit the context window."""


def _says_context_window(body: str | bytes) -> bool:
    if isinstance(body, bytes):
        body = body[:_ERROR_BODY_READ_LIMIT].decode("utf-8", "replace")
    return CONTEXT_WINDOW_PATTERN.search(body[:_ERROR_BODY_READ_LIMIT]) is not None


def safe_url(url: httpx.URL | str) -> str:
    """``url`` as scheme://host:port/path: no user info and no query string (either may hold a secret)."""
    u = url if isinstance(url, httpx.URL) else httpx.URL(url)
    port = u.port or (443 if u.scheme == "https" else 80)
    host = f"[{u.host}]" if ":" in u.host else u.host
    return f"{u.scheme}://{host}:{port}{u.path}"


def error_for_transport(
    exc: httpx.RequestError,
    *,
    backend: str | None = None,
    secrets: Sequence[str] = (),
    status: int | None = None,
    request_id: str | None = None,
    url: httpx.URL | str | None = None,
) -> BackendError:
    """The ``BackendError`` for an httpx transport failure.

    Connect/read/write/pool timeouts → ``Timeout``; connection refused, reset or closed
    early (``ConnectError``, ``ReadError``, ``WriteError``, ``RemoteProtocolError``, proxy
    errors) → ``Unavailable``; an undecodable content-encoding → ``BadResponse``. The
    message names ``url`` (scheme, host, port and path: never user info or the query).
    """
    detail = redact(f"{type(exc).__name__}: {exc}".rstrip(": "), secrets)[:BODY_EXCERPT_CHARS]
    target = f" at POST {safe_url(url)}" if url is not None else ""
    cls: type[BackendError]
    if isinstance(exc, httpx.TimeoutException):
        cls, message = Timeout, f"timed out{target} ({detail})"
    elif isinstance(exc, httpx.DecodingError):
        cls, message = BadResponse, f"undecodable response body{target} ({detail})"
    else:
        cls, message = Unavailable, f"connection failed{target} ({detail})"
    return cls(message, backend=backend, status=status, request_id=request_id)


def sanitized_cause(exc: BaseException, secrets: Sequence[str] = ()) -> BaseException:
    """A stand-in for ``exc`` to chain as a ``BackendError``'s ``__cause__``: the same type
    and the same message (secrets removed), but no ``request`` (whose headers hold the API
    key), no traceback and no chain of its own."""
    text = redact(str(exc), secrets)
    try:
        stand_in = type(exc)(text)
    except Exception:  # a constructor that wants more: a plain stand-in
        stand_in = TransportFailure(f"{type(exc).__name__}: {text}")
    return stand_in


class TransportFailure(Exception):
    """A transport exception's message, kept without the objects the original held."""


def error_for_stream_error(
    error_type: str | None,
    message: str | None,
    call: CallInfo,
    data: bytes = b"",
) -> BackendError:
    """An ``error`` event/chunk inside a 200 stream: overloaded → ``Unavailable``, rate limit →
    ``RateLimited`` (no retry-after known), anything else → ``BadResponse``."""
    kind = (error_type or "").lower()
    text = f"error in stream: {error_type or 'error'}: {message or ''}".rstrip(": ")
    text = redact(text, call.secrets)[:BODY_EXCERPT_CHARS]
    body = excerpt(data, call.secrets)
    if "overloaded" in kind:
        return Unavailable(text, backend=call.backend, status=call.status, request_id=call.request_id, body=body)
    if "rate_limit" in kind:
        return RateLimited(text, backend=call.backend, status=call.status, request_id=call.request_id, body=body)
    return BadResponse(text, backend=call.backend, status=call.status, request_id=call.request_id, body=body)


# --------------------------------------------------------------------------- the shared backend


class CallInfo:
    """What an error raised while reading one answer needs to say: backend, status, request id.

    The request id is read from the response headers only when an error asks for it.
    """

    __slots__ = ("_headers", "backend", "secrets", "status")

    def __init__(
        self, backend: str, status: int | None, headers: Mapping[str, str] | None, secrets: Sequence[str]
    ) -> None:
        self.backend = backend
        self.status = status
        self._headers = headers
        self.secrets = secrets

    @property
    def request_id(self) -> str | None:
        """The provider's request id from the response headers (``None`` without one)."""
        return request_id_from(self._headers, self.secrets) if self._headers is not None else None

    def clean(self, value: str | None) -> str | None:
        """A provider id from the body (model, response id): secrets removed, at most ``MAX_ID_CHARS``."""
        return redact_id(value, self.secrets) if value else None

    def bad(self, message: str, body: str | bytes = b"") -> BadResponse:
        """A ``BadResponse`` for this call, message and body excerpt redacted."""
        return BadResponse(
            redact(message, self.secrets)[: BODY_EXCERPT_CHARS * 2],
            backend=self.backend,
            status=self.status,
            request_id=self.request_id,
            body=excerpt(body, self.secrets),
        )


def make_usage(query: Query, text: str, input_tokens: int | None, output_tokens: int | None) -> Usage:
    """The reported usage, each missing count estimated (and then ``estimated=True``)."""
    estimated = input_tokens is None or output_tokens is None
    if input_tokens is None:
        input_tokens = estimate_input_tokens(query)
    if output_tokens is None:
        output_tokens = min(estimate_tokens(text), query.max_tokens)
    return Usage(input_tokens=input_tokens, output_tokens=output_tokens, estimated=estimated)


def partial_stream_usage(query: Query, parts: Sequence[str], deltas: int, input_tokens: int | None) -> Usage:
    """What a stream that failed after some deltas is billed (``estimated``): the input the
    provider reported (else the input bound), and the output so far: at least one token per
    generated delta (text, reasoning, tool-call arguments), else the estimate of the text
    received; at most ``max_tokens`` either way (the provider stops there, so a server sending
    a flood of one-character deltas is not billed past it)."""
    if input_tokens is None:
        input_tokens = estimate_input_tokens(query)
    received = estimate_tokens("".join(parts))
    return Usage(input_tokens=input_tokens, output_tokens=min(max(received, deltas), query.max_tokens), estimated=True)


def worst_case_usage(query: Query) -> Usage:
    """What a non-streamed 200 whose body could not be used is billed: the input bound and
    ``max_tokens`` (the provider generated an answer we cannot count)."""
    return Usage(input_tokens=estimate_input_tokens(query), output_tokens=query.max_tokens, estimated=True)


class StreamState(Protocol):
    """Reassembles one streamed answer from its server-sent events."""

    done: bool
    model: str | None
    """The model id the stream reported so far."""
    parts: list[str]
    """The text deltas received so far."""
    deltas: int
    """Generated deltas received so far (text, reasoning, tool-call arguments): each one is
    progress for ``HttpTimeouts.idle``; keep-alives and events without tokens are not."""

    def feed(self, event: ServerSentEvent) -> None:
        """Take one event; raise a ``BackendError`` for an error event or a malformed payload."""
        ...

    def finish(self) -> Response:
        """The response once the stream ended; ``BadResponse`` if it ended before its end
        marker or without a finish reason."""
        ...

    def partial_usage(self) -> Usage:
        """What the provider bills for the stream so far (see ``partial_stream_usage``)."""
        ...


def client_key(base_url: httpx.URL) -> str:
    """The ``Resources`` key of the shared clients for ``base_url``'s scheme, host and port."""
    port = base_url.port or (443 if base_url.scheme == "https" else 80)
    return f"httpx:{base_url.scheme}://{base_url.host}:{port}"


def make_client(limits: httpx.Limits, timeout: httpx.Timeout, trust_env: bool) -> httpx.AsyncClient:
    """A client as the backends make them: no redirects, specexec's user agent and encodings,
    the process's one SSL context (not ~40 ms of CPU per client), httpcore's streams with the
    cheaper reads and writes (``_network``) and the cookie jar that skips cookieless responses
    (``_cookies``)."""
    client = httpx.AsyncClient(
        limits=limits,
        timeout=timeout,
        follow_redirects=False,
        trust_env=trust_env,
        headers={"user-agent": _USER_AGENT, "accept-encoding": ACCEPT_ENCODING},
        verify=ssl_context(trust_env),
    )
    return skip_cookieless_responses(use_fast_streams(client))


class HostClients:
    """The ``httpx.AsyncClient`` shards a runtime shares among the backends of one host.

    ``HttpConfig.shards`` clients, each with its own connection pool and an even share of
    ``max_connections`` and ``max_keepalive_connections`` (so the host's totals stay as
    configured). ``acquire`` hands out the shard with the most free connections, the lowest
    index on a tie: one request in flight always goes to shard 0 and reuses its connection,
    and a request has to wait for a connection only when every shard is full, as with one
    pool. (When all are full, each shard queues its own waiters: a connection freed on one
    shard serves that shard's queue, not another's, so past ``max_connections`` in flight
    waits are a little less fair than with one pool.) Shards are created on first use, so
    a host that never has more than one request in flight has one client, and every client
    specexec makes shares the process's one SSL context (``specexec._httpx.ssl_context``:
    loading the CA bundle costs ≈ 25–45 ms per context). ``aclose`` closes
    them all; the runtime calls it.

    Why shard: httpcore's pool does work proportional to the requests and connections it
    holds each time a request is queued or a response is closed, so one pool's CPU per
    request grows with the requests in flight. On loopback at 32 in flight, 8 shards cut
    the client CPU per request from ≈ 2.6–4.2 ms to ≈ 0.8–1 ms (``benchmarks/PERFORMANCE.md``).
    """

    __slots__ = ("_clients", "_closed", "_config", "_free", "_limits", "_timeout")

    def __init__(self, config: HttpConfig, timeout: httpx.Timeout) -> None:
        self._config = config
        self._timeout = timeout
        self._limits = config.shard_limits()
        self._free = [limits.max_connections or 0 for limits in self._limits]
        self._clients: list[httpx.AsyncClient | None] = [None] * len(self._limits)
        self._closed = False

    @property
    def clients(self) -> list[httpx.AsyncClient]:
        """The shards created so far, in shard order (for tests and diagnostics)."""
        return [c for c in self._clients if c is not None]

    @property
    def in_flight(self) -> list[int]:
        """Exchanges in progress on each shard (for tests and diagnostics)."""
        return [(limits.max_connections or 0) - free for limits, free in zip(self._limits, self._free, strict=True)]

    @property
    def is_closed(self) -> bool:
        """Whether ``aclose`` was called."""
        return self._closed

    def acquire(self) -> tuple[int, httpx.AsyncClient]:
        """The shard for one exchange, as ``(index, client)``; pair it with ``release(index)``."""
        free = self._free
        best = 0
        if len(free) > 1:
            most = free[0]
            for i in range(1, len(free)):
                if free[i] > most:
                    best, most = i, free[i]
        client = self._clients[best]
        if client is None:
            client = self._clients[best] = self._new_client(best)
        free[best] -= 1
        return best, client

    def release(self, shard: int) -> None:
        """The exchange on ``shard`` is over."""
        self._free[shard] += 1

    def warm_up(self) -> None:
        """Create shard 0, the one a first request uses, if it is not there yet (no connection is opened)."""
        if self._clients[0] is None:
            self._clients[0] = self._new_client(0)

    def _new_client(self, shard: int) -> httpx.AsyncClient:
        if self._closed:
            raise RuntimeClosed(CLOSED_IN_FLIGHT)
        return make_client(self._limits[shard], self._timeout, self._config.trust_env)

    async def aclose(self) -> None:
        """Close every shard created; the first error is raised after all were tried."""
        self._closed = True
        first: Exception | None = None
        for client in self.clients:
            try:
                await client.aclose()
            except Exception as exc:
                first = first or exc
        if first is not None:
            raise first


_RawEnv = str | tuple[str | None, ...] | None
"""What ``_request_headers`` read from the environment: ``api_key_env``'s value, or with
``headers_env`` a tuple of it and each header variable's value."""


class _KeyedHeaders:
    """The request headers and secrets built for one API key value; its repr never shows them."""

    __slots__ = ("headers", "raw", "secrets", "sse_headers")

    def __init__(
        self, raw: _RawEnv, headers: dict[str, str], sse_headers: dict[str, str], secrets: tuple[str, ...]
    ) -> None:
        self.raw = raw  # the environment variables' values as read (the key is the first, stripped)
        self.headers = headers  # accept: application/json
        self.sse_headers = sse_headers  # accept: text/event-stream
        self.secrets = secrets

    def __repr__(self) -> str:
        return "<request headers (redacted)>"


class HttpBackend(BackendBase):
    """Base of the HTTP backends: key from the environment, client selection, one POST, error mapping.

    Subclasses set ``path`` and implement ``_headers``, ``_encode``, ``_parse`` and
    ``_stream_state``.

    Per call the backend does little beyond httpx's own work: the URL is parsed once (an
    ``httpx.URL``, which spares httpx ≈ 20 µs of parsing per request); the headers dict and
    the secrets to redact are built once per API key value (the environment variable is
    still read at every call, so a rotated key takes effect on the next call); the request
    id is read from the response headers only when an error needs it. The cached headers
    also hold ``stream``'s ``accept`` (and ``Anthropic.anthropic_version``) as they were
    when the key was first seen: to change those, make a new backend.
    """

    path: ClassVar[str]
    key_header: ClassVar[str]
    """The header ``api_key_env``'s key is sent in (lower case)."""

    def __init__(
        self,
        name: str,
        *,
        base_url: str,
        model: str,
        api_key_env: str | None,
        headers: Mapping[str, str] | None,
        stream: bool | None,
        provider: str,
        region: str,
        input_price: float,
        output_price: float,
        limits: Limits | None,
        context_window: int | None,
        breaker: BreakerConfig | None,
        timeout: HttpTimeouts,
        http: HttpConfig,
        client: httpx.AsyncClient | None,
        headers_env: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(
            name,
            provider=provider,
            region=region,
            model=model,
            input_price=input_price,
            output_price=output_price,
            limits=limits,
            context_window=context_window,
            breaker=breaker,
        )
        if not isinstance(model, str) or not model:
            raise PolicyError(f"model must be a non-empty string, got {model!r}", path=f"$.backends.{name}.model")
        try:
            url = httpx.URL(base_url)
        except (httpx.InvalidURL, TypeError) as exc:
            raise PolicyError(f"base_url is not a valid URL: {exc}", path=f"$.backends.{name}.base_url") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise PolicyError(
                "base_url must be an absolute http:// or https:// URL", path=f"$.backends.{name}.base_url"
            )
        if api_key_env is not None and (not isinstance(api_key_env, str) or not _ENV_NAME.fullmatch(api_key_env)):
            # never echo the value: it may be the key itself, passed by mistake
            raise PolicyError(
                "api_key_env must be the NAME of an environment variable holding the key "
                "(e.g. 'OPENAI_API_KEY'), not the key itself",
                path=f"$.backends.{name}.api_key_env",
            )
        if not isinstance(timeout, HttpTimeouts):
            raise PolicyError(f"timeout must be an HttpTimeouts, got {type(timeout).__name__}", path="$.timeout")
        if not isinstance(http, HttpConfig):
            raise PolicyError(f"http must be an HttpConfig, got {type(http).__name__}", path="$.http")
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        if stream is not None and not isinstance(stream, bool):
            raise PolicyError(f"stream must be true, false or unset, got {stream!r}", path=f"$.backends.{name}.stream")
        self.streaming = True if stream is None else stream
        """Whether ``complete`` reads the answer as a stream (SSE): ``stream=None`` (the default) is on."""
        self.timeout = timeout
        self.http = http
        # the API path goes after the base path, before any query (e.g. an api-version parameter)
        self._url = url.copy_with(path=url.path.rstrip("/") + self.path)
        self._client_key = client_key(url)
        self._httpx_timeout = timeout.as_httpx()
        # Not streamed, every byte is content: ``idle`` is then a read timeout (no cancel scope
        # to enter, ~10 µs a call on asyncio); streamed, keep-alives are not, hence a scope.
        self._idle_is_read = timeout.idle is not None and not (
            timeout.read is not None and timeout.read <= timeout.idle
        )
        self._request_timeout = (
            httpx.Timeout(connect=timeout.connect, read=timeout.idle, write=timeout.write, pool=timeout.pool)
            if self._idle_is_read
            else self._httpx_timeout
        )
        self._extra_headers = _checked_headers(name, headers)
        self._headers_env = _checked_headers_env(name, headers_env, self._extra_headers, api_key_env, self.key_header)
        self._header_secrets = (
            *(v for k, v in self._extra_headers.items() if is_credential_header(k) and v),
            *url_secrets(base_url),  # never shown by errors (``safe_url``), but a server may echo them
        )
        self._keyed: _KeyedHeaders | None = None
        self._client = client

    # -- subclass hooks ------------------------------------------------------------------

    def _headers(self, key: str | None) -> dict[str, str]:
        """The request headers for API key ``key`` (built once per key value, then reused),
        without ``accept`` (set per request: SSE or JSON)."""
        raise NotImplementedError

    def _encode(self, query: Query, stream: bool) -> bytes:
        """The request body for ``query``, asking for an SSE stream when ``stream``."""
        raise NotImplementedError

    def _parse(self, body: bytes, query: Query, call: CallInfo) -> Response:
        raise NotImplementedError

    def _stream_state(self, query: Query, start: float, call: CallInfo) -> StreamState:
        raise NotImplementedError

    # -- the call ------------------------------------------------------------------------

    def _api_key(self, env: str, raw: str | None, what: str = "the API key") -> str | AuthError:
        """The key in ``raw`` (the value of ``env``), checked: whitespace around it is stripped
        (with one warning per variable), control and non-ASCII characters are an ``AuthError``
        (returned, not raised, so that no frame of its traceback holds the value). Neither the
        warning nor the error shows the value."""
        if not raw:
            return AuthError(
                f"environment variable {env} is not set (or is empty): export {env} with {what} "
                f"for backend {self.name!r} before running",
                backend=self.name,
            )
        key = raw.strip()
        if key != raw and env not in _warned_env:
            _warned_env.add(env)
            _log.warning(
                "specexec: environment variable %s has whitespace around its value (a trailing newline?); "
                "it was stripped for backend %r",
                env,
                self.name,
            )
        if not key:
            return AuthError(f"environment variable {env} holds only whitespace: export {what}", backend=self.name)
        if _NOT_PRINTABLE_ASCII.search(key):
            return AuthError(
                f"environment variable {env} holds a control or non-ASCII character (a line break or a "
                f"typographic character pasted with the key?): fix its value for backend {self.name!r} "
                "(it is not shown here)",
                backend=self.name,
            )
        return key

    @property
    def credential_envs(self) -> tuple[str, ...]:
        """The environment variables this backend reads credentials from: ``api_key_env`` and ``headers_env``'s."""
        envs = (self.api_key_env,) if self.api_key_env is not None else ()
        return (*envs, *self._headers_env.values())

    def secrets(self) -> tuple[str, ...]:
        """The credentials this backend sends, as they are now: the key and ``headers_env``'s values
        from the environment, credential headers, ``base_url``'s user info and secret query values
        (what a caller redacts from anything it shows, as the backend's errors do)."""
        found = [v.strip() for env in self.credential_envs if (v := os.environ.get(env)) and v.strip()]
        return (*found, *self._header_secrets)

    def _request_headers(self) -> _KeyedHeaders:
        """The headers and secrets for the key (and ``headers_env``) in the environment now (rebuilt when changed)."""
        env = self.api_key_env
        key_raw = os.environ.get(env) if env is not None else None
        raw: _RawEnv = key_raw
        if self._headers_env:
            raw = (key_raw, *[os.environ.get(var) for var in self._headers_env.values()])
        keyed = self._keyed
        if keyed is not None and keyed.raw == raw:
            return keyed
        built = self._keyed_headers(key_raw, raw)
        if isinstance(built, AuthError):
            error, raw, key_raw = built, None, None  # no frame of the traceback keeps the value
            raise error
        self._keyed = built
        return built

    def _keyed_headers(self, key_raw: str | None, raw: _RawEnv) -> _KeyedHeaders | AuthError:
        """The headers for these values read from the environment, or the ``AuthError`` (returned,
        as ``_api_key``'s are, so that no frame of its traceback holds a value)."""
        env = self.api_key_env
        key = self._api_key(env, key_raw) if env is not None else None
        if isinstance(key, AuthError):
            return key
        from_env: dict[str, str] = {}
        if isinstance(raw, tuple):
            for (name, var), value in zip(self._headers_env.items(), raw[1:], strict=True):
                checked = self._api_key(var, value, what=f"header {name!r} (headers_env)")
                if isinstance(checked, AuthError):
                    return checked
                from_env[name] = checked
        secrets = (*((key,) if key else ()), *from_env.values(), *self._header_secrets)
        headers = {**self._headers(key), **from_env}
        return _KeyedHeaders(
            raw, {**headers, "accept": "application/json"}, {**headers, "accept": "text/event-stream"}, secrets
        )

    def _new_client(self) -> httpx.AsyncClient:
        return make_client(self.http.as_httpx(), self._httpx_timeout, self.http.trust_env)

    def _new_host_clients(self) -> HostClients:
        return HostClients(self.http, self._httpx_timeout)

    def _shared_clients(self) -> HostClients | None:
        resources = current_resources()
        if resources is None:
            return None
        return cast(HostClients, resources.get_or_create(self._client_key, self._new_host_clients))

    async def warm_up(self) -> None:
        """Prepare for the first call without contacting the provider (``Runtime.warm_up`` calls it).

        Makes one exchange with a listener of its own on 127.0.0.1 (the imports a first request
        does) and, in a running runtime, creates this host's shared client (its SSL context).
        """
        from ._warm_up import exercise_http_path

        await exercise_http_path()
        shared = self._shared_clients() if self._client is None else None
        if shared is not None:
            shared.warm_up()

    async def complete(self, query: Query) -> Response:
        """POST ``query`` to the provider and return its ``Response``, or raise a ``BackendError``.

        The API key is read from ``api_key_env`` now (a missing variable is an ``AuthError``).
        The client is the one given as ``client=``, else one of the running runtime's shared
        clients for this host (``HostClients``), else a one-shot client opened and closed
        around this call. With ``streaming`` (the default) the answer is read as an SSE stream
        (the same reader as ``stream``) and returned whole, with ``Response.ttft``.

        Cancellation: the response is closed in a ``finally``, so a cancelled call closes it
        at once (the server sees the connection drop; the connection is not returned to the
        pool), frees its pool slot and re-raises the cancellation.
        """
        if self.streaming:
            async with contextlib.aclosing(self._streamed(query)) as items:
                async for item in items:
                    if isinstance(item, Response):
                        return item
            raise AssertionError("a stream ends with its Response or an error")  # pragma: no cover
        keyed = self._request_headers()
        content = self._encode(query, False)
        client = self._client
        if client is not None:
            return await self._exchange(client, query, content, keyed)
        shared = self._shared_clients()
        if shared is None:
            async with self._new_client() as one_shot:
                return await self._exchange(one_shot, query, content, keyed)
        shard, client = shared.acquire()
        try:
            return await self._exchange(client, query, content, keyed)
        finally:
            shared.release(shard)

    async def stream(self, query: Query) -> AsyncIterator[StreamChunk]:
        """POST ``query`` asking for an SSE stream; yield its text as ``StreamChunk``s as it arrives.

        Whatever ``stream=`` the backend was made with. Each chunk holds the text of the
        deltas one network read completed (with the model id once known); the last chunk has
        no text and carries the ``usage``, ``model`` and ``finish_reason`` of the answer.
        Every bound of ``complete`` holds: ``HttpTimeouts.idle`` (keep-alives are not
        content; time the caller spends between two pieces is not idle),
        ``HttpConfig.max_response_bytes``, a stream cut short (no end marker, or no finish
        reason) is a ``BadResponse`` raised after the text it sent, and every error after the
        2xx carries ``partial_usage``. Closing the generator early (``aclose``, or a cancelled
        reader) closes the response at once: the server sees the disconnect.
        """
        async with contextlib.aclosing(self._streamed(query)) as items:
            async for item in items:
                if isinstance(item, Response):
                    yield StreamChunk("", item.usage, item.model, item.finish_reason, item.tool_calls, item.request_id)
                else:
                    yield item

    async def _streamed(self, query: Query) -> AsyncGenerator[StreamChunk | Response, None]:
        """The text chunks of a streamed exchange, then its whole ``Response``: on the client
        ``complete`` would use."""
        keyed = self._request_headers()
        content = self._encode(query, True)
        client = self._client
        if client is not None:
            async with contextlib.aclosing(self._stream_exchange(client, query, content, keyed)) as items:
                async for item in items:
                    yield item
            return
        shared = self._shared_clients()
        if shared is None:
            one_shot = self._new_client()
            async with one_shot, contextlib.aclosing(self._stream_exchange(one_shot, query, content, keyed)) as items:
                async for item in items:
                    yield item
            return
        shard, client = shared.acquire()
        try:
            async with contextlib.aclosing(self._stream_exchange(client, query, content, keyed)) as items:
                async for item in items:
                    yield item
        finally:
            shared.release(shard)

    def _failure(
        self, exc: Exception, query: Query, attempt: _Attempt, secrets: Sequence[str], idle_is_read: bool
    ) -> tuple[BackendError, BaseException | None]:
        """The ``BackendError`` (and the sanitized cause to chain) for what an exchange raised."""
        cause: BaseException | None = None
        if isinstance(exc, httpx.RequestError):
            failure = error_for_transport(
                exc,
                backend=self.name,
                secrets=secrets,
                status=attempt.status,
                request_id=attempt.request_id,
                url=self._url,
            )
            cause = sanitized_cause(exc, secrets)
            if idle_is_read and isinstance(exc, httpx.ReadTimeout):
                failure = self._idle_timeout(attempt)
        elif isinstance(exc, BodyTooLarge):
            failure = attempt.call().bad(
                f"response body larger than max_response_bytes ({exc.limit} bytes decoded): raise "
                "HttpConfig.max_response_bytes if answers this large are expected"
            )
        elif isinstance(exc, _IdleExpired):
            failure = self._idle_timeout(attempt)
        else:
            assert isinstance(exc, BackendError)
            failure, cause = exc, exc.__cause__
        if attempt.answered and failure.partial_usage is None:
            failure.partial_usage = attempt.partial_usage(query)
        return failure, cause

    async def _exchange(
        self, client: httpx.AsyncClient, query: Query, content: bytes, keyed: _KeyedHeaders
    ) -> Response:
        """One non-streamed attempt: send, read within the bounds, map every failure to a
        ``BackendError``.

        A failure is raised outside the ``except`` that saw it, chained to a sanitized
        stand-in of the httpx exception (``sanitized_cause``): neither ``__cause__`` nor
        ``__context__`` leads to the request and its key. A ``BackendError`` raised inside (an
        HTTP error status, a bad body) loses the frames below this one, whose locals hold the
        request (its URL) and its headers (the key). Once the answer began (a 2xx),
        every error carries the tokens the provider bills (``partial_usage``).
        """
        attempt = _Attempt(self.name, keyed.secrets)  # no local holds the secrets: frames get reported
        failure: BackendError | None = None
        cause: BaseException | None = None
        ok = False
        try:
            try:
                result = await self._send(client, query, content, keyed, attempt)
                ok = True
                return result
            except (httpx.RequestError, BodyTooLarge, BackendError) as exc:
                failure, cause = self._failure(exc, query, attempt, keyed.secrets, self._idle_is_read)
        finally:
            if not ok:  # failed or cancelled: a cancelled request may have orphaned a new connection
                await release_orphaned_connections(client)
        raise failure.with_traceback(None) from cause

    async def _stream_exchange(
        self, client: httpx.AsyncClient, query: Query, content: bytes, keyed: _KeyedHeaders
    ) -> AsyncGenerator[StreamChunk | Response, None]:
        """One streamed attempt: its text chunks, then its ``Response``; failures mapped as in
        ``_exchange``. ``HttpTimeouts.idle`` is a deadline on each wait for the server (no
        cancel scope spans a ``yield``: the reader's own time is not the server's silence)."""
        attempt = _Attempt(self.name, keyed.secrets)
        failure: BackendError | None = None
        cause: BaseException | None = None
        ok = False
        try:
            try:
                async with contextlib.aclosing(self._stream_send(client, query, content, keyed, attempt)) as items:
                    async for item in items:
                        if isinstance(item, Response):
                            ok = True
                        yield item
                return
            except (httpx.RequestError, BodyTooLarge, BackendError, _IdleExpired) as exc:
                failure, cause = self._failure(exc, query, attempt, keyed.secrets, False)
        finally:
            if not ok:  # failed or cancelled: a cancelled request may have orphaned a new connection
                await release_orphaned_connections(client)
        raise failure.with_traceback(None) from cause

    def _idle_timeout(self, attempt: _Attempt) -> Timeout:
        return Timeout(
            f"no content for {self.timeout.idle:g}s (HttpTimeouts.idle) at POST {safe_url(self._url)}: the "
            "backend sent nothing but keep-alives (or nothing at all)",
            backend=self.name,
            status=attempt.status,
            request_id=attempt.request_id,
        )

    async def _open(
        self,
        client: httpx.AsyncClient,
        content: bytes,
        headers: dict[str, str],
        timeout: httpx.Timeout,
        attempt: _Attempt,
        secrets: Sequence[str],
        clock: _IdleClock | None = None,
    ) -> httpx.Response:
        """Send the request; the response once its status is 2xx (else the mapped error, the
        response closed). ``clock``: ``HttpTimeouts.idle`` bounds the wait for the head (an error
        status's body is then read within ``ERROR_BODY_TIMEOUT``, whatever ``idle`` is)."""
        request = client.build_request("POST", self._url, content=content, headers=headers, timeout=timeout)
        if clock is None:
            response = await client.send(request, stream=True)
        else:
            with clock.scope() as scope:
                response = await client.send(request, stream=True)
            if scope.cancelled_caught:
                raise _IdleExpired
        try:
            status = attempt.status = response.status_code
            attempt.headers = response.headers
            if not 200 <= status < 300:
                body = await _read_error_body(response)
                raise error_for_status(status, headers=response.headers, body=body, backend=self.name, secrets=secrets)
        except BaseException:
            await _close(response)
            raise
        attempt.answered = True
        return response

    async def _send(
        self, client: httpx.AsyncClient, query: Query, content: bytes, keyed: _KeyedHeaders, attempt: _Attempt
    ) -> Response:
        response = await self._open(client, content, keyed.headers, self._request_timeout, attempt, keyed.secrets)
        try:
            call = attempt.call()
            try:
                return self._parse(await _read_body(response, self.http.max_response_bytes), query, call)
            except RecursionError:
                raise call.bad("response JSON is nested too deeply to decode") from None
        finally:
            await _close(response)

    async def _stream_send(
        self, client: httpx.AsyncClient, query: Query, content: bytes, keyed: _KeyedHeaders, attempt: _Attempt
    ) -> AsyncGenerator[StreamChunk | Response, None]:
        clock = _IdleClock(self.timeout.idle)
        start = clock.now()
        response = await self._open(
            client, content, keyed.sse_headers, self._httpx_timeout, attempt, keyed.secrets, clock
        )
        try:
            call = attempt.call()
            if _is_json(response):  # a server that ignores ``stream: true`` answers in one JSON body
                try:
                    with clock.scope() as scope:  # every byte is content
                        body = await _read_body(response, self.http.max_response_bytes)
                    if scope.cancelled_caught:
                        raise _IdleExpired
                    whole = self._parse(body, query, call)
                except RecursionError:
                    raise call.bad("response JSON is nested too deeply to decode") from None
                if whole.text:
                    yield StreamChunk(whole.text, model=whole.model)
                yield whole
                return
            state = attempt.state = self._stream_state(query, start, call)
            try:
                async with contextlib.aclosing(
                    _stream_items(response, state, self.http.max_response_bytes, clock)
                ) as items:
                    async for item in items:
                        yield item
            except RecursionError:
                raise call.bad("response JSON is nested too deeply to decode") from None
        finally:
            await _close(response)


class _Attempt:
    """What one exchange learnt so far: status, headers, whether the answer began, its stream."""

    __slots__ = ("answered", "backend", "headers", "secrets", "state", "status")

    def __init__(self, backend: str, secrets: Sequence[str]) -> None:
        self.backend = backend
        self.secrets = secrets
        self.status: int | None = None
        self.headers: httpx.Headers | None = None
        self.answered = False
        self.state: StreamState | None = None

    @property
    def request_id(self) -> str | None:
        return request_id_from(self.headers, self.secrets) if self.headers is not None else None

    def call(self) -> CallInfo:
        return CallInfo(self.backend, self.status, self.headers, self.secrets)

    def partial_usage(self, query: Query) -> Usage:
        """The stream's tokens so far, or (not streamed) the worst case."""
        return self.state.partial_usage() if self.state is not None else worst_case_usage(query)


class _IdleExpired(Exception):
    """``HttpTimeouts.idle`` passed without content (mapped to ``Timeout`` by the exchange)."""


class _IdleClock:
    """The deadline of ``HttpTimeouts.idle`` for a stream (``inf`` without one): it moves on
    with each piece of content, and when the reader asks for more after a piece. ``now`` and
    ``scope_at`` are the running loop's clock and cheapest deadline scope, looked up once per
    stream (a paced stream waits for the server once per token)."""

    __slots__ = ("deadline", "idle", "now", "scope_at")

    def __init__(self, idle: float | None) -> None:
        self.now = loop_clock()
        self.scope_at = deadline_scope()
        self.idle = idle
        self.deadline = math.inf if idle is None else self.now() + idle

    def scope(self) -> DeadlineScope:
        """A scope cancelling its block at the deadline: around one wait for the server."""
        return self.scope_at(self.deadline)

    def progress(self) -> None:
        """Content arrived (or the reader is back for more): ``idle`` seconds more from now."""
        if self.idle is not None and self.deadline != math.inf:
            self.deadline = self.now() + self.idle

    def finished(self) -> None:
        """The answer is complete: nothing after it (draining to EOF) can be idle."""
        self.deadline = math.inf


def _checked_headers(backend: str, headers: Mapping[str, str] | None) -> dict[str, str]:
    """``headers`` with lower-case names, refused (``PolicyError``, never echoing a value) when a
    name is not a token or a value holds a control (a line break …) or non-ASCII character."""
    out: dict[str, str] = {}
    for name, value in (headers or {}).items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise PolicyError(f"{name!r} is not a valid HTTP header name", path=f"$.backends.{backend}.headers")
        lower = name.lower()
        if not isinstance(value, str) or _NOT_PRINTABLE_ASCII.search(value.replace("\t", " ")):
            raise PolicyError(
                f"header {lower!r}: the value must be a string of printable ASCII (no line break, control or "
                "non-ASCII character); it is not shown here, as it may be a secret",
                path=f"$.backends.{backend}.headers.{lower}",
            )
        _not_twice(out, lower, name, f"$.backends.{backend}.headers.{name}")
        out[lower] = value
    return out


def _not_twice(seen: Mapping[str, object], lower: str, name: str, path: str) -> None:
    """``PolicyError`` when header ``name`` is already in ``seen`` under another case (one would be dropped)."""
    if lower in seen:
        raise PolicyError(
            f"header {lower!r} is given twice ({name!r} and another spelling); header names are case-insensitive: "
            "keep one",
            path=path,
        )


def _checked_headers_env(
    backend: str,
    headers_env: Mapping[str, str] | None,
    headers: Mapping[str, str],
    api_key_env: str | None,
    key_header: str,
) -> dict[str, str]:
    """``headers_env`` (header name → the environment variable holding its value) with lower-case
    names, refused (``PolicyError``) when a name is not a token, a variable is not a variable's
    name (a value pasted by mistake is never echoed), a header is also in ``headers``, or it is the
    header ``api_key_env`` already sends."""
    out: dict[str, str] = {}
    for name, env in (headers_env or {}).items():
        if not isinstance(name, str) or not _HEADER_NAME.fullmatch(name):
            raise PolicyError(
                "headers_env: a key is not a valid HTTP header name", path=f"$.backends.{backend}.headers_env"
            )
        lower = name.lower()
        path = f"$.backends.{backend}.headers_env.{name}"
        if not isinstance(env, str) or not _ENV_NAME.fullmatch(env):
            raise PolicyError(
                f"headers_env: the value for {lower!r} must be the NAME of an environment variable holding the "
                "header's value (e.g. 'AZURE_OPENAI_API_KEY'), not the value itself",
                path=path,
            )
        if lower in headers:
            raise PolicyError(f"header {lower!r} is in both headers and headers_env: keep one", path=path)
        _not_twice(out, lower, name, path)
        if lower == key_header and api_key_env is not None:
            raise PolicyError(
                f"{lower!r} is the header api_key_env sends the key in: name the variable in api_key_env "
                "instead (or set api_key_env to None)",
                path=path,
            )
        out[lower] = env
    return out


def _orphaned_connections(pool: httpcore.AsyncConnectionPool) -> list[httpcore.AsyncConnectionInterface]:
    try:
        assigned = {id(r.connection) for r in pool._requests if r.connection is not None}
        return [
            c
            for c in pool._connections
            if isinstance(c, httpcore.AsyncHTTPConnection)
            and c._connection is None
            and not c._connect_failed
            and id(c) not in assigned
        ]
    except AttributeError:  # another httpcore layout: leave the pool alone
        return []


async def release_orphaned_connections(client: httpx.AsyncClient) -> None:
    """Drop pool slots held by connections a cancelled request left behind (encode/httpcore#1093).

    httpcore 1.0.x: when a request is cancelled while it waits for the connection the pool
    has just created for it (``wait_for_connection``; on trio even without contention, since
    the wait is a checkpoint), that connection is never connected, never assigned again and
    never reaped. It keeps its slot for ever; after ``max_connections`` such cancellations
    every request fails with ``PoolTimeout`` against a healthy server. A hedging client
    cancels all the time, so after a failed or cancelled exchange we remove such orphans
    (never-connected connections no live request refers to: they hold no socket) and let
    the pool hand the freed slots to queued requests. A no-op when there are none, and for
    transports other than httpx's default one.
    """
    transport = client._transport
    pool = transport._pool if isinstance(transport, httpx.AsyncHTTPTransport) else None
    if not isinstance(pool, httpcore.AsyncConnectionPool):
        return
    orphans = _orphaned_connections(pool)
    if not orphans:
        return
    for connection in orphans:
        pool._connections.remove(connection)
    closing = pool._assign_requests_to_connections()
    if closing:
        with anyio.CancelScope(shield=True):
            await pool._close_connections(closing)


def _is_json(response: httpx.Response) -> bool:
    """Whether ``response`` says it is a JSON document (not ``text/event-stream``)."""
    kind: str = response.headers.get("content-type", "")
    return kind.split(";", 1)[0].strip().lower() == "application/json"


async def _close(response: httpx.Response) -> None:
    """Close ``response`` and unlink it from its stream: httpx's response and its stream refer
    to each other, so without this every request (its request, headers, URL and the pool's
    entry with it) would wait for the cyclic garbage collector, whose passes pause the process,
    instead of being freed when the exchange ends. Nothing reads a closed response's stream; a
    close that did not complete (cancelled, failed) leaves the response as it is."""
    await response.aclose()
    response.stream = _CLOSED_STREAM


_CLOSED_STREAM = httpx.ByteStream(b"")
"""What a closed response's ``stream`` becomes (``_close``)."""


async def _read_error_body(response: httpx.Response) -> bytes:
    """Up to ``_ERROR_BODY_READ_LIMIT`` decoded bytes of an error answer's body, within
    ``ERROR_BODY_TIMEOUT`` seconds and half the time the engine leaves this call
    (``ATTEMPT_DEADLINE``): what could be read by then. The other half is the margin in which
    the status's error is raised before the engine would cut the call into a ``Timeout``."""
    chunks: list[bytes] = []
    now = loop_clock()()
    with deadline_scope()(now + min(ERROR_BODY_TIMEOUT, (ATTEMPT_DEADLINE.get() - now) / 2)):
        try:
            async with contextlib.aclosing(iter_body(response, _ERROR_BODY_READ_LIMIT, truncate=True)) as body:
                async for chunk in body:
                    chunks.append(chunk)
        except httpx.HTTPError:
            pass  # the status says what happened; a body cut short only shortens the excerpt
    return b"".join(chunks)


async def _read_body(response: httpx.Response, limit: int) -> bytes:
    """A non-streamed body, at most ``limit`` decoded bytes (else ``BodyTooLarge``)."""
    chunks: list[bytes] = []
    async with contextlib.aclosing(iter_body(response, limit)) as body:
        async for chunk in body:
            chunks.append(chunk)
    return b"".join(chunks)


async def _stream_items(
    response: httpx.Response, state: StreamState, limit: int, clock: _IdleClock
) -> AsyncGenerator[StreamChunk | Response, None]:
    """Feed the SSE events of ``response`` to ``state``; yield the new text of each read as a
    ``StreamChunk``; after the end marker, drain to EOF and yield ``state.finish()``.

    At most ``limit`` decoded bytes are read (else ``BodyTooLarge``); each new generated
    delta is progress for ``HttpTimeouts.idle``, keep-alives and empty events are not. Each
    wait for the body has the idle deadline (``_IdleExpired`` past it); no scope is open
    across a ``yield``.
    """
    decoder = SSEDecoder()
    seen = sent = 0
    async with contextlib.aclosing(iter_body(response, limit)) as chunks:
        while not state.done:
            with clock.scope() as scope:
                chunk = await anext(chunks, None)
            if scope.cancelled_caught:
                raise _IdleExpired
            events = decoder.close() if chunk is None else decoder.feed(chunk)
            for event in events:
                state.feed(event)
            if state.deltas != seen:
                seen = state.deltas
                clock.progress()
            if len(state.parts) > sent:
                text = "".join(state.parts[sent:])
                sent = len(state.parts)
                yield StreamChunk(text, model=state.model)
                clock.progress()  # the reader's time between two pieces is not the server's silence
            if chunk is None:
                break
        if state.done:
            clock.finished()
            # read the (normally already sent) end of the body so the connection can be reused
            with clock.scope_at(clock.now() + DRAIN_TIMEOUT):
                try:
                    async for _ in chunks:
                        pass
                except (httpx.HTTPError, BodyTooLarge):
                    pass  # the answer is complete; only the connection's reuse is lost
    yield state.finish()
