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

Errors name the file and the key path: ``PolicyError: backends.toml: Expected `float`, got
`str` (at $.backends[1].input_price)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import msgspec

from ._backend import Backend, Limits
from ._distributions import Distribution
from ._health import HealthConfig
from ._simulated import ERROR_KINDS, SimulatedBackend
from ._toml import decode_toml

__all__ = [
    "AnthropicConfig",
    "BackendConfig",
    "OpenAIConfig",
    "RuntimeConfig",
    "SimulatedConfig",
    "load_backends",
]


class _Common(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    name: str
    provider: str = ""
    region: str = "default"
    input_price: float = 0.0
    output_price: float = 0.0
    limits: Limits = Limits()

    def build(self) -> Backend:
        """Make the backend this entry describes."""
        raise NotImplementedError


class OpenAIConfig(_Common, tag="openai", frozen=True):
    """An OpenAI-compatible chat-completions endpoint."""

    base_url: str = "https://api.openai.com/v1"
    model: str = ""
    api_key_env: str | None = None
    headers: dict[str, str] = msgspec.field(default_factory=dict)
    stream: bool = False

    def build(self) -> Backend:
        """An ``OpenAICompatible`` backend."""
        from .backends import OpenAICompatible

        return OpenAICompatible(
            self.name,
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            headers=self.headers,
            stream=self.stream,
            provider=self.provider or "openai",
            region=self.region,
            input_price=self.input_price,
            output_price=self.output_price,
            limits=self.limits,
        )


class AnthropicConfig(_Common, tag="anthropic", frozen=True):
    """An Anthropic Messages API endpoint."""

    base_url: str = "https://api.anthropic.com/v1"
    model: str = ""
    api_key_env: str = "ANTHROPIC_API_KEY"
    anthropic_version: str = "2023-06-01"
    stream: bool = False

    def build(self) -> Backend:
        """An ``Anthropic`` backend."""
        from .backends import Anthropic

        return Anthropic(
            self.name,
            base_url=self.base_url,
            model=self.model,
            api_key_env=self.api_key_env,
            anthropic_version=self.anthropic_version,
            stream=self.stream,
            provider=self.provider or "anthropic",
            region=self.region,
            input_price=self.input_price,
            output_price=self.output_price,
            limits=self.limits,
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
        )

    def __post_init__(self) -> None:
        for kind in self.errors:
            if kind not in ERROR_KINDS:
                raise ValueError(f"unknown error kind {kind!r}; known: {', '.join(sorted(ERROR_KINDS))}")


BackendConfig = OpenAIConfig | AnthropicConfig | SimulatedConfig
"""One ``[[backends]]`` entry (tagged by ``kind``)."""


class RuntimeConfig(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A runtime's backends and health settings (``Runtime.from_config``)."""

    backends: tuple[BackendConfig, ...] = ()
    health: HealthConfig = HealthConfig()

    def __post_init__(self) -> None:
        seen: set[str] = set()
        for b in self.backends:
            if b.name in seen:
                raise ValueError(f"two backends are named {b.name!r}")
            seen.add(b.name)

    @classmethod
    def load(cls, source: str | Path, *, extra: Sequence[str] = ()) -> RuntimeConfig:
        """Load from a TOML file path or TOML text; top-level tables named in ``extra`` are
        ignored (other tools' sections of a shared file)."""
        return decode_toml(source, cls, ignore=extra)

    def build_backends(self) -> list[Backend]:
        """Make every backend."""
        return [b.build() for b in self.backends]


def load_backends(source: str | Path) -> list[Backend]:
    """The backends of a TOML file (or text) with ``[[backends]]`` entries."""
    return RuntimeConfig.load(source, extra=("*",)).build_backends()
