"""The daemon's config: a superset of ``specexec.config.RuntimeConfig`` with ``[probe]``."""

from __future__ import annotations

from pathlib import Path

import pytest

from specexec import PolicyError, Query, Runtime, SimulatedBackend
from specexec.probes import Canary, ProbeConfig
from specexec.probes._config import DEFAULT_BIND, DEFAULT_INTERVAL, DEFAULT_QUERY

EXAMPLE = """
[[backends]]
kind = "openai"
name = "mini-us"
base_url = "http://127.0.0.1:9/v1"
model = "gpt-4o-mini-2024-07-18"
api_key_env = "OPENAI_API_KEY"
input_price = 0.15
output_price = 0.60

[[backends]]
kind = "simulated"
name = "sim"
latency = 0.04

[health]
window = 30.0

[probe]
interval = 30.0
jitter = 0.2
timeout = 5.0
max_concurrent = 4
daily_budget = 0.5
snapshot = "/tmp/probes.msgpack"

[probe.canary]
query = { prompt = "What is 2 + 2? Answer with a number only.", max_tokens = 4 }
expect = "4"
every = 5

[probe.backends.mini-us]
interval = 10.0
pinned_model = "gpt-4o-mini-2024-07-18"

[probe.backends.sim]
canary = false
enabled = false
"""


def test_example_loads_with_overrides_and_defaults() -> None:
    config = ProbeConfig.load(EXAMPLE)
    p = config.probe
    assert (p.interval, p.jitter, p.timeout, p.max_concurrent, p.daily_budget) == (30.0, 0.2, 5.0, 4, 0.5)
    assert p.query == DEFAULT_QUERY == Query("ping", max_tokens=1)
    assert p.bind == DEFAULT_BIND == "127.0.0.1"
    assert isinstance(p.canary, Canary) and p.canary.expect == "4" and p.canary.every == 5
    mini, sim = config.build_backends()
    t = config.target(mini)
    assert (t.interval, t.jitter, t.timeout, t.canary, t.enabled) == (10.0, 0.2, 5.0, p.canary, True)
    assert t.pinned_model == "gpt-4o-mini-2024-07-18"
    assert t.stale_after == pytest.approx(3 * 10.0 * 1.2 + 5.0)
    s = config.target(sim)
    assert (s.interval, s.canary, s.enabled, s.pinned_model) == (30.0, None, False, "sim")
    assert config.health.window == 30.0
    assert config.api_key_envs() == ["OPENAI_API_KEY"]


def test_defaults() -> None:
    config = ProbeConfig.load('[[backends]]\nkind = "simulated"\nname = "a"\n')
    t = config.target(config.build_backends()[0])
    assert (t.interval, t.jitter, t.unhealthy_after, t.query) == (DEFAULT_INTERVAL, 0.1, 1, DEFAULT_QUERY)
    assert config.probe.snapshot is None and config.probe.http


def test_a_service_reads_the_same_file(tmp_path: Path) -> None:
    path = tmp_path / "probes.toml"
    path.write_text(EXAMPLE)
    runtime = Runtime.from_config(path)
    assert sorted(runtime.backends) == ["mini-us", "sim"]
    assert ProbeConfig.load(path).probe.interval == 30.0


