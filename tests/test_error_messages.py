"""Error messages that say what was expected: config enums, verifier signatures, Query's bad input,
backend errors."""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import specexec
from specexec import BackendError, Policy, PolicyError, Query, Response, Verdict, verifiers
from specexec.config import RuntimeConfig
from specexec.routing import Router
from tests.helpers import Scripted

# -- 1: a bad enum value in a TOML file lists the allowed values ------------------------------


def _load_error(load: Callable[[Path], object], tmp_path: Path, text: str) -> PolicyError:
    file = tmp_path / "c.toml"
    file.write_text(text, encoding="utf-8")
    with pytest.raises(PolicyError) as info:
        load(file)
    assert info.value.source == str(file)
    assert str(info.value).startswith(f"{file}: ")
    return info.value


@pytest.mark.parametrize(
    ("text", "path", "bad", "allowed"),
    [
        ('[[backends]]\nkind = "opeani"\nname = "x"\n', "$.backends[0].kind", "opeani", ["openai", "anthropic"]),
        (
            '[[backends]]\nkind = "simulated"\nname = "x"\nlatency = { kind = "lognorm", median = 0.04 }\n',
            "$.backends[0].latency.kind",
            "lognorm",
            ["lognormal", "constant"],
        ),
    ],
)
def test_backend_config_enum_errors_list_the_allowed_values(
    tmp_path: Path, text: str, path: str, bad: str, allowed: list[str]
) -> None:
    error = _load_error(RuntimeConfig.load, tmp_path, text)
    assert error.path == path
    message = str(error)
    assert f"Invalid value {bad!r}" in message and "expected one of" in message
    for value in allowed:
        assert repr(value) in message


@pytest.mark.parametrize(
    ("key", "value", "allowed"),
    [
        ("mode", "hedj", ["single", "failover", "cascade", "hedge", "race", "pick"]),
        ("commit", "first", ["first_token", "complete"]),
        ("order", "lat", ["as_listed", "latency", "cost", "weighted", "p2c"]),
    ],
)
def test_policy_enum_errors_list_the_allowed_values(tmp_path: Path, key: str, value: str, allowed: list[str]) -> None:
    text = 'candidates = ["a", "b"]\n' + f"{key} = {value!r}\n".replace("'", '"')
    error = _load_error(Policy.from_toml, tmp_path, text)
    assert error.path == f"$.{key}"
    assert "expected one of " + ", ".join(repr(v) for v in sorted(allowed)) in str(error)


def test_a_close_enum_value_is_suggested(tmp_path: Path) -> None:
    error = _load_error(Policy.from_toml, tmp_path, 'candidates = ["a"]\nmode = "hedj"\n')
    assert "did you mean 'hedge'?" in str(error)


ROUTER = """
default = "simple"
[routes.simple]
mode = "single"
candidates = ["a"]
"""


@pytest.mark.parametrize(
    ("extra", "path", "allowed"),
    [
        ('[[select]]\nkind = "rul"\nroute = "simple"\n', "$.select[0].kind", ["rule", "classifier", "llm"]),
        (
            '[[select]]\nkind = "semantic"\nexemplars = { simple = ["hi"] }\nmethod = "centre"\n',
            "$.select[0].method",
            ["max", "centroid"],
        ),
        ('[budget]\nlimit_usd = 1.0\nperiod = "week"\n', "$.budget.period", ["hour", "day", "month"]),
        ('[routes.other]\nmode = "hedj"\ncandidates = ["a"]\n', "$.routes.other.mode", ["hedge", "race"]),
    ],
)
def test_router_file_enum_errors_list_the_allowed_values(
    tmp_path: Path, extra: str, path: str, allowed: list[str]
) -> None:
    error = _load_error(Router.from_toml, tmp_path, ROUTER + extra)
    assert error.path == path
    assert "expected one of" in str(error)
    for value in allowed:
        assert repr(value) in str(error)


# -- 5: a verifier of the wrong shape is refused when the policy is built ---------------------


def _none() -> bool:
    return True


def _three(query: Query, response: Response, extra: int) -> bool:
    return True


def _kw_only(*, query: Query, response: Response) -> bool:
    return True


@pytest.mark.parametrize(
    "bad", [_none, _three, lambda q: True, _kw_only, functools.partial(_three, Query("q"), Response("x"))]
)
def test_a_verifier_of_the_wrong_arity_is_a_policy_error(bad: Callable[..., Any]) -> None:
    with pytest.raises(PolicyError) as info:
        Policy.hedge(["a", "b"], verify=[verifiers.json_valid(), bad])
    assert info.value.path == "$.verify[1]"
    assert "(query, response)" in str(info.value)
    with pytest.raises(PolicyError) as info:
        Policy.hedge(["a"], verify_prefix=[bad])
    assert info.value.path == "$.verify_prefix[0]"


