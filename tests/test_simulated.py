"""SimulatedBackend and latency distributions: seeded, virtual-time exact, faults by rate."""

from __future__ import annotations

import random

import pytest

import specexec
from specexec import LogNormal, SimulatedBackend, slow_tail

pytestmark = [pytest.mark.anyio]


async def test_constant_latency_is_exact_in_virtual_time(timing: object) -> None:
    backend = SimulatedBackend("s", 0.04, output_tokens=5)
    import anyio

    t0 = anyio.current_time()
    response = await backend.complete(specexec.Query("hello", max_tokens=3))
    assert anyio.current_time() - t0 == pytest.approx(0.04, abs=getattr(timing, "tolerance", 0))
    assert response.text == "ok" and response.usage.output_tokens == 3 and response.model == "s"


def test_seeded_draws_repeat_and_seed_key_is_order_independent() -> None:
    def draws(seed: int) -> list[float]:
        rng = random.Random(seed)
        dist = slow_tail(LogNormal(0.04, 0.25), 0.05, 10)
        return [dist.sample(rng) for _ in range(1000)]

    assert draws(1) == draws(1) and draws(1) != draws(2)
    values = sorted(draws(3))
    assert 0.03 < values[500] < 0.05  # median near 40 ms
    assert values[990] > 0.2  # the slow 5 % tail

    async def latency_of(backend: SimulatedBackend, key: int) -> float:
        t0 = trio.current_time()
        await backend.complete(specexec.Query("q", metadata={"seed_key": key}))
        return trio.current_time() - t0

    async def main() -> tuple[list[float], list[float]]:
        a = SimulatedBackend("a", LogNormal(0.04, 0.5), seed=7)
        b = SimulatedBackend("a", LogNormal(0.04, 0.5), seed=7)
        forward = [await latency_of(a, k) for k in range(5)]
        backward = [await latency_of(b, k) for k in reversed(range(5))]
        return forward, backward[::-1]

    import trio.testing

    forward, backward = trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    assert forward == pytest.approx(backward, abs=1e-12)


async def test_errors_by_kind_and_rate(timing: object) -> None:
    backend = SimulatedBackend("s", 0.01, errors={"rate_limited": 1.0}, retry_after=3.0)
    with pytest.raises(specexec.RateLimited) as info:
        await backend.complete(specexec.Query("q"))
    assert info.value.retry_after == 3.0
    with pytest.raises(ValueError, match="unknown error kind"):
        SimulatedBackend("s", errors={"gremlins": 0.5})
    with pytest.raises(ValueError, match="add up to more than 1"):
        SimulatedBackend("s", errors={"timeout": 0.6, "unavailable": 0.6})


async def test_slowdown_window(timing: object) -> None:
    import anyio

    now = anyio.current_time()
    backend = SimulatedBackend("s", 0.1, slowdowns=[specexec.Slowdown(now, now + 1.0, 5.0)])
    t0 = anyio.current_time()
    await backend.complete(specexec.Query("q"))
    assert anyio.current_time() - t0 == pytest.approx(0.5, abs=getattr(timing, "tolerance", 0) * 5)


@pytest.mark.parametrize(
    ("kwargs", "path"),
    [
        ({"errors": {"timeout": float("nan")}}, "$.backends.s.errors.timeout"),
        ({"errors": {"timeout": 1.5}}, "$.backends.s.errors.timeout"),
        ({"errors": {"timeout": -0.1}}, "$.backends.s.errors.timeout"),
        ({"errors": {"gremlins": 0.5}}, "$.backends.s.errors.gremlins"),
        ({"errors": {"timeout": 0.6, "unavailable": 0.6}}, "$.backends.s.errors"),
        ({"stall": float("nan")}, "$.backends.s.stall"),
        ({"stall": 2.0}, "$.backends.s.stall"),
        ({"stall": 0.5, "errors": {"timeout": 0.6}}, "$.backends.s.errors"),
        ({"output_tokens": -3}, "$.backends.s.output_tokens"),
        ({"output_tokens": 1.5}, "$.backends.s.output_tokens"),
        ({"latency": float("nan")}, "$.backends.s.latency"),
        ({"latency": float("inf")}, "$.backends.s.latency"),
        ({"latency": -0.01}, "$.backends.s.latency"),
        ({"latency": "fast"}, "$.backends.s.latency"),
        ({"error_latency": float("nan")}, "$.backends.s.error_latency"),
        ({"retry_after": float("inf")}, "$.backends.s.retry_after"),
        ({"retry_after": -1.0}, "$.backends.s.retry_after"),
    ],
    ids=repr,
)
def test_bad_simulated_settings_are_policy_errors_naming_the_field(kwargs: dict[str, object], path: str) -> None:
    with pytest.raises(specexec.PolicyError) as info:
        SimulatedBackend("s", **kwargs)  # type: ignore[arg-type]
    assert info.value.path == path


@pytest.mark.parametrize(
    ("make", "path"),
    [
        (lambda: specexec.Constant(float("inf")), "$.value"),
        (lambda: specexec.Constant(float("nan")), "$.value"),
        (lambda: LogNormal(float("inf")), "$.median"),
        (lambda: LogNormal(0.04, float("nan")), "$.sigma"),
        (lambda: specexec.Uniform(0.0, float("inf")), "$.high"),
        (lambda: specexec.Uniform(float("nan"), 1.0), "$.low"),
        (lambda: specexec.Uniform(2.0, 1.0), "$.high"),
        (lambda: specexec.Scaled(specexec.Constant(1.0), float("inf")), "$.factor"),
        (lambda: specexec.Component(float("nan"), specexec.Constant(1.0)), "$.weight"),
        (lambda: specexec.Mixture(()), "$.components"),
        (lambda: specexec.Slowdown(0.0, 1.0, float("nan")), "$.factor"),
        (lambda: specexec.Slowdown(2.0, 1.0, 2.0), "$.end"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_distribution_parameters_must_be_finite(make: object, path: str) -> None:
    with pytest.raises(specexec.PolicyError) as info:
        make()  # type: ignore[operator]
    assert info.value.path == path


def test_open_ended_slowdowns_are_fine() -> None:
    assert specexec.Slowdown(0.0, float("inf"), 3.0).end == float("inf")
    with pytest.raises(specexec.PolicyError):
        specexec.Slowdown(float("nan"), 1.0, 3.0)
