"""The staggered-race engine: every mode, on trio (virtual time, exact) and asyncio + uvloop."""

from __future__ import annotations

import io
import json

import anyio
import pytest

import specexec
from specexec import Policy, Runtime, verifiers
from tests.conftest import Timing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio


async def test_hedge_fires_at_exactly_the_delay_and_fast_hedge_wins(timing: Timing) -> None:
    slow = Scripted("slow", 1.0, provider="p1", region="us")
    fast = Scripted("fast", 0.1, provider="p2", region="eu")
    async with Runtime([slow, fast]) as rt:
        t0 = anyio.current_time()
        result = await rt.run("q", Policy.hedge(["slow", "fast"], delay=0.2, max_attempts=2))
    assert result.backend == "fast"
    assert result.latency == timing.approx(0.3)
    assert fast.started_at[0] - t0 == timing.approx(0.2)
    first, hedge = result.trace.attempts
    assert (first.backend, first.trigger, first.outcome) == ("slow", "primary", "cancelled")
    assert (hedge.backend, hedge.trigger, hedge.outcome) == ("fast", "hedge", "accepted")
    assert hedge.started == timing.approx(0.2)
    assert first.reason == "fast answered first"
    assert slow.cancelled == 1 and slow.active == 0


async def test_hedge_not_fired_when_primary_is_fast(timing: Timing) -> None:
    a, b = Scripted("a", 0.15), Scripted("b", 0.1)
    async with Runtime([a, b]) as rt:
        result = await rt.run("q", Policy.hedge(["a", "b"], delay=0.2))
    assert result.backend == "a" and result.latency == timing.approx(0.15)
    assert b.calls == 0
    assert [x.outcome for x in result.trace.attempts] == ["accepted"]


async def test_failure_launches_next_at_once_not_after_delay(timing: Timing) -> None:
    broken = Scripted("broken", 0.05, error=specexec.Unavailable("down"))
    ok = Scripted("ok", 0.1)
    async with Runtime([broken, ok]) as rt:
        t0 = anyio.current_time()
        result = await rt.run("q", Policy.hedge(["broken", "ok"], delay=5.0))
    assert result.backend == "ok"
    assert ok.started_at[0] - t0 == timing.approx(0.05)
    assert result.latency == timing.approx(0.15)
    failed, won = result.trace.attempts
    assert failed.outcome == "failed" and "unavailable" in failed.reason
    assert won.trigger == "after failure"


async def test_rejection_launches_next_at_once(timing: Timing) -> None:
    prose = Scripted("prose", 0.05, text="not json")
    good = Scripted("good", 0.1)
    async with Runtime([prose, good]) as rt:
        result = await rt.run("q", Policy.hedge(["prose", "good"], delay=5.0, verify=[verifiers.json_valid()]))
    assert result.backend == "good" and result.latency == timing.approx(0.15)
    rejected = result.trace.attempts[0]
    assert rejected.outcome == "rejected" and "not valid JSON" in rejected.reason


async def test_race_launches_all_at_once_and_cancels_losers(timing: Timing) -> None:
    backends = [Scripted("a", 0.3), Scripted("b", 0.1), Scripted("c", 0.2)]
    async with Runtime(backends) as rt:
        result = await rt.run("q", Policy.race(["a", "b", "c"]))
    assert result.backend == "b" and result.latency == timing.approx(0.1)
    assert all(x.started == timing.approx(0.0) for x in result.trace.attempts)
    assert {x.backend: x.outcome for x in result.trace.attempts} == {
        "a": "cancelled",
        "b": "accepted",
        "c": "cancelled",
    }
    assert [x.cancelled for x in backends] == [1, 0, 1]
    assert all(x.active == 0 for x in backends)


async def test_failover_moves_on_only_after_failure(timing: Timing) -> None:
    a = Scripted("a", 0.5, error=specexec.RateLimited("slow down", retry_after=1.0))
    b = Scripted("b", 0.5)
    async with Runtime([a, b]) as rt:
        result = await rt.run("q", Policy.failover(["a", "b"]))
    assert result.backend == "b" and result.latency == timing.approx(1.0)


async def test_cascade_tries_cheapest_first_and_escalates_on_rejection(timing: Timing) -> None:
    dear = Scripted("dear", 0.1, input_price=10.0, output_price=30.0)
    cheap = Scripted("cheap", 0.1, text="I'm sorry, I can't help with that.", input_price=0.1, output_price=0.4)
    async with Runtime([dear, cheap]) as rt:
        result = await rt.run("q", Policy.cascade(["dear", "cheap"], verify=[verifiers.not_refusal()]))
    assert [a.backend for a in result.trace.attempts] == ["cheap", "dear"]
    assert result.backend == "dear" and result.latency == timing.approx(0.2)