@pytest.mark.parametrize("bad", [_none, _three, _kw_only, 3])
def test_a_wrong_verifier_nested_in_all_of_or_any_of_is_a_policy_error_with_its_path(bad: Any) -> None:
    nested = verifiers.any_of(verifiers.json_valid(), verifiers.all_of(verifiers.length(min=1), bad))
    with pytest.raises(PolicyError) as info:
        Policy.hedge(["a", "b"], verify=[verifiers.length(min=1), nested])
    assert info.value.path == "$.verify[1].verifiers[1].verifiers[1]"
    assert "(query, response)" in str(info.value)
    with pytest.raises(PolicyError) as info:
        Policy.hedge(["a"], verify_prefix=[verifiers.all_of(bad)])
    assert info.value.path == "$.verify_prefix[0].verifiers[0]"


class _Method:
    def check(self, query: Query, response: Response) -> bool:
        return True

    def __call__(self, query: Query, response: Response) -> bool:
        return True


async def _async_two(query: Query, response: Response) -> Verdict:
    return Verdict(True, "ok")


def _star(*args: object) -> bool:
    return True


def _defaults(query: Query, response: Response, strict: bool = False) -> bool:
    return True


GOOD: list[object] = [
    _async_two,
    _star,
    _defaults,
    functools.partial(_three, extra=1),
    functools.partial(_defaults, strict=True),
    _Method().check,
    _Method(),
    lambda q, r: True,
    verifiers.all_of(verifiers.json_valid(), verifiers.length(max=5)),
    verifiers.regex("x"),
    max,  # a builtin: accepted (its signature cannot be inspected)
]


@pytest.mark.parametrize("good", GOOD)
def test_verifiers_of_every_good_shape_are_accepted(good: Any) -> None:
    assert Policy.hedge(["a", "b"], verify=[good]).verify == (good,)


@pytest.mark.anyio
async def test_accepted_verifier_shapes_run() -> None:
    """The shapes accepted at build time also run: partial, bound method, async, *args."""
    seen: list[str] = []

    def record(tag: str, query: Query, response: Response) -> bool:
        seen.append(tag)
        return True

    class Checker:
        async def check(self, query: Query, response: Response) -> bool:
            seen.append("method")
            return True

    def star(*args: object) -> bool:
        seen.append(f"star{len(args)}")
        return True

    policy = Policy.single("a", verify=[functools.partial(record, "partial"), Checker().check, star])
    async with specexec.Runtime([Scripted("a", 0.01, text="ok")]) as rt:
        result = await rt.run("q", policy)
    assert result.response.text == "ok"
    assert seen == ["partial", "method", "star2"]


# -- 6: Query's bad input is a PolicyError (still a ValueError) --------------------------------


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"prompt": "q", "max_tokens": 0}, "$.max_tokens"),
        ({"prompt": "q", "max_tokens": -3}, "$.max_tokens"),
        ({}, "$.prompt"),
        ({"prompt": "q", "messages": (specexec.Message("user", "x"),)}, "$.messages"),
        ({"prompt": "q", "response_format": {"type": "xml"}}, "$.response_format.type"),
        ({"prompt": "q", "tool_choice": "always"}, "$.tool_choice"),
    ],
)
def test_query_bad_input_is_a_policy_error(kwargs: dict[str, Any], path: str) -> None:
    with pytest.raises(PolicyError) as info:
        Query(**kwargs)
    assert isinstance(info.value, ValueError) and isinstance(info.value, specexec.SpecExecError)
    assert info.value.path == path


def test_query_max_tokens_error_is_still_catchable_as_value_error() -> None:
    with pytest.raises(ValueError, match="max_tokens must be a positive int, got 0"):
        Query("q", max_tokens=0)


# -- 8: a backend error reads as a sentence with its details after it -------------------------


def test_backend_error_details_are_set_off_from_the_message() -> None:
    error = specexec.Unavailable("connection refused", backend="b1", status=503, request_id="r-1", body="busy")
    assert str(error) == "connection refused (backend=b1, status=503, request_id=r-1, body='busy')"
    assert str(BackendError("boom", backend="b1")) == "boom (backend=b1)"
    assert str(BackendError("boom")) == "boom"
    assert str(specexec.RateLimited(status=429)) == "rate limited (status=429)"


def test_verify_prefix_with_commit_complete_is_a_policy_error() -> None:
    # Before: accepted and ignored, so the refusal it was meant to block streamed to the caller.
    with pytest.raises(PolicyError, match="put these verifiers in verify") as info:
        Policy.failover(["a", "b"], verify_prefix=[verifiers.not_refusal()], commit="complete")
    assert info.value.path == "$.verify_prefix"
    Policy.failover(["a", "b"], verify=[verifiers.not_refusal()], commit="complete")  # the way to say it
