"""``StaticEmbedder``: WordLlama's static token vectors, pooled in numpy.

Text without any token (``""``) embeds as the zero vector, so it scores 0 against
everything; it never returns NaN.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt
from pydantic import BaseModel, ConfigDict, Field
from safetensors.numpy import load_file
from tokenizers import Regex, Tokenizer, models, pre_tokenizers

from ragtide.builtin._models import (
    INLINE_CHARS,
    WORDLLAMA_SHA256,
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

__all__ = ["StaticEmbedder"]

_BOUNDARY = re.compile("[^\u2581]\u2581")  # "▁" is SentencePiece's space
# Pieces that end where a "▁" follows another character: the tokenizer's pre-tokenizer
# (``_load``) and the query cache (``_PieceCache``) split text alike.
_PIECE_PATTERN = "\u2581+[^\u2581]*|[^\u2581]+"
_PIECE = re.compile(_PIECE_PATTERN)
# The file's normalizer: "▁" before the text and for every space.
_NORMALIZER = {
    "type": "Sequence",
    "normalizers": [
        {"type": "Prepend", "prepend": "\u2581"},
        {"type": "Replace", "pattern": {"String": " "}, "content": "\u2581"},
    ],
}


@dataclass(eq=False)
class _Table:
    vectors: npt.NDArray[np.float16]  # (vocabulary, 256), as shipped
    _wide: npt.NDArray[np.float32] | None = None
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def wide(self) -> npt.NDArray[np.float32]:
        """The table in float32, made on first use (31 MiB beside the 16 of float16, shared
        like the table): pooling many documents gathers from it, 4x faster than converting
        each text's rows (0.04 against 0.17 ms a 200-word chunk), with the same sums."""
        with self._lock:
            if self._wide is None:
                self._wide = self.vectors.astype(np.float32)
            return self._wide


class _PieceCache:
    """A text's token ids, from the ids of each piece (a word and its leading spaces).

    Does what the tokenizer does with the split pre-tokenizer — normalise, split, BPE each
    piece — but remembers each piece's ids, so a query of known words costs a few dict
    lookups instead of a tokenizer call (3 µs against 23 µs for a SciFact query). Text
    holding an added token (``<s>``…), which the tokenizer matches before it normalises,
    goes to the tokenizer.
    """

    _LIMIT = 65_536  # pieces remembered; forgotten all at once when full

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._model = tokenizer.model
        self._added = tuple(t.content for t in tokenizer.get_added_tokens_decoder().values())
        self._ids: dict[str, list[int]] = {}

    def ids(self, text: str) -> list[int]:
        if not text:
            return []
        if any(added in text for added in self._added):
            return list(self._tokenizer.encode(text, add_special_tokens=False).ids)
        out: list[int] = []
        for piece in _PIECE.findall("\u2581" + text.replace(" ", "\u2581")):
            ids = self._ids.get(piece)
            if ids is None:
                if len(self._ids) >= self._LIMIT:
                    self._ids.clear()
                ids = self._ids[piece] = [token.id for token in self._model.tokenize(piece)]
            out.extend(ids)
        return out


