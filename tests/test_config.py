"""specexec.config: one TOML format for backends (services, probe daemon, benchmarks)."""

from __future__ import annotations

from pathlib import Path

import msgspec
import pytest

import specexec
from specexec.backends import Anthropic, OpenAICompatible

CONFIG = """
[[backends]]
kind = "openai"
name = "mini"
base_url = "http://127.0.0.1:9/v1"
model = "m-2026-01-01"
api_key_env = "SPECEXEC_TEST_KEY"
region = "us"
input_price = 0.15
output_price = 0.6
limits = { rpm = 100, max_concurrency = 4 }

[[backends]]
kind = "anthropic"
name = "claude"
model = "c-20260101"

[[backends]]
kind = "simulated"
name = "sim"
latency = { kind = "lognormal", median = 0.04, sigma = 0.25 }
errors = { unavailable = 0.01 }

[health]
min_samples = 10

[probe]
interval = 5.0
"""


def test_runtime_from_config(tmp_path: Path) -> None:
    path = tmp_path / "backends.toml"
    path.write_text(CONFIG)
    rt = specexec.Runtime.from_config(path)
    backends = rt.backends
    assert isinstance(backends["mini"], OpenAICompatible) and isinstance(backends["claude"], Anthropic)
    assert isinstance(backends["sim"], specexec.SimulatedBackend)
    assert backends["mini"].input_price == 0.15 and backends["mini"].region == "us"
    assert rt.health_config.min_samples == 10
    assert rt.health("mini").concurrency.limit == 4


def test_backend_config_errors_say_where(tmp_path: Path) -> None:
    path = tmp_path / "bad.toml"
    path.write_text(
        '[[backends]]\nkind = "simulated"\nname = "a"\n\n'
        '[[backends]]\nkind = "openai"\nname = "b"\ninput_price = "cheap"\n'
    )
    with pytest.raises(specexec.PolicyError) as info:
        specexec.config.load_backends(path)
    assert info.value.path == "$.backends[1].input_price" and str(path) in str(info.value)


def test_duplicate_and_unknown_kinds() -> None:
    with pytest.raises(specexec.PolicyError, match="two backends are named 'a'"):
        specexec.config.RuntimeConfig.load(
            '[[backends]]\nkind="simulated"\nname="a"\n[[backends]]\nkind="simulated"\nname="a"\n'
        )
    with pytest.raises(specexec.PolicyError, match="backends\\[0\\]"):
        specexec.config.RuntimeConfig.load('[[backends]]\nkind="carrier-pigeon"\nname="a"\n')


# --------------------------------------------------------------------------- bad values say where (issue 9, item 18)

SIM = '[[backends]]\nkind = "simulated"\nname = "a"\n'
OPENAI = '[[backends]]\nkind = "openai"\nname = "a"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'
ANTHROPIC = '[[backends]]\nkind = "anthropic"\nname = "a"\nbase_url = "http://127.0.0.1:9/v1"\nmodel = "m"\n'

