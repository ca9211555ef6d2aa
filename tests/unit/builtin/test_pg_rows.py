"""The PostgreSQL store's write rows: postings made as columns and encoded as one binary
COPY payload equal the rows made one posting at a time."""

from __future__ import annotations

import struct
from collections import Counter
from typing import Any

import numpy as np
import pytest

from ragtide.builtin._pg_rows import Weights, postings_copy, prepare
from ragtide.builtin.bm25 import Analyzer
from ragtide.errors import InvalidRequest
from ragtide.testing.fakes import make_document
from ragtide.types import Chunk

WEIGHTS = Weights(k1=1.2, b=0.75, title=2.0, headings=0.5, text=1.0)


def _run() -> list[tuple[Any, list[Chunk], Any]]:
    chunks = [
        Chunk("a#0", "a", 0, "Cells divide; cells grow. Über-cells!", "Cell biology", ("In",), {}),
        Chunk("a#1", "a", 1, "Growth of cells and tissues", "Cell biology", (), {"k": 1}),
        Chunk("b#0", "b", 0, "the of and", "", (), {}),  # no content words at all
        Chunk("c#0", "c", 0, "naïve Bayes, naive bayes; 42 times", "", ("Bayes", "Models"), {}),
    ]
    rng = np.random.default_rng(1)
    return [
        (make_document("a", "Cell biology"), chunks[:2], rng.normal(size=(2, 3))),
        (make_document("b"), chunks[2:3], rng.normal(size=(1, 3))),
        (make_document("empty"), [], np.zeros((0, 3))),
        (make_document("c"), chunks[3:], rng.normal(size=(1, 3))),
    ]


def _expected(ns_id: int, ids: list[int], avgdl: float) -> list[tuple[Any, ...]]:
    """One posting at a time, in Python floats (the store's former loop)."""
    analyzer, rows, counted = Analyzer(), [], []
    chunks = [c for _, cs, _ in _run() for c in cs]
    for chunk_id, chunk in zip(ids, chunks, strict=True):
        title = analyzer.term_counts(chunk.title)
        headings = analyzer.term_counts(" ".join(chunk.headings))
        text = analyzer.term_counts(chunk.text)
        counted.append((chunk_id, title, headings, text))
    lengths = [t.total() + h.total() + x.total() for _, t, h, x in counted]
    if avgdl <= 0:
        avgdl = sum(lengths) / len(lengths)
    w = WEIGHTS
    norm0, norm1 = w.k1 * (1 - w.b), w.k1 * w.b / avgdl
    for (chunk_id, title, headings, text), length in zip(counted, lengths, strict=True):
        norm = norm0 + norm1 * length
        for term in title.keys() | headings.keys() | text.keys():
            tt, th, tx = title[term], headings[term], text[term]
            f = w.title * tt + w.headings * th + w.text * tx
            impact = float(np.float32(f / (f + norm)))
            rows.append((ns_id, term, chunk_id, length, tt, th, tx, impact))
    return sorted(rows)


def _decode(payload: bytes) -> list[tuple[Any, ...]]:
    """Binary COPY rows of (int4, text, int8, int4, int4, int4, int4, float4)."""
    assert payload[:19] == b"PGCOPY\n\xff\r\n\x00" + bytes(8)
    pos, rows = 19, []
    while True:
        (fields,) = struct.unpack_from(">h", payload, pos)
        pos += 2
        if fields == -1:
            break
        assert fields == 8
        row: list[Any] = []
        for kind in ("i", "t", "q", "i", "i", "i", "i", "f"):
            (size,) = struct.unpack_from(">i", payload, pos)
            value = payload[pos + 4 : pos + 4 + size]
            pos += 4 + size
            row.append(value.decode() if kind == "t" else struct.unpack(">" + kind, value)[0])
        rows.append(tuple(row))
    assert pos == len(payload)
    return sorted(rows)


@pytest.mark.parametrize("avgdl", [0.0, 3.5])
def test_postings_payload_equals_one_posting_at_a_time(avgdl: float) -> None:
    ids = [11, 12, 13, 2**40]
    prepared = prepare(0, avgdl, ids, _run(), "emb", WEIGHTS)
    want = _expected(7, ids, avgdl)
    assert _decode(postings_copy(7, prepared.postings)) == want
    assert prepared.df == dict(Counter(r[1] for r in want))
    lengths = {r[2]: r[3] for r in want}
    assert prepared.tokens == sum(lengths.values())
    assert prepared.dimension == 3
    assert [r[0] for r in prepared.chunks] == ids
    assert [r[-1] for r in prepared.chunks] == [lengths.get(i, 0) for i in ids]
    assert 13 not in lengths  # the chunk of stopwords has no postings and length 0
    assert prepared.documents["ids"] == ["a", "b", "empty", "c"]
    assert prepared.documents["chunks"] == [2, 1, 0, 1]
    assert {r[1] for r in prepared.in_namespace(5).chunks} == {5}


def test_no_postings_is_an_empty_copy() -> None:
    run = [(make_document("b"), _run()[1][1], np.ones((1, 2)))]
    prepared = prepare(1, 0.0, [1], run, "emb", WEIGHTS)
    assert len(prepared.postings) == 0 and prepared.df == {}
    assert _decode(postings_copy(1, prepared.postings)) == []


@pytest.mark.parametrize(
    "vectors",
    [np.ones((2, 0)), np.array([[1.0, np.nan, 0], [1, 1, 1]]), np.ones(6)],
)
def test_bad_vectors_are_rejected(vectors: Any) -> None:
    with pytest.raises(InvalidRequest):
        prepare(1, 0.0, [1, 2], [(*_run()[0][:2], vectors)], "emb", WEIGHTS)
