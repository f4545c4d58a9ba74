"""Backends and runtime settings from TOML — one format shared by services, the probe daemon
and the benchmark CLI.

.. code-block:: toml

    [[backends]]
    kind = "openai"                       # OpenAI-compatible chat completions (vLLM, Ollama, ...)
    name = "mini-us"
    base_url = "https://api.openai.com/v1"
    model = "gpt-4o-mini-2024-07-18"
    api_key_env = "OPENAI_API_KEY"        # the key itself never goes in a file
    provider = "openai"
    region = "us-east"
    input_price = 0.15                    # USD per 1M tokens
    output_price = 0.60
    limits = { rpm = 500, max_concurrency = 32 }
    context_window = 128000               # tokens; a query that cannot fit is not sent here
    breaker = { failure_threshold = 3, cooldown = 30 }   # this backend's own breaker
    timeout = { connect = 2.0, read = 60.0 }             # or a number: the read timeout
    http = { max_connections = 32 }                      # specexec.backends.HttpConfig

    [[backends]]
    kind = "anthropic"
    name = "haiku"
    model = "claude-3-5-haiku-20241022"
    api_key_env = "ANTHROPIC_API_KEY"

    [[backends]]
    kind = "simulated"
    name = "sim"
    latency = { kind = "lognormal", median = 0.04, sigma = 0.25 }
    errors = { unavailable = 0.01 }

    [health]
    window = 60.0

Every value is checked when the file is loaded, with the same checks the backend
constructors make (each entry is built once while it is validated): a bad value is a
``PolicyError`` naming the file and the key path, ``PolicyError: backends.toml: Expected
`float`, got `str` (at $.backends[1].input_price)``; NaN and infinities are refused wherever
a number is read.

Sections. ``[[backends]]`` and ``[health]`` are this module's; the sections in
``OTHER_SECTIONS`` belong to other readers of the same file (``[probe]``: the probe daemon,
...) and are skipped. Any other top-level name is an error that suggests the closest known
one (``unknown section [heath]; did you mean [health]?``). A program that keeps its own
section in the file declares it: ``RuntimeConfig.load(path, extra=("myapp",))`` (or
``Runtime.from_config(path, extra=("myapp",))``).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import msgspec

from ._backend import Backend, Limits
from ._checks import check_finite_fields, check_number
from ._distributions import Distribution
from ._errors import PolicyError
from ._health import BreakerConfig, HealthConfig
from ._simulated import SimulatedBackend
from ._toml import decode_toml as decode_toml
from ._toml import keyed_table_error as keyed_table_error
from ._toml import validation_error as validation_error
from .backends import HttpConfig, HttpTimeouts
from .backends._secrets import credential_in_url, is_credential_header

__all__ = [
    "OTHER_SECTIONS",
    "AnthropicConfig",
    "BackendConfig",
    "OpenAIConfig",
    "RuntimeConfig",
    "SimulatedConfig",
    "decode_toml",
    "keyed_table_error",
    "load_backends",
    "validation_error",
]

OTHER_SECTIONS: frozenset[str] = frozenset({"probe", "bench", "eval", "router", "routes", "policies"})
"""Top-level sections that other readers of a shared config file own, skipped by
``RuntimeConfig.load``: ``[probe]`` (the probe daemon, ``probes``), ``[bench]`` and
``[eval]`` (benchmark and evaluation tools), ``[router]`` and ``[routes]`` (the routing
layer), ``[policies]`` (policies kept beside their backends, as in benchmark scenarios).
Any other unknown section is an error; declare your own with ``extra=``."""

_HTTP_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
"""An HTTP header name (RFC 9110 ``token``)."""
_CONTROL = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
"""Characters a header value must not hold: CR and LF would split the request (header
injection), the other control characters are refused by HTTP/1.1 servers."""


class _Common(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    name: str
    provider: str = ""
    region: str = "default"
    input_price: float = 0.0
    output_price: float = 0.0
    limits: Limits = Limits()
    context_window: int | None = None
    breaker: BreakerConfig | None = None

    def __post_init__(self) -> None:
        self._check()
        try:
            self.build()  # the constructor's own checks, so that a loaded config always builds
        except PolicyError as exc:
            raise _relative(exc, self.name) from None

    def _check(self) -> None:
        """Checks of this entry that its backend's constructor does not make."""

    def build(self) -> Backend:
        """Make the backend this entry describes."""
        raise NotImplementedError


