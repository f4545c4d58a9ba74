"""Defects found by trying the engine as a hostile user (issue 9): each test failed before its fix.

Every behaviour runs on trio in virtual time (exact) and on asyncio + uvloop.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
import pytest

import specexec
from specexec import BreakerConfig, HealthConfig, Policy, Query, Response, Runtime, Usage, verifiers
from tests.conftest import Timing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio


class Flaky(Scripted):
    """Fails with ``error`` on the calls whose index (from 0) is in ``failing``, else answers."""

    def __init__(self, name: str, latency: float, failing: set[int], error: Exception, **kw: Any) -> None:
        super().__init__(name, latency, **kw)
        self.failing = failing
        self.fail_with = error

    async def complete(self, query: Query) -> Response:
        index = self.calls
        self.error = self.fail_with if index in self.failing else None
        return await super().complete(query)


class Reports(Scripted):
    """Answers with exactly the usage given (which may be nonsense)."""

    def __init__(self, name: str, latency: float, input_tokens: Any, output_tokens: Any, **kw: Any) -> None:
        super().__init__(name, latency, **kw)
        self.reported = (input_tokens, output_tokens)

    async def complete(self, query: Query) -> Response:
        response = await super().complete(query)
        usage = Usage(*self.reported)
        return Response(response.text, usage, model=response.model)


async def slow_accept(query: Query, response: Response) -> bool:
    await anyio.sleep(0.05)
    return True


# -- 1. slots are always given back ------------------------------------------------------------


async def test_half_open_trial_cancelled_while_verifying_gives_the_trial_back(timing: Timing) -> None:
    a = Flaky("A", 0.001, failing={0}, error=specexec.Unavailable("blip"))
    health = HealthConfig(breaker=BreakerConfig(failure_threshold=1, cooldown=0.02))
    async with Runtime([a], health=health) as rt:
        with pytest.raises(specexec.NoAcceptableResponse):
            await rt.run("q", Policy.single("A"))
        await anyio.sleep(0.03)  # cooldown over: half-open, one trial allowed
        with pytest.raises(specexec.DeadlineExceeded):
            await rt.run("q", Policy.single("A", verify=[slow_accept], deadline=0.02))
        breaker = rt.health("A").breaker
        assert breaker.would_allow(anyio.current_time())  # not stuck: the trial slot came back
        result = await rt.run("q", Policy.single("A"))
    assert result.trace.attempts[0].trigger == "primary" and result.trace.attempts[0].outcome == "accepted"


async def test_concurrency_slot_is_given_back_when_cancelled_while_verifying(timing: Timing) -> None:
    a = Scripted("A", 0.001, limits=specexec.Limits(max_concurrency=1))
    async with Runtime([a]) as rt:
        with pytest.raises(specexec.DeadlineExceeded):
            await rt.run("q", Policy.single("A", verify=[slow_accept], deadline=0.02))
        assert rt.health("A").concurrency.in_use == 0
        assert (await rt.run("q", Policy.single("A"))).backend == "A"


# -- 2. provider usage is not trusted blindly ----------------------------------------------------


@pytest.mark.parametrize("usage", [(-1_000_000, 20), (10, -5), (10**400, 20), (10, 2**53 + 1)])
async def test_negative_or_absurd_usage_is_not_usage(timing: Timing, usage: tuple[int, int]) -> None:
    liar = Reports("liar", 0.01, *usage, input_price=1.0, output_price=1.0)
    async with Runtime([liar]) as rt:
        result = await rt.run(Query("q", max_tokens=50), Policy.single("liar"))
    record = result.trace.attempts[0]
    assert record.usage_estimated
    assert record.input_tokens >= 0 and record.output_tokens >= 0
    assert result.cost >= 0
    assert any(e.what == "usage ignored" and "liar" in e.detail for e in result.trace.events)


@pytest.mark.parametrize("mode", ["race", "failover"])
async def test_an_absurd_count_from_one_backend_is_not_the_failure_of_the_run(timing: Timing, mode: str) -> None:
    # 10**400 tokens cannot even be priced as a float (OverflowError): before, it ended the whole run
    liar = Reports("liar", 0.01, 10, 10**400, input_price=1.0, output_price=1.0)
    honest = Reports("honest", 0.02, 10, 5, input_price=1.0, output_price=1.0)
    policy = Policy.race(["liar", "honest"]) if mode == "race" else Policy.failover(["liar", "honest"])
    async with Runtime([liar, honest]) as rt:
        result = await rt.run(Query("q", max_tokens=50), policy)
    assert result.backend == "liar" and result.trace.attempts[0].usage_estimated
    assert math.isfinite(result.cost) and result.trace.attempts[0].output_tokens <= 50


async def test_negative_usage_does_not_make_room_for_more_pick_attempts(timing: Timing) -> None:
    backends = [Reports(f"b{i}", 0.01 * (i + 1), -1_000_000, 0, input_price=1.0, output_price=1.0) for i in range(21)]
    q = Query("q", max_tokens=100)
    async with Runtime(backends) as rt:
        worst = rt.state_for("b0").worst_case_cost(q)
        policy = Policy.pick([b.name for b in backends], scorer=specexec.scorers.majority(), max_cost=worst * 2.5)
        result = await rt.run(q, policy)
    launched = [a for a in result.trace.attempts if a.outcome != "skipped"]
    assert len(launched) == 2
    assert result.cost <= worst * 2.5 + 1e-12


async def test_usage_above_the_reservation_is_charged_and_stops_more_launches(timing: Timing) -> None:
    greedy = Reports("greedy", 0.01, 10, 10**12, input_price=1.0, output_price=1.0, region="us")
    slow = Scripted("slow", 1.0, input_price=1.0, output_price=1.0, region="eu", text="nope")
    q = Query("q", max_tokens=100)
    async with Runtime([greedy, slow]) as rt:
        # greedy answers but is rejected; its bill crosses the ceiling: nothing more may launch
        policy = Policy.failover(["greedy", "slow"], max_cost=0.01, verify=[verifiers.regex("^never$")])
        with pytest.raises(specexec.NoAcceptableResponse) as info:
            await rt.run(q, policy)
    trace = info.value.trace
    assert trace.attempts[0].cost == pytest.approx((10 + 10**12) / 1e6)  # charged as reported: real money
    assert trace.cost == pytest.approx((10 + 10**12) / 1e6)
    crossed = [e for e in trace.events if e.what == "ceiling crossed"]
    assert crossed and crossed[0].detail == "greedy reported 1000000000000 output tokens > max_tokens 100"
    assert slow.calls == 0


# -- 4. a failure after the provider answered is charged -----------------------------------------


async def test_failure_with_partial_usage_is_charged_what_was_received(timing: Timing) -> None:
    cut = Scripted(
        "cut",
        0.01,
        input_price=1.0,
        output_price=2.0,
        error=specexec.BadResponse("stream cut", partial_usage=Usage(30, 40, estimated=True)),
    )
    ok = Scripted("ok", 0.01, usage=(0, 0))
    async with Runtime([cut, ok]) as rt:
        result = await rt.run("q", Policy.failover(["cut", "ok"]))
    failed = result.trace.attempts[0]
    assert failed.outcome == "failed"
    assert failed.cost == pytest.approx((30 * 1.0 + 40 * 2.0) / 1e6)
    assert (failed.input_tokens, failed.output_tokens, failed.usage_estimated) == (30, 40, True)
    assert result.cost == pytest.approx(failed.cost)


# -- 5. judge calls take the admission path -------------------------------------------------------


async def test_judge_calls_respect_the_judge_backends_concurrency_limit(timing: Timing) -> None:
    judge = Scripted("judge", 0.1, text="9", limits=specexec.Limits(max_concurrency=1))
    answers = [Scripted(f"a{i}", 0.01) for i in range(3)]
    seen: list[int] = []
    original = judge.complete

    async def counting(query: Query) -> Response:
        seen.append(judge.active + 1)
        return await original(query)

    judge.complete = counting  # type: ignore[method-assign]
    async with Runtime([judge, *answers]) as rt:
        policy = Policy.pick([a.name for a in answers], scorer=specexec.scorers.llm_judge("judge"))
        result = await rt.run("q", policy)
    judged = [a for a in result.trace.attempts if a.trigger == "judge"]
    assert max(seen) == 1  # never two judge calls at once
    assert any(a.outcome == "skipped" and "concurrency" in a.reason for a in judged) or len(judged) == 3
    assert rt.health("judge").concurrency.in_use == 0


async def test_a_hanging_judge_is_cut_by_attempt_timeout(timing: Timing) -> None:
    judge = Scripted("judge", 60.0, text="9")
    answers = [Scripted("a0", 0.01)]
    async with Runtime([judge, *answers]) as rt:
        t0 = anyio.current_time()
        policy = Policy.pick(["a0"], scorer=specexec.scorers.llm_judge("judge"), attempt_timeout=0.1)
        result = await rt.run("q", policy)
        elapsed = anyio.current_time() - t0
    assert result.backend == "a0"  # an unscored answer still wins
    assert elapsed == timing.approx(0.11)
    judged = [a for a in result.trace.attempts if a.trigger == "judge"]
    assert judged[0].outcome == "failed" and "timeout" in judged[0].reason
    assert rt.health("judge").failures == 1


# -- 6. an auth error is about one backend -----------------------------------------------------------


async def test_auth_error_on_a_hedge_does_not_kill_the_healthy_primary(
    timing: Timing, caplog: pytest.LogCaptureFixture
) -> None:
    primary = Scripted("primary", 0.3, region="us")
    expired = Scripted("expired", 0.01, region="eu", error=specexec.AuthError("key refused"))
    health = HealthConfig(auth_cooldown=600.0)
    caplog.set_level(logging.WARNING, logger="specexec")
    async with Runtime([primary, expired], health=health) as rt:
        policy = Policy.hedge(["primary", "expired"], delay=0.1, budget=None)
        result = await rt.run("q", policy)
        assert result.backend == "primary" and result.latency == timing.approx(0.3)
        assert primary.cancelled == 0
        breaker = rt.health("expired").breaker
        now = anyio.current_time()
        assert breaker.state(now) == "open" and breaker.open_reason == "auth"
        assert breaker.open_until == pytest.approx(now - 0.3 + 0.11 + 600.0, abs=0.1)
        second = await rt.run("q", policy)
    skipped = [a for a in second.trace.attempts if a.outcome == "skipped"]
    assert skipped and skipped[0].reason == "circuit open (auth)"
    auth_logs = [r for r in caplog.records if "expired" in r.getMessage() and "auth" in r.getMessage()]
    assert len(auth_logs) == 1  # a clear line, once


async def test_bad_request_is_still_fatal(timing: Timing) -> None:
    bad = Scripted("bad", 0.1, error=specexec.BadRequest("malformed"))
    other = Scripted("other", 1.0)
    async with Runtime([bad, other]) as rt:
        with pytest.raises(specexec.BadRequest):
            await rt.run("q", Policy.race(["bad", "other"]))
    assert other.cancelled == 1


async def test_a_fatal_error_of_a_single_attempt_is_raised_as_itself(timing: Timing) -> None:
    # a run with one possible attempt has no task group: the fatal error's "cancel the rest" is a no-op
    bad = Scripted("bad", 0.1, error=specexec.BadRequest("malformed"))
    async with Runtime([bad]) as rt:
        with pytest.raises(specexec.BadRequest, match="malformed"):
            await rt.run("q", Policy.single("bad"))
        t0 = anyio.current_time()
        with pytest.raises(specexec.BadRequest, match="malformed"):
            await rt.run("q", Policy.single("bad", deadline=5.0))
        assert anyio.current_time() - t0 == timing.approx(0.1)


# -- 7. context windows ------------------------------------------------------------------------------


async def test_context_window_exceeded_moves_on(timing: Timing) -> None:
    small = Scripted("small", 0.01, error=specexec.ContextWindowExceeded("too long"))
    big = Scripted("big", 0.01)
    async with Runtime([small, big]) as rt:
        result = await rt.run("q", Policy.failover(["small", "big"]))
        assert rt.health("small").breaker.state(anyio.current_time()) == "closed"
    assert result.backend == "big"
    assert result.trace.attempts[0].outcome == "failed"


async def test_a_window_too_small_for_the_query_is_skipped_before_launch(timing: Timing) -> None:
    small = specexec.CallableBackend("small", _answer, context_window=100)
    big = specexec.CallableBackend("big", _answer, context_window=100_000)
    query = Query("x" * 50, max_tokens=60)
    async with Runtime([small, big]) as rt:
        bound = rt.state_for("small").input_tokens(query)  # the input-token bound (text + chat overhead)
        result = await rt.run(query, Policy.failover(["small", "big"]))
    first = result.trace.attempts[0]
    assert (first.backend, first.outcome) == ("small", "skipped")
    assert first.reason == f"context window: {bound} input + 60 max_tokens > 100 tokens"
    assert 50 <= bound <= 100 - 60 + 50
    assert result.backend == "big"


async def _answer(query: Query) -> str:
    return "ok"


# -- 8. Policy.fatal -------------------------------------------------------------------------------------


async def test_policy_fatal_says_which_kinds_end_the_run(timing: Timing) -> None:
    down = Scripted("down", 0.01, error=specexec.Unavailable("down"))
    other = Scripted("other", 0.01)
    async with Runtime([down, other]) as rt:
        with pytest.raises(specexec.Unavailable):
            await rt.run("q", Policy.failover(["down", "other"], fatal=("unavailable",)))
        bad = Scripted("bad", 0.01, error=specexec.BadRequest("bad"))
        rt.add_backend(bad)
        result = await rt.run("q", Policy.failover(["bad", "other"], fatal=()))
    assert result.backend == "other"


def test_policy_fatal_is_validated() -> None:
    with pytest.raises(specexec.PolicyError, match=r"\$\.fatal\[0\]"):
        Policy.failover(["a"], fatal=("unavailabel",))
    assert Policy.failover(["a"]).fatal == ("bad_request",)
    assert Policy.from_toml('mode = "failover"\ncandidates = ["a"]\nfatal = ["timeout"]').fatal == ("timeout",)


# -- 9. retries, panic mode, per-backend breakers ----------------------------------------------------------


async def test_retries_back_off_exponentially_on_the_same_backend(timing: Timing) -> None:
    a = Flaky("A", 0.01, failing={0, 1}, error=specexec.Unavailable("blip"))
    async with Runtime([a]) as rt:
        result = await rt.run("q", Policy.single("A", retries=2, backoff=0.1, jitter=False))
    starts = [round(t - a.started_at[0], 6) for t in a.started_at]
    # fail at 0.01, retry after 0.1 → starts 0.11, fails at 0.12, retry after 0.2 → 0.32
    assert starts == [0, pytest.approx(0.11, abs=timing.tolerance), pytest.approx(0.32, abs=timing.tolerance)]
    assert [x.trigger for x in result.trace.attempts] == ["primary", "retry", "retry"]
    assert result.backend == "A" and result.latency == timing.approx(0.33)


async def test_retries_with_full_jitter_stay_within_the_cap(timing: Timing) -> None:
    a = Flaky("A", 0.01, failing={0}, error=specexec.Unavailable("blip"))
    async with Runtime([a]) as rt:
        await rt.run("q", Policy.single("A", retries=1, backoff=0.5))
    gap = a.started_at[1] - a.started_at[0] - 0.01
    assert -timing.tolerance <= gap <= 0.5 + timing.tolerance


async def test_no_retry_past_the_deadline_or_for_fatal_kinds(timing: Timing) -> None:
    a = Flaky("A", 0.01, failing={0, 1, 2}, error=specexec.Unavailable("blip"))
    async with Runtime([a]) as rt:
        with pytest.raises(specexec.NoAcceptableResponse):
            await rt.run("q", Policy.single("A", retries=3, backoff=1.0, jitter=False, deadline=0.5))
    assert a.calls == 1  # the first backoff (1 s) ends after the deadline: not slept through


async def test_panic_mode_tries_the_backend_whose_cooldown_ends_first(timing: Timing) -> None:
    a = Flaky("A", 0.01, failing={0}, error=specexec.Unavailable("blip"), region="us")
    b = Flaky("B", 0.01, failing={0}, error=specexec.Unavailable("blip"), region="eu")
    health = HealthConfig(breaker=BreakerConfig(failure_threshold=1, cooldown=10.0))
    async with Runtime([a, b], health=health) as rt:
        with pytest.raises(specexec.NoAcceptableResponse):
            await rt.run("q", Policy.single("A"))
        await anyio.sleep(1.0)
        with pytest.raises(specexec.NoAcceptableResponse):
            await rt.run("q", Policy.single("B"))
        result = await rt.run("q", Policy.failover(["B", "A"]))  # both open; A's cooldown ends first
        with pytest.raises(specexec.NoAcceptableResponse) as info:
            await rt.run("q", Policy.failover(["B", "A"], panic=False))
    assert result.backend == "A"
    assert [x.trigger for x in result.trace.attempts if x.outcome != "skipped"] == ["panic"]
    assert any(e.what == "panic" for e in result.trace.events)
    assert all(x.outcome == "skipped" for x in info.value.attempts)


async def test_a_backend_breaker_overrides_the_runtime_one(timing: Timing) -> None:
    a = specexec.CallableBackend("A", _answer, breaker=BreakerConfig(failure_threshold=1, cooldown=3.0))
    async with Runtime([a]) as rt:
        assert rt.health("A").breaker.config.failure_threshold == 1
        assert rt.health("A").breaker.config.cooldown == 3.0


# -- 11. Retry-After is capped ---------------------------------------------------------------------------------


async def test_retry_after_is_capped(timing: Timing) -> None:
    a = Scripted("A", 0.01, error=specexec.RateLimited(retry_after=1e12))
    async with Runtime([a], health=HealthConfig(max_retry_after=300.0)) as rt:
        with pytest.raises(specexec.NoAcceptableResponse) as info:
            await rt.run("q", Policy.single("A", panic=False))
        until = rt.health("A").breaker.open_until
        assert until is not None and until - anyio.current_time() == timing.approx(300.0)
    assert any(e.what == "retry-after capped" for e in info.value.trace.events)


# -- 13. nothing waits for ever --------------------------------------------------------------------------------


async def test_a_token_limit_that_can_never_admit_the_query_skips_at_once(timing: Timing) -> None:
    a = Scripted("A", 0.01, limits=specexec.Limits(tpm=1))
    async with Runtime([a]) as rt:
        t0 = anyio.current_time()
        with pytest.raises(specexec.NoAcceptableResponse) as info:
            await rt.run("q", Policy.single("A", limit_wait=math.inf, panic=False))
        assert anyio.current_time() - t0 == timing.approx(0.0)
    assert "can never admit" in info.value.attempts[0].reason


class Refuses(specexec.BackendBase):
    """Raises ``error`` at once, before its first await."""

    def __init__(self, name: str, error: Exception) -> None:
        super().__init__(name)
        self.error = error

    async def complete(self, query: Query) -> Response:
        raise self.error


async def test_attempts_cancelled_before_their_first_step_give_their_slots_back(timing: Timing) -> None:
    # On asyncio a task cancelled before it first runs never enters its own `finally`.
    bad = Refuses("bad", specexec.BadRequest("malformed"))
    others = [Scripted(n, 1.0, limits=specexec.Limits(max_concurrency=1)) for n in ("b", "c")]
    async with Runtime([bad, *others]) as rt:
        with pytest.raises(specexec.BadRequest):
            await rt.run("q", Policy.race(["bad", "b", "c"]))
        assert [rt.health(n).concurrency.in_use for n in ("b", "c")] == [0, 0]
        assert (await rt.run("q", Policy.single("b"))).backend == "b"


def test_partial_failure_stays_partial_with_panic_mode_and_retries() -> None:
    """9.9: a backend failing half the time must not turn into most runs failing (panic mode);
    retries with backoff turn a backend's occasional failures into rarer failed runs."""
    import trio
    import trio.testing

    def failed_share(rate: float, **knobs: Any) -> float:
        backend = specexec.SimulatedBackend("flaky", 0.01, errors={"unavailable": rate}, seed=3)
        failures = 0

        async def main() -> None:
            nonlocal failures
            async with Runtime([backend]) as rt:
                for _ in range(400):
                    try:
                        await rt.run("q", Policy.single("flaky", **knobs))
                    except specexec.NoAcceptableResponse:
                        failures += 1
                    await trio.sleep(0.05)

        trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
        return failures / 400

    assert failed_share(0.5, panic=False) > 0.7  # the defect: the open breaker fails runs with no attempt
    assert 0.4 <= failed_share(0.5) <= 0.6  # panic mode: the backend's own failure rate
    # retries, governed by the failover throttle (gRPC's: it stops retries once a backend fails
    # more than ≈ 9 % of the time, so that a sick fleet is not hammered)
    assert failed_share(0.05) >= 0.03
    assert failed_share(0.05, retries=2, backoff=0.01) <= 0.01


