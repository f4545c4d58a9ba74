"""The learned classifier: logistic regression over embeddings, fitted, saved and loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

import specexec
from specexec import Policy, Runtime, routing
from specexec.bench.bench._routing_set import EXEMPLARS, HELD_OUT
from tests.helpers import Scripted
from tests.routing.test_semantic import needs_weights

pytestmark = pytest.mark.anyio


def embed(texts: list[str]) -> np.ndarray:
    """Two features: 'code' words and 'math' words."""
    return np.array(
        [[t.count("def") + t.count("class") + 0.01, t.count("sum") + t.count("solve") + 0.01] for t in texts],
        dtype=np.float32,
    )


EXAMPLES = {"code": ["def f", "class A", "def g def h"], "math": ["sum it", "solve x", "solve sum"]}


async def test_fits_decides_and_passes_when_unsure() -> None:
    clf = routing.trained(EXAMPLES, embedder=embed, threshold=0.6)
    assert clf.labels == ["code", "math"]
    assert clf.classify("def main").route == "code"
    assert clf.classify("solve this").route == "math"
    router = specexec.Router(
        {"code": Policy.single("a"), "math": Policy.single("b"), "other": Policy.single("a")},
        [clf],
        default="other",
    )
    rt = Runtime([Scripted("a", 0.1), Scripted("b", 0.1)])
    sure = await routing.decide(router, "class Foo", rt)
    assert (sure.name, sure.selector) == ("code", "trained") and sure.confidence is not None and sure.confidence > 0.6
    unsure = await routing.decide(router, "def solve", rt)  # one of each: p ≈ 0.5
    assert unsure.name == "other" and "< 0.6" in unsure.passed[0]


def test_save_and_load_give_the_same_answers(tmp_path: Path) -> None:
    clf = routing.trained([(t, r) for r, ts in EXAMPLES.items() for t in ts], embedder=embed)
    path = tmp_path / "router-classifier.json"
    clf.save(path)
    loaded = routing.TrainedClassifier.load(path, embedder=embed)
    texts = ["def x", "sum y", "neither"]
    assert np.allclose(clf.probabilities(texts), loaded.probabilities(texts))
    with pytest.raises(specexec.PolicyError, match="not a trained classifier file"):
        (tmp_path / "bad.json").write_text("{}")
        routing.TrainedClassifier.load(tmp_path / "bad.json")
    with pytest.raises(specexec.PolicyError, match="cannot read trained classifier"):
        routing.TrainedClassifier.load(tmp_path / "missing.json")


def test_needs_two_routes() -> None:
    with pytest.raises(specexec.PolicyError, match="at least two routes"):
        routing.trained({"code": ["def"]}, embedder=embed)


@needs_weights
def test_trained_on_the_exemplars_generalises_to_held_out_queries() -> None:
    clf = routing.trained(EXEMPLARS)
    accuracy = np.mean([clf.classify(text).route == route for text, route in HELD_OUT])
    print(f"\ntrained classifier accuracy {accuracy:.1%} on {len(HELD_OUT)} held-out queries")
    assert accuracy >= 0.85
