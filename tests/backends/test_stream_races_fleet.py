"""Issue 10's streaming-race behaviours over real loopback HTTP to the mock fleet, on trio and
asyncio+uvloop, with ``OpenAICompatible`` and ``Anthropic``: a prefix verifier rejects a stream
that starts with a refusal and commits the next; a stall before the commit fails over; a stall
after it raises ``Timeout``; the caller leaving early cancels every attempt and the fleet sees
each disconnect (and stops sending tokens); a hedge on the first token fires.

Times over HTTP are not exact: the tests assert what was committed, the order of events and
the fleet's counters (``/stats``), never durations. The virtual-time versions, with exact
times, are in ``tests/test_stream.py``.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import anyio
import pytest

import specexec
from specexec import Policy, Query, Runtime, verifiers
from specexec._query import estimate_tokens
from specexec.backends import Anthropic, HttpTimeouts, OpenAICompatible
from specexec.bench.fleet import Constant, Deployment, Faults, FleetConfig, FleetProcess, start_fleet_process
from specexec.bench.fleet._config import DEFAULT_REFUSAL
from specexec.bench.fleet._reply import lorem

from .test_e2e_fleet import settled_stats

pytestmark = pytest.mark.anyio

APIS = ("openai", "anthropic")
LONG_TOKENS = 200


def _dep(name: str, api: str, **kw: Any) -> Deployment:
    kw.setdefault("latency", Constant(value=0.005))
    kw.setdefault("per_token", 0.002)
    kw.setdefault("output_tokens", 8)
    return Deployment(name=name, provider="sr", region=name, model=f"{name}-model", api=api, **kw)  # type: ignore[arg-type]


def _deployments(api: str) -> tuple[Deployment, ...]:
    p = "a-" if api == "anthropic" else ""
    return (
        _dep(f"{p}ok", api),
        # refuses, and slowly enough (50 ms a token) that a rejected stream cannot end by itself first
        _dep(f"{p}refuse", api, per_token=0.05, faults=Faults(refusal=1.0)),
        # two tokens, then silence until the client leaves
        _dep(f"{p}stall", api, faults=Faults(stall_after=1.0, stall_after_tokens=2)),
        _dep(f"{p}long", api, per_token=0.02, output_tokens=LONG_TOKENS),  # 4 s of tokens
        _dep(f"{p}slow", api, latency=Constant(value=1.5)),  # first token after 1.5 s
    )


CONFIG = FleetConfig(deployments=tuple(d for api in APIS for d in _deployments(api)))


@pytest.fixture(scope="module")
def races_fleet() -> Iterator[FleetProcess]:
    """One fleet for the module; the tests read its counters as differences."""
    with start_fleet_process(CONFIG) as process:
        yield process


def backend(fleet: FleetProcess, name: str, **kw: Any) -> OpenAICompatible | Anthropic:
    """The ``OpenAICompatible`` or ``Anthropic`` backend (as the fleet serves it) for ``name``."""
    kw.setdefault("timeout", HttpTimeouts(connect=2.0, read=10.0, write=2.0, pool=5.0))
    kw.setdefault("input_price", 1.0)  # USD per 1M tokens: a stopped stream's charge is visible
    kw.setdefault("output_price", 2.0)
    cls = Anthropic if fleet.config.deployment(name).api == "anthropic" else OpenAICompatible
    return cls(name, base_url=fleet.base_url(name), model=f"{name}-model", api_key_env=None, **kw)


def names(api: str, *bases: str) -> list[str]:
    return [("a-" if api == "anthropic" else "") + b for b in bases]


async def counters(fleet: FleetProcess, *deployments: str) -> dict[str, dict[str, Any]]:
    """Each deployment's ``/stats`` entry once nothing is in flight there."""
    return {name: await settled_stats(fleet, name) for name in deployments}


def delta(before: dict[str, dict[str, Any]], after: dict[str, dict[str, Any]], key: str) -> dict[str, int]:
    return {name: after[name][key] - before[name][key] for name in before}


QUERY = Query("Say something.", max_tokens=LONG_TOKENS)
OK_TEXT = " ".join(lorem(8).split())  # what the ok deployments answer (8 words)