async def test_pick_majority_returns_the_agreed_answer(timing: Timing) -> None:
    backends = [Scripted("a", 0.1, text="42"), Scripted("b", 0.2, text="41"), Scripted("c", 0.3, text=" 42. ")]
    async with Runtime(backends) as rt:
        result = await rt.run("q", Policy.pick(["a", "b", "c"], scorer=specexec.scorers.majority()))
    assert result.backend == "a"  # ties between a and c broken by latency
    assert result.score == pytest.approx(2 / 3)
    assert result.latency == timing.approx(0.3)
    assert [a.outcome for a in result.trace.attempts] == ["accepted"] * 3


async def test_pick_early_accept_cancels_the_rest(timing: Timing) -> None:
    backends = [Scripted("a", 0.1, text="meh"), Scripted("b", 0.2, text="great"), Scripted("c", 0.3, text="great")]

    def score(query: specexec.Query, response: specexec.Response) -> float:
        return 1.0 if response.text == "great" else 0.2

    async with Runtime(backends) as rt:
        result = await rt.run("q", Policy.pick(["a", "b", "c"], scorer=score, accept_score=0.9))
    assert result.backend == "b" and result.latency == timing.approx(0.2)
    assert backends[2].cancelled == 1


async def test_pick_scores_what_arrived_by_the_deadline(timing: Timing) -> None:
    backends = [Scripted("a", 0.1, text="x"), Scripted("b", 5.0, text="x")]
    async with Runtime(backends) as rt:
        result = await rt.run("q", Policy.pick(["a", "b"], scorer=specexec.scorers.majority(), deadline=1.0))
    assert result.backend == "a" and result.latency == timing.approx(1.0)
    assert backends[1].cancelled == 1
    assert result.trace.attempts[1].reason == "deadline"


async def test_deadline_raises_with_partial_trace(timing: Timing) -> None:
    a, b = Scripted("a", 5.0), Scripted("b", 5.0)
    async with Runtime([a, b]) as rt:
        t0 = anyio.current_time()
        with pytest.raises(specexec.DeadlineExceeded) as info:
            await rt.run("q", Policy.hedge(["a", "b"], delay=0.2, deadline=0.5))
    assert anyio.current_time() - t0 == timing.approx(0.5)
    trace = info.value.trace
    assert trace.outcome == "deadline"
    assert [(x.backend, x.outcome, x.reason) for x in trace.attempts] == [
        ("a", "cancelled", "deadline"),
        ("b", "cancelled", "deadline"),
    ]
    assert a.active == b.active == 0


async def test_deadline_applies_to_single_mode(timing: Timing) -> None:
    async with Runtime([Scripted("a", 5.0)]) as rt:
        with pytest.raises(specexec.DeadlineExceeded):
            await rt.run("q", Policy.single("a", deadline=0.3))


async def test_attempt_timeout_is_a_failure_that_moves_on(timing: Timing) -> None:
    a, b = Scripted("a", 5.0), Scripted("b", 0.1)
    async with Runtime([a, b]) as rt:
        result = await rt.run("q", Policy.failover(["a", "b"], attempt_timeout=0.25))
    assert result.backend == "b" and result.latency == timing.approx(0.35)
    timed_out = result.trace.attempts[0]
    assert timed_out.outcome == "failed" and "timeout" in timed_out.reason


async def test_fatal_error_stops_the_run(timing: Timing) -> None:
    bad = Scripted("bad", 0.1, error=specexec.BadRequest("malformed request"))
    other = Scripted("other", 1.0)
    async with Runtime([bad, other]) as rt:
        with pytest.raises(specexec.BadRequest):
            await rt.run("q", Policy.race(["bad", "other"]))
    assert other.cancelled == 1 and other.active == 0


async def test_no_acceptable_response_carries_every_cause(timing: Timing) -> None:
    a = Scripted("a", 0.1, error=specexec.Unavailable("a down"))
    b = Scripted("b", 0.1, text="nope")
    async with Runtime([a, b]) as rt:
        with pytest.raises(specexec.NoAcceptableResponse) as info:
            await rt.run("q", Policy.failover(["a", "b"], verify=[verifiers.json_valid()]))
    err = info.value
    assert [x.outcome for x in err.attempts] == ["failed", "rejected"]
    assert isinstance(err.causes[0], specexec.Unavailable)
    assert "a: failed" in str(err) and "b: rejected" in str(err)


async def test_cost_ceiling_skips_what_does_not_fit_and_totals_all_attempts(timing: Timing) -> None:
    # worst case = (input estimate + max_tokens) at the prices; usage settles to 10 in / 20 out.
    cheap = Scripted("cheap", 1.0, input_price=1.0, output_price=1.0)
    dear = Scripted("dear", 0.1, input_price=1000.0, output_price=1000.0)
    other = Scripted("other", 0.1, input_price=1.0, output_price=1.0)
    async with Runtime([cheap, dear, other]) as rt:
        q = specexec.Query("q", max_tokens=100)
        worst_cheap = rt.state_for("cheap").worst_case_cost(q)
        result = await rt.run(q, Policy.hedge(["cheap", "dear", "other"], delay=0.2, max_cost=worst_cheap * 2.5))
    outcomes = {a.backend: (a.outcome, a.reason) for a in result.trace.attempts}
    assert outcomes["dear"][0] == "skipped" and "cost ceiling" in outcomes["dear"][1]
    assert result.backend == "other"
    assert result.cost == pytest.approx(worst_cheap + 30 / 1e6)  # cancelled: reservation; winner: usage
    assert result.cost <= worst_cheap * 2.5