def _relative(exc: PolicyError, name: str) -> PolicyError:
    """A constructor's error (paths ``$.backends.NAME.field``) relative to this entry (``$.field``);
    the loader prefixes the entry's own path (``$.backends[0]``)."""
    message = str(exc).removesuffix(f" (at {exc.path})")
    prefix = f"$.backends.{name}"
    path = exc.path
    if path == prefix or path.startswith(prefix + "."):
        path = "$" + path[len(prefix) :]
    return PolicyError(message, path=path)


def _check_headers(headers: Mapping[str, str]) -> None:
    for i, (key, value) in enumerate(headers.items()):
        if not _HTTP_TOKEN.fullmatch(key):  # never echo it either: a key pasted as a name is still a key
            raise PolicyError(
                f"header name number {i + 1} is not a valid HTTP header name "
                "(letters, digits and !#$%&'*+-.^_`|~ only)",
                path="$.headers",
            )
        if _CONTROL.search(value):  # never echo the value: it may be a credential
            raise PolicyError(
                f"the value of header {key!r} contains a newline or another control character; "
                "a header value is one line of text",
                path=f"$.headers.{key}",
            )


class _HttpCommon(_Common, frozen=True):
    """What the HTTP backends share: extra headers, timeouts, connection pools.

    Credentials are refused here (a ``PolicyError`` naming the key path, never the value): a
    header whose name says it holds one (``authorization``, ``x-api-key``, ``api-key``,
    ``cookie``, ``*token*`` …) and a ``base_url`` with user info or a secret query parameter
    (``?key=``, ``?api_key=``, ``?token=`` …). They come from the environment: ``api_key_env``,
    or ``headers_env = { NAME = "VARIABLE" }`` for any other header.
    """

    headers: dict[str, str] = msgspec.field(default_factory=dict)
    headers_env: dict[str, str] = msgspec.field(default_factory=dict)
    timeout: HttpTimeouts | float = HttpTimeouts()
    http: HttpConfig = HttpConfig()

    _key_header: ClassVar[str] = ""  # how api_key_env's key is sent, for the errors

    def _check(self) -> None:
        _check_headers(self.headers)
        for key in self.headers:
            if is_credential_header(key):
                raise PolicyError(
                    f"credentials are not read from files: remove the header {key!r} and put its value in an "
                    f'environment variable: api_key_env = "VARIABLE" sends the API key as {self._key_header}; '
                    f'headers_env = {{ "{key}" = "VARIABLE" }} sends a variable\'s value as any other header',
                    path=f"$.headers.{key}",
                )
        what = credential_in_url(getattr(self, "base_url", ""))
        if what is not None:
            raise PolicyError(
                f"credentials are not read from files: base_url holds {what}; remove it and put the credential "
                f'in an environment variable: api_key_env = "VARIABLE" sends the API key as {self._key_header}; '
                'headers_env = { "HEADER" = "VARIABLE" } sends a variable\'s value as another header',
                path="$.base_url",
            )
        if isinstance(self.timeout, HttpTimeouts):
            check_finite_fields(self.timeout, "$.timeout")
        else:
            check_number(self.timeout, "$.timeout", gt=0.0, unit="seconds: the read timeout", what="timeout")
        check_finite_fields(self.http, "$.http")

    @property
    def timeouts(self) -> HttpTimeouts:
        """``timeout`` as ``HttpTimeouts`` (a number is the read timeout)."""
        if isinstance(self.timeout, HttpTimeouts):
            return self.timeout
        return HttpTimeouts(read=float(self.timeout))


