"""The canary's ``expect``: a normalised containment match at word and number boundaries."""

from __future__ import annotations

import anyio
import pytest

from specexec import PolicyError, Query, Response
from specexec.probes import Canary, ProbeConfig
from specexec.probes._expect import contains_answer, normalise


@pytest.mark.parametrize(
    ("expect", "reply", "matches"),
    [
        # The README's own canary, answered the way real small models answer it.
        ("4", "4", True),
        ("4", " 4\n", True),
        ("4", "2 + 2 = 4", True),
        ("4", "The answer is 4.", True),
        ("4", "**4**", True),
        ("4", "2+2=4", True),
        ("4", "Answer: 4!", True),
        ("4", "４", True),  # full-width digit (NFKC)
        # Number boundaries: another number that contains the digit is not the answer.
        ("4", "14", False),
        ("4", "40", False),
        ("4", "4.5", False),
        ("4", "0.4", False),
        ("4", "-4", False),
        ("4", "4,000", False),
        ("4", "5", False),
        ("4", "", False),
        # Words: case-folded, whitespace collapsed, surrounding punctuation ignored, whole words only.
        ("four", "FOUR", True),
        ("four", "It is four.", True),
        ("four", "fourteen", False),
        ("Paris", "The capital of France is Paris.", True),
        ("Paris", "Parisian", False),
        ("New York", "It's new\n   york!", True),
        ("Straße", "STRASSE", True),
        ("4.", "4", True),  # the expectation's own surrounding punctuation is stripped too
        ("3.14", "pi is about 3.14.", True),
        ("3.14", "3.145", False),
    ],
)
def test_expect_is_a_normalised_containment_at_boundaries(expect: str, reply: str, matches: bool) -> None:
    assert contains_answer(reply, expect) is matches
    verdict = anyio.run(Canary(Query("q"), expect=expect).verdict, Response(reply))
    assert verdict.accept is matches
    if not matches:
        assert repr(expect) in verdict.reason


def test_normalise() -> None:
    assert normalise("  The   ANSWER\tis\n4.  ") == "the answer is 4"
    assert normalise("«Paris»") == "paris"


@pytest.mark.parametrize("expect", ["", "   ", "...", "?!"])
def test_an_expectation_that_normalises_to_nothing_is_a_config_error(expect: str) -> None:
    text = f'[probe.canary]\nquery = {{ prompt = "q" }}\nexpect = "{expect}"\n'
    with pytest.raises(PolicyError) as info:
        ProbeConfig.load(text)
    assert info.value.path == "$.probe.canary"
    assert "expect" in str(info.value)


def test_verify_still_does_precise_checks() -> None:
    canary = ProbeConfig.load(
        '[probe.canary]\nquery = { prompt = "q" }\nexpect = "4"\nverify = [{ kind = "regex", pattern = "^4$" }]\n'
    ).probe.canary
    assert canary is not None
    assert anyio.run(canary.verdict, Response("4")).accept
    assert not anyio.run(canary.verdict, Response("2 + 2 = 4")).accept  # expect passes, verify does not