async def test_budget_exceeded_when_nothing_fits(timing: Timing) -> None:
    async with Runtime([Scripted("dear", 0.1, input_price=1000.0, output_price=1000.0)]) as rt:
        with pytest.raises(specexec.BudgetExceeded):
            await rt.run("q", Policy.single("dear", max_cost=0.0001))


async def test_caller_cancellation_propagates_and_cancels_every_attempt(timing: Timing) -> None:
    backends = [Scripted("a", 5.0), Scripted("b", 5.0), Scripted("c", 5.0)]
    traces: list[specexec.Trace] = []
    async with Runtime(backends, sinks=[traces.append]) as rt:
        with anyio.move_on_after(0.5) as scope:
            await rt.run("q", Policy.hedge(["a", "b", "c"], delay=0.1, budget=None))
    assert scope.cancelled_caught
    assert [x.cancelled for x in backends] == [1, 1, 1]
    assert all(x.active == 0 for x in backends)
    assert traces[0].outcome == "cancelled"
    assert {a.reason for a in traces[0].attempts} == {"caller cancelled"}


async def test_slow_verifier_on_one_response_does_not_delay_another(timing: Timing) -> None:
    async def slow_check(query: specexec.Query, response: specexec.Response) -> bool:
        if response.text == "slow-to-check":
            await anyio.sleep(10.0)
        return True

    a = Scripted("a", 0.1, text="slow-to-check")
    b = Scripted("b", 0.2, text="fine")
    async with Runtime([a, b]) as rt:
        result = await rt.run("q", Policy.race(["a", "b"], verify=[slow_check]))
    assert result.backend == "b" and result.latency == timing.approx(0.2)
    assert result.trace.attempts[0].outcome == "cancelled"


async def test_raising_verifier_is_a_rejection(timing: Timing) -> None:
    def broken(query: specexec.Query, response: specexec.Response) -> bool:
        raise RuntimeError("verifier bug")

    async with Runtime([Scripted("a", 0.1)]) as rt:
        with pytest.raises(specexec.NoAcceptableResponse, match="verifier bug"):
            await rt.run("q", Policy.single("a", verify=[broken]))


async def test_backend_bug_is_a_failed_attempt_not_a_crash(timing: Timing) -> None:
    async def buggy(query: specexec.Query) -> str:
        raise KeyError("oops")

    b = specexec.CallableBackend("buggy", buggy)
    async with Runtime([b, Scripted("ok", 0.1)]) as rt:
        result = await rt.run("q", Policy.failover(["buggy", "ok"]))
    assert result.backend == "ok"
    assert result.trace.attempts[0].reason.startswith("KeyError")


async def test_trace_is_json_and_reaches_sinks(timing: Timing) -> None:
    buffer = io.BytesIO()
    seen: list[specexec.Trace] = []
    a = Scripted("a", 0.1, error=specexec.Unavailable("down"))
    async with Runtime([a, Scripted("b", 0.1)], sinks=[seen.append, specexec.JsonLinesSink(buffer)]) as rt:
        await rt.run("q", Policy.failover(["a", "b"]))
    line = json.loads(buffer.getvalue().decode())
    assert line["outcome"] == "ok" and line["winner"] == "b"
    assert line["attempts"][0]["error"].startswith("Unavailable: down")
    assert seen[0].winner == "b"


async def test_policy_may_hold_backend_objects_and_default_runtime_works(timing: Timing) -> None:
    b = Scripted("objects-only", 0.1)
    result = await specexec.run("q", Policy.single(b))
    assert result.backend == "objects-only"


async def test_unknown_backend_name_is_a_policy_error_before_sending(timing: Timing) -> None:
    a = Scripted("a", 0.1)
    async with Runtime([a]) as rt:
        with pytest.raises(specexec.PolicyError, match=r"unknown backend 'nope'.*\$\.candidates\[1\]"):
            await rt.run("q", Policy.race(["a", "nope"]))
    assert a.calls == 0


async def test_llm_judge_cost_counts_against_the_ceiling(timing: Timing) -> None:
    answers = [Scripted("a", 0.1, text="answer a"), Scripted("b", 0.1, text="answer b")]

    def judge_text(query: specexec.Query) -> str:
        return "9" if "answer b" in query.text else "3"

    judge = Scripted("judge", 0.05, text=judge_text, input_price=1.0, output_price=1.0)
    async with Runtime([*answers, judge]) as rt:
        result = await rt.run("q", Policy.pick(["a", "b"], scorer=specexec.scorers.llm_judge("judge"), max_cost=1.0))
    assert result.backend == "b" and result.score == pytest.approx(0.9)
    judged = [a for a in result.trace.attempts if a.trigger == "judge"]
    assert len(judged) == 2 and result.cost == pytest.approx(sum(a.cost for a in judged))
    assert result.cost > 0