def test_the_other_readers_sections_are_accepted_and_ignored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Before: `specexec probe --check` refused a shared file with [routes] ("unknown key 'routes'").
    from specexec._cli import main as specexec_main
    from specexec.config import OTHER_SECTIONS

    others = sorted(OTHER_SECTIONS - {"probe", "eval"})  # the daemon reads [probe] and [eval] itself
    assert {"routes", "router", "policies", "bench"} <= set(others)
    path = tmp_path / "shared.toml"
    path.write_text(EXAMPLE + "".join(f"\n[{name}]\nanything = 1\n" for name in others))
    config = ProbeConfig.load(path)
    assert config.probe.interval == 30.0 and config.eval is None
    assert ProbeConfig.load(path.read_text()).probe.interval == 30.0  # TOML text, too
    assert specexec_main(["probe", "--config", str(path), "--check"]) == 0
    assert "ok (2 backend(s))" in capsys.readouterr().out
    assert sorted(Runtime.from_config(path).backends) == ["mini-us", "sim"]  # a service reads it as well
    with pytest.raises(PolicyError, match="routs"):  # a typo is still an error
        ProbeConfig.load(EXAMPLE + "\n[routs]\nx = 1\n")


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("[probe]\ninterval = 0.5\n", "$.probe.interval", "Expected `float` >= 1.0"),
        ("[probe]\njitter = 1.5\n", "$.probe.jitter", "< 1.0"),
        ("[probe]\ntimeout = 0\n", "$.probe.timeout", ">= 0.05"),
        ("[probe]\nmax_concurrent = 0\n", "$.probe.max_concurrent", ">= 1"),
        ("[probe]\ndaily_budget = -1.0\n", "$.probe.daily_budget", ">= 0.0"),
        ("[probe]\nintervall = 5.0\n", "$.probe.intervall", "unknown key"),
        ('[probe]\ninterval = "fast"\n', "$.probe.interval", "Expected `float`"),
        ("[probe.backends.nope]\ninterval = 5.0\n", "$.probe.backends.nope", "no backend named 'nope'"),
        ("[probe.backends.a]\ninterval = 0.1\n", "$.probe.backends.a.interval", ">= 1.0"),
        ("[probe.backends.a]\ncanary = true\n", "$.probe.backends.a", "canary = true"),
        ('[probe.canary]\nquery = { prompt = "q" }\n', "$.probe.canary", "needs `expect` or `verify`"),
        (
            '[probe.canary]\nquery = { prompt = "q", max_tokens = 0 }\nexpect = "4"\n',
            "$.probe.canary.query.max_tokens",
            "max_tokens must be a positive int",
        ),
        ("[probe]\nport = 70000\n", "$.probe.port", "<= 65535"),
        ("[prob]\ninterval = 5.0\n", "$.prob", "unknown section [prob]; did you mean [probe]?"),
    ],
)
def test_errors_name_the_file_and_key_path(tmp_path: Path, text: str, path: str, message: str) -> None:
    file = tmp_path / "probes.toml"
    file.write_text('[[backends]]\nkind = "simulated"\nname = "a"\n\n' + text)
    with pytest.raises(PolicyError) as info:
        ProbeConfig.load(file)
    assert info.value.path == path
    assert info.value.source == str(file)
    assert message in str(info.value)


def test_api_keys_are_not_read_from_the_file() -> None:
    text = '[[backends]]\nkind = "openai"\nname = "x"\napi_key = "sk-abc"\n'
    with pytest.raises(PolicyError, match="secrets are not read from files"):
        ProbeConfig.load(text)


@pytest.mark.parametrize(
    ("canary", "reply", "accepted"),
    [
        (Canary(Query("2+2?"), expect="4"), " 4\n", True),
        (Canary(Query("2+2?"), expect="four"), "FOUR", True),
        (Canary(Query("2+2?"), expect="4"), "5", False),
        (
            ProbeConfig.load(
                '[probe.canary]\nquery = { prompt = "q" }\nverify = [{ kind = "regex", pattern = "^4$" }]\n'
            ).probe.canary,
            "4",
            True,
        ),
        (
            ProbeConfig.load(
                '[probe.canary]\nquery = { prompt = "q" }\nverify = [{ kind = "regex", pattern = "^4$" }]\n'
            ).probe.canary,
            "44",
            False,
        ),
    ],
)
def test_canary_verdict(canary: Canary | None, reply: str, accepted: bool) -> None:
    import anyio

    from specexec import Response

    assert canary is not None
    verdict = anyio.run(canary.verdict, Response(reply))
    assert verdict.accept is accepted
    if not accepted:
        assert verdict.reason


def test_backends_built_from_config_are_the_runtime_kinds() -> None:
    config = ProbeConfig.load('[[backends]]\nkind = "simulated"\nname = "a"\nreported_model = "x"\n')
    (backend,) = config.build_backends()
    assert isinstance(backend, SimulatedBackend) and backend.reported_model == "x"
