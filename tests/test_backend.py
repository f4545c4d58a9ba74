"""The shared backend base: prices, limits and identity are checked when a backend is built."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import pytest

import specexec
from specexec import CallableBackend, Limits, PolicyError, SimulatedBackend
from specexec.backends import Anthropic, OpenAICompatible


async def _echo(query: specexec.Query) -> str:
    return "ok"


FACTORIES: dict[str, Callable[..., object]] = {
    "callable": lambda **kw: CallableBackend("x", _echo, **kw),
    "simulated": lambda **kw: SimulatedBackend("x", **kw),
    "openai": lambda **kw: OpenAICompatible("x", base_url="http://127.0.0.1:9/v1", model="m", **kw),
    "anthropic": lambda **kw: Anthropic("x", base_url="http://127.0.0.1:9/v1", model="m", **kw),
}

BAD_PRICES: list[Any] = [math.nan, math.inf, -math.inf, -0.01, "0.15", None, True]


@pytest.mark.parametrize("kind", sorted(FACTORIES))
@pytest.mark.parametrize("field", ["input_price", "output_price"])
@pytest.mark.parametrize("price", BAD_PRICES, ids=repr)
def test_bad_prices_are_rejected_by_every_backend(kind: str, field: str, price: Any) -> None:
    with pytest.raises(PolicyError) as info:
        FACTORIES[kind](**{field: price})
    assert info.value.path == f"$.backends.x.{field}"
    assert (
        field in str(info.value) and "finite number >= 0" in str(info.value) and "USD per 1M tokens" in str(info.value)
    )


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_good_prices_are_kept_as_floats(kind: str) -> None:
    backend: Any = FACTORIES[kind](input_price=0, output_price=2.5)
    assert (backend.input_price, backend.output_price) == (0.0, 2.5)
    assert isinstance(backend.input_price, float)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"rpm": 0}, "$.rpm"),
        ({"rpm": -1.0}, "$.rpm"),
        ({"rpm": math.nan}, "$.rpm"),
        ({"rpm": math.inf}, "$.rpm"),
        ({"tpm": 0.0}, "$.tpm"),
        ({"tpm": math.nan}, "$.tpm"),
        ({"max_concurrency": 0}, "$.max_concurrency"),
        ({"max_concurrency": -1}, "$.max_concurrency"),
        ({"max_concurrency": True}, "$.max_concurrency"),
    ],
    ids=repr,
)
def test_limits_that_could_never_admit_or_are_not_numbers_are_rejected(kwargs: dict[str, Any], path: str) -> None:
    with pytest.raises(PolicyError) as info:
        Limits(**kwargs)
    assert info.value.path == path


def test_good_limits() -> None:
    assert Limits(rpm=60, tpm=1e6, max_concurrency=1) == Limits(60.0, 1e6, 1)
    assert Limits() == Limits(None, None, None)


@pytest.mark.parametrize("kind", sorted(FACTORIES))
def test_limits_must_be_a_limits_struct(kind: str) -> None:
    with pytest.raises(PolicyError) as info:
        FACTORIES[kind](limits={"rpm": 10})
    assert info.value.path == "$.backends.x.limits" and "Limits" in str(info.value)
