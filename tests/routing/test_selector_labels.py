"""An LLM router's labels are route names: one naming no route is an error when the router is built."""

from __future__ import annotations

from pathlib import Path

import pytest

from specexec import Policy, PolicyError, Router, routing

ROUTES = {n: Policy.single(n) for n in ("simple", "code", "hard")}


def test_a_label_naming_no_route_is_refused_in_python() -> None:
    with pytest.raises(PolicyError) as info:
        Router(ROUTES, [routing.rule("code", regex="def"), routing.llm("r", ["simple", "hardd"])], default="simple")
    assert info.value.path == "$.select[1].labels[1]"
    message = str(info.value)
    assert "'hardd'" in message and "simple, code, hard" in message


def test_labels_that_are_routes_are_accepted() -> None:
    router = Router(ROUTES, [routing.llm("r", ["hard", "simple"])], default="simple")
    assert router.selectors[0].labels == ["hard", "simple"]  # type: ignore[attr-defined]


TOML = """
default = "simple"
[routes.simple]
mode = "single"
candidates = ["a"]
[routes.hard]
mode = "single"
candidates = ["b"]

[[select]]
kind = "llm"
backend = "router-llm"
labels = ["simple", "complex"]
"""


def test_a_label_naming_no_route_is_refused_in_toml(tmp_path: Path) -> None:
    file = tmp_path / "router.toml"
    file.write_text(TOML, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        Router.from_toml(file)
    assert (info.value.path, info.value.source) == ("$.select[0].labels[1]", str(file))
    assert "'complex'" in str(info.value) and "simple, hard" in str(info.value)