class OpenAIConfig(_HttpCommon, tag="openai", frozen=True):
    """An OpenAI-compatible chat-completions endpoint."""

    base_url: str = "https://api.openai.com/v1"
    model: str = ""
    api_key_env: str | None = None
    stream: bool | None = None

    _key_header: ClassVar[str] = "Authorization: Bearer …"

    def build(self) -> Backend:
        """An ``OpenAICompatible`` backend."""
        from .backends import OpenAICompatible

        return OpenAICompatible(
            self.name,
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            headers=self.headers,
            headers_env=self.headers_env,
            stream=self.stream,
            provider=self.provider or "openai",
            region=self.region,
            input_price=self.input_price,
            output_price=self.output_price,
            limits=self.limits,
            context_window=self.context_window,
            breaker=self.breaker,
            timeout=self.timeouts,
            http=self.http,
        )


class AnthropicConfig(_HttpCommon, tag="anthropic", frozen=True):
    """An Anthropic Messages API endpoint."""

    base_url: str = "https://api.anthropic.com/v1"
    model: str = ""
    api_key_env: str = "ANTHROPIC_API_KEY"
    anthropic_version: str = "2023-06-01"
    stream: bool | None = None

    _key_header: ClassVar[str] = "x-api-key"

    def build(self) -> Backend:
        """An ``Anthropic`` backend."""
        from .backends import Anthropic

        return Anthropic(
            self.name,
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            anthropic_version=self.anthropic_version,
            headers=self.headers,
            headers_env=self.headers_env,
            stream=self.stream,
            provider=self.provider or "anthropic",
            region=self.region,
            input_price=self.input_price,
            output_price=self.output_price,
            limits=self.limits,
            context_window=self.context_window,
            breaker=self.breaker,
            timeout=self.timeouts,
            http=self.http,
        )


class SimulatedConfig(_Common, tag="simulated", frozen=True):
    """A ``SimulatedBackend`` (tests, benchmarks, demos)."""

    latency: float | Distribution = 0.05
    seed: int = 0
    errors: dict[str, float] = msgspec.field(default_factory=dict)
    stall: float = 0.0
    reply: str = "ok"
    output_tokens: int = 16
    model: str | None = None
    reported_model: str | None = None

    def build(self) -> Backend:
        """A ``SimulatedBackend``."""
        return SimulatedBackend(
            self.name,
            self.latency,
            seed=self.seed,
            errors=self.errors,
            stall=self.stall,
            reply=self.reply,
            output_tokens=self.output_tokens,
            model=self.model,
            reported_model=self.reported_model,
            provider=self.provider or "sim",
            region=self.region,
            input_price=self.input_price,
            output_price=self.output_price,
            limits=self.limits,
            context_window=self.context_window,
            breaker=self.breaker,
        )


BackendConfig = OpenAIConfig | AnthropicConfig | SimulatedConfig
"""One ``[[backends]]`` entry (tagged by ``kind``)."""


class RuntimeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A runtime's backends and health settings (``Runtime.from_config``)."""

    backends: tuple[BackendConfig, ...] = ()
    health: HealthConfig = HealthConfig()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for i, b in enumerate(self.backends):
            if b.name in seen:
                raise PolicyError(
                    f"two backends are named {b.name!r}: give each a name of its own", path=f"$.backends[{i}].name"
                )
            seen.add(b.name)

    @classmethod
    def load(cls, source: str | Path, *, extra: Sequence[str] = ()) -> RuntimeConfig:
        """Load from a TOML file path or TOML text.

        Top-level sections other than this struct's fields are errors, except
        ``OTHER_SECTIONS`` and the names in ``extra`` (sections the caller reads itself),
        which are skipped; ``extra=("*",)`` skips every unknown section (not recommended:
        typos then go unnoticed).
        """
        return decode_toml(source, cls, ignore=(*OTHER_SECTIONS, *_names(extra)), sections=True)

    def build_backends(self) -> list[Backend]:
        """Make every backend."""
        return [b.build() for b in self.backends]


def _names(extra: Sequence[str]) -> tuple[str, ...]:
    if isinstance(extra, str):  # extra="myapp" means the section, not its letters
        return (extra,)
    return tuple(extra)


def load_backends(source: str | Path, *, extra: Sequence[str] = ()) -> list[Backend]:
    """The backends of a TOML file (or text) with ``[[backends]]`` entries (sections as for
    ``RuntimeConfig.load``)."""
    return RuntimeConfig.load(source, extra=extra).build_backends()
