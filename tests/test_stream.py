"""Streaming races (issue 10): hedge on the first token, commit to one stream.

On trio in virtual time (exact) and on asyncio + uvloop.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest

import specexec
from specexec import Policy, Query, Runtime, StreamChunk, Usage, verifiers
from tests.conftest import Timing

pytestmark = pytest.mark.anyio


class Streamer(specexec.BackendBase):
    """Streams ``pieces``: the first after ``ttft``, each next one ``gap`` later.

    ``fail_at``: raise ``Unavailable`` instead of sending piece ``fail_at``;
    ``stall_at``: never send piece ``stall_at`` (until cancelled).
    """

    def __init__(
        self,
        name: str,
        ttft: float,
        pieces: list[str],
        *,
        gap: float = 0.01,
        fail_at: int | None = None,
        stall_at: int | None = None,
        **kw: Any,
    ) -> None:
        kw.setdefault("region", name)
        super().__init__(name, **kw)
        self.ttft, self.pieces, self.gap = ttft, pieces, gap
        self.fail_at, self.stall_at = fail_at, stall_at
        self.active = 0
        self.cancelled = 0
        self.started_at: list[float] = []

    async def complete(self, query: Query) -> specexec.Response:
        parts = [c.text async for c in self.stream(query)]
        return specexec.Response("".join(parts), Usage(10, len(parts)))

    async def stream(self, query: Query) -> AsyncIterator[StreamChunk]:
        self.active += 1
        self.started_at.append(anyio.current_time())
        try:
            for i, piece in enumerate(self.pieces):
                await anyio.sleep(self.ttft if i == 0 else self.gap)
                if i == self.fail_at:
                    raise specexec.Unavailable("cut", backend=self.name)
                if i == self.stall_at:
                    await anyio.sleep_forever()
                yield StreamChunk(piece)
            yield StreamChunk(usage=Usage(10, len(self.pieces)), finish_reason="stop", model=self.name)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            self.active -= 1


async def collect(rt: Runtime, query: str | Query, policy: Policy) -> tuple[list[str], specexec.Result]:
    out: list[str] = []
    async with rt.stream(query, policy) as s:
        async for delta in s:
            out.append(delta)
    return out, s.result


async def test_hedge_on_the_first_token_commits_the_first_stream(timing: Timing) -> None:
    slow = Streamer("slow", 1.0, ["s1", "s2"])
    fast = Streamer("fast", 0.05, ["f1", "f2", "f3"])
    async with Runtime([slow, fast]) as rt:
        t0 = anyio.current_time()
        deltas, result = await collect(rt, "q", Policy.hedge(["slow", "fast"], delay=0.2, budget=None))
    assert fast.started_at[0] - t0 == timing.approx(0.2)
    assert deltas == ["f1", "f2", "f3"] and result.response.text == "f1f2f3"
    assert result.backend == "fast"
    assert result.response.ttft == timing.approx(0.05)
    assert result.latency == timing.approx(0.2 + 0.05 + 0.02)
    first, hedge = result.trace.attempts
    assert (first.outcome, first.reason) == ("cancelled", "fast committed first")
    assert first.ended == timing.approx(0.25)
    assert hedge.outcome == "accepted" and hedge.ttft == timing.approx(0.05)
    commit = [e for e in result.trace.events if e.what == "commit"]
    assert commit and commit[0].at == timing.approx(0.25) and "first token" in commit[0].detail
    assert slow.cancelled == 1 and slow.active == 0 and fast.active == 0


async def test_stream_delay_p95_reads_the_ttft_histogram(timing: Timing) -> None:
    slow = Streamer("slow", 5.0, ["s"])
    other = Streamer("other", 0.01, ["o"])
    async with Runtime([slow, other]) as rt:
        health = rt.health("slow")
        now = anyio.current_time()
        for _ in range(100):
            health.on_success(9.0, now, ttft=0.3)  # total latency 9 s, first token at 0.3 s
        t0 = anyio.current_time()
        _, result = await collect(rt, "q", Policy.hedge(["slow", "other"], delay="p95", budget=None))
    # the TTFT p95 (0.3 s) to the histogram's precision in virtual time; a real clock adds its jitter
    expected = pytest.approx(0.3, rel=0.02) if timing.exact else timing.approx(0.3)
    assert other.started_at[0] - t0 == expected
    assert result.backend == "other"


async def test_failure_before_the_first_token_launches_the_next_at_once(timing: Timing) -> None:
    broken = Streamer("broken", 0.05, ["x"], fail_at=0)
    ok = Streamer("ok", 0.05, ["a", "b"])
    async with Runtime([broken, ok]) as rt:
        t0 = anyio.current_time()
        deltas, result = await collect(rt, "q", Policy.hedge(["broken", "ok"], delay=5.0))
    assert ok.started_at[0] - t0 == timing.approx(0.05)
    assert deltas == ["a", "b"] and result.trace.attempts[0].outcome == "failed"


async def test_prefix_verifier_rejects_a_refusal_and_commits_the_next(timing: Timing) -> None:
    refuses = Streamer("refuses", 0.01, ["I'm sorry, ", "I can't."])
    answers = Streamer("answers", 0.2, ['{"a"', ": 1}"])
    policy = Policy.failover(["refuses", "answers"], verify_prefix=[verifiers.not_refusal()], prefix_chars=8)
    async with Runtime([refuses, answers]) as rt:
        deltas, result = await collect(rt, "q", policy)
    assert deltas == ['{"a"', ": 1}"]
    rejected = result.trace.attempts[0]
    assert rejected.outcome == "rejected" and "refus" in rejected.reason
    assert result.trace.attempts[1].started == timing.approx(0.01)  # at once: its first piece failed the prefix


async def test_stall_before_commit_fails_over(timing: Timing) -> None:
    stalls = Streamer("stalls", 0.01, ["a", "b", "c"], stall_at=1)
    ok = Streamer("ok", 0.01, ["x", "y"])
    policy = Policy.failover(
        ["stalls", "ok"], verify_prefix=[verifiers.length(min=2)], prefix_chars=2, stall_timeout=0.5
    )
    async with Runtime([stalls, ok]) as rt:
        deltas, result = await collect(rt, "q", policy)
    assert deltas == ["x", "y"]
    stalled = result.trace.attempts[0]
    assert stalled.outcome == "failed" and "stalled" in stalled.reason
    assert stalled.ended == timing.approx(0.01 + 0.5)


async def test_stall_after_commit_raises_a_timeout_never_hangs(timing: Timing) -> None:
    stalls = Streamer("stalls", 0.01, ["a", "b", "c"], stall_at=2)
    got: list[str] = []
    async with Runtime([stalls]) as rt:
        t0 = anyio.current_time()
        with pytest.raises(specexec.Timeout, match="stalled"):
            async with rt.stream("q", Policy.single("stalls", stall_timeout=0.3)) as s:
                async for delta in s:
                    got.append(delta)
        assert anyio.current_time() - t0 == timing.approx(0.02 + 0.3)
    assert got == ["a", "b"] and stalls.active == 0


class KeepAlive(specexec.BackendBase):
    """Streams "A", then a chunk without text every 0.05 s for ``for_`` seconds, then "B"."""

    def __init__(self, name: str, for_: float) -> None:
        super().__init__(name)
        self.for_ = for_

    async def complete(self, query: Query) -> specexec.Response:
        raise AssertionError("streamed only")

    async def stream(self, query: Query) -> AsyncIterator[StreamChunk]:
        yield StreamChunk("A")
        for _ in range(round(self.for_ / 0.05)):
            await anyio.sleep(0.05)
            yield StreamChunk("")
        yield StreamChunk("B")


async def test_chunks_without_text_do_not_restart_the_stall_timeout(timing: Timing) -> None:
    # Before: each empty chunk gave the next read a whole stall_timeout again: 'A', 'B' after 2 s
    # (and an endless keep-alive never timed out).
    got: list[str] = []
    async with Runtime([KeepAlive("k", 2.0)]) as rt:
        t0 = anyio.current_time()
        with pytest.raises(specexec.Timeout, match="stalled"):
            async with rt.stream("q", Policy.single("k", stall_timeout=0.3)) as s:
                async for delta in s:
                    got.append(delta)
        assert anyio.current_time() - t0 == timing.approx(0.3)
    assert got == ["A"]


@pytest.mark.parametrize("text", ["hi", ""], ids=["shorter-than-the-prefix", "empty"])
async def test_verify_judges_a_first_token_stream_shorter_than_its_prefix(text: str) -> None:
    # Before: an answer that ended before prefix_chars was committed whole and verify never ran.
    judged: list[str] = []

    def reject(query: Query, response: specexec.Response) -> bool:
        judged.append(response.text)
        return False

    backend = Streamer("a", 0.01, [text] if text else [])
    async with Runtime([backend]) as rt:
        _, result = await collect(rt, "q", Policy.single("a", verify=[reject], prefix_chars=5))
    assert judged == [text]
    assert [(e.what, e.detail) for e in result.trace.events if e.what == "verified after commit"] == [
        ("verified after commit", "a: rejected by reject")
    ]


async def test_leaving_early_cancels_everything(timing: Timing) -> None:
    a = Streamer("a", 0.01, [str(i) for i in range(100)])
    b = Streamer("b", 5.0, ["never"])
    traces: list[specexec.Trace] = []
    async with Runtime([a, b], sinks=[traces.append]) as rt:
        async with rt.stream("q", Policy.race(["a", "b"])) as s:
            async for delta in s:
                if delta == "3":
                    break
        assert a.active == 0 and b.active == 0
        assert a.cancelled == 1 and b.cancelled == 1
    assert traces and traces[0].outcome == "cancelled"
    committed, loser = traces[0].attempts
    assert (committed.backend, committed.outcome, committed.reason) == ("a", "cancelled", "caller cancelled")
    assert (loser.backend, loser.outcome, loser.reason) == ("b", "cancelled", "a committed first")
    assert committed.ended == timing.approx(0.04)  # the caller left on the 4th piece ("3", at 0.04)


async def test_a_stream_left_early_says_so_and_cannot_be_entered_again(timing: Timing) -> None:
    a = Streamer("a", 0.01, [str(i) for i in range(100)])
    async with Runtime([a]) as rt:
        stream = rt.stream("q", Policy.single("a"))
        async with stream as s:
            async for delta in s:
                if delta == "1":
                    break
        with pytest.raises(RuntimeError, match=r"left before its end.*sinks"):
            _ = s.result
        with pytest.raises(RuntimeError, match="inside `async with`"):  # not anyio's bare ClosedResourceError
            await s.__anext__()
        with pytest.raises(RuntimeError, match="entered once"):  # before: a second, paid run
            async with stream:
                pass  # pragma: no cover
        assert len(a.started_at) == 1 and a.active == 0


async def test_a_finished_stream_cannot_be_entered_again(timing: Timing) -> None:
    a = Streamer("a", 0.01, ["x", "y"])
    async with Runtime([a]) as rt:
        async with rt.stream("q", Policy.single("a")) as s:
            assert [d async for d in s] == ["x", "y"]
            assert [d async for d in s] == []  # ended: iterating again ends at once
        assert s.result.response.text == "xy"
        with pytest.raises(RuntimeError, match="entered once"):
            async with s:
                pass  # pragma: no cover
    assert len(a.started_at) == 1


async def test_cancelled_streams_are_charged_the_tokens_received(timing: Timing) -> None:
    loser = Streamer("loser", 0.01, ["x"] * 50, gap=0.01, input_price=1.0, output_price=2.0)
    winner = Streamer("winner", 0.2, ["w"], input_price=0.0, output_price=0.0)
    q = Query("q", max_tokens=100)
    policy = Policy.race(["loser", "winner"], verify_prefix=[verifiers.regex("^w")], prefix_chars=1)
    async with Runtime([loser, winner]) as rt:
        bound = rt.state_for("loser").input_tokens(q)
        _, result = await collect(rt, q, policy)
    lost = result.trace.attempts[0]
    assert lost.outcome == "rejected"  # its prefix did not start with "w": rejected, stopped
    assert lost.cost == pytest.approx((bound * 1.0 + 1 * 2.0) / 1e6)


async def test_a_cancelled_stream_is_charged_what_it_sent(timing: Timing) -> None:
    loser = Streamer("loser", 0.01, ["x"] * 50, gap=0.01, input_price=1.0, output_price=2.0)
    winner = Streamer("winner", 0.095, ["w"])
    q = Query("q", max_tokens=100)
    policy = Policy.race(["loser", "winner"], verify_prefix=[verifiers.length(min=1)], prefix_chars=20)
    async with Runtime([loser, winner]) as rt:
        bound = rt.state_for("loser").input_tokens(q)
        _, result = await collect(rt, q, policy)
    assert result.backend == "winner"  # ended (1 char) before the loser reached 20: its whole text is the prefix
    lost = result.trace.attempts[0]
    assert lost.outcome == "cancelled"
    # pieces at 0.01, 0.02, ... 0.09: 9 tokens received before the commit at 0.095 (exact in virtual
    # time; on a real clock the sleeps drift, so 7-10)
    received = lost.output_tokens
    assert received == 9 if timing.exact else 7 <= received <= 10
    assert lost.cost == pytest.approx((bound * 1.0 + received * 2.0) / 1e6)


async def test_commit_complete_buffers_verifies_then_streams(timing: Timing) -> None:
    prose = Streamer("prose", 0.01, ["not ", "json"])
    good = Streamer("good", 0.05, ['{"ok"', ": 1}"])
    policy = Policy.race(["prose", "good"], verify=[verifiers.json_valid()], commit="complete")
    async with Runtime([prose, good]) as rt:
        deltas, result = await collect(rt, "q", policy)
    assert "".join(deltas) == '{"ok": 1}' and result.backend == "good"
    assert result.trace.attempts[0].outcome == "rejected"


async def test_a_backend_without_stream_is_streamed_as_one_piece(timing: Timing) -> None:
    async def answer(query: Query) -> str:
        await anyio.sleep(0.1)
        return "whole"

    async with Runtime([specexec.CallableBackend("plain", answer)]) as rt:
        deltas, result = await collect(rt, "q", Policy.single("plain"))
    assert deltas == ["whole"] and result.response.ttft == timing.approx(0.1)


async def test_callable_backend_takes_an_async_generator(timing: Timing) -> None:
    async def gen(query: Query) -> AsyncIterator[str]:
        for piece in ("a", "b"):
            await anyio.sleep(0.1)
            yield piece

    backend = specexec.CallableBackend("gen", gen)
    async with Runtime([backend]) as rt:
        deltas, result = await collect(rt, "q", Policy.single("gen"))
        complete = await rt.run("q", Policy.single("gen"))
    assert deltas == ["a", "b"] and result.response.ttft == timing.approx(0.1)
    assert complete.response.text == "ab"


async def test_simulated_backend_streams_in_virtual_time(timing: Timing) -> None:
    sim = specexec.SimulatedBackend("sim", 1.0, ttft=0.2, token_time=0.01, reply="one two three", output_tokens=3)
    async with Runtime([sim]) as rt:
        deltas, result = await collect(rt, "q", Policy.single("sim"))
    assert "".join(deltas) == "one two three" and len(deltas) == 3
    assert result.response.ttft == timing.approx(0.2)
    assert result.latency == timing.approx(0.22)


async def test_a_streamed_result_keeps_tool_calls_and_the_request_id(timing: Timing) -> None:
    async def gen(query: Query) -> AsyncIterator[StreamChunk]:
        await anyio.sleep(0.01)
        yield StreamChunk("{}")
        call = specexec.ToolCall("c1", "get_weather", {"city": "Oslo"})
        yield StreamChunk(usage=Usage(3, 1), finish_reason="tool_calls", tool_calls=(call,), request_id="req-7")

    async with Runtime([specexec.CallableBackend("tools", gen)]) as rt:
        _, result = await collect(rt, "q", Policy.single("tools"))
    assert result.response.tool_calls == (specexec.ToolCall("c1", "get_weather", {"city": "Oslo"}),)
    assert result.response.request_id == "req-7" and result.response.finish_reason == "tool_calls"


async def test_result_ttft_is_when_the_caller_got_the_first_text(timing: Timing) -> None:
    # the issue's `s.result` lists a ttft: seconds from the start of the run (like `latency`),
    # not from the committed attempt's own start (that is `response.ttft`)
    slow = Streamer("slow", 1.0, ["s1", "s2"])
    fast = Streamer("fast", 0.05, ["f1", "f2", "f3"])
    hedge = Policy.hedge(["slow", "fast"], delay=0.2, budget=None)
    async with Runtime([slow, fast]) as rt:
        _, first_token = await collect(rt, "q", hedge)
        # a 4-character prefix: the text goes to the caller at the second piece (0.2 + 0.05 + 0.01)
        _, prefixed = await collect(rt, "q", Policy.hedge(["slow", "fast"], delay=0.2, budget=None, prefix_chars=4))
    assert first_token.response.ttft == timing.approx(0.05)
    assert first_token.ttft == timing.approx(0.25)
    assert prefixed.ttft == timing.approx(0.26)


async def test_result_ttft_of_run_is_the_winners_first_token_from_the_start(timing: Timing) -> None:
    sims = [
        specexec.SimulatedBackend(name, 1.0, ttft=t, token_time=0.01, output_tokens=3, reply="one two three")
        for name, t in (("slow", 2.0), ("fast", 0.05))
    ]

    async def answer(query: Query) -> str:
        await anyio.sleep(0.1)
        return "whole"

    async with Runtime([*sims, specexec.CallableBackend("plain", answer)]) as rt:
        result = await rt.run("q", Policy.hedge(["slow", "fast"], delay=0.2, budget=None))
        plain = await rt.run("q", Policy.single("plain"))
    assert result.backend == "fast" and result.ttft == timing.approx(0.25)
    assert plain.ttft is None  # a backend that reports no first token


async def test_a_pick_policy_cannot_stream_its_scorer_would_be_ignored(timing: Timing) -> None:
    # a stream commits to the first attempt that answers; `pick` scores whole answers. Streamed,
    # the scorer was silently skipped (the first to answer won): a PolicyError now says so
    a = Streamer("a", 0.1, ["a"])
    b = Streamer("b", 0.05, ["b"])
    pick = Policy.pick(["a", "b"], scorer=lambda q, r: 10.0 if r.text == "a" else 0.0)
    async with Runtime([a, b]) as rt:
        with pytest.raises(specexec.PolicyError, match="pick") as info:
            rt.stream("q", pick)
        assert info.value.path == "$.scorer" and "run()" in str(info.value)
        assert a.started_at == [] and b.started_at == []  # nothing was launched
        with pytest.raises(specexec.PolicyError, match="pick"):  # the engine refuses it too (routes)
            await specexec._engine.execute(rt, Query("q"), pick, rt.resolve(pick), sink=_Sink())
        assert (await rt.run("q", pick)).backend == "a"  # run() scores both and picks a


class _Sink:
    """A stand-in for the stream's memory channel (the engine refuses before sending anything)."""

    async def send(self, item: str) -> None:
        raise AssertionError("nothing should be sent")


