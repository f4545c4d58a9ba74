"""Every bad ``[probe]`` value is a ``PolicyError`` with file and key path, at load and in ``--check``.

``--check`` builds everything the daemon builds at start (backends, health config, probe
states, schedule) and sends nothing, so a config it calls ok does not die at start.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from specexec import PolicyError
from specexec.probes import ProbeConfig, main

BACKEND = '[[backends]]\nkind = "simulated"\nname = "a"\n\n'


@pytest.mark.parametrize(
    ("text", "path", "message"),
    [
        ("[probe]\nsnapshot_interval = 1e-9\n", "$.probe.snapshot_interval", ">= 1.0"),
        ("[probe]\nsnapshot_interval = inf\n", "$.probe.snapshot_interval", "<= 86400"),
        ("[probe]\nslices = 10000000\n", "$.probe.slices", "<= 60"),
        ("[probe]\nslices = 0\n", "$.probe.slices", ">= 1"),
        ("[probe]\ninterval = inf\n", "$.probe.interval", "<= 86400"),
        ("[probe]\ninterval = nan\n", "$.probe.interval", ""),
        ("[probe]\ntimeout = 1e-9\n", "$.probe.timeout", ">= 0.05"),
        ("[probe]\ntimeout = inf\n", "$.probe.timeout", "<= 600"),
        ("[probe]\nwindow = 1e-300\n", "$.probe.window", ">= 1.0"),
        ("[probe]\nwindow = inf\n", "$.probe.window", "<= 604800"),
        ("[probe]\nstale_after = 0.001\n", "$.probe.stale_after", ">= 1.0"),
        ("[probe]\nstale_after = inf\n", "$.probe.stale_after", "<= 604800"),
        ("[probe]\nmax_concurrent = 9223372036854775807\n", "$.probe.max_concurrent", "<= 1024"),
        ("[probe]\ndaily_budget = inf\n", "$.probe.daily_budget", "<= 1000000"),
        ("[probe]\ndaily_budget = nan\n", "$.probe.daily_budget", ""),
        ('[probe]\nsnapshot = "a\\u0000b"\n', "$.probe.snapshot", "NUL"),
        ('[probe]\nbind = "local host"\n', "$.probe.bind", "an IP address or a host name"),
        ('[probe]\nbind = "127.0.0.1\\u0000"\n', "$.probe.bind", "an IP address or a host name"),
        ("[probe.backends.a]\ntimeout = 1e-9\n", "$.probe.backends.a.timeout", ">= 0.05"),
        ("[probe.backends.a]\nstale_after = inf\n", "$.probe.backends.a.stale_after", "<= 604800"),
        ("[probe.backends.a]\ninterval = inf\n", "$.probe.backends.a.interval", "<= 86400"),
    ],
)
def test_bad_values_name_the_file_and_key_path(tmp_path: Path, text: str, path: str, message: str) -> None:
    file = tmp_path / "probes.toml"
    file.write_text(BACKEND + text)
    with pytest.raises(PolicyError) as info:
        ProbeConfig.load(file)
    assert (info.value.path, info.value.source) == (path, str(file))
    assert message in str(info.value)
    assert main(["--config", str(file), "--check"]) == 2


@pytest.mark.parametrize(
    "text",
    [
        "[probe]\nsnapshot_interval = 1.0\nslices = 60\ntimeout = 0.05\ninterval = 86400\n",
        '[probe]\nbind = "::1"\n',
        '[probe]\nbind = "localhost"\n',
        '[probe]\nbind = "0.0.0.0"\n',
        '[probe]\nbind = "probes.internal.example"\n',
    ],
)
def test_values_at_the_bounds_are_accepted(tmp_path: Path, text: str, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "probes.toml"
    file.write_text(BACKEND + text)
    ProbeConfig.load(file)
    assert main(["--config", str(file), "--check"]) == 0
    assert "ok (1 backend(s))" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("backend", "path", "message"),
    [
        # Found only when the backend is built: --check builds every backend, as start does.
        ('kind = "openai"\nname = "o"\n', "$.backends", "model"),
        ('kind = "openai"\nname = "o"\nmodel = "m"\nbase_url = "not a url"\n', "$.backends", "base_url"),
        ('kind = "openai"\nname = "o"\nmodel = "m"\ninput_price = -1.0\n', "$.backends", "input_price"),
    ],
)
def test_check_builds_every_backend_and_fails_where_start_would(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], backend: str, path: str, message: str
) -> None:
    file = tmp_path / "probes.toml"
    file.write_text(f"[[backends]]\n{backend}\n[probe]\nhttp = false\n")
    assert main(["--config", str(file), "--check"]) == 2
    err = capsys.readouterr().err
    assert str(file) in err and f"(at {path}" in err and message in err
    assert main(["--config", str(file), "--no-http"]) == 2  # start fails the same way, before anything runs
    assert capsys.readouterr().err == err


def test_check_applies_the_command_line_overrides(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    file = tmp_path / "probes.toml"
    file.write_text(BACKEND)
    assert main(["--config", str(file), "--check", "--port", "70000"]) == 2
    assert "--port" in capsys.readouterr().err
    assert main(["--config", str(file), "--check", "--bind", "not a host"]) == 2
    assert "--bind" in capsys.readouterr().err
    assert main(["--config", str(file), "--check", "--snapshot", str(tmp_path / "s.msgpack")]) == 0
    assert not (tmp_path / "s.msgpack").exists()  # nothing written, nothing sent
