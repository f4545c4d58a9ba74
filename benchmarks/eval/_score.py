"""Scoring one answer against its case: exact / normalised / numeric / regex match, verifiers,
or an LLM judge (whose call goes through the engine and is charged to the case)."""

from __future__ import annotations

import re
import unicodedata

from specexec import Policy, Query, Response, Runtime
from specexec.scorers import DEFAULT_JUDGE_PROMPT, Candidate, LlmJudge
from specexec.verifiers import check

from ._file import Case, Exact, Judge, Normalised, Numeric, RegexMatch, VerifierScorer, last_number

__all__ = ["Score", "normalise", "score"]


class Score:
    """A verdict: ``passed``, ``reason`` when not, and what judging cost (USD)."""

    __slots__ = ("cost", "passed", "reason")

    def __init__(self, passed: bool, reason: str = "", cost: float = 0.0) -> None:
        self.passed = passed
        self.reason = reason
        self.cost = cost


_PUNCT = " \t\n\r.,;:!?\"'`()[]{}"


def normalise(text: str) -> str:
    """Case-folded, NFKC, surrounding punctuation dropped, inner whitespace collapsed."""
    folded = unicodedata.normalize("NFKC", text).casefold().strip(_PUNCT)
    return " ".join(folded.split())


class _JudgeContext:
    """The ``ScoreContext`` a judge gets: its call runs through the engine; the cost is summed."""

    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime
        self.cost = 0.0

    async def complete(self, backend: object, query: Query) -> Response:
        result = await self.runtime.run(query, Policy.single(backend))  # type: ignore[arg-type]
        self.cost += result.cost
        return result.response


def _judge_prompt(judge: Judge, reference: str | None) -> str:
    def literal(text: str) -> str:
        return text.replace("{", "{{").replace("}", "}}")

    parts = []
    if judge.rubric:
        parts.append("Rubric:\n" + literal(judge.rubric))
    if reference is not None:
        parts.append("A reference answer:\n" + literal(reference))
    return "\n\n".join([*parts, DEFAULT_JUDGE_PROMPT])


def judge_for(case: Case) -> LlmJudge | None:
    """The LLM judge that scores ``case`` (its rubric and reference in the prompt), or ``None``."""
    s = case.scorer
    if not isinstance(s, Judge):
        return None
    return LlmJudge(s.backend, prompt=_judge_prompt(s, case.reference), max_tokens=s.max_tokens)


async def score(case: Case, response: Response, runtime: Runtime) -> Score:
    """Score ``response`` for ``case`` (a judge's call is made through ``runtime``)."""
    s = case.scorer
    text = response.text
    ref = case.reference
    if isinstance(s, Exact):
        ok = ref is not None and text.strip() == ref.strip()
        return Score(ok, "" if ok else f"expected {ref!r}, got {text[:80]!r}")
    if isinstance(s, Normalised):
        ok = ref is not None and normalise(text) == normalise(ref)
        return Score(ok, "" if ok else f"expected {ref!r}, got {text[:80]!r}")
    if isinstance(s, Numeric):
        got, want = last_number(text), last_number(ref or "")
        if got is None or want is None:
            return Score(False, f"no number in {text[:80]!r}")
        ok = abs(got - want) <= max(s.tolerance, s.relative * abs(want))
        return Score(ok, "" if ok else f"expected {want:g}, got {got:g}")
    if isinstance(s, RegexMatch):
        pattern = s.pattern if s.pattern is not None else (ref or "")
        m = re.fullmatch(pattern, text.strip()) if s.fullmatch else re.search(pattern, text)
        return Score(m is not None, "" if m else f"does not match {pattern!r}")
    if isinstance(s, VerifierScorer):
        verdict = await check(s.verify, case.query, response)
        return Score(verdict.accept, verdict.reason)
    judge = judge_for(case)
    assert judge is not None and isinstance(s, Judge)
    ctx = _JudgeContext(runtime)
    try:
        rating = await judge.score_one(case.query, Candidate("", response, 0.0, 0.0), ctx)
    except Exception as exc:  # a failed judge call fails the case, with its reason
        return Score(False, f"judge failed: {type(exc).__name__}: {exc}", ctx.cost)
    ok = rating >= s.min_score
    return Score(ok, "" if ok else f"judge rated {rating:.2f} < {s.min_score:g}", ctx.cost)