class _Crash(BaseException):
    pass


class CrashingStreamer(Streamer):
    """Streams its first piece, then raises a ``BaseException`` (not a failure the engine can report)."""

    async def stream(self, query: Query) -> AsyncIterator[StreamChunk]:
        await anyio.sleep(self.ttft)
        yield StreamChunk(self.pieces[0])
        raise _Crash("the stream crashed")


async def test_a_stream_attempt_that_crashes_reaches_the_caller_as_itself(timing: Timing) -> None:
    """As from ``run()``: not in anyio's exception group (the stream's task is its own business)."""
    other = Streamer("other", 5.0, ["x"])
    async with Runtime([CrashingStreamer("crash", 0.1, ["a", "b"]), other]) as rt:
        with pytest.raises(BaseException) as caught:
            async with specexec.stream("q", Policy.hedge(["crash", "other"], delay=1.0), runtime=rt) as s:
                async for _ in s:
                    pass
        assert type(caught.value) is _Crash
        assert other.active == 0


class _Chunks:
    """A stream as an object with its own ``aclose`` (which raises when ``bad_close``)."""

    def __init__(self, name: str, ttft: float, count: int, bad_close: bool) -> None:
        self.name, self.ttft, self.count, self.bad_close, self.sent = name, ttft, count, bad_close, 0

    def __aiter__(self) -> _Chunks:
        return self

    async def __anext__(self) -> StreamChunk:
        await anyio.sleep(self.ttft if self.sent == 0 else 0.01)
        if self.sent == self.count:
            raise StopAsyncIteration
        self.sent += 1
        return StreamChunk(f"{self.name}{self.sent} ")

    async def aclose(self) -> None:
        if self.bad_close:
            raise RuntimeError(f"{self.name}.aclose failed")