BAD_VALUES = [
    # (TOML, key path of the error, a word the message must hold)
    (SIM + "limits = { rpm = 0 }", "$.backends[0].limits.rpm", "rpm"),
    (SIM + "limits = { rpm = -5 }", "$.backends[0].limits.rpm", "rpm"),
    (SIM + "limits = { rpm = nan }", "$.backends[0].limits.rpm", "rpm"),
    (SIM + "limits = { rpm = inf }", "$.backends[0].limits.rpm", "rpm"),
    (SIM + "limits = { tpm = -1.0 }", "$.backends[0].limits.tpm", "tpm"),
    (SIM + "limits = { max_concurrency = -1 }", "$.backends[0].limits.max_concurrency", "at least 1"),
    (SIM + "limits = { max_concurrency = 0 }", "$.backends[0].limits.max_concurrency", "never admit"),
    (SIM + "errors = { unavailable = 2 }", "$.backends[0].errors.unavailable", "[0, 1]"),
    (SIM + "errors = { unavailable = nan }", "$.backends[0].errors.unavailable", "[0, 1]"),
    (SIM + "errors = { timeout = 0.6, unavailable = 0.6 }", "$.backends[0].errors", "add up to"),
    (SIM + "stall = nan", "$.backends[0].stall", "stall"),
    (SIM + "stall = 1.5", "$.backends[0].stall", "stall"),
    (SIM + "latency = -1", "$.backends[0].latency", "latency"),
    (SIM + "latency = nan", "$.backends[0].latency", "latency"),
    (SIM + "latency = inf", "$.backends[0].latency", "latency"),
    (SIM + 'latency = { kind = "constant", value = inf }', "$.backends[0].latency.value", "value"),
    (SIM + 'latency = { kind = "lognormal", median = inf }', "$.backends[0].latency.median", "median"),
    (SIM + 'latency = { kind = "lognormal", median = nan }', "$.backends[0].latency.median", "median"),
    (SIM + 'latency = { kind = "lognormal", median = 0.04, sigma = inf }', "$.backends[0].latency.sigma", "sigma"),
    (SIM + 'latency = { kind = "uniform", low = 0, high = inf }', "$.backends[0].latency.high", "high"),
    (SIM + 'latency = { kind = "uniform", low = 2, high = 1 }', "$.backends[0].latency.high", "low"),
    (
        SIM + 'latency = { kind = "scaled", base = { kind = "constant", value = 1 }, factor = nan }',
        "$.backends[0].latency.factor",
        "factor",
    ),
    (
        SIM
        + 'latency = { kind = "mixture", components = [{ weight = inf, dist = { kind = "constant", value = 1 } }] }',
        "$.backends[0].latency.components[0].weight",
        "weight",
    ),
    (SIM + "input_price = nan", "$.backends[0].input_price", "input_price"),
    (SIM + "output_price = inf", "$.backends[0].output_price", "output_price"),
    (SIM + "output_price = -0.5", "$.backends[0].output_price", "output_price"),
    (OPENAI + "input_price = nan", "$.backends[0].input_price", "input_price"),
    (ANTHROPIC + "output_price = -inf", "$.backends[0].output_price", "output_price"),
    (SIM + "output_tokens = -3", "$.backends[0].output_tokens", "output_tokens"),
    (SIM + "context_window = 0", "$.backends[0].context_window", "positive"),
    (SIM + "breaker = { cooldown = nan }", "$.backends[0].breaker.cooldown", "cooldown"),
    (SIM + "breaker = { cooldown = inf }", "$.backends[0].breaker.cooldown", "cooldown"),
    (OPENAI + 'headers = { x-trace = "a\\nb" }', "$.backends[0].headers.x-trace", "newline"),
    (OPENAI + 'headers = { x-trace = "a\\r\\nX-Evil: 1" }', "$.backends[0].headers.x-trace", "newline"),
    (OPENAI + 'headers = { "x trace" = "v" }', "$.backends[0].headers", "header name"),
    (ANTHROPIC + 'headers = { x-trace = "a\\nb" }', "$.backends[0].headers.x-trace", "newline"),
    (OPENAI.replace("http://127.0.0.1:9/v1", "ftp://127.0.0.1/"), "$.backends[0].base_url", "base_url"),
    (OPENAI + 'api_key_env = "sk-not a name"', "$.backends[0].api_key_env", "api_key_env"),
    (OPENAI + "timeout = nan", "$.backends[0].timeout", "seconds"),
    (OPENAI + "timeout = 0", "$.backends[0].timeout", "seconds"),
    (OPENAI + "timeout = { read = nan }", "$.backends[0].timeout.read", "read"),
    (OPENAI + "timeout = { connect = inf }", "$.backends[0].timeout.connect", "connect"),
    (OPENAI + "timeout = { conect = 1 }", "$.backends[0].timeout.conect", "unknown key"),
    (OPENAI + "http = { max_connections = 0 }", "$.backends[0].http.max_connections", ">= 1"),
    (OPENAI + "http = { keepalive_expiry = inf }", "$.backends[0].http.keepalive_expiry", "keepalive_expiry"),
    ("[health]\nslices = 1000000", "$.health.slices", "at most"),
    ("[health]\nwindow = nan", "$.health.window", "window"),
    ("[health]\nwindow = inf", "$.health.window", "window"),
    ("[health]\nprobe_max_age = inf", "$.health.probe_max_age", "probe_max_age"),
    ("[health]\nmax_retry_after = nan", "$.health.max_retry_after", "max_retry_after"),
    ("[health]\nauth_cooldown = inf", "$.health.auth_cooldown", "auth_cooldown"),
    ("[health]\nauth_cooldown = -1", "$.health.auth_cooldown", "auth_cooldown"),
    ("[health.breaker]\ncooldown = inf", "$.health.breaker.cooldown", "cooldown"),
    ("[health.breaker]\nerror_rate = nan", "$.health.breaker.error_rate", "error_rate"),
    ("[health.breaker]\nwindow = nan", "$.health.breaker.window", "window"),
    ("[health.breaker]\nwindow = inf", "$.health.breaker.window", "window"),
]


