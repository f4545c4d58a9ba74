"""The HTTP backends' config: ``HttpTimeouts``, ``HttpConfig`` and their ``DEFAULT_*`` constants.

Plain frozen value objects, importable without httpx (``specexec.config`` reads them from
TOML at ``import specexec``); httpx is imported only when they are turned into its
``Timeout`` / ``Limits``, i.e. when a backend makes a client.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import msgspec

from .._errors import PolicyError

if TYPE_CHECKING:
    from .._httpx import httpx

DEFAULT_CONNECT_TIMEOUT = 5.0
"""Seconds to establish a connection."""
DEFAULT_READ_TIMEOUT = 120.0
"""Seconds to wait for the next bytes of a response (a non-streamed answer comes in one piece)."""
DEFAULT_WRITE_TIMEOUT = 30.0
"""Seconds to send a chunk of the request."""
DEFAULT_POOL_TIMEOUT = 10.0
"""Seconds to wait for a free connection of the pool."""
DEFAULT_IDLE_TIMEOUT = 120.0
"""Seconds an attempt may go without content (a token, or a non-streamed body's bytes)
before it is a ``Timeout``; as long as the read timeout, since a non-streamed answer
sends nothing until it is complete."""
DEFAULT_MAX_RESPONSE_BYTES = 8 << 20
"""Decoded bytes of one response body (8 MiB) past which it is a ``BadResponse``."""

DEFAULT_MAX_CONNECTIONS = 100
"""Connections opened to one host at most, across all the shards of its shared clients."""
DEFAULT_MAX_KEEPALIVE_CONNECTIONS = 100
"""Idle connections kept for reuse (per host, across shards); a hedging workload's bursts
reconnect less with more."""
DEFAULT_CLIENTS_PER_HOST = 8
"""Shared clients (shards, each with its own pool) a runtime opens per host at most, each
request going to the least busy: one pool's CPU per request grows with the requests in
flight on it."""
MIN_CONNECTIONS_PER_SHARD = 8
"""A host gets at most one shard per this many of its ``max_connections``: small pools are
not split into shards of a connection or two."""
DEFAULT_KEEPALIVE_EXPIRY = 30.0
"""Seconds an idle connection is kept."""


class HttpTimeouts(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Per-request timeouts in seconds (``None``: wait forever), as httpx splits them.

    A connect, pool or write timeout and a read timeout between two chunks of the body all
    raise ``specexec.Timeout``. They bound single HTTP operations; the policy's per-attempt
    timeout bounds the whole attempt.

    ``idle`` bounds the time an attempt goes without *content*: from the request until the
    first token (streamed) or the first byte of the body (not streamed), then between two
    tokens. SSE keep-alive comments (``: ping``) and events without text reset httpx's read
    timeout but not this one, so a stream that only pings ends after ``idle`` seconds with
    a ``Timeout`` naming it, even in a run without a deadline. ``None`` disables it. Not
    streamed, every byte of the answer is content, so ``idle`` is enforced as the read
    timeout (the shorter of the two) and a timeout past it names ``idle``.
    """

    connect: float | None = DEFAULT_CONNECT_TIMEOUT
    read: float | None = DEFAULT_READ_TIMEOUT
    write: float | None = DEFAULT_WRITE_TIMEOUT
    pool: float | None = DEFAULT_POOL_TIMEOUT
    idle: float | None = DEFAULT_IDLE_TIMEOUT

    def __post_init__(self) -> None:
        for field in ("connect", "read", "write", "pool", "idle"):
            value = getattr(self, field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0):
                raise PolicyError(f"expected a positive number of seconds or None, got {value!r}", path=f"$.{field}")

    def as_httpx(self) -> httpx.Timeout:
        """The equivalent ``httpx.Timeout``."""
        from .._httpx import httpx

        return httpx.Timeout(connect=self.connect, read=self.read, write=self.write, pool=self.pool)


class HttpConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The connection pools of the clients a backend creates (``httpx.Limits``), and proxy use.

    ``max_connections`` and ``max_keepalive_connections`` are per host. Inside a runtime a
    host's requests are spread over up to ``clients_per_host`` shared clients (``shards``),
    each with an even share of both limits; see ``HostClients``. A host gets at most one
    shard per ``MIN_CONNECTIONS_PER_SHARD`` (8) connections: with the defaults, 8 shards of
    12–13 connections; with ``max_connections`` below 16, one client, as before sharding.
    ``clients_per_host=1`` always gives one shared client per host. ``trust_env`` lets
    httpx read ``HTTP(S)_PROXY``/``NO_PROXY`` and ``SSL_CERT_FILE``.

    ``max_response_bytes`` bounds the *decoded* bytes of one response body, streamed or not
    (8 MiB by default): past it the attempt is a ``BadResponse`` naming the bound, so a huge
    body, a compression bomb or a stream that never ends cannot exhaust memory. gzip and
    deflate are inflated in bounded steps (the clients the backends create accept only
    those). An error body is read up to 8 KiB only (for its excerpt).
    """

    max_connections: int = DEFAULT_MAX_CONNECTIONS
    max_keepalive_connections: int = DEFAULT_MAX_KEEPALIVE_CONNECTIONS
    keepalive_expiry: float = DEFAULT_KEEPALIVE_EXPIRY
    trust_env: bool = True
    clients_per_host: int = DEFAULT_CLIENTS_PER_HOST
    max_response_bytes: int = DEFAULT_MAX_RESPONSE_BYTES

    def __post_init__(self) -> None:
        if not isinstance(self.max_response_bytes, int) or isinstance(self.max_response_bytes, bool):
            raise PolicyError(f"expected an int >= 1, got {self.max_response_bytes!r}", path="$.max_response_bytes")
        if self.max_response_bytes < 1:
            raise PolicyError(f"expected an int >= 1, got {self.max_response_bytes!r}", path="$.max_response_bytes")
        if isinstance(self.max_connections, bool) or self.max_connections < 1:
            raise PolicyError(f"expected an int >= 1, got {self.max_connections!r}", path="$.max_connections")
        if isinstance(self.clients_per_host, bool) or self.clients_per_host < 1:
            raise PolicyError(f"expected an int >= 1, got {self.clients_per_host!r}", path="$.clients_per_host")
        if isinstance(self.max_keepalive_connections, bool) or self.max_keepalive_connections < 0:
            raise PolicyError(
                f"expected an int >= 0, got {self.max_keepalive_connections!r}", path="$.max_keepalive_connections"
            )
        if not self.keepalive_expiry >= 0:
            raise PolicyError(f"expected seconds >= 0, got {self.keepalive_expiry!r}", path="$.keepalive_expiry")

    def as_httpx(self) -> httpx.Limits:
        """The equivalent ``httpx.Limits`` of one unsharded client (a one-shot client's)."""
        from .._httpx import httpx

        return httpx.Limits(
            max_connections=self.max_connections,
            max_keepalive_connections=self.max_keepalive_connections,
            keepalive_expiry=self.keepalive_expiry,
        )

    @property
    def shards(self) -> int:
        """How many shared clients a host gets: ``clients_per_host``, but at most one per
        ``MIN_CONNECTIONS_PER_SHARD`` connections (and at least one)."""
        return max(1, min(self.clients_per_host, self.max_connections // MIN_CONNECTIONS_PER_SHARD))

    def shard_limits(self) -> list[httpx.Limits]:
        """The ``httpx.Limits`` of each shard: the per-host limits split as evenly as possible."""
        from .._httpx import httpx

        n = self.shards
        return [
            httpx.Limits(
                max_connections=_share(self.max_connections, n, i),
                max_keepalive_connections=_share(self.max_keepalive_connections, n, i),
                keepalive_expiry=self.keepalive_expiry,
            )
            for i in range(n)
        ]


def _share(total: int, parts: int, i: int) -> int:
    """Part ``i`` of ``total`` split into ``parts`` near-equal ints (the first ones larger)."""
    return total // parts + (1 if i < total % parts else 0)


DEFAULT_TIMEOUTS = HttpTimeouts()
"""The timeouts backends use unless given others."""
DEFAULT_HTTP_CONFIG = HttpConfig()
"""The pool config of the clients backends create unless given another."""
