"""The eval code uses specexec's public API only: no module of ``specexec.bench.eval`` imports a
private module of another package or a private name of another module (its own package's
private modules, ``from ._file import Case``, are its own)."""

from __future__ import annotations

import ast
import math
from pathlib import Path

import pytest

import specexec
from specexec import PolicyError, Query, Router, SimulatedBackend

EVAL = Path(__file__).resolve().parents[2] / "benchmarks" / "eval"


def private_imports(path: Path) -> list[str]:
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if any(p.startswith("_") for p in a.name.split("."))]
        elif isinstance(node, ast.ImportFrom):
            module = node.module or ""
            if module == "__future__":
                continue
            if node.level == 0 and any(p.startswith("_") for p in module.split(".")):
                found.append(f"from {module} import ...")
            found += [f"from {'.' * node.level}{module} import {a.name}" for a in node.names if a.name.startswith("_")]
    return found


@pytest.mark.parametrize("path", sorted(EVAL.glob("*.py")), ids=lambda p: p.name)
def test_eval_modules_import_no_private_names(path: Path) -> None:
    assert private_imports(path) == []


def test_the_names_eval_needs_are_public_and_documented() -> None:
    from specexec.bench.bench import CostLine, confirm
    from specexec.config import decode_toml, keyed_table_error
    from specexec.routing import router_toml

    for obj in (specexec.worst_case_cost, decode_toml, keyed_table_error, router_toml, CostLine, confirm):
        assert (obj.__doc__ or "").strip()


def test_worst_case_cost_is_the_whole_input_bound_and_max_tokens_output() -> None:
    b = SimulatedBackend("b", 0.1, input_price=2.0, output_price=10.0)
    q = Query("hello there", max_tokens=50)
    assert specexec.worst_case_cost(b, q) == (b.count_input_tokens(q) * 2.0 + 50 * 10.0) / 1e6


def test_router_toml_writes_minimal_policies_that_load_as_given() -> None:
    from specexec.routing import router_toml

    data = {
        "default": "math",
        "routes": {
            "math": {"mode": "failover", "candidates": ["mini", "mid"], "order": "as_listed", "retries": 0},
            "chat": {"mode": "hedge", "candidates": ["mini"], "delay": "p90"},
        },
        "select": [{"kind": "rule", "route": "math", "metadata": {"task_class": "sum"}, "name": "class-sum"}],
    }
    text = router_toml(data)
    assert "retries" not in text and "fallback_delay" not in text  # their modes' defaults
    assert '[routes.math]\nmode = "failover"\ncandidates = ["mini", "mid"]\norder = "as_listed"' in text
    router = Router.from_toml(text)
    assert router.routes["math"].candidates == ("mini", "mid") and router.routes["chat"].delay == "p90"
    assert router.default == "math" and router_toml(data) == text
    assert not math.isnan(router.routes["chat"].max_delay)


def test_router_toml_names_the_key_path_of_bad_data() -> None:
    from specexec.routing import router_toml

    with pytest.raises(PolicyError) as info:
        router_toml({"default": "a", "routes": {"a": {"mode": "single", "candidates": ["x"], "retries": "no"}}})
    assert "retries" in info.value.path
    with pytest.raises(PolicyError) as info:
        router_toml({"routes": {}})
    assert info.value.path == "$"
