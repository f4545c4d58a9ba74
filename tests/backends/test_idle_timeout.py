"""Issue 9 item 13a: the idle-content timeout (``HttpTimeouts.idle``), in trio virtual time.

SSE keep-alive comments reset httpx's read timeout, so a stream sending only ``: ping``
would never end; only content counts as progress for ``idle``.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import anyio
import httpx
import pytest
import trio.testing

from specexec import PolicyError, Timeout, Usage
from specexec.backends import HttpTimeouts

from ._helpers import sse
from .test_hardening import BOUND, QUERY, ROLE, anthropic, chunk, openai, serving
from .test_hardening import _key as _key  # the API key variable, set for every test

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> tuple[str, dict[str, object]]:
    """These tests run on trio in virtual time only: keep-alives every second, for minutes."""
    return "trio", {"clock": trio.testing.MockClock(autojump_threshold=0)}


class Paced(httpx.AsyncByteStream):
    """Sends ``(delay, bytes)`` pairs, then keep-alive comments every second for ever."""

    def __init__(self, plan: list[tuple[float, bytes]]) -> None:
        self.plan = plan

    async def __aiter__(self) -> AsyncIterator[bytes]:
        for delay, data in self.plan:
            await anyio.sleep(delay)
            yield data
        while True:
            await anyio.sleep(1.0)
            yield b": ping\n\n"


def paced(plan: list[tuple[float, bytes]]) -> Any:
    return lambda r: httpx.Response(200, headers={"content-type": "text/event-stream"}, stream=Paced(plan))


@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
async def test_keep_alives_alone_time_out_after_idle(make: Any) -> None:
    start = anyio.current_time()
    with pytest.raises(Timeout, match="idle") as info:
        await make(serving(paced([])), stream=True, timeout=HttpTimeouts(read=2.0, idle=5.0)).complete(QUERY)
    assert anyio.current_time() - start == 5.0
    assert "HttpTimeouts.idle" in str(info.value)


async def test_each_token_restarts_the_idle_window() -> None:
    plan = [(0.0, sse(ROLE)), (3.0, sse(chunk("a"))), (4.0, sse(chunk("b"))), (4.5, sse(chunk("c")))]
    start = anyio.current_time()
    with pytest.raises(Timeout) as info:
        await openai(serving(paced(plan)), stream=True, timeout=HttpTimeouts(idle=5.0)).complete(QUERY)
    assert anyio.current_time() - start == 3.0 + 4.0 + 4.5 + 5.0
    assert info.value.partial_usage == Usage(input_tokens=BOUND, output_tokens=3, estimated=True)


async def test_idle_none_waits_for_content() -> None:
    plan = [(0.0, sse(ROLE)), (100.0, sse(chunk("late", "stop"), "[DONE]"))]

    class Once(Paced):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            # (no cancel scope here: a scope open across a ``yield`` of an async generator is
            # mis-nested as soon as its reader waits under a scope of its own, as streams do)
            for delay, data in self.plan:
                for _ in range(int(delay)):
                    await anyio.sleep(1.0)
                    yield b": ping\n\n"
                yield data

    respond = lambda r: httpx.Response(200, stream=Once(plan))  # noqa: E731
    response = await openai(serving(respond), stream=True, timeout=HttpTimeouts(idle=None)).complete(QUERY)
    assert response.text == "late"


@pytest.mark.parametrize(
    ("read", "idle", "sent"), [(120.0, 5.0, 5.0), (2.0, 5.0, 2.0), (None, 5.0, 5.0), (3.0, None, 3.0)]
)
async def test_non_streamed_idle_is_the_read_timeout(read: float | None, idle: float | None, sent: float) -> None:
    # not streamed, every byte is content: idle is enforced by httpx as the read timeout
    # (over loopback in test_hardening_fleet.py); streamed, by a cancel scope (above)
    seen: list[dict[str, float | None]] = []

    def respond(request: httpx.Request) -> httpx.Response:
        seen.append(request.extensions["timeout"])
        return httpx.Response(200, json={"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}]})

    await openai(serving(respond), stream=False, timeout=HttpTimeouts(read=read, idle=idle)).complete(QUERY)
    assert seen[0]["read"] == sent


def test_idle_is_validated_and_defaults() -> None:
    assert HttpTimeouts().idle == 120.0
    with pytest.raises(PolicyError, match="idle"):
        HttpTimeouts(idle=0)


async def test_a_finished_stream_is_not_failed_by_idle_while_draining() -> None:
    # [DONE] just before the idle deadline, then no EOF: the drain (up to 1 s) must not be
    # cut by the idle scope into a Timeout: the answer is complete
    class DoneThenHang(httpx.AsyncByteStream):
        async def __aiter__(self) -> AsyncIterator[bytes]:
            yield sse(ROLE, chunk("all"))
            await anyio.sleep(4.9)
            yield sse(chunk(None, "stop"), "[DONE]")
            await anyio.sleep_forever()

    respond = lambda r: httpx.Response(200, stream=DoneThenHang())  # noqa: E731
    start = anyio.current_time()
    response = await openai(serving(respond), stream=True, timeout=HttpTimeouts(idle=5.0)).complete(QUERY)
    assert response.text == "all"
    assert anyio.current_time() - start == pytest.approx(4.9 + 1.0)  # DRAIN_TIMEOUT, then returned


A_START = {"type": "message_start", "message": {"model": "c-1", "usage": {"input_tokens": 9, "output_tokens": 1}}}


def a_event(delta: dict[str, Any]) -> dict[str, Any]:
    return {"type": "content_block_delta", "index": 0, "delta": delta}


async def test_thinking_and_tool_deltas_are_progress_too() -> None:
    # extended thinking (or a tool call's arguments) can stream for minutes before any text:
    # those deltas are generated tokens, so they restart the idle window (and are billed)
    thinking = [(3.0, sse(a_event({"type": "thinking_delta", "thinking": "hmm"}))) for _ in range(4)]
    tool = [(3.0, sse(a_event({"type": "input_json_delta", "partial_json": '{"a'})))]
    end = sse(
        a_event({"type": "text_delta", "text": "ok"}),
        {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 7}},
        {"type": "message_stop"},
    )
    plan = [(0.0, sse(A_START)), *thinking, *tool, (3.0, end)]
    response = await anthropic(serving(paced(plan)), stream=True, timeout=HttpTimeouts(idle=5.0)).complete(QUERY)
    assert response.text == "ok"
    with pytest.raises(Timeout) as info:  # the same without the end: billed for every delta
        await anthropic(serving(paced(plan[:-1])), stream=True, timeout=HttpTimeouts(idle=5.0)).complete(QUERY)
    assert info.value.partial_usage == Usage(input_tokens=9, output_tokens=5, estimated=True)


async def test_reasoning_deltas_are_progress_for_openai_compatible_servers() -> None:
    def reasoning(text: str) -> dict[str, Any]:  # vLLM / DeepSeek put the reasoning beside the content
        return {"model": "m-1", "choices": [{"index": 0, "delta": {"reasoning_content": text}}]}

    plan = [(0.0, sse(ROLE))] + [(3.0, sse(reasoning("think"))) for _ in range(4)]
    plan.append((3.0, sse(chunk("ok"), chunk(None, "stop"), "[DONE]")))
    response = await openai(serving(paced(plan)), stream=True, timeout=HttpTimeouts(idle=5.0)).complete(QUERY)
    assert response.text == "ok"


# --------------------------------------------------------------------------- Backend.stream (issue 10)


async def _drain(backend: Any) -> list[str]:
    texts: list[str] = []
    async with contextlib.aclosing(backend.stream(QUERY)) as stream:
        async for piece in stream:
            texts.append(piece.text)
    return texts


@pytest.mark.parametrize("make", [openai, anthropic], ids=["openai", "anthropic"])
async def test_stream_of_keep_alives_alone_times_out_after_idle(make: Any) -> None:
    start = anyio.current_time()
    with pytest.raises(Timeout, match=r"HttpTimeouts\.idle"):
        await _drain(make(serving(paced([])), timeout=HttpTimeouts(read=2.0, idle=5.0)))
    assert anyio.current_time() - start == 5.0


async def test_stream_each_token_restarts_the_idle_window() -> None:
    plan = [(0.0, sse(ROLE)), (3.0, sse(chunk("a"))), (4.0, sse(chunk("b"))), (4.5, sse(chunk("c")))]
    start = anyio.current_time()
    texts: list[str] = []
    with pytest.raises(Timeout) as info:
        async with contextlib.aclosing(
            openai(serving(paced(plan)), timeout=HttpTimeouts(idle=5.0)).stream(QUERY)
        ) as stream:
            async for piece in stream:
                texts.append(piece.text)
    assert texts == ["a", "b", "c"]
    assert anyio.current_time() - start == 3.0 + 4.0 + 4.5 + 5.0
    assert info.value.partial_usage == Usage(input_tokens=BOUND, output_tokens=3, estimated=True)


async def test_stream_a_slow_reader_is_not_idle() -> None:
    # the caller taking 10 s over each piece is not the server's silence: idle counts only the
    # time spent waiting for the server
    plan = [(0.0, sse(ROLE, chunk("a"))), (1.0, sse(chunk("b", "stop"), "[DONE]"))]
    texts: list[str] = []
    async with contextlib.aclosing(openai(serving(paced(plan)), timeout=HttpTimeouts(idle=5.0)).stream(QUERY)) as s:
        async for piece in s:
            texts.append(piece.text)
            await anyio.sleep(10.0)
    assert "".join(texts) == "ab"