class _DocumentPieces:
    """``_PieceCache`` for documents: a text's token ids as an array, from each piece's
    ids kept as bytes (machine integers) and joined, for ingestion.

    A chunk's ~300 ids come from one ``bytes.join`` instead of a Python list that the
    gather then converts, and a piece costs ~180 bytes instead of ~250, so twice as many
    are kept in about the memory of the query cache's 65,536. A large corpus has many
    pieces (~139k distinct in the scale corpus's first 60,000 documents): cleared whole
    at 65,536, the cache cost a document ~21 tokenizer calls (~4 us each); at 131,072,
    forgetting its older half when full, ~4 (2.3 are pieces never seen before). The
    same ids as the tokenizer's.
    """

    _LIMIT = 131_072  # pieces remembered (~23 MiB at most)

    def __init__(self, tokenizer: Tokenizer) -> None:
        self._tokenizer = tokenizer
        self._model = tokenizer.model
        self._added = tuple(t.content for t in tokenizer.get_added_tokens_decoder().values())
        self._dtype = np.dtype(np.uint16 if tokenizer.get_vocab_size() <= 65_536 else np.uint32)
        self._ids: dict[str, bytes] = {}

    def ids(self, text: str) -> npt.NDArray[np.unsignedinteger[Any]]:
        if not text:
            return np.zeros(0, self._dtype)
        if any(added in text for added in self._added):
            ids = self._tokenizer.encode(text, add_special_tokens=False).ids
            return np.asarray(ids, self._dtype)
        # Each piece is a "▁" and a word: the words between single spaces, when no space
        # follows another and the text has no "▁" of its own (twice as fast as the
        # pattern, which gives the same pieces then); else the pieces the pattern finds.
        words = text.split(" ")
        if "\u2581" in text or "" in words:
            words = [p[1:] for p in _PIECE.findall("\u2581" + text.replace(" ", "\u2581"))]
        known = list(map(self._ids.get, words))
        try:
            return np.frombuffer(b"".join(known), self._dtype)  # type: ignore[arg-type]
        except TypeError:  # a piece not seen yet (None)
            pass
        for at, word in enumerate(words):
            if known[at] is None:
                known[at] = self._learn(word)
        return np.frombuffer(b"".join(known), self._dtype)  # type: ignore[arg-type]

    def _learn(self, word: str) -> bytes:
        """The ids of the piece "▁" + ``word`` (remembered by ``word``)."""
        cached = self._ids
        ids = cached.get(word)
        if ids is None:
            if len(cached) >= self._LIMIT:  # the older half goes (dicts keep their order)
                for old in list(itertools.islice(cached, len(cached) // 2)):
                    del cached[old]
            tokens = [token.id for token in self._model.tokenize("\u2581" + word)]
            ids = cached[word] = np.asarray(tokens, self._dtype).tobytes()
        return ids


def _load_table(path: Path) -> _Table:
    verify_sha256(path, WORDLLAMA_SHA256)
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
    _ROWS = 4096  # float32 token rows the query path remembers
    _WIDE = 32  # texts embedded at once from which the float32 table is used (ingestion)

    def __init__(self, config: Config) -> None:
        self._config = config
        self._table: _Table | None = None
        self._tokenizer: Tokenizer | None = None
        self._pieces: _PieceCache | None = None  # the query path, when the tokenizer allows
        self._doc_pieces: _DocumentPieces | None = None  # documents' own, not to evict queries'
        self._rows: dict[int, Vectors] = {}  # token id -> its row in float32 (query path)

    @property
    def dimension(self) -> int:
        return self._config.dim

    @property
    def model_id(self) -> str:
        return f"wordllama-l2-supercat-{self._config.dim}"

    async def start(self) -> None:
        if self._table is None:
            tokenizer, self._table = await asyncio.to_thread(self._load)
            self._tokenizer, self._pieces = tokenizer, _piece_cache(tokenizer)
            self._doc_pieces = _DocumentPieces(tokenizer) if self._pieces is not None else None

    def _load(self) -> tuple[Tokenizer, _Table]:
        root = package_dir("wordllama")
        if root is None:
            raise ConfigError("StaticEmbedder needs the wordllama package: pip install wordllama")
        tokenizer_file = root / "tokenizers" / "l2_supercat_tokenizer_config.json"
        tokenizer = Tokenizer.from_file(str(existing_file(tokenizer_file, "tokenizer")))
        tokenizer.no_padding()
        # The file has no pre-tokenizer, so BPE runs over each whole text, uncached. No token
        # has "▁" (a space) after another character, so no merge crosses such a point, and
        # splitting the text there yields the same ids while BPE caches words: twice as fast.
        if not any(_BOUNDARY.search(token) for token in tokenizer.get_vocab()):
            tokenizer.pre_tokenizer = pre_tokenizers.Split(
                Regex(_PIECE_PATTERN), behavior="isolated"
            )
        if self._config.max_tokens is None:
            tokenizer.no_truncation()
        else:
            tokenizer.enable_truncation(self._config.max_tokens)
        weights = self._config.weights_path or root / "weights" / "l2_supercat_256.safetensors"
        table = shared_model(existing_file(weights, "model weights"), _load_table)
        if tokenizer.get_vocab_size() > table.vectors.shape[0]:
            raise ConfigError(f"tokenizer {tokenizer_file} does not match the weights {weights}")
        return tokenizer, table

    async def aclose(self) -> None:
        self._table = self._tokenizer = self._pieces = self._doc_pieces = None
        self._rows = {}

    async def embed_query(self, text: str) -> Vectors:
        if self._pieces is not None and self._table is not None and len(text) <= INLINE_CHARS:
            ids = self._pieces.ids(text)[: self._config.max_tokens]
            return normalize_rows(self._query_sum(self._table, ids).reshape(1, -1)).reshape(-1)
        return (await embed_inline_or_threaded(self._embed, [text], INLINE_CHARS)).reshape(-1)

    def _query_sum(self, model: _Table, ids: Sequence[int]) -> Vectors:
        """What ``_pool`` sums for a query (at most ``INLINE_CHARS`` of text: fewer tokens
        than ``_POOL_TOKENS``, one gather), from rows converted to float32 once.

        Converting float16 rows is most of ``_pool``'s cost; a float16 value is exact in
        float32 and the rows are added in the same order, so the sum is the same to the
        bit. At most ``_ROWS`` rows are remembered (1 KiB each at 256 dimensions).
        """
        rows, dim = self._rows, self._config.dim
        vector = np.zeros(dim, np.float32)
        for token in ids:
            row = rows.get(token)
            if row is None:
                if len(rows) >= self._ROWS:
                    rows.clear()
                row = rows[token] = model.vectors[token, :dim].astype(np.float32)
            vector += row
        return vector

    async def embed_documents(self, texts: Sequence[str]) -> Vectors:
        return await embed_inline_or_threaded(self._embed, texts, INLINE_CHARS)

    def _embed(self, texts: Sequence[str]) -> Vectors:
        model, tokenizer = self._table, self._tokenizer
        if model is None or tokenizer is None:
            raise not_started(self)
        out = np.zeros((len(texts), self._config.dim), np.float32)
        pieces = self._doc_pieces
        if pieces is not None:
            # Ingestion: documents' words repeat as queries' do, and a piece's ids from the
            # cache cost less than the tokenizer's batch (0.07-0.15 ms a 200-word chunk
            # against 0.32-0.37 ms of CPU, measured on SciFact; the same ids).
            # Many texts: gathered from the float32 table (the same float32 additions in
            # the same order as from float16 rows: the same bits).
            table = model.wide() if len(texts) >= self._WIDE else model.vectors
            for row, text in enumerate(texts):
                self._pool(table, pieces.ids(text)[: self._config.max_tokens], out[row])
            return normalize_rows(out)
        for first in range(0, len(texts), self._BATCH):  # bounds the tokenizer's memory
            batch = list(texts[first : first + self._BATCH])
            if len(batch) == 1:  # the query path
                id_lists = [tokenizer.encode(batch[0], add_special_tokens=False).ids]
            else:
                encodings = tokenizer.encode_batch_fast(batch, add_special_tokens=False)
                id_lists = [e.ids for e in encodings]
            for row, ids in enumerate(id_lists, first):
                self._pool(model.vectors, ids, out[row])
        # The sum points where the mean does, so normalising it gives WordLlama's vector.
        return normalize_rows(out)

    def _pool(
        self,
        table: npt.NDArray[np.float16 | np.float32],
        ids: Sequence[int] | npt.NDArray[Any],
        out: Vectors,
    ) -> None:
        """Add the rows of ``table`` (the float16 table or its float32 copy) at ``ids`` to
        ``out`` in float32, a bounded gather at a time (gathers and sums beat
        ``np.add.reduceat``)."""
        for start in range(0, len(ids), self._POOL_TOKENS):
            rows = table[ids[start : start + self._POOL_TOKENS], : self._config.dim]
            out += np.add.reduce(rows, axis=0, dtype=np.float32)


def _piece_cache(tokenizer: Tokenizer) -> _PieceCache | None:
    """A ``_PieceCache`` if it gives the tokenizer's ids: a BPE model, the split
    pre-tokenizer (see ``_load``) and the normalizer ``_PieceCache`` imitates."""
    normalizer, pre = tokenizer.normalizer, tokenizer.pre_tokenizer
    if (
        normalizer is None
        or json.loads(normalizer.__getstate__()) != _NORMALIZER
        or not isinstance(pre, pre_tokenizers.Split)
        or not isinstance(tokenizer.model, models.BPE)
    ):
        return None
    return _PieceCache(tokenizer)
