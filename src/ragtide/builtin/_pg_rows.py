"""The rows a ``PostgresStore`` write sends, made in bulk.

A batch's postings (~70 per chunk) are columns, not one tuple per posting: the terms in a
list, their chunk, length, counts and impact in numpy arrays, the impacts computed for
all of them at once. They go to the server as one binary ``COPY`` payload
(``postings_copy``) instead of a ``write_row`` per posting. The values, and so the rows,
are the same as one posting at a time.
"""

from __future__ import annotations

import json
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain, repeat
from typing import Any

import numpy as np

from ragtide.builtin.bm25 import Analyzer
from ragtide.components import Vectors
from ragtide.errors import InvalidRequest
from ragtide.types import Chunk, DocumentInfo

__all__ = [
    "DOCUMENT_ARRAYS",
    "Postings",
    "Prepared",
    "Weights",
    "dimension",
    "document_arrays",
    "postings_copy",
    "prepare",
]

Write = tuple[DocumentInfo, Sequence[Chunk], Vectors]

DOCUMENT_ARRAYS = (
    *("ids", "titles", "sources", "hashes", "metadata"),
    *("chunks", "created", "updated", "bytes"),
)

# Binary COPY framing (PostgreSQL's "COPY ... (FORMAT BINARY)"): signature, flags, header
# extension length; a row is a field count and each field's length and bytes; -1 ends it.
_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)
_TRAILER = b"\xff\xff"
# A posting row after its term: chunk int8, length, tf_title, tf_headings, tf_text int4,
# impact float4, each preceded by its length.
_TAIL = np.dtype(
    [
        *(("n_chunk", ">i4"), ("chunk", ">i8")),
        *(("n_length", ">i4"), ("length", ">i4")),
        *(("n_title", ">i4"), ("title", ">i4")),
        *(("n_headings", ">i4"), ("headings", ">i4")),
        *(("n_text", ">i4"), ("text", ">i4")),
        *(("n_impact", ">i4"), ("impact", ">f4")),
    ]
)
_HEAD = struct.Struct(">hiii")  # field count, namespace id (length 4), the term's length


@dataclass(frozen=True, slots=True)
class Weights:
    """BM25 parameters the impacts use (``PostgresStore.Config``'s)."""

    k1: float
    b: float
    title: float
    headings: float
    text: float


@dataclass(frozen=True, slots=True)
class Postings:
    """Postings as columns, one entry per (chunk, term); the namespace is set at encoding."""

    terms: list[str]
    chunk: np.ndarray[Any, np.dtype[np.int64]]
    length: np.ndarray[Any, np.dtype[np.int64]]
    tf: np.ndarray[Any, np.dtype[np.int64]]  # (postings, 3): title, headings, text counts
    impact: np.ndarray[Any, np.dtype[np.float32]]

    def __len__(self) -> int:
        return len(self.terms)


@dataclass(frozen=True, slots=True)
class Prepared:
    """Documents' rows, computed off the event loop before their write transaction."""

    chunks: list[tuple[Any, ...]]  # COPY rows of ``chunks``
    postings: Postings
    documents: dict[str, list[Any]]  # UPSERT_DOCUMENTS arrays
    df: dict[str, int]
    tokens: int
    dimension: int

    def in_namespace(self, ns_id: int) -> Prepared:
        """The same rows for namespace ``ns_id`` (it did not exist when they were made);
        postings take their namespace when encoded."""
        chunks = [(r[0], ns_id, *r[2:]) for r in self.chunks]
        return Prepared(chunks, self.postings, self.documents, self.df, self.tokens, self.dimension)


def dimension(run: Sequence[Write]) -> int:
    """The one dimension of ``run``'s vectors (0 without chunks); InvalidRequest unless
    each document's vectors are a finite (chunks, dimension) matrix of that dimension."""
    found = 0
    for _, chunks, vectors in run:
        if not chunks:
            continue
        matrix = np.asarray(vectors, dtype=np.float32)
        if matrix.ndim != 2 or matrix.shape[1] == 0:
            raise InvalidRequest("vectors must be a (chunks, dimension) matrix")
        if not np.isfinite(matrix).all():
            raise InvalidRequest("vectors must be finite")
        if found and matrix.shape[1] != found:
            raise InvalidRequest("the vectors of one write must have one dimension")
        found = int(matrix.shape[1])
    return found


def document_arrays(run: Sequence[Write]) -> dict[str, list[Any]]:
    """``UPSERT_DOCUMENTS``' arrays for ``run``'s documents."""
    documents: dict[str, list[Any]] = {key: [] for key in DOCUMENT_ARRAYS}
    for document, chunks, _ in run:
        documents["ids"].append(document.id)
        documents["titles"].append(document.title)
        documents["sources"].append(document.source)
        documents["hashes"].append(document.content_hash)
        documents["metadata"].append(json.dumps(dict(document.metadata)))
        documents["chunks"].append(len(chunks))
        documents["created"].append(document.created_at)
        documents["updated"].append(document.updated_at)
        documents["bytes"].append(sum(len(chunk.text.encode()) for chunk in chunks))
    return documents