class BadClose(specexec.BackendBase):
    """Streams ``count`` chunks through ``_Chunks``; its ``aclose`` raises when ``bad_close``."""

    def __init__(self, name: str, ttft: float, bad_close: bool, count: int = 3) -> None:
        super().__init__(name, region=name)
        self.ttft, self.bad_close, self.count = ttft, bad_close, count

    async def complete(self, query: Query) -> specexec.Response:
        raise AssertionError("streamed only")

    def stream(self, query: Query) -> _Chunks:  # type: ignore[override]
        return _Chunks(self.name, self.ttft, self.count, self.bad_close)


@pytest.mark.parametrize("bad", ["loser", "winner", "both"])
async def test_a_streams_aclose_that_raises_changes_no_outcome(bad: str, timing: Timing) -> None:
    """A clean-up error is a trace event: a cancelled loser stays ``cancelled`` (its cancellation
    is not replaced by the error, and its breaker is not fed); a committed stream read to its end
    is still the answer."""
    winner = BadClose("a", 0.2, bad_close=bad in ("winner", "both"))
    loser = BadClose("b", 5.0, bad_close=bad in ("loser", "both"))
    async with Runtime([winner, loser]) as rt:
        deltas, result = await collect(rt, "q", Policy.hedge(["a", "b"], delay=0.1, budget=None))
        assert "".join(deltas) == result.response.text == "a1 a2 a3 "
        assert [(x.backend, x.outcome) for x in result.trace.attempts] == [("a", "accepted"), ("b", "cancelled")]
        assert result.trace.attempts[1].reason == "a committed first"
        closes = [e.detail for e in result.trace.events if e.what == "stream close failed"]
        expected = {"loser": ["b"], "winner": ["a"], "both": ["b", "a"]}[bad]
        assert closes == [f"{name}: RuntimeError: {name}.aclose failed" for name in expected]
        assert [rt.health(n).failures for n in "ab"] == [0, 0]