async def test_retries_due_at_the_same_instant_do_not_compare_backends(timing: Timing) -> None:
    """Found by the slot property: two retries booked at once and due together made the heap
    compare two backends (TypeError)."""
    a = Flaky("A", 0.01, failing={0}, error=specexec.Unavailable("blip"), region="us")
    b = Flaky("B", 0.01, failing={0}, error=specexec.Unavailable("blip"), region="eu")
    async with Runtime([a, b]) as rt:
        result = await rt.run("q", Policy.race(["A", "B"], retries=1, backoff=0.1, jitter=False))
    assert result.latency == timing.approx(0.12)
    assert sorted(x.trigger for x in result.trace.attempts) == ["parallel", "primary", "retry", "retry"]


class _HangingJudge:
    """Compares every accepted response (``score_all``) and never finishes."""

    per_response = False

    async def score_one(self, query: Query, candidate: Any, ctx: Any) -> float:
        raise AssertionError("not asked one by one")  # pragma: no cover

    async def score_all(self, query: Query, candidates: Any, ctx: Any) -> list[float]:
        await anyio.sleep_forever()
        raise AssertionError("unreachable")  # pragma: no cover


async def test_the_deadline_covers_scoring_in_pick(timing: Timing) -> None:
    # before: score_all ran after the deadline's scope had ended, so a hanging judge hung the run
    backends = [Scripted("A", 0.01), Scripted("B", 0.02)]
    policy = Policy.pick(["A", "B"], scorer=_HangingJudge(), deadline=0.5)  # type: ignore[arg-type]
    async with Runtime(backends) as rt:
        t0 = anyio.current_time()
        with anyio.fail_after(5.0), pytest.raises(specexec.DeadlineExceeded, match="while scoring 2 accepted") as info:
            await rt.run("q", policy)
        assert anyio.current_time() - t0 == timing.approx(0.5)
    assert info.value.trace is not None and info.value.trace.outcome == "deadline"
