"""Scorers for ``pick`` mode: which of several accepted responses is best (higher is better).

A scorer is either

- any callable ``(query, response) -> float`` (sync or async), applied to each response as it
  arrives (so ``Policy.pick(..., accept_score=0.9)`` can stop early), or
- one of the built-ins: ``majority()`` (self-consistency: the share of responses that agree),
  ``by_verifier_then_cheapest(verifiers)`` (share of soft checks passed, cheapest first on a
  tie), ``llm_judge(backend)`` (asks a model to rate each answer; its calls are charged
  against the run's cost ceiling).

Ties between equal scores are broken by the engine: lower latency, then lower cost.
"""

from __future__ import annotations

import inspect
import re
import string
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, Protocol, TypeAlias

import msgspec

from ._checks import check_int
from ._errors import PolicyError
from ._query import Query, Response
from .verifiers import VerifierSpec, check

__all__ = [
    "ByVerifierThenCheapest",
    "Candidate",
    "LlmJudge",
    "Majority",
    "ScoreContext",
    "Scorer",
    "ScorerSpec",
    "by_verifier_then_cheapest",
    "llm_judge",
    "majority",
]


class Candidate(msgspec.Struct, frozen=True):
    """An accepted response as scorers see it."""

    backend: str
    response: Response
    latency: float
    cost: float


class ScoreContext(Protocol):
    """What the engine lends a scorer: backend calls charged against the run's cost ceiling."""

    async def complete(self, backend: Any, query: Query) -> Response:
        """Call ``backend`` (a name or a Backend) with ``query``; its cost counts against ``max_cost``.

        Raises ``BudgetExceeded`` when the call's worst case does not fit.
        """
        ...


class Scorer(Protocol):
    """The scorer protocol the engine drives.

    ``per_response`` scorers are asked ``score_one`` as each response arrives; the others are
    asked ``score_all`` once, over every accepted response, when the run ends.
    """

    per_response: bool

    async def score_one(self, query: Query, candidate: Candidate, ctx: ScoreContext) -> float:
        """Score one response."""
        ...

    async def score_all(self, query: Query, candidates: Sequence[Candidate], ctx: ScoreContext) -> list[float]:
        """Score all responses together."""
        ...


ScoreFn: TypeAlias = Callable[[Query, Response], "float | Awaitable[float]"]


class _Spec(msgspec.Struct, frozen=True, forbid_unknown_fields=True, tag_field="kind"):
    per_response = False

    async def score_one(self, query: Query, candidate: Candidate, ctx: ScoreContext) -> float:
        raise NotImplementedError

    async def score_all(self, query: Query, candidates: Sequence[Candidate], ctx: ScoreContext) -> list[float]:
        return [await self.score_one(query, c, ctx) for c in candidates]


class Majority(_Spec, tag="majority", frozen=True):
    """Self-consistency: each response scores the share of responses giving the same answer.

    Answers are compared after ``extract`` (a regex; its last match, group 1 if any, is the
    answer; default: the whole text) and normalisation (case, surrounding space and
    punctuation, inner whitespace).
    """

    extract: str | None = None

    def __post_init__(self) -> None:
        if self.extract is not None:
            try:
                re.compile(self.extract)
            except re.error as exc:
                raise PolicyError(
                    f"extract is not a valid regular expression ({exc}): {self.extract!r}", path="$.extract"
                ) from None

    async def score_all(self, query: Query, candidates: Sequence[Candidate], ctx: ScoreContext) -> list[float]:
        """Count votes per normalised answer."""
        answers = [self.answer(c.response.text) for c in candidates]
        votes: dict[str, int] = {}
        for a in answers:
            votes[a] = votes.get(a, 0) + 1
        n = len(candidates)
        return [votes[a] / n for a in answers]

    def answer(self, text: str) -> str:
        """The normalised answer a response gives."""
        if self.extract is not None:
            found = re.findall(self.extract, text)
            if found:
                last = found[-1]
                text = last if isinstance(last, str) else last[0]
        return " ".join(text.strip().strip(".!").lower().split())


class ByVerifierThenCheapest(_Spec, tag="by_verifier_then_cheapest", frozen=True):
    """Score = share of ``verify`` checks passed; among equal shares, the cheapest wins."""

    verify: tuple[VerifierSpec, ...]

    async def score_all(self, query: Query, candidates: Sequence[Candidate], ctx: ScoreContext) -> list[float]:
        """Run the checks; nudge cheaper responses up by less than one check is worth."""
        passed = []
        for c in candidates:
            ok = 0
            for v in self.verify:
                ok += (await check((v,), query, c.response)).accept
            passed.append(ok / max(1, len(self.verify)))
        by_cost = sorted(range(len(candidates)), key=lambda i: candidates[i].cost)
        nudge = {i: (len(candidates) - rank) * 1e-9 for rank, i in enumerate(by_cost)}
        return [p + nudge[i] for i, p in enumerate(passed)]


DEFAULT_JUDGE_PROMPT = (
    "Rate how well the answer responds to the question, from 0 (useless) to 10 (perfect).\n"
    "Question:\n{question}\n\nAnswer:\n{answer}\n\nReply with the number only."
)


