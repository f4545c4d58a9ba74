"""The engine's decisions (``specexec._core``) driven by hand: no event loop, times as plain numbers."""

from __future__ import annotations

import math

import pytest

import specexec
from specexec import Policy, Query, Response, Runtime, Usage
from specexec._core import CANCEL_ALL, DONE, SCORE, Attempt, Core, Launch, Poll, Wait
from specexec.verifiers import Verdict
from tests.helpers import Scripted


def _core(policy: Policy, *backends: Scripted, now: float = 0.0, streaming: bool = False) -> Core:
    rt = Runtime(list(backends))
    return Core(rt, Query("q"), policy, rt.resolve(policy), now, 0.0, streaming=streaming)


def _launch(action: object) -> Attempt:
    assert isinstance(action, Launch), action
    return action.attempt


def _answer(core: Core, attempt: Attempt, now: float, text: str = "ok") -> object:
    core.answered(attempt, Response(text, Usage(10, 20)), now)
    return core.verdict(attempt, None, now)


def test_hedge_fires_at_the_delay_and_the_winner_cancels_the_primary() -> None:
    core = _core(Policy.hedge(["a", "b"], delay=0.2, max_attempts=2), Scripted("a", 1), Scripted("b", 1))
    first = _launch(core.next_action(0.0))
    assert (first.state.name, first.record.trigger) == ("a", "primary")
    wait = core.next_action(0.0)
    assert isinstance(wait, Wait) and wait.until == 0.2
    assert isinstance(core.next_action(0.1), Wait)  # woken early (nothing ended): still waiting
    hedge = _launch(core.next_action(0.2))
    assert (hedge.state.name, hedge.record.trigger, hedge.record.started) == ("b", "hedge", 0.2)
    assert core.next_action(0.2) is DONE  # max_attempts reached: the driver waits for what is in flight
    assert _answer(core, hedge, 0.3) is CANCEL_ALL
    core.ended(hedge, 0.3)
    core.ended(first, 0.3)
    assert core.next_action(0.3) is DONE
    result = core.result(0.3)
    assert (result.backend, result.latency) == ("b", 0.3)
    assert (first.record.outcome, first.record.reason, first.record.ended) == ("cancelled", "b answered first", 0.3)
    assert hedge.record.outcome == "accepted"


def test_a_lone_accepted_attempt_cancels_nothing() -> None:
    core = _core(Policy.hedge(["a", "b"], delay=0.2), Scripted("a", 1), Scripted("b", 1))
    first = _launch(core.next_action(0.0))
    assert _answer(core, first, 0.15) is None
    core.ended(first, 0.15)
    assert core.next_action(0.15) is DONE
    assert core.result(0.15).latency == 0.15


def test_a_failure_launches_the_next_at_once_and_a_fatal_one_cancels_all() -> None:
    core = _core(Policy.hedge(["a", "b", "c"], delay=5.0), Scripted("a", 1), Scripted("b", 1), Scripted("c", 1))
    first = _launch(core.next_action(0.0))
    assert core.failed(first, specexec.Unavailable("down"), 0.05) is None
    core.ended(first, 0.05)
    second = _launch(core.next_action(0.05))
    assert (second.state.name, second.record.trigger, second.record.started) == ("b", "after failure", 0.05)
    assert core.failed(second, specexec.BadRequest("bad body"), 0.07) is CANCEL_ALL
    core.ended(second, 0.07)
    assert core.next_action(0.07) is DONE
    with pytest.raises(specexec.BadRequest):
        core.result(0.07)
    assert core.trace.outcome == "fatal"


