"""Load balancing across equivalent deployments (issue 11): ``order = "weighted"`` and ``"p2c"``.

Before: two identical backends got every primary on the first one listed.
"""

from __future__ import annotations

import trio
import trio.testing

import specexec
from specexec import Policy, Runtime
from tests.helpers import Scripted


def primaries(policy: Policy, backends: list[Scripted], runs: int, concurrent: int = 1) -> dict[str, int]:
    counts = {b.name: 0 for b in backends}

    async def main() -> None:
        specexec._engine._random.seed(7)
        async with Runtime(backends) as rt:

            async def worker(n: int) -> None:
                for _ in range(n):
                    result = await rt.run("q", policy)
                    counts[result.trace.attempts[0].backend] += 1

            async with trio.open_nursery() as nursery:
                for _ in range(concurrent):
                    nursery.start_soon(worker, runs // concurrent)

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    return counts


def test_as_listed_sends_everything_to_the_first() -> None:
    a, b = Scripted("a", 0.05), Scripted("b", 0.05)
    assert primaries(Policy.failover(["a", "b"]), [a, b], 600) == {"a": 600, "b": 0}


def test_weighted_splits_by_weight() -> None:
    a, b = Scripted("a", 0.05), Scripted("b", 0.05)
    counts = primaries(Policy.failover(["a", "b"], order="weighted", weights={"a": 3, "b": 1}), [a, b], 2000)
    assert 0.71 <= counts["a"] / 2000 <= 0.79


def test_weighted_defaults_to_equal_weights() -> None:
    a, b = Scripted("a", 0.05), Scripted("b", 0.05)
    counts = primaries(Policy.failover(["a", "b"], order="weighted"), [a, b], 2000)
    assert 0.45 <= counts["a"] / 2000 <= 0.55


def test_p2c_balances_equivalent_deployments() -> None:
    a, b = Scripted("a", 0.05), Scripted("b", 0.05)
    counts = primaries(Policy.failover(["a", "b"], order="p2c"), [a, b], 600, concurrent=20)
    assert 0.4 <= counts["a"] / 600 <= 0.6


def test_p2c_prefers_the_faster_deployment_but_spreads_load() -> None:
    fast, slow = Scripted("fast", 0.05), Scripted("slow", 0.5)
    counts = primaries(Policy.failover(["fast", "slow"], order="p2c"), [fast, slow], 600, concurrent=20)
    assert counts["fast"] > counts["slow"] > 0


def test_weights_are_validated() -> None:
    import pytest

    with pytest.raises(specexec.PolicyError, match=r"\$\.weights\.a"):
        Policy.failover(["a", "b"], order="weighted", weights={"a": -1.0})
    with pytest.raises(specexec.PolicyError, match=r"\$\.weights\.c"):
        Policy.failover(["a", "b"], order="weighted", weights={"c": 1.0})
    loaded = Policy.from_toml('mode = "failover"\ncandidates = ["a", "b"]\norder = "weighted"\nweights = { a = 2.0 }')
    assert loaded.weight_of("a") == 2.0 and loaded.weight_of("b") == 1.0
    assert hash(loaded) == hash(loaded)
