"""A learned classifier that needs no service: multinomial logistic regression over embeddings.

``routing.trained(examples)`` embeds labelled examples and fits the weights with numpy
(full-batch gradient descent on the L2-regularised cross-entropy: a few hundred examples
take well under a second). ``save(path)`` writes the weights as JSON; ``TrainedClassifier.load``
reads them back (the embedder is not saved: the same embedder must be used). The confidence
is the predicted probability; below ``threshold`` the query passes to the next selector.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import anyio
import msgspec

from .._errors import PolicyError
from .._query import Query
from ._selectors import Choice
from ._semantic import Embedder, normalise

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from ._context import SelectContext


class _Saved(msgspec.Struct, frozen=True):
    kind: str
    labels: list[str]
    weights: list[list[float]]
    bias: list[float]


class TrainedClassifier:
    """A fitted logistic regression over embeddings, as a selector (see ``trained``)."""

    slow = True

    def __init__(
        self,
        labels: Sequence[str],
        weights: Any,
        bias: Any,
        *,
        embedder: Embedder | None = None,
        threshold: float = 0.5,
        offload: bool = True,
        name: str | None = None,
    ) -> None:
        import numpy as np

        self.labels = list(labels)
        self.weights = np.asarray(weights, dtype=np.float32)
        self.bias = np.asarray(bias, dtype=np.float32)
        if self.weights.shape != (self.weights.shape[0], len(self.labels)) or self.bias.shape != (len(self.labels),):
            raise PolicyError("weights and bias do not match the labels", path="$.weights")
        self._embedder = embedder
        self.threshold = threshold
        self.offload = offload
        self.name = name or "trained"

    @property
    def embedder(self) -> Embedder:
        """The embedder (the default one is loaded on first use)."""
        if self._embedder is None:
            from ._embedder import default_embedder

            self._embedder = default_embedder()
        return self._embedder

    def probabilities(self, texts: list[str]) -> npt.NDArray[np.float32]:
        """Per text, the probability of each label (rows sum to 1)."""
        return _softmax(normalise(self.embedder(texts)) @ self.weights + self.bias)

    def classify(self, text: str) -> Choice:
        """The most probable label for ``text``, with its probability as the confidence."""
        probs = self.probabilities([text])[0]
        best = int(probs.argmax())
        return Choice(self.labels[best], float(probs[best]), f"p={float(probs[best]):.3f}")

    async def select(self, query: Query, ctx: SelectContext) -> Choice | None:
        """Classify ``query`` (in a worker thread unless ``offload=False``)."""
        if not self.offload:
            return self.classify(query.text)
        return await anyio.to_thread.run_sync(self.classify, query.text)

    def save(self, path: str | Path) -> None:
        """Write the labels and weights as JSON to ``path``."""
        saved = _Saved("specexec.trained/1", self.labels, self.weights.tolist(), self.bias.tolist())
        Path(path).write_bytes(msgspec.json.encode(saved))

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        embedder: Embedder | None = None,
        threshold: float = 0.5,
        offload: bool = True,
        name: str | None = None,
    ) -> TrainedClassifier:
        """Read a classifier written by ``save`` (errors name the file)."""
        try:
            saved = msgspec.json.decode(Path(path).read_bytes(), type=_Saved)
        except OSError as exc:
            raise PolicyError(
                f"cannot read trained classifier: {exc.strerror}", path="$.path", source=str(path)
            ) from None
        except msgspec.DecodeError as exc:
            raise PolicyError(f"not a trained classifier file: {exc}", path="$.path", source=str(path)) from None
        return cls(
            saved.labels, saved.weights, saved.bias, embedder=embedder, threshold=threshold, offload=offload, name=name
        )


def _softmax(z: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    import numpy as np

    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return cast("npt.NDArray[np.float32]", (e / e.sum(axis=-1, keepdims=True)).astype(np.float32))


def trained(
    examples: Mapping[str, Sequence[str]] | Iterable[tuple[str, str]],
    *,
    embedder: Embedder | None = None,
    threshold: float = 0.5,
    l2: float = 1e-3,
    steps: int = 500,
    learning_rate: float = 5.0,
    offload: bool = True,
    name: str | None = None,
) -> TrainedClassifier:
    """Fit a logistic-regression route classifier from labelled examples: ``{route: [texts]}``
    or ``[(text, route), ...]``. Deterministic (zero init, full batch)."""
    import numpy as np

    pairs = (
        [(t, r) for r, texts in examples.items() for t in texts]
        if isinstance(examples, Mapping)
        else [(t, r) for t, r in examples]
    )
    labels = sorted({r for _, r in pairs})
    if len(labels) < 2:
        raise PolicyError(f"a trained classifier needs examples of at least two routes, got {labels}", path="$")
    index = {r: i for i, r in enumerate(labels)}
    classifier = TrainedClassifier(
        labels, np.zeros((1, len(labels))), np.zeros(len(labels)), embedder=embedder, threshold=threshold
    )
    x = normalise(classifier.embedder([t for t, _ in pairs])).astype(np.float64)
    y = np.zeros((len(pairs), len(labels)))
    y[np.arange(len(pairs)), [index[r] for _, r in pairs]] = 1.0
    w = np.zeros((x.shape[1], len(labels)))
    b = np.zeros(len(labels))
    for _ in range(steps):
        grad = _softmax(x @ w + b).astype(np.float64) - y
        w -= learning_rate * (x.T @ grad / len(pairs) + l2 * w)
        b -= learning_rate * grad.mean(axis=0)
    return TrainedClassifier(
        labels, w, b, embedder=classifier._embedder, threshold=threshold, offload=offload, name=name
    )