async def test_a_deadline_during_the_verify_after_commit_says_what_it_cut(timing: Timing) -> None:
    """``commit="first_token"`` with ``verify``: the text was sent, then the whole answer's
    verifier hung; the deadline ends it, and says so (it said "no accepted response")."""

    async def hangs(query: Query, response: specexec.Response) -> bool:
        await anyio.sleep(1000)
        return True

    async with Runtime([Streamer("a", 0.05, ["t0 ", "t1 ", "t2 "], gap=0.01)]) as rt:
        t0 = anyio.current_time()
        deltas: list[str] = []
        with pytest.raises(specexec.DeadlineExceeded) as caught:
            async with rt.stream("q", Policy.single("a", verify=[hangs], deadline=0.5)) as s:
                async for delta in s:
                    deltas.append(delta)
        assert anyio.current_time() - t0 == timing.approx(0.5)
    assert deltas == ["t0 ", "t1 ", "t2 "]
    message = str(caught.value)
    assert "deadline of 0.5s passed while verifying the committed stream from a" in message
    assert "its whole text (9 characters) was sent" in message
    assert "no accepted response" not in message


async def test_a_deadline_that_cuts_a_committed_stream_says_how_far_it_got(timing: Timing) -> None:
    async with Runtime([Streamer("a", 0.05, ["t0 ", "t1 ", "t2 "], gap=0.01, stall_at=2)]) as rt:
        with pytest.raises(specexec.DeadlineExceeded) as caught:
            async with rt.stream("q", Policy.single("a", deadline=0.5)) as s:
                async for _ in s:
                    pass
    assert "deadline of 0.5s passed while the committed stream from a was still sending (6 characters read)" in str(
        caught.value
    )
