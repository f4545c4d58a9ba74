"""The per-class quality model: whether a deployment's answer passes the scenario's check.

A fleet config can name *classes* of prompt (``[classes]``: class → the exact prompts of that
class). A deployment with ``quality = {easy = 0.97, code = 0.55}`` then answers a prompt of a
class it has a rate for with a *marked* answer the scenario's check reads:

- ``good`` (with probability ``quality[class]``) or ``wrong`` as its first word, lorem filler
  up to ``output_tokens`` words, and a last line ``Confidence: x`` (uniform in 0.65–1.0 when
  good, 0.1–0.8 when wrong: a cascade gating on stated confidence escalates most wrong answers);
- with ``labels = {easy = "simple", ...}`` the deployment is a *router model*: it answers
  ``{"route": labels[class]}`` with probability ``quality[class]`` (1 when no rate is given),
  else another label, drawn uniformly.

The class of a request is its last user message's, matched exactly (whitespace stripped), else
the longest class prompt the message contains (an LLM router wraps the query in its own prompt).
Draws come from one seeded generator per deployment (fleet seed, deployment name), started
again by ``POST /reset``; prompts of no class, and deployments with neither field, answer as
their ``reply`` says.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence

from ._config import Deployment
from ._latency import seeded_rng
from ._reply import lorem

__all__ = ["FAIL_MARKER", "PASS_MARKER", "QualityModel", "class_of"]

PASS_MARKER = "good"
"""The first word of an answer that passes the check."""
FAIL_MARKER = "wrong"
"""The first word of an answer that fails it."""


def class_of(text: str, classes: Mapping[str, Sequence[str]]) -> str | None:
    """The class of a last user message ``text`` (see the module docs), or ``None``."""
    stripped = text.strip()
    best: tuple[int, str] | None = None
    for cls, prompts in classes.items():
        for prompt in prompts:
            p = prompt.strip()
            if p == stripped:
                return cls
            if p and p in stripped and (best is None or len(p) > best[0]):
                best = (len(p), cls)
    return None if best is None else best[1]


class QualityModel:
    """One deployment's quality draws (see the module docs)."""

    def __init__(self, deployment: Deployment, classes: Mapping[str, Sequence[str]], seed: int) -> None:
        self.deployment = deployment
        self.classes = classes
        self.seed = seed
        self.rng = seeded_rng(seed, deployment.name, "quality")

    @property
    def active(self) -> bool:
        """Whether this deployment has a quality model at all."""
        return bool(self.classes) and bool(self.deployment.quality or self.deployment.labels)

    def reseed(self) -> None:
        """Start the draws again (what ``POST /reset`` does)."""
        self.rng = seeded_rng(self.seed, self.deployment.name, "quality")

    def answer(self, messages: Iterable[tuple[str, str]]) -> str | None:
        """The marked answer to ``messages``, or ``None`` when the model does not apply."""
        if not self.active:
            return None
        last_user = ""
        for role, text in messages:
            if role == "user":
                last_user = text
        cls = class_of(last_user, self.classes)
        d = self.deployment
        if cls is None:
            return None
        if d.labels:
            if cls not in d.labels:
                return None
            truth = d.labels[cls]
            others = sorted({v for v in d.labels.values() if v != truth})
            right = self.rng.random() < d.quality.get(cls, 1.0)
            route = truth if right or not others else self.rng.choice(others)
            return json.dumps({"route": route})
        if cls not in d.quality:
            return None
        good = self.rng.random() < d.quality[cls]
        confidence = self.rng.uniform(0.65, 1.0) if good else self.rng.uniform(0.1, 0.8)
        filler = lorem(max(0, d.output_tokens - 3))
        marker = PASS_MARKER if good else FAIL_MARKER
        return (
            f"{marker} {filler}\nConfidence: {confidence:.2f}" if filler else f"{marker}\nConfidence: {confidence:.2f}"
        )
