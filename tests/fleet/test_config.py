"""Fleet config: TOML loading, validation errors that name the file and key path, round trips."""

from __future__ import annotations

from pathlib import Path

import pytest

from specexec.bench.fleet import (
    Brownout,
    Constant,
    Deployment,
    FleetConfig,
    FleetConfigError,
    LogNormal,
    Mixture,
    Outage,
    RateLimit,
    Weighted,
    main,
)

GOOD = """
seed = 3

[[deployments]]
name = "a"
provider = "alpha"
region = "us-east"
model = "alpha-1"

[[deployments]]
name = "b"
provider = "beta"
api = "anthropic"
region = "eu-west"
model = "beta-1"
latency = { kind = "lognormal", median = 0.05, sigma = 0.3, tail_prob = 0.05, tail_factor = 10 }
answers = { "ping?" = "pong" }
faults = { error_503 = 0.1, slow_drip_interval = 0.5 }
rpm = 60

[[events]]
kind = "brownout"
region = "us-east"
start = 10
end = 70
factor = 5.0

[[events]]
kind = "outage"
deployments = ["b"]
start = 5
mode = "reset"
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "fleet.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_load_good_config(tmp_path: Path) -> None:
    cfg = FleetConfig.load(write(tmp_path, GOOD))
    assert cfg.seed == 3
    a, b = cfg.deployments
    assert (a.api, a.latency, a.output_tokens, a.reply, a.rpm) == ("openai", Constant(), 16, "lorem", None)
    assert b.latency == LogNormal(median=0.05, sigma=0.3, tail_prob=0.05, tail_factor=10.0)
    assert b.quota_retry_after == 1.0  # 60 s / 60 rpm
    assert b.faults.error_503 == 0.1 and b.base_path == "/b/v1"
    assert cfg.events == (
        Brownout(region="us-east", start=10, end=70, factor=5.0),
        Outage(deployments=("b",), start=5, mode="reset"),
    )
    assert cfg.deployment("b") is b


def test_error_names_file_and_key_path(tmp_path: Path) -> None:
    bad = GOOD.replace("median = 0.05", 'median = "fast"')
    path = write(tmp_path, bad)
    with pytest.raises(FleetConfigError) as e:
        FleetConfig.load(path)
    msg = str(e.value)
    assert msg.startswith(f"{path}: Expected `float`, got `str`")
    assert "$.deployments[1].latency.median" in msg
    assert e.value.path == "$.deployments[1].latency.median"
    assert e.value.source == str(path)


@pytest.mark.parametrize(
    ("change", "allowed"),
    [
        (('api = "anthropic"', 'api = "anthropc"'), "expected one of 'anthropic', 'openai'; did you mean 'anthropic'?"),
        (('mode = "reset"', 'mode = "rest"'), "expected one of 'error', 'reset'; did you mean 'reset'?"),
    ],
)
def test_a_bad_enum_lists_the_allowed_values(tmp_path: Path, change: tuple[str, str], allowed: str) -> None:
    text = GOOD.replace(*change, 1)
    assert text != GOOD
    with pytest.raises(FleetConfigError) as e:
        FleetConfig.load(write(tmp_path, text))
    assert allowed in str(e.value)


@pytest.mark.parametrize(
    ("change", "path", "words"),
    [
        (("rpm = 60", "rpm = 60\nrpn = 3"), "$.deployments[1]", "unknown field `rpn`"),
        (('kind = "lognormal"', 'kind = "gaussian"'), "$.deployments[1].latency.kind", "Invalid value 'gaussian'"),
        (("error_503 = 0.1", "error_503 = 1.5"), "$.deployments[1].faults.error_503", "<= 1.0"),
        (('api = "anthropic"', 'api = "grpc"'), "$.deployments[1].api", "Invalid enum value 'grpc'"),
        (('name = "b"', 'name = "a"'), "$", "duplicate deployment name 'a'"),
        (('deployments = ["b"]', 'deployments = ["zz"]'), "$", "unknown deployment 'zz'"),
        (('region = "us-east"\nstart', 'region = "mars"\nstart'), "$", "region 'mars'"),
        (("end = 70", "end = 1"), "$.events[0]", "must be after start"),
        (('name = "a"', 'name = "a/b"'), "$.deployments[0].name", "matching regex"),
    ],
)
def test_errors(tmp_path: Path, change: tuple[str, str], path: str, words: str) -> None:
    text = GOOD.replace(*change, 1)
    assert text != GOOD
    with pytest.raises(FleetConfigError) as e:
        FleetConfig.load(write(tmp_path, text))
    assert e.value.path == path, str(e.value)
    assert words in str(e.value)
    assert "fleet.toml" in str(e.value)


def test_invalid_toml(tmp_path: Path) -> None:
    with pytest.raises(FleetConfigError, match=r"fleet\.toml: invalid TOML"):
        FleetConfig.load(write(tmp_path, "[[deployments]\n"))


def test_programmatic_configs_are_validated() -> None:
    cfg = FleetConfig(deployments=(Deployment(name="a", provider="p", region="r", model="m", per_token=-1.0),))
    with pytest.raises(FleetConfigError, match=r"<config>: Expected `float` >= 0.0") as e:
        cfg.validated()
    assert e.value.path == "$.deployments[0].per_token"
    with pytest.raises(ValueError, match="duplicate"):
        FleetConfig(deployments=(Deployment(name="a", provider="p", region="r", model="m"),) * 2)


def test_toml_round_trip(tmp_path: Path) -> None:
    cfg = FleetConfig(
        seed=9,
        deployments=(
            Deployment(
                name="a",
                provider="p",
                region="r",
                model="m",
                latency=Mixture(
                    components=(
                        Weighted(weight=0.95, dist=LogNormal(median=0.04, sigma=0.25)),
                        Weighted(weight=0.05, dist=LogNormal(median=0.4)),
                    )
                ),
                answers={'a "quoted" question?\n': "yes\t!", "ünïcode": "ok"},
            ),
        ),
        events=(RateLimit(deployments=("a",), start=1.5, retry_after=2.0),),
    )
    assert FleetConfig.loads(cfg.to_toml()) == cfg
    cfg.dump(tmp_path / "x.toml")
    assert FleetConfig.load(tmp_path / "x.toml") == cfg


def test_default_config() -> None:
    cfg = FleetConfig.default()
    assert len(cfg.deployments) == 6
    assert len({d.provider for d in cfg.deployments}) == 3
    assert {d.region for d in cfg.deployments} == {"us-east", "eu-west", "ap-south"}
    assert {d.api for d in cfg.deployments} == {"openai", "anthropic"}
    for d in cfg.deployments:
        assert isinstance(d.latency, LogNormal)
        assert 0.04 <= d.latency.median <= 0.15 and d.latency.tail_prob == 0.05
        assert 0.002 <= d.per_token <= 0.005
    assert FleetConfig.loads(cfg.to_toml()) == cfg


def test_cli_reports_config_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, GOOD.replace("median = 0.05", 'median = "x"'))
    assert main(["--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert str(path) in err and "$.deployments[1].latency.median" in err
    assert main(["--config", str(tmp_path / "missing.toml")]) == 2
    assert "cannot read" in capsys.readouterr().err
