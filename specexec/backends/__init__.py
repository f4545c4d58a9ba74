"""Backends for real providers over HTTP (httpx): OpenAI-compatible chat completions and Anthropic Messages.

``OpenAICompatible`` covers OpenAI and the servers that speak its API (vLLM, Ollama,
llama.cpp server, TGI, most hosted APIs); ``Anthropic`` the Messages API. Both read their
API key from an environment variable at call time, share pooled ``httpx.AsyncClient``s per
host inside a running runtime (``HttpConfig.clients_per_host`` shards, least busy first),
map every HTTP and transport failure to a ``specexec.BackendError`` kind (see
``error_for_status``) and close their HTTP stream at once when the attempt is cancelled.
Every response is read within ``HttpConfig.max_response_bytes`` and ``HttpTimeouts.idle``.

The config objects (``HttpConfig``, ``HttpTimeouts``, ``DEFAULT_*``) import without httpx;
the backends and the error mappers are loaded, with httpx, the first time one of their names
is used (``from specexec.backends import OpenAICompatible``): ``import specexec`` stays light
for services that use no HTTP backend.
"""

import importlib as _importlib
import typing as _typing

from ._config import DEFAULT_CLIENTS_PER_HOST as DEFAULT_CLIENTS_PER_HOST
from ._config import DEFAULT_CONNECT_TIMEOUT as DEFAULT_CONNECT_TIMEOUT
from ._config import DEFAULT_HTTP_CONFIG as DEFAULT_HTTP_CONFIG
from ._config import DEFAULT_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT
from ._config import DEFAULT_KEEPALIVE_EXPIRY as DEFAULT_KEEPALIVE_EXPIRY
from ._config import DEFAULT_MAX_CONNECTIONS as DEFAULT_MAX_CONNECTIONS
from ._config import DEFAULT_MAX_KEEPALIVE_CONNECTIONS as DEFAULT_MAX_KEEPALIVE_CONNECTIONS
from ._config import DEFAULT_MAX_RESPONSE_BYTES as DEFAULT_MAX_RESPONSE_BYTES
from ._config import DEFAULT_POOL_TIMEOUT as DEFAULT_POOL_TIMEOUT
from ._config import DEFAULT_READ_TIMEOUT as DEFAULT_READ_TIMEOUT
from ._config import DEFAULT_TIMEOUTS as DEFAULT_TIMEOUTS
from ._config import DEFAULT_WRITE_TIMEOUT as DEFAULT_WRITE_TIMEOUT
from ._config import HttpConfig as HttpConfig
from ._config import HttpTimeouts as HttpTimeouts

if _typing.TYPE_CHECKING:
    from ._anthropic import DEFAULT_ANTHROPIC_VERSION as DEFAULT_ANTHROPIC_VERSION
    from ._anthropic import Anthropic as Anthropic
    from ._http import BODY_EXCERPT_CHARS as BODY_EXCERPT_CHARS
    from ._http import CONTEXT_WINDOW_PATTERN as CONTEXT_WINDOW_PATTERN
    from ._http import error_for_status as error_for_status
    from ._http import error_for_transport as error_for_transport
    from ._http import retry_after_seconds as retry_after_seconds
    from ._openai import OpenAICompatible as OpenAICompatible

_LAZY = {
    "DEFAULT_ANTHROPIC_VERSION": "_anthropic",
    "Anthropic": "_anthropic",
    "BODY_EXCERPT_CHARS": "_http",
    "CONTEXT_WINDOW_PATTERN": "_http",
    "error_for_status": "_http",
    "error_for_transport": "_http",
    "retry_after_seconds": "_http",
    "OpenAICompatible": "_openai",
}
"""The names loaded with httpx on first use: name → the private module defining it."""


def __getattr__(name: str) -> _typing.Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_importlib.import_module(f".{module}", __name__), name)
    globals()[name] = value  # later lookups are plain attribute reads
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


__all__ = [
    "BODY_EXCERPT_CHARS",
    "CONTEXT_WINDOW_PATTERN",
    "DEFAULT_ANTHROPIC_VERSION",
    "DEFAULT_CLIENTS_PER_HOST",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_HTTP_CONFIG",
    "DEFAULT_IDLE_TIMEOUT",
    "DEFAULT_KEEPALIVE_EXPIRY",
    "DEFAULT_MAX_CONNECTIONS",
    "DEFAULT_MAX_KEEPALIVE_CONNECTIONS",
    "DEFAULT_MAX_RESPONSE_BYTES",
    "DEFAULT_POOL_TIMEOUT",
    "DEFAULT_READ_TIMEOUT",
    "DEFAULT_TIMEOUTS",
    "DEFAULT_WRITE_TIMEOUT",
    "Anthropic",
    "HttpConfig",
    "HttpTimeouts",
    "OpenAICompatible",
    "error_for_status",
    "error_for_transport",
    "retry_after_seconds",
]
