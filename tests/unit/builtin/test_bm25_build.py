"""A segment's build (a counting sort, a piece at a time) against the construction it
replaced: one stable argsort of every entry. Equal arrays, dtypes included."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragtide.builtin import bm25
from ragtide.builtin.bm25 import Postings, Segment


def _reference(ids: np.ndarray, chunk: np.ndarray, tf: np.ndarray) -> Segment:
    """``Segment.build`` as it was: argsort all entries, then group them."""
    order = np.argsort(ids, kind="stable")
    ids = ids[order]
    if len(ids):
        bounds = np.flatnonzero(ids[1:] != ids[:-1]) + 1
        terms = ids[np.concatenate(([0], bounds))]
        start = np.concatenate(([0], bounds, [len(ids)])).astype(np.int64)
    else:
        terms, start = np.zeros(0, np.uint32), np.zeros(1, np.int64)
    return Segment(terms, start, chunk[order], tf[order])


def _assert_same(got: Segment, expected: Segment) -> None:
    for name in ("terms", "start", "chunk", "tf"):
        a, b = getattr(got, name), getattr(expected, name)
        assert a.dtype == b.dtype, name
        assert a.tolist() == b.tolist(), name


# term ids from a vocabulary of 1 (one term), a few (dense: a counting sort) or a
# million (sparse beside a few entries: argsorted whole)
_vocabulary = st.sampled_from([1, 3, 40, 1_000_000])
_blocks = st.integers(1, 9) | st.just(1 << 18)


@given(
    _vocabulary.flatmap(
        lambda v: st.lists(st.tuples(st.integers(0, v - 1), st.integers(0, 500)), max_size=60)
    ),
    st.integers(1, 65535),
    _blocks,
)
def test_build_equals_one_argsort_of_all_entries(
    entries: list[tuple[int, int]], tf_seed: int, block: int
) -> None:
    """Entries in any order (as a merge gives them: term-major segments one after another)."""
    ids = np.array([e[0] for e in entries], np.uint32)
    chunk = np.array([e[1] for e in entries], np.int32)
    tf = ((np.arange(len(ids)) * tf_seed) % 65536).astype(np.uint16)
    _assert_same(Segment.build(ids, chunk, tf, block=block), _reference(ids, chunk, tf))


_chunks = _vocabulary.flatmap(
    lambda v: st.lists(st.sets(st.integers(0, v - 1), max_size=6).map(sorted), max_size=25)
)


@given(_chunks, st.integers(0, 1_000), _blocks)
def test_of_chunks_equals_a_build_from_every_entrys_position(
    chunks: list[list[int]], first: int, block: int
) -> None:
    counts = np.array([len(c) for c in chunks], np.int64)
    ids = np.array([t for c in chunks for t in c], np.uint32)
    tf = (np.arange(len(ids)) % 7 + 1).astype(np.uint16)
    chunk = np.repeat(np.arange(first, first + len(chunks), dtype=np.int32), counts)
    got = Segment.of_chunks(ids, tf, counts, first, block=block)
    _assert_same(got, _reference(ids, chunk, tf))


@given(_chunks.filter(bool), st.integers(1, 9))
def test_add_flat_in_pieces_keeps_the_lengths_and_postings(
    chunks: list[list[int]], block: int
) -> None:
    """``add_flat`` with pieces of a few entries (the load's path) against the old
    construction: lengths as one bincount, the segment as one argsort."""
    counts = np.array([len(c) for c in chunks], np.int64)
    ids = np.array([t for c in chunks for t in c], np.uint32)
    tfs = (np.arange(len(ids)) % 5 + 1).astype(np.uint16)
    owner = np.repeat(np.arange(len(chunks), dtype=np.int32), counts)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(bm25, "_BLOCK", block)
        postings = Postings.empty().add_flat(ids, tfs, counts)
    lengths = np.bincount(owner, weights=tfs, minlength=len(chunks)).astype(np.float32)
    assert postings.lengths[: len(chunks)].tolist() == lengths.tolist()
    assert postings.total == float(lengths.sum(dtype=np.float64))
    if len(ids):
        (segment,) = postings.segments
        _assert_same(segment, _reference(ids, owner, tfs))
    else:
        assert postings.segments == ()


def test_empty_one_term_and_sparse_edges() -> None:
    none = np.zeros(0, np.uint32), np.zeros(0, np.int32), np.zeros(0, np.uint16)
    _assert_same(Segment.build(*none), _reference(*none))
    one_term = np.zeros(5, np.uint32), np.arange(5, dtype=np.int32), np.ones(5, np.uint16)
    _assert_same(Segment.build(*one_term, block=2), _reference(*one_term))
    assert Segment.build(*one_term).start.tolist() == [0, 5]
    sparse = np.array([7, 3], np.uint32), np.array([0, 1], np.int32), np.array([2, 4], np.uint16)
    _assert_same(Segment.build(*sparse), _reference(*sparse))
    # chunks without entries between others, and none at all
    counts = np.array([0, 2, 0, 1, 0], np.int64)
    ids, tfs = np.array([0, 1, 1], np.uint32), np.array([1, 2, 3], np.uint16)
    owner = np.repeat(np.arange(5, dtype=np.int32), counts)
    _assert_same(Segment.of_chunks(ids, tfs, counts, 0, block=1), _reference(ids, owner, tfs))
    empty = Segment.of_chunks(none[0], none[2], np.zeros(3, np.int64), 0)
    _assert_same(empty, _reference(*none))
