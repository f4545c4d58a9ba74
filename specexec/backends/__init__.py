"""Backends for real providers over HTTP (httpx): OpenAI-compatible chat completions and Anthropic Messages.

``OpenAICompatible`` covers OpenAI and the servers that speak its API (vLLM, Ollama,
llama.cpp server, TGI, most hosted APIs); ``Anthropic`` the Messages API. Both read their
API key from an environment variable at call time, share pooled ``httpx.AsyncClient``s per
host inside a running runtime (``HttpConfig.clients_per_host`` shards, least busy first),
map every HTTP and transport failure to a ``specexec.BackendError`` kind (see
``error_for_status``) and close their HTTP stream at once when the attempt is cancelled.
Every response is read within ``HttpConfig.max_response_bytes`` and ``HttpTimeouts.idle``.
"""

from ._anthropic import DEFAULT_ANTHROPIC_VERSION as DEFAULT_ANTHROPIC_VERSION
from ._anthropic import Anthropic as Anthropic
from ._http import BODY_EXCERPT_CHARS as BODY_EXCERPT_CHARS
from ._http import CONTEXT_WINDOW_PATTERN as CONTEXT_WINDOW_PATTERN
from ._http import DEFAULT_CLIENTS_PER_HOST as DEFAULT_CLIENTS_PER_HOST
from ._http import DEFAULT_CONNECT_TIMEOUT as DEFAULT_CONNECT_TIMEOUT
from ._http import DEFAULT_HTTP_CONFIG as DEFAULT_HTTP_CONFIG
from ._http import DEFAULT_IDLE_TIMEOUT as DEFAULT_IDLE_TIMEOUT
from ._http import DEFAULT_KEEPALIVE_EXPIRY as DEFAULT_KEEPALIVE_EXPIRY
from ._http import DEFAULT_MAX_CONNECTIONS as DEFAULT_MAX_CONNECTIONS
from ._http import DEFAULT_MAX_KEEPALIVE_CONNECTIONS as DEFAULT_MAX_KEEPALIVE_CONNECTIONS
from ._http import DEFAULT_MAX_RESPONSE_BYTES as DEFAULT_MAX_RESPONSE_BYTES
from ._http import DEFAULT_POOL_TIMEOUT as DEFAULT_POOL_TIMEOUT
from ._http import DEFAULT_READ_TIMEOUT as DEFAULT_READ_TIMEOUT
from ._http import DEFAULT_TIMEOUTS as DEFAULT_TIMEOUTS
from ._http import DEFAULT_WRITE_TIMEOUT as DEFAULT_WRITE_TIMEOUT
from ._http import HttpConfig as HttpConfig
from ._http import HttpTimeouts as HttpTimeouts
from ._http import error_for_status as error_for_status
from ._http import error_for_transport as error_for_transport
from ._http import retry_after_seconds as retry_after_seconds
from ._openai import OpenAICompatible as OpenAICompatible

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