ANSWER_BYTES_PER_TOKEN = 4
"""What a judge's reservation made before the answer assumes the answer to be, in bytes per
output token: a judge call is reserved at the bytes of the real answer (a safe bound on its
tokens), and English text runs about 4 bytes a token. A longer answer's judge call may then
not fit what was reserved: it is refused (the response stays unscored), never paid past it."""


class LlmJudge(_Spec, tag="llm_judge", frozen=True):
    """Ask ``backend`` to rate each response 0–10 (score = rating / 10).

    Each judge call is charged against the run's ``max_cost``; when it does not fit, the
    response stays unscored (it can still win if nothing else was scored).
    """

    backend: str
    prompt: str = DEFAULT_JUDGE_PROMPT
    max_tokens: int = 8
    per_response = True

    def __post_init__(self) -> None:
        if not self.backend:
            raise PolicyError("backend must name the judge's backend", path="$.backend")
        check_int(self.max_tokens, "$.max_tokens", ge=1, why=" (the judge's reply is a number: 8 is plenty)")
        _check_judge_prompt(self.prompt)

    def judge_query(self, query: Query, answer: str) -> Query:
        """The query sent to the judge to rate ``answer`` to ``query``."""
        return Query(
            prompt=self.prompt.format(question=query.text, answer=answer), max_tokens=self.max_tokens, temperature=0.0
        )

    def worst_query(self, query: Query) -> Query:
        """The judge's query for the longest answer ``query`` is expected to get (``max_tokens``
        tokens at ``ANSWER_BYTES_PER_TOKEN``): what a reservation made before the answer takes."""
        return self.judge_query(query, "x" * (ANSWER_BYTES_PER_TOKEN * query.max_tokens))

    async def score_one(self, query: Query, candidate: Candidate, ctx: ScoreContext) -> float:
        """Send the judge prompt and parse the first number of the reply."""
        reply = await ctx.complete(self.backend, self.judge_query(query, candidate.response.text))
        m = re.search(r"\d+(?:\.\d+)?", reply.text)
        if m is None:
            raise ValueError(f"judge reply has no rating: {reply.text[:80]!r}")
        return min(10.0, float(m.group(0))) / 10.0


_JUDGE_FIELDS = frozenset({"question", "answer"})


def _check_judge_prompt(prompt: str) -> None:
    """A judge prompt may use ``{question}`` and ``{answer}`` (and ``{{``/``}}`` for braces), nothing else."""
    hint = "a judge prompt may use only {question} and {answer} (write {{ and }} for literal braces)"
    try:
        fields = [(name, conversion) for _, name, _, conversion in string.Formatter().parse(prompt) if name is not None]
    except ValueError as exc:
        raise PolicyError(f"prompt does not format ({exc}): {hint}", path="$.prompt") from None
    for name, conversion in fields:
        if name not in _JUDGE_FIELDS:
            raise PolicyError(
                f"prompt has the placeholder {{{name}}}, which the judge does not fill: {hint}", path="$.prompt"
            )
        if conversion not in (None, "r", "s", "a"):
            raise PolicyError(f"prompt has {{{name}!{conversion}}}, an unknown conversion: {hint}", path="$.prompt")
    try:
        prompt.format(question="", answer="")
    except (ValueError, KeyError, IndexError, AttributeError) as exc:
        raise PolicyError(f"prompt does not format ({exc}): {hint}", path="$.prompt") from None


ScorerSpec = Majority | ByVerifierThenCheapest | LlmJudge
"""The scorers a TOML policy can name (a tagged union on ``kind``)."""


class _CallableScorer:
    """Wraps a plain ``(query, response) -> float`` callable as a per-response scorer."""

    per_response = True

    def __init__(self, fn: ScoreFn) -> None:
        self.fn = fn

    async def score_one(self, query: Query, candidate: Candidate, ctx: ScoreContext) -> float:
        out = self.fn(query, candidate.response)
        if inspect.isawaitable(out):
            out = await out
        return float(out)

    async def score_all(self, query: Query, candidates: Sequence[Candidate], ctx: ScoreContext) -> list[float]:
        return [await self.score_one(query, c, ctx) for c in candidates]


def as_scorer(scorer: Scorer | ScoreFn) -> Scorer:
    """A built-in or protocol scorer as is; a plain callable wrapped as a per-response scorer."""
    if hasattr(scorer, "score_all") and hasattr(scorer, "per_response"):
        return scorer  # type: ignore[return-value]
    if callable(scorer):
        return _CallableScorer(scorer)
    raise TypeError(f"scorer must be a callable (query, response) -> float or a Scorer, got {scorer!r}")


def majority(extract: str | None = None) -> Majority:
    """Self-consistency voting; ``extract`` picks the answer out of the text."""
    return Majority(extract)


def by_verifier_then_cheapest(*verify: Any) -> ByVerifierThenCheapest:
    """Share of ``verify`` checks passed, cheapest first on a tie."""
    return ByVerifierThenCheapest(tuple(verify))


def llm_judge(backend: str, *, prompt: str = DEFAULT_JUDGE_PROMPT, max_tokens: int = 8) -> LlmJudge:
    """Rate each response with ``backend`` (a backend name in the runtime)."""
    return LlmJudge(backend, prompt, max_tokens)