@pytest.mark.parametrize("api", APIS)
async def test_prefix_verifier_rejects_a_refusal_and_commits_the_next(races_fleet: FleetProcess, api: str) -> None:
    refuse, ok = names(api, "refuse", "ok")
    before = await counters(races_fleet, refuse, ok)
    policy = Policy.failover([refuse, ok], verify_prefix=[verifiers.not_refusal()], prefix_chars=12)
    deltas: list[str] = []
    async with Runtime([backend(races_fleet, refuse), backend(races_fleet, ok)]) as rt:
        async with rt.stream(QUERY, policy) as s:
            async for piece in s:
                deltas.append(piece)
        q_input = rt.state_for(refuse).input_tokens(QUERY)
        state = rt.state_for(refuse)
    result = s.result
    assert (result.backend, result.response.text, "".join(deltas)) == (ok, OK_TEXT, OK_TEXT)
    assert "sorry" not in "".join(deltas)  # the caller never saw a byte of the refusal
    rejected, accepted = result.trace.attempts
    assert (rejected.backend, rejected.outcome, accepted.backend, accepted.outcome) == (
        refuse,
        "rejected",
        ok,
        "accepted",
    )
    assert "refus" in rejected.reason
    assert accepted.trigger == "after failure" and accepted.started >= (rejected.ended or 0.0) - 1e-6
    (commit,) = [e for e in result.trace.events if e.what == "commit"]
    assert commit.detail == f"{ok}: its prefix passed verify_prefix"
    # charged its input and the text it sent (the refusal's first words), not its reservation
    sent = rejected.output_tokens
    assert 0 < sent <= estimate_tokens(DEFAULT_REFUSAL) and rejected.usage_estimated
    assert rejected.cost == pytest.approx((q_input * state.input_price + sent * state.output_price) / 1e6)
    assert 0 < rejected.cost < rejected.reserved
    after = await counters(races_fleet, refuse, ok)
    assert delta(before, after, "disconnected") == {refuse: 1, ok: 0}  # the rejected stream was closed
    assert delta(before, after, "completed") == {refuse: 0, ok: 1}
    assert 0 < after[refuse]["tokens_sent"] - before[refuse]["tokens_sent"] < len(DEFAULT_REFUSAL.split())


@pytest.mark.parametrize("api", APIS)
async def test_stall_before_commit_fails_over_and_the_stalled_stream_is_closed(
    races_fleet: FleetProcess, api: str
) -> None:
    stall, ok = names(api, "stall", "ok")
    before = await counters(races_fleet, stall, ok)
    # the prefix needs 30 characters: the two words the stalled stream sent do not commit it
    policy = Policy.failover([stall, ok], verify_prefix=[verifiers.length(min=30)], prefix_chars=30, stall_timeout=0.3)
    async with Runtime([backend(races_fleet, stall), backend(races_fleet, ok)]) as rt:
        with anyio.fail_after(10):  # never a hang
            async with rt.stream(QUERY, policy) as s:
                deltas = [piece async for piece in s]
        state = rt.state_for(stall)
        q_input = state.input_tokens(QUERY)
    result = s.result
    assert (result.backend, "".join(deltas)) == (ok, OK_TEXT)
    stalled, accepted = result.trace.attempts
    assert (stalled.backend, stalled.outcome, accepted.outcome) == (stall, "failed", "accepted")
    assert "stalled" in stalled.reason and stalled.ttft is not None
    assert accepted.started >= (stalled.ended or 0.0) - 1e-6  # launched once the stall was called
    # charged what it sent (two words), not its reservation
    assert stalled.output_tokens == estimate_tokens(" ".join(lorem(2).split())) and stalled.usage_estimated
    charged = q_input * state.input_price + stalled.output_tokens * state.output_price
    assert stalled.cost == pytest.approx(charged / 1e6) and stalled.cost < stalled.reserved
    after = await counters(races_fleet, stall, ok)
    assert delta(before, after, "disconnected") == {stall: 1, ok: 0}
    assert delta(before, after, "tokens_sent") == {stall: 2, ok: 8}


@pytest.mark.parametrize("api", APIS)
async def test_stall_after_commit_raises_a_timeout_and_never_hangs(races_fleet: FleetProcess, api: str) -> None:
    (stall,) = names(api, "stall")
    before = await counters(races_fleet, stall)
    traces: list[specexec.Trace] = []
    got: list[str] = []
    async with Runtime([backend(races_fleet, stall)], sinks=[traces.append]) as rt:
        with anyio.fail_after(10), pytest.raises(specexec.Timeout, match="stalled") as info:
            async with rt.stream(QUERY, Policy.single(stall, stall_timeout=0.3)) as s:
                async for piece in s:
                    got.append(piece)
    assert "".join(got) == " ".join(lorem(2).split())  # the two words were sent before the stall
    assert info.value.backend == stall
    (trace,) = traces
    assert trace.outcome == "stream_failed"
    assert [a.outcome for a in trace.attempts] == ["failed"]
    with pytest.raises(RuntimeError, match="ended with an error"):
        _ = s.result
    after = await counters(races_fleet, stall)
    assert delta(before, after, "disconnected") == {stall: 1}