def test_a_rejection_launches_the_next_and_the_timer_restarts_from_that_launch() -> None:
    policy = Policy.hedge(["a", "b", "c"], delay=0.5, verify=[specexec.verifiers.json_valid()])
    core = _core(policy, Scripted("a", 1), Scripted("b", 1), Scripted("c", 1))
    first = _launch(core.next_action(0.0))
    core.answered(first, Response("prose", Usage(1, 1)), 0.1)
    assert core.verdict(first, Verdict(False, "not json"), 0.1) is None
    core.ended(first, 0.1)
    second = _launch(core.next_action(0.1))
    assert second.record.trigger == "after failure"
    wait = core.next_action(0.1)
    assert isinstance(wait, Wait) and wait.until == pytest.approx(0.6)
    assert (first.record.outcome, first.record.reason) == ("rejected", "not json")


def test_a_retry_is_due_after_its_backoff_on_the_same_backend() -> None:
    policy = Policy.single("a", retries=1, backoff=0.25, jitter=False)
    core = _core(policy, Scripted("a", 1))
    assert not core.single  # a retry needs the scheduler
    first = _launch(core.next_action(0.0))
    assert isinstance(core.next_action(0.0), Wait) and core.next_action(0.0).until == math.inf  # type: ignore[union-attr]
    core.failed(first, specexec.Unavailable("down"), 1.0)
    core.ended(first, 1.0)
    wait = core.next_action(1.0)
    assert isinstance(wait, Wait) and wait.until == 1.25
    retry = _launch(core.next_action(1.25))
    assert (retry.state.name, retry.record.trigger, retry.record.started) == ("a", "retry", 1.25)
    assert [e.what for e in core.trace.events] == ["retry scheduled"]


def test_the_hedge_budget_refusing_stops_timed_hedges_only() -> None:
    policy = Policy.hedge(
        ["a", "b"], delay=0.1, budget=specexec.HedgeBudgetConfig(max_extra_load=0.0, min_per_second=0.0)
    )
    core = _core(policy, Scripted("a", 1), Scripted("b", 1))
    first = _launch(core.next_action(0.0))
    wait = core.next_action(0.0)
    assert isinstance(wait, Wait) and wait.until == 0.1
    after = core.next_action(0.1)
    assert isinstance(after, Wait) and after.until == math.inf
    assert [(e.at, e.what) for e in core.trace.events] == [(0.1, "skipped")]
    core.failed(first, specexec.Unavailable("down"), 0.3)
    core.ended(first, 0.3)
    assert _launch(core.next_action(0.3)).record.trigger == "after failure"


def test_race_launches_everything_at_once_within_the_cost_ceiling() -> None:
    pricey = [Scripted(n, 1, output_price=1000.0) for n in "abc"]  # $0.016 worst case each (16 max_tokens)
    query = Query("q", max_tokens=16)
    rt = Runtime(pricey)
    policy = Policy.race(["a", "b", "c"], max_cost=0.04)
    core = Core(rt, query, policy, rt.resolve(policy), 0.0, 0.0)
    launched = [_launch(core.next_action(0.0)), _launch(core.next_action(0.0))]
    assert [a.record.trigger for a in launched] == ["primary", "parallel"]
    assert core.committed == pytest.approx(0.032)
    assert core.next_action(0.0) is DONE  # c was skipped: it does not fit
    skipped = core.trace.attempts[-1]
    assert (skipped.backend, skipped.outcome) == ("c", "skipped") and skipped.reason.startswith("cost ceiling")


def test_nothing_fits_the_ceiling_is_budget_exceeded() -> None:
    core = _core(Policy.single("a", max_cost=1e-9), Scripted("a", 1, output_price=1000.0))
    assert core.launch_single(0.0) is None
    with pytest.raises(specexec.BudgetExceeded):
        core.result(0.0)


def test_the_primary_polls_for_a_concurrency_slot_then_gives_up() -> None:
    a = Scripted("a", 1, limits=specexec.Limits(max_concurrency=1))
    rt = Runtime([a])
    policy = Policy.single("a", limit_wait=0.012)
    assert rt.state_for("a").health.acquire(0.0, 1) is None  # someone else holds the only slot
    core = Core(rt, Query("q"), policy, rt.resolve(policy), 0.0, 0.0)
    polls = []
    now = 0.0
    while isinstance(step := core.launch_single(now), Poll):
        polls.append(step.until)
        now = step.until
    assert step is None
    assert polls == pytest.approx([0.005, 0.010, 0.012])
    skipped = core.trace.attempts[-1]
    assert skipped.outcome == "skipped" and skipped.reason.endswith("(waited 0.012s)")
    assert skipped.started == pytest.approx(0.012)