@pytest.mark.parametrize(
    ("text", "path", "word"), BAD_VALUES, ids=[f"{i}:{c[0].rsplit(chr(10), 1)[-1]}" for i, c in enumerate(BAD_VALUES)]
)
def test_bad_values_are_policy_errors_with_file_and_key_path(tmp_path: Path, text: str, path: str, word: str) -> None:
    file = tmp_path / "x.toml"
    file.write_text(text + "\n")
    with pytest.raises(specexec.PolicyError) as info:
        specexec.Runtime.from_config(file)
    error = info.value
    assert (error.path, error.source) == (path, str(file)), str(error)
    assert word in str(error) and f"(at {path})" in str(error) and str(file) in str(error)


def test_errors_keep_the_index_of_the_backend_that_raised(tmp_path: Path) -> None:
    file = tmp_path / "x.toml"
    file.write_text(SIM + "\n" + SIM.replace('"a"', '"b"') + "limits = { rpm = nan }\n")
    with pytest.raises(specexec.PolicyError) as info:
        specexec.Runtime.from_config(file)
    assert info.value.path == "$.backends[1].limits.rpm"


# --------------------------------------------------------------------------- unknown sections (item 19)


@pytest.mark.parametrize(
    ("text", "section", "suggestion"),
    [
        ("[heath]\nwindow = 1.0\n", "[heath]", "[health]"),
        ('[[backend]]\nkind = "simulated"\nname = "a"\n', "[[backend]]", "[[backends]]"),
        ("[helth.breaker]\ncooldown = 1.0\n", "[helth]", "[health]"),
    ],
)
def test_unknown_sections_are_errors_with_a_suggestion(
    tmp_path: Path, text: str, section: str, suggestion: str
) -> None:
    file = tmp_path / "x.toml"
    file.write_text(text)
    for load in (specexec.Runtime.from_config, specexec.config.load_backends, specexec.config.RuntimeConfig.load):
        with pytest.raises(specexec.PolicyError) as info:
            load(file)
        message = str(info.value)
        assert f"unknown section {section}" in message and f"did you mean {suggestion}?" in message
        assert str(file) in message and info.value.path == f"$.{section.strip('[]')}"
        assert "[health]" in message and "[[backends]]" in message  # the known ones


def test_unknown_top_level_key_is_an_error() -> None:
    with pytest.raises(specexec.PolicyError) as info:
        specexec.Runtime.from_config('helth = 3\n[[backends]]\nkind = "simulated"\nname = "a"\n')
    assert info.value.path == "$.helth" and "did you mean" in str(info.value)