def prepare(
    ns_id: int,
    avgdl: float,
    chunk_ids: Sequence[int],
    run: Sequence[Write],
    embedder_id: str,
    weights: Weights,
) -> Prepared:
    """The rows of ``run``'s documents; ``avgdl`` is the namespace's average chunk length
    (0 for a new namespace: this batch's is used)."""
    analyzer = Analyzer()  # one per call: PyStemmer objects are not thread-safe
    chunk_rows: list[tuple[Any, ...]] = []
    terms: list[str] = []
    tf_title: list[int] = []
    tf_headings: list[int] = []
    tf_text: list[int] = []
    per_chunk: list[int] = []  # postings of each chunk
    lengths: list[int] = []
    total = 0
    ids = iter(chunk_ids)
    dims = dimension(run)
    seen: dict[str, Counter[str]] = {}  # titles and headings repeat across a document's chunks
    for document, chunks, vectors in run:
        matrix = np.asarray(vectors, dtype=np.float32)
        for position, (chunk, vector) in enumerate(zip(chunks, matrix, strict=True)):
            title = _counts(analyzer, seen, chunk.title)
            headings = _counts(analyzer, seen, " ".join(chunk.headings))
            text = analyzer.term_counts(chunk.text)
            length = title.total() + headings.total() + text.total()
            total += length
            chunk_id = next(ids)
            row: tuple[Any, ...] = (chunk_id, ns_id, document.id, position, chunk.id)
            row += (chunk.ordinal, chunk.title, list(chunk.headings), chunk.text)
            chunk_rows.append((*row, dict(chunk.metadata), embedder_id, vector, length))
            if title or headings:
                own = list(text.keys() | title.keys() | headings.keys())
                tf_title += map(title.get, own, repeat(0))
                tf_headings += map(headings.get, own, repeat(0))
                tf_text += map(text.get, own, repeat(0))
            else:
                own = list(text)
                tf_title += repeat(0, len(own))
                tf_headings += repeat(0, len(own))
                tf_text += text.values()
            terms += own
            per_chunk.append(len(own))
            lengths.append(length)
    # Impacts with the namespace's average length (this batch's, for a new namespace):
    # they only order a term's postings, scores are computed at query time.
    if avgdl <= 0:
        avgdl = total / len(chunk_rows) if chunk_rows else 1.0
    counts = np.array(per_chunk, dtype=np.int64)
    postings = _postings(
        terms,
        np.repeat(np.array([r[0] for r in chunk_rows], dtype=np.int64), counts),
        np.repeat(np.array(lengths, dtype=np.int64), counts),
        np.array([tf_title, tf_headings, tf_text], dtype=np.int64).T,
        avgdl,
        weights,
    )
    documents = document_arrays(run)
    return Prepared(chunk_rows, postings, documents, dict(Counter(terms)), total, dims)


def _counts(analyzer: Analyzer, seen: dict[str, Counter[str]], text: str) -> Counter[str]:
    """``analyzer.term_counts(text)``, once per distinct text (the counts are only read)."""
    counts = seen.get(text)
    if counts is None:
        counts = seen[text] = analyzer.term_counts(text)
    return counts


def _postings(
    terms: list[str],
    chunk: np.ndarray[Any, np.dtype[np.int64]],
    length: np.ndarray[Any, np.dtype[np.int64]],
    tf: np.ndarray[Any, np.dtype[np.int64]],
    avgdl: float,
    w: Weights,
) -> Postings:
    """Each posting's impact ``f / (f + k1 * (1 - b + b * length / avgdl))``: the same
    float64 operations, in the same order, as one posting at a time."""
    norm0, norm1 = w.k1 * (1 - w.b), w.k1 * w.b / max(avgdl, 1e-9)
    norm = norm0 + norm1 * length
    f = w.title * tf[:, 0] + w.headings * tf[:, 1] + w.text * tf[:, 2]
    denominator = f + norm
    impact = np.zeros(len(terms), dtype=np.float64)
    np.divide(f, denominator, out=impact, where=denominator > 0)
    return Postings(terms, chunk, length, tf, impact.astype(np.float32))


def postings_copy(ns_id: int, postings: Postings) -> bytes:
    """``COPY_POSTINGS``' binary payload: every row, framed, in the order of ``postings``.

    A row is its term's head (field count, namespace, term), packed once per distinct
    term, and its fixed-size tail, a slice of one numpy record array.
    """
    n = len(postings)
    tail = np.empty(n, dtype=_TAIL)
    tail["n_chunk"] = 8
    for field in ("n_length", "n_title", "n_headings", "n_text", "n_impact"):
        tail[field] = 4
    tail["chunk"] = postings.chunk
    tail["length"] = postings.length
    tail["title"], tail["headings"], tail["text"] = postings.tf.T
    tail["impact"] = postings.impact
    heads = {}
    for term in dict.fromkeys(postings.terms):
        encoded = term.encode()
        heads[term] = _HEAD.pack(8, 4, ns_id, len(encoded)) + encoded
    data, size = tail.tobytes(), _TAIL.itemsize
    tails = [data[i : i + size] for i in range(0, n * size, size)]
    rows = chain.from_iterable(zip(map(heads.__getitem__, postings.terms), tails, strict=True))
    return b"".join((_SIGNATURE, *rows, _TRAILER))