def test_pick_asks_for_a_score_and_an_accept_score_cancels_the_rest() -> None:
    policy = Policy.pick(["a", "b"], scorer=lambda q, c: 1.0, accept_score=0.5)
    core = _core(policy, Scripted("a", 1), Scripted("b", 1))
    a, b = _launch(core.next_action(0.0)), _launch(core.next_action(0.0))
    assert _answer(core, a, 0.2) is SCORE
    assert core.scored(a, 1.0) is CANCEL_ALL
    core.ended(a, 0.2)
    core.ended(b, 0.2)
    result = core.result(0.25)
    assert (result.backend, result.score, result.latency) == ("a", 1.0, 0.25)
    assert b.record.reason == "a answered first"


def test_a_stream_commit_names_the_attempts_to_cancel() -> None:
    core = _core(Policy.race(["a", "b"]), Scripted("a", 1), Scripted("b", 1), streaming=True)
    a, b = _launch(core.next_action(0.0)), _launch(core.next_action(0.0))
    core.first_token(b, 0.05)
    b.parts.append("he")
    assert core.commit(b, "first token", 0.05) == [a]
    assert core.commit(a, "first token", 0.06) is None  # too late: cancel it
    core.ended(a, 0.06)
    assert (a.record.outcome, a.record.reason) == ("cancelled", "b committed first")
    core.stream_done(b, None, None, "stop", (), None, 0.1)
    core.stream_succeeded(b, 0.1)
    core.ended(b, 0.1)
    result = core.result(0.1)
    assert (result.response.text, result.trace.attempts[1].ttft) == ("he", 0.05)


def test_a_resolved_policy_carries_its_plan_budget_and_names_and_a_plain_tuple_decides_alike() -> None:
    from specexec._core import Resolved, _plan

    backends = [Scripted("a", 1.0), Scripted("b", 1.0, provider="p2")]
    rt = Runtime(backends)
    policy = Policy.hedge(["a", "b"], delay=0.2)
    resolved = rt.resolve(policy)
    assert isinstance(resolved, Resolved) and rt.resolve(policy) is resolved  # cached per policy
    assert resolved.plan is _plan(policy) and resolved.names == ("a", "b")
    assert policy.budget is not None and resolved.budget is rt.hedge_budget(policy.budget)
    cores = [Core(rt, Query("q"), policy, states, 0.0, 0.0) for states in (resolved, tuple(resolved))]
    for core in cores:
        assert core.plan is resolved.plan and core.budget is resolved.budget
        assert core.trace.candidates == ["a", "b"]
        assert _launch(core.next_action(0.0)).state.name == "a"
        wait = core.next_action(0.0)
        assert isinstance(wait, Wait) and wait.until == pytest.approx(0.2)
    assert cores[0].trace.candidates is not cores[1].trace.candidates  # each trace its own list


@pytest.mark.parametrize(
    ("text", "utf8_bytes"), [("", 0), ("plain ascii", 11), ("naïve", 6), ("日本語", 9), ("emoji 🙂", 10)]
)
def test_the_input_bound_counts_utf8_bytes_whatever_the_script(text: str, utf8_bytes: int) -> None:
    from specexec._query import estimate_input_tokens, estimate_tokens

    # byte-pair tokenizers never make more tokens than UTF-8 bytes: the ceiling's bound
    assert estimate_tokens(text) == utf8_bytes == len(text.encode("utf-8"))
    assert estimate_input_tokens(Query(text or "x")) == (utf8_bytes or 1) + 7
