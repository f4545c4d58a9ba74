"""Confidence escalation: self-reported confidence and hesitancy as cascade verifiers."""

from __future__ import annotations

import pytest

import specexec
from specexec import Policy, Query, Response, Runtime, routing
from tests.conftest import Timing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio


@pytest.mark.parametrize(
    ("text", "stated"),
    [
        ("42\nConfidence: 0.9", 0.9),
        ("42\nconfidence = 85%", 0.85),
        ('{"answer": 42, "confidence": 0.4}', 0.4),
        ("Confidence: 0.2 ... on reflection. Confidence: 0.8", 0.8),
        ("Confidence: 70", 0.7),
        ("42", None),
    ],
)
def test_stated_confidence_is_parsed(text: str, stated: float | None) -> None:
    assert routing.stated_confidence(text) == (pytest.approx(stated) if stated is not None else None)


def test_self_confidence_verdicts() -> None:
    v = routing.self_confidence(0.7)
    q = Query("q")
    assert v(q, Response("x\nConfidence: 0.9")).accept
    assert v(q, Response("x\nConfidence: 0.5")).reason == "stated confidence 0.5 < 0.7"
    assert v(q, Response("x")).reason == "no confidence stated"
    assert routing.self_confidence(0.7, missing_ok=True)(q, Response("x")).accept


def test_hesitancy_verdicts() -> None:
    v = routing.hesitancy(max_markers=1, min_chars=5)
    q = Query("q")
    assert v(q, Response("The answer is 42.")).accept
    assert v(q, Response("I think it is 42.")).accept  # one marker is allowed
    assert v(q, Response("I think it might be 42.")).reason == "2 hesitant phrases > 1 ('I think', …)"
    assert not v(q, Response("I'm not sure. Perhaps 42, I think.")).accept
    assert v(q, Response("42")).reason == "answer of 2 characters < 5"


def test_ask_confidence_adds_the_instruction() -> None:
    asked = routing.ask_confidence(Query("What is 6 x 7?"))
    assert [m.role for m in asked.messages] == ["system", "user"]
    assert "Confidence:" in asked.messages[0].content
    again = routing.ask_confidence(asked)
    assert again.messages[0].content.count("Confidence:") == 2 and len(again.messages) == 2


async def test_cascade_escalates_on_low_stated_confidence(timing: Timing) -> None:
    mid = Scripted("mid", 0.2, text="maybe 41\nConfidence: 0.3")
    frontier = Scripted("frontier", 0.5, text="42\nConfidence: 0.95", input_price=1.0)
    policy = Policy.cascade(["mid", "frontier"], verify=[routing.self_confidence(0.7)])
    async with Runtime([mid, frontier]) as rt:
        result = await rt.run(routing.ask_confidence(Query("6 x 7?")), policy)
    assert result.backend == "frontier" and result.latency == timing.approx(0.7)
    assert result.trace.attempts[0].outcome == "rejected"
    assert result.trace.attempts[0].reason == "stated confidence 0.3 < 0.7"


def test_confidence_verifiers_load_from_toml_with_path_precise_errors() -> None:
    policy = specexec.Policy.from_toml(
        'mode = "cascade"\ncandidates = ["cheap", "dear"]\n'
        'verify = [{ kind = "self_confidence", min = 0.8 }, { kind = "hesitancy", max_markers = 0 }]'
    )
    confident, hesitant = policy.verify
    assert isinstance(confident, specexec.routing.SelfConfidence) and confident.min == 0.8
    assert isinstance(hesitant, specexec.routing.Hesitancy) and hesitant.max_markers == 0
    query = specexec.Query("q")
    assert not confident(query, specexec.Response("4\nConfidence: 0.5")).accept
    assert confident(query, specexec.Response("4\nConfidence: 0.9")).accept
    with pytest.raises(specexec.PolicyError, match=r"\$\.verify\[0\]\.min"):
        specexec.Policy.from_toml(
            'mode = "cascade"\ncandidates = ["a"]\nverify = [{ kind = "self_confidence", min = 7 }]'
        )