@pytest.mark.parametrize("api", APIS)
async def test_leaving_early_cancels_every_attempt_and_the_fleet_stops_generating(
    races_fleet: FleetProcess, api: str
) -> None:
    long, slow = names(api, "long", "slow")
    before = await counters(races_fleet, long, slow)
    traces: list[specexec.Trace] = []
    got: list[str] = []
    async with Runtime([backend(races_fleet, long), backend(races_fleet, slow)], sinks=[traces.append]) as rt:
        async with rt.stream(QUERY, Policy.race([long, slow])) as s:
            async for piece in s:
                got.append(piece)
                if len(got) == 3:
                    break  # the user disconnected
        left = anyio.current_time()
        # when the `async with` exits, nothing it started is running: no request is open
        after = await counters(races_fleet, long, slow)
        assert anyio.current_time() - left < 1.0  # the fleet saw both disconnects at once, not at 1.5 s / 4 s
    assert len(got) == 3
    (trace,) = traces
    assert trace.outcome == "cancelled"
    by_name = {a.backend: a for a in trace.attempts}
    assert {name: (a.outcome, a.reason) for name, a in by_name.items()} == {
        long: ("cancelled", "caller cancelled"),  # it was committed: the caller left
        slow: ("cancelled", f"{long} committed first"),
    }
    # cost: the committed stream its input and the text it sent; the loser (no text) its reservation
    state = rt.state_for(long)
    received = by_name[long].output_tokens
    assert received == estimate_tokens("".join(got)) or received > estimate_tokens("".join(got))
    charged = state.input_tokens(QUERY) * state.input_price + received * state.output_price
    assert by_name[long].cost == pytest.approx(charged / 1e6) and by_name[long].cost < by_name[long].reserved
    assert by_name[slow].cost == by_name[slow].reserved > 0
    assert delta(before, after, "disconnected") == {long: 1, slow: 1}
    assert delta(before, after, "completed") == {long: 0, slow: 0}
    sent = delta(before, after, "tokens_sent")
    assert sent[slow] == 0 and 3 <= sent[long] < LONG_TOKENS // 2  # it stopped generating


@pytest.mark.parametrize("delay", [0.05, "p95"], ids=["fixed", "p95-of-ttft"])
@pytest.mark.parametrize("api", APIS)
async def test_a_ttft_hedge_fires_and_commits_the_first_to_send_a_token(
    races_fleet: FleetProcess, api: str, delay: float | str
) -> None:
    slow, ok = names(api, "slow", "ok")
    before = await counters(races_fleet, slow, ok)
    async with Runtime([backend(races_fleet, slow), backend(races_fleet, ok)]) as rt:
        if delay == "p95":  # slow's first token comes at 0.1 s, its whole answer at 9 s (as recorded)
            health, now = rt.health(slow), anyio.current_time()
            for _ in range(100):
                health.on_success(9.0, now, ttft=0.1)
        async with rt.stream(QUERY, Policy.hedge([slow, ok], delay=delay, budget=None)) as s:
            deltas = [piece async for piece in s]
    result = s.result
    assert (result.backend, "".join(deltas)) == (ok, OK_TEXT)
    primary, hedge = result.trace.attempts
    assert (primary.backend, primary.outcome, hedge.backend, hedge.outcome) == (slow, "cancelled", ok, "accepted")
    assert hedge.trigger == "hedge"
    # the hedge was timed on the first token: it started before slow's first token (1.5 s),
    # let alone the 9 s total latency p95 would read on the latency histogram
    assert primary.ttft is None and hedge.started < 1.0
    assert hedge.ttft is not None and (commit := next(e for e in result.trace.events if e.what == "commit"))
    assert commit.at < 1.0 and commit.detail == f"{ok}: first token"
    # the caller's time to first text, from the start of the run: after the hedge's first token
    assert result.ttft is not None and hedge.started + hedge.ttft <= result.ttft <= result.latency
    after = await counters(races_fleet, slow, ok)
    assert delta(before, after, "disconnected") == {slow: 1, ok: 0}
    assert delta(before, after, "tokens_sent") == {slow: 0, ok: 8}
