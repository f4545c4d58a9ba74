"""``SimulatedBackend.stream``: the pieces of a reply, whatever its length against ``output_tokens``."""

from __future__ import annotations

import anyio
import pytest

from specexec import Query, SimulatedBackend
from tests.conftest import Timing

pytestmark = pytest.mark.anyio


async def _pieces(backend: SimulatedBackend) -> list[tuple[float, str]]:
    started = anyio.current_time()
    return [(anyio.current_time() - started, c.text) async for c in backend.stream(Query("q")) if c.text]


@pytest.mark.parametrize("reply", ["hi", "abc"])
async def test_a_reply_shorter_than_output_tokens_starts_with_text_at_the_ttft(reply: str, timing: Timing) -> None:
    backend = SimulatedBackend("s", 0.0, ttft=0.1, token_time=0.01, reply=reply, output_tokens=5)
    pieces = await _pieces(backend)
    assert "".join(text for _, text in pieces) == reply
    assert pieces[0][0] == timing.approx(0.1)  # the first token is text, at the TTFT
    assert all(text for _, text in pieces)  # no empty piece is sent


async def test_a_reply_as_long_as_output_tokens_is_one_character_a_token(timing: Timing) -> None:
    backend = SimulatedBackend("s", 0.0, ttft=0.1, token_time=0.01, reply="abcde", output_tokens=5)
    pieces = await _pieces(backend)
    assert [text for _, text in pieces] == list("abcde")
    assert [t for t, _ in pieces] == [timing.approx(0.1 + 0.01 * i) for i in range(5)]
