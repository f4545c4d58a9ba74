"""Scorers: majority voting, verifier share with cheapest tie-break, callables."""

from __future__ import annotations

import pytest

from specexec import Query, Response, scorers, verifiers
from specexec.scorers import Candidate

Q = Query("q")


def cand(name: str, text: str, cost: float = 0.0, latency: float = 0.1) -> Candidate:
    return Candidate(name, Response(text), latency, cost)


class NoCalls:
    async def complete(self, backend: object, query: Query) -> Response:
        raise AssertionError("no backend calls expected")


pytestmark = [pytest.mark.anyio, pytest.mark.parametrize("anyio_backend", ["trio"])]


async def test_majority_normalises_and_extracts() -> None:
    cands = [cand("a", "42"), cand("b", " 42. "), cand("c", "41")]
    assert await scorers.majority().score_all(Q, cands, NoCalls()) == pytest.approx([2 / 3, 2 / 3, 1 / 3])
    extract = scorers.majority(extract=r"answer is (\d+)")
    cands = [cand("a", "so the answer is 7"), cand("b", "answer is 7!"), cand("c", "8")]
    assert await extract.score_all(Q, cands, NoCalls()) == pytest.approx([2 / 3, 2 / 3, 1 / 3])


async def test_by_verifier_then_cheapest() -> None:
    scorer = scorers.by_verifier_then_cheapest(verifiers.json_valid(), verifiers.length(max=10))
    cands = [cand("dear", "{}", cost=2.0), cand("cheap", "{}", cost=1.0), cand("bad", "nope", cost=0.0)]
    scores = await scorer.score_all(Q, cands, NoCalls())
    assert scores[1] > scores[0] > scores[2]
    assert scores[0] == pytest.approx(1.0) and scores[2] == pytest.approx(0.5)


async def test_callable_scorers_sync_and_async() -> None:
    async def length(query: Query, response: Response) -> float:
        return len(response.text)

    wrapped = scorers.as_scorer(length)
    assert wrapped.per_response
    assert await wrapped.score_one(Q, cand("a", "abc"), NoCalls()) == 3.0
    assert await scorers.as_scorer(lambda q, r: 0.5).score_one(Q, cand("a", "x"), NoCalls()) == 0.5
    with pytest.raises(TypeError):
        scorers.as_scorer(42)  # type: ignore[arg-type]
