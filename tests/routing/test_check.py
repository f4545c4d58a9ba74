"""``Router.check``: a router's routes against a runtime's backends, at start-up, not per request."""

from __future__ import annotations

from pathlib import Path

import pytest

import specexec
from specexec import Policy, PolicyError, Runtime
from tests.helpers import Scripted


def test_a_route_naming_an_unknown_backend_fails_the_check_with_the_file_and_the_route(tmp_path: Path) -> None:
    path = tmp_path / "router.toml"
    path.write_text(
        'default = "chat"\n'
        '[routes.chat]\nmode = "hedge"\ncandidates = ["alpha-us", "alpha-euu"]\n'
        '[routes.easy]\nmode = "single"\ncandidates = ["alpha-us"]\n'
    )
    router = specexec.Router.from_toml(path)
    rt = Runtime([Scripted("alpha-us", 0.01), Scripted("alpha-eu", 0.01)])
    with pytest.raises(PolicyError) as info:
        router.check(rt)
    assert info.value.path == "$.routes.chat.candidates[1]"
    assert info.value.source == str(path)
    assert "unknown backend 'alpha-euu'" in str(info.value)


def test_a_router_whose_backends_all_exist_passes_the_check() -> None:
    router = specexec.Router({"a": Policy.single("x"), "b": Policy.race(["x", "y"])}, default="a")
    router.check(Runtime([Scripted("x", 0.01), Scripted("y", 0.01)]))  # no error
