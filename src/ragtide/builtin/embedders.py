"""The built-in embedders, by name, and ``HashingEmbedder``.

Each follows the component contract: a cheap ``__init__``, the model loaded once by
``await start()`` (embedding before it raises ``RuntimeError``), and ``aclose()``.
``StaticEmbedder`` (static_embedder.py) and ``MiniLMEmbedder`` (minilm.py) read weights
that pip packages ship (_models.py); ``HashingEmbedder`` needs none. Text without any
token embeds as the zero vector here; no embedder ever returns NaN.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from itertools import chain, pairwise

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ragtide.builtin._models import (
    INLINE_CHARS,
    embed_inline_or_threaded,
    normalize_rows,
    not_started,
)
from ragtide.builtin.minilm import MiniLMEmbedder
from ragtide.builtin.static_embedder import StaticEmbedder
from ragtide.components import Vectors

__all__ = ["HashingEmbedder", "MiniLMEmbedder", "StaticEmbedder"]

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
        return (await embed_inline_or_threaded(self._embed, [text], INLINE_CHARS)).reshape(-1)

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return await embed_inline_or_threaded(self._embed, texts, INLINE_CHARS)

    def _embed(self, texts: Sequence[str]) -> Vectors:
        if not self._started:
            raise not_started(self)
        dim = self._config.dim
        out = np.zeros((len(texts), dim), np.float32)
        for row, text in enumerate(texts):
            words = _WORD.findall(text.lower())
            features = chain(words, map(" ".join, pairwise(words)))
            hashes = [_hash64(feature) for feature in features]
            buckets = np.array([(h >> 1) % dim for h in hashes], np.intp)
            signs = np.array([h & 1 for h in hashes], np.float32) * 2 - 1  # collisions cancel out
            np.add.at(out[row], buckets, signs)
        return normalize_rows(out)
