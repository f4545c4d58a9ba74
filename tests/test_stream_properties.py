"""Stream invariants over random streams, faults, prefixes and early exits (trio, virtual time):
the caller sees one attempt's text, in order; it equals ``result.response.text``; nothing
outlives the ``async with``; the cost ceiling holds."""

from __future__ import annotations

from typing import Any

import trio
import trio.testing
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import specexec
from specexec import Policy, Query, Runtime, verifiers
from tests.test_stream import Streamer

stream_spec = st.fixed_dictionaries(
    {
        "ttft": st.integers(1, 500).map(lambda ms: ms / 1000),
        "pieces": st.integers(1, 8),
        "gap": st.integers(0, 100).map(lambda ms: ms / 1000),
        "fault": st.sampled_from([None, None, "fail", "stall"]),
        "at": st.integers(0, 7),
        "price": st.sampled_from([0.0, 1.0, 5.0]),
    }
)
policy_spec = st.fixed_dictionaries(
    {
        "mode": st.sampled_from(["hedge", "race", "failover"]),
        "prefix": st.sampled_from([None, 1, 4]),
        "commit": st.sampled_from(["first_token", "complete"]),
        "max_cost": st.sampled_from([None, 1e-4, 1e-3]),
        "deadline": st.sampled_from([None, 0.3, 2.0]),
        "leave_after": st.sampled_from([None, 1, 3]),
    }
)


@settings(max_examples=250, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(stream_spec, min_size=1, max_size=4), policy_spec)
def test_the_caller_sees_one_stream(specs: list[dict[str, Any]], p: dict[str, Any]) -> None:
    backends = [
        Streamer(
            f"b{i}",
            s["ttft"],
            [f"<{i}.{k}>" for k in range(s["pieces"])],
            gap=s["gap"],
            fail_at=s["at"] if s["fault"] == "fail" else None,
            stall_at=s["at"] if s["fault"] == "stall" else None,
            input_price=s["price"],
            output_price=s["price"],
        )
        for i, s in enumerate(specs)
    ]
    knobs: dict[str, Any] = {
        "commit": p["commit"],
        "max_cost": p["max_cost"],
        "deadline": p["deadline"],
        "stall_timeout": 0.2,
        "attempt_timeout": 1.0,  # streams that stall before their first token end (a backend's idle timeout)
    }
    if p["prefix"] is not None:
        check = [verifiers.regex(r"^<")]
        if p["commit"] == "first_token":
            knobs["verify_prefix"] = check
            knobs["prefix_chars"] = p["prefix"]
        else:  # a complete answer is verified whole (verify_prefix would be refused)
            knobs["verify"] = check
    names = [b.name for b in backends]
    policy = Policy(candidates=tuple(names), mode=p["mode"], delay=0.05 if p["mode"] == "hedge" else None, **knobs)
    traces: list[specexec.Trace] = []
    seen: list[str] = []
    out: dict[str, Any] = {}

    async def main() -> None:
        with trio.fail_after(600):  # virtual time: a hang becomes a failure, not a stuck test
            await body()

    async def body() -> None:
        async with Runtime(backends, sinks=[traces.append]) as rt:
            try:
                async with rt.stream(Query("q", max_tokens=40), policy) as s:
                    async for delta in s:
                        seen.append(delta)
                        if p["leave_after"] is not None and len(seen) >= p["leave_after"]:
                            break
                out["result"] = s.result if p["leave_after"] is None or len(seen) < p["leave_after"] else None
            except (specexec.SpecExecError, RuntimeError) as exc:
                out["error"] = exc
            assert all(b.active == 0 for b in backends)  # nothing outlives the `async with`

    trio.run(main, clock=trio.testing.MockClock(autojump_threshold=0))
    sources = {d.split(".")[0] for d in seen}
    assert len(sources) <= 1  # one attempt's text only
    if seen:
        index = int(next(iter(sources))[1:])
        expected = [f"<{index}.{k}>" for k in range(len(seen))]
        assert seen == expected  # in order, nothing skipped or repeated
    result = out.get("result")
    if result is not None:
        assert "".join(seen) == result.response.text
    trace = traces[0]
    if p["max_cost"] is not None:
        assert trace.cost <= p["max_cost"] + 1e-12
    assert all(a.outcome is not None for a in trace.attempts)