def test_other_readers_sections_are_declared_and_ignored(tmp_path: Path) -> None:
    assert {"probe", "bench", "eval", "router", "routes"} <= specexec.config.OTHER_SECTIONS
    text = SIM + "".join(f"\n[{name}]\nanything = 1\n" for name in sorted(specexec.config.OTHER_SECTIONS))
    assert [b.name for b in specexec.config.load_backends(text)] == ["a"]
    assert list(specexec.Runtime.from_config(text).backends) == ["a"]


def test_callers_declare_their_own_sections_with_extra(tmp_path: Path) -> None:
    text = SIM + "\n[myapp]\nport = 8080\n"
    with pytest.raises(specexec.PolicyError, match=r"unknown section \[myapp\]"):
        specexec.Runtime.from_config(text)
    assert specexec.config.RuntimeConfig.load(text, extra=("myapp",)).backends[0].name == "a"
    assert [b.name for b in specexec.config.load_backends(text, extra=("myapp",))] == ["a"]
    assert list(specexec.Runtime.from_config(text, extra=("myapp",)).backends) == ["a"]


# --------------------------------------------------------------------------- timeouts and http (item 20)


@pytest.mark.parametrize("base", [OPENAI, ANTHROPIC], ids=["openai", "anthropic"])
def test_http_timeouts_and_pools_from_toml(base: str) -> None:
    from specexec.backends import HttpConfig, HttpTimeouts

    rt = specexec.Runtime.from_config(
        base + "timeout = { connect = 1.5, read = 7 }\nhttp = { max_connections = 4, clients_per_host = 1 }\n"
    )
    backend = rt.backends["a"]
    assert backend.timeout == HttpTimeouts(connect=1.5, read=7.0)  # type: ignore[attr-defined]
    assert backend.http == HttpConfig(max_connections=4, clients_per_host=1)  # type: ignore[attr-defined]
    number = specexec.Runtime.from_config(base + "timeout = 7\n").backends["a"]
    assert number.timeout == HttpTimeouts(read=7.0)  # type: ignore[attr-defined]
    default = specexec.Runtime.from_config(base).backends["a"]
    assert default.timeout == HttpTimeouts() and default.http == HttpConfig()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- breaker and context window (item 9c)


@pytest.mark.parametrize("base", [SIM, OPENAI, ANTHROPIC], ids=["simulated", "openai", "anthropic"])
def test_breaker_and_context_window_reach_every_backend_kind(base: str) -> None:
    rt = specexec.Runtime.from_config(
        base + "context_window = 8192\nbreaker = { failure_threshold = 3, cooldown = 30 }\n"
    )
    backend = rt.backends["a"]
    assert backend.breaker == specexec.BreakerConfig(failure_threshold=3, cooldown=30.0)  # type: ignore[attr-defined]
    assert backend.context_window == 8192  # type: ignore[attr-defined]
    plain = specexec.Runtime.from_config(base).backends["a"]
    assert plain.breaker is None and plain.context_window is None  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- decode_toml


class _Inner(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    x: int = 0

    def __post_init__(self) -> None:
        if self.x < 0:
            raise ValueError("x must be >= 0")  # a plain ValueError, without a path of its own


class _Middle(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    items: tuple[_Inner, ...] = ()


class _Outer(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    middle: _Middle = _Middle()


def test_nested_post_init_errors_keep_the_path_of_the_struct_that_raised(tmp_path: Path) -> None:
    from specexec._toml import decode_toml

    file = tmp_path / "n.toml"
    file.write_text("[[middle.items]]\nx = 1\n[[middle.items]]\nx = -1\n")
    with pytest.raises(specexec.PolicyError) as info:
        decode_toml(file, _Outer)
    assert (info.value.path, info.value.source) == ("$.middle.items[1]", str(file))
    assert str(info.value) == f"{file}: x must be >= 0 (at $.middle.items[1])"


def test_star_still_skips_every_unknown_section() -> None:
    config = specexec.config.RuntimeConfig.load(SIM + "\n[heath]\nwindow = 1.0\n", extra=("*",))
    assert [b.name for b in config.backends] == ["a"]
