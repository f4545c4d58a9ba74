"""The process-default runtime: ``specexec.configure`` and ``specexec.run`` / ``stream`` without ``runtime=``.

Runs on trio (virtual time) and asyncio+uvloop like the engine tests; the pooled HTTP clients
are tested over loopback HTTP in ``tests/backends/test_default_runtime_http.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

import specexec
from specexec import _default

from .conftest import Timing
from .helpers import Scripted

SIM_TOML = """
[[backends]]
kind = "simulated"
name = "alpha-us"
latency = { kind = "constant", value = 0.05 }
reply = "4"

[[backends]]
kind = "simulated"
name = "beta-eu"
latency = { kind = "constant", value = 0.02 }
reply = "4"
"""


@pytest.fixture(autouse=True)
def _fresh_default() -> Iterator[None]:
    """Every test starts from, and leaves, an unconfigured process default."""
    saved = _default._runtime
    _default._runtime = None
    try:
        yield
    finally:
        _default._runtime = saved


# ------------------------------------------------------------------------- configure + run


@pytest.mark.anyio
async def test_configure_backends_then_run_names_them(timing: Timing) -> None:
    a, b = Scripted("a", 0.2), Scripted("b", 0.05)
    rt = specexec.configure(backends=[a, b])
    assert specexec.default_runtime() is rt
    result = await specexec.run("q", specexec.Policy.hedge(["a", "b"], delay=0.1))
    assert result.backend == "b"
    assert result.latency == timing.approx(0.15)


@pytest.mark.anyio
async def test_configure_from_a_config_file_and_a_toml_policy(tmp_path: Any) -> None:
    path = tmp_path / "specexec.toml"
    path.write_text(SIM_TOML)
    specexec.configure(path)
    policy = specexec.Policy.from_toml('mode = "race"\ncandidates = ["alpha-us", "beta-eu"]\n')
    result = await specexec.run("What is 2 + 2?", policy)
    assert (result.backend, result.response.text) == ("beta-eu", "4")


@pytest.mark.anyio
async def test_configure_a_runtime_makes_it_the_default() -> None:
    rt = specexec.Runtime(backends=[Scripted("a", 0.01)])
    assert specexec.configure(rt) is rt
    result = await specexec.run("q", specexec.Policy.single("a"))
    assert result.backend == "a"
    assert rt.health("a").successes == 1


@pytest.mark.anyio
async def test_unknown_backend_says_how_to_register_it() -> None:
    with pytest.raises(specexec.PolicyError) as info:
        await specexec.run("q", specexec.Policy.single("alpha-us"))
    message = str(info.value)
    assert "unknown backend 'alpha-us'" in message
    assert "specexec.configure(" in message
    assert "$.candidates[0]" in message


@pytest.mark.anyio
async def test_unknown_backend_in_an_own_runtime_says_add_backend() -> None:
    rt = specexec.Runtime()
    with pytest.raises(specexec.PolicyError, match=r"add_backend"):
        await specexec.run("q", specexec.Policy.single("x"), runtime=rt)


@pytest.mark.anyio
async def test_configure_refuses_to_replace_an_entered_default() -> None:
    # before: the entered default was silently swapped for one never entered (its feeds not running)
    specexec.configure(backends=[Scripted("a", 0.01)])
    async with specexec.default_runtime():
        with pytest.raises(RuntimeError, match="entered"):
            specexec.configure(backends=[Scripted("b", 0.01)])
        assert (await specexec.run("q", specexec.Policy.single("a"))).backend == "a"
    specexec.configure(backends=[Scripted("b", 0.01)])  # once it has exited: fine
    assert (await specexec.run("q", specexec.Policy.single("b"))).backend == "b"


def test_configure_refuses_a_runtime_with_other_arguments() -> None:
    with pytest.raises(TypeError, match="either a Runtime or"):
        specexec.configure(specexec.Runtime(), backends=[Scripted("a", 0.01)])


@pytest.mark.anyio
async def test_stream_without_runtime_uses_the_configured_default(timing: Timing) -> None:
    fast_first = specexec.SimulatedBackend("a", 0.5, ttft=0.2, token_time=0.01, reply="one two three", output_tokens=3)
    other = specexec.SimulatedBackend("b", 0.5, ttft=0.05, token_time=0.1, reply="four five six", output_tokens=3)
    specexec.configure(backends=[fast_first, other])
    async with specexec.stream("q", specexec.Policy.race(["a", "b"])) as s:
        text = "".join([d async for d in s])
    assert s.result.backend == "b"
    assert text == "four five six"
    assert s.result.response.ttft == timing.approx(0.05)
