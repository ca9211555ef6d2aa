from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ragtide.builtin.bm25 import Analyzer, Postings, pack, unpack


def _reference(docs: list[Counter[int]], query: list[int], k1: float, b: float) -> list[float]:
    n = len(docs)
    lengths = [sum(d.values()) for d in docs]
    avgdl = sum(lengths) / n if n and sum(lengths) else 1.0
    out = [0.0] * n
    for term in dict.fromkeys(query):
        df = sum(1 for d in docs if term in d)
        if not df:
            continue
        idf = math.log(1 + (n - df + 0.5) / (df + 0.5))
        for i, d in enumerate(docs):
            tf = d.get(term, 0)
            if tf:
                out[i] += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[i] / avgdl))
    return out


def _postings(docs: list[Counter[int]], k1: float = 1.2, b: float = 0.75) -> Postings:
    ids = [np.array(sorted(d), np.uint32) for d in docs]
    tfs = [np.array([d[t] for t in sorted(d)], np.uint16) for d in docs]
    return Postings.build(ids, tfs, k1, b)


@given(
    st.lists(
        st.dictionaries(st.integers(0, 30), st.integers(1, 5), min_size=1), min_size=1, max_size=12
    ),
    st.lists(st.integers(0, 40), min_size=1, max_size=6),
)
def test_scores_equal_the_textbook_formula(raw: list[dict[int, int]], query: list[int]) -> None:
    docs = [Counter(d) for d in raw]
    expected = _reference(docs, query, 1.2, 0.75)
    scores = _postings(docs).scores(list(dict.fromkeys(query)))
    if not any(expected):
        assert scores is None or not scores.any()
    else:
        assert scores is not None
        assert scores == pytest.approx(expected, rel=1e-4, abs=1e-6)


def test_no_matching_term_is_none() -> None:
    assert _postings([Counter({1: 1})]).scores([7, 8]) is None


def test_analyzer_stems_and_drops_stopwords() -> None:
    a = Analyzer()
    assert a.terms("The running Pods are limited") == ["run", "pod", "limit"]
    assert a.query_terms("pods pod PODS limits") == ["pod", "limit"]


def test_pack_round_trip() -> None:
    ids, tfs = unpack(*pack(Counter({"b": 2, "a": 70000}), {"a": 5, "b": 1}))
    assert ids.tolist() == [1, 5] and tfs.tolist() == [2, 65535]


def _arrays(docs: list[Counter[int]]) -> tuple[list[np.ndarray], list[np.ndarray]]:
    ids = [np.array(sorted(d), np.uint32) for d in docs]
    tfs = [np.array([d[t] for t in sorted(d)], np.uint16) for d in docs]
    return ids, tfs


_docs = st.lists(
    st.dictionaries(st.integers(0, 30), st.integers(1, 5), min_size=0, max_size=8),
    min_size=1,
    max_size=6,
)


@given(
    st.lists(st.tuples(_docs, st.lists(st.integers(0, 40), max_size=4)), min_size=1, max_size=8),
    st.lists(st.integers(0, 40), min_size=1, max_size=6),
)
def test_added_and_removed_score_as_a_build_of_the_live_chunks(
    steps: list[tuple[list[dict[int, int]], list[int]]], query: list[int]
) -> None:
    """Any sequence of ``add`` (small segments, merged as they come) and ``remove``
    (tombstones) scores exactly as the textbook formula over the live chunks, which is
    also what ``compact`` keeps."""
    postings = Postings.empty()
    docs: list[Counter[int]] = []
    alive: list[bool] = []
    previous = []
    for added, removed in steps:
        before = postings
        postings = postings.add(*_arrays([Counter(d) for d in added]))
        docs += [Counter(d) for d in added]
        alive += [True] * len(added)
        dead = [p for p in removed if p < len(docs)]
        postings = postings.remove(np.array(dead, np.int64))
        for p in dead:
            alive[p] = False
        previous.append((before, len(before)))
    live = [d for d, a in zip(docs, alive, strict=True) if a]
    expected_live = _reference(live, query, 1.2, 0.75) if live else []
    expected = [0.0] * len(docs)
    for p, score in zip([p for p, a in enumerate(alive) if a], expected_live, strict=True):
        expected[p] = score
    unique = list(dict.fromkeys(query))
    scores = postings.scores(unique)
    if not any(expected):
        assert scores is None or not scores.any()
    else:
        assert scores is not None
        assert scores == pytest.approx(expected, rel=1e-4, abs=1e-6)
    assert postings.live == len(live) and len(postings) == len(docs)
    compacted, keep = postings.compact()
    assert keep.tolist() == [p for p, a in enumerate(alive) if a]
    compact_scores = compacted.scores(unique)
    if any(expected_live):
        assert compact_scores is not None
        assert compact_scores == pytest.approx(expected_live, rel=1e-4, abs=1e-6)
    # Earlier snapshots are untouched by the later ones (they share buffers).
    for snapshot, size in previous:
        assert len(snapshot) == size


def test_an_earlier_snapshot_can_still_be_extended() -> None:
    """Two snapshots made from one never overwrite each other's lengths."""
    base = Postings.build(*_arrays([Counter({1: 1})]), spare=8)
    a = base.add(*_arrays([Counter({2: 3})]))
    b = base.add(*_arrays([Counter({2: 1, 3: 1})]))
    assert a.lengths[1] == 3 and b.lengths[1] == 2
    assert a.scores([2]) is not None and b.scores([3]) is not None
    assert a.scores([3]) is None


def test_segments_stay_few_under_many_small_adds() -> None:
    postings = Postings.build(*_arrays([Counter({t % 50: 1, 60: 2}) for t in range(5000)]))
    for i in range(2000):
        postings = postings.add(*_arrays([Counter({i % 70: 1, 61: 1})]))
    assert len(postings.segments) <= 12
    assert len(postings) == 7000
    scores = postings.scores([61])
    assert scores is not None and (scores[5000:] > 0).all() and not scores[:5000].any()


def test_empty_and_all_removed_find_nothing() -> None:
    assert Postings.empty().scores([1]) is None
    postings = Postings.build(*_arrays([Counter({1: 1}), Counter({1: 2})]))
    assert postings.remove(np.array([0, 1])).scores([1]) is None
    assert postings.remove(np.array([0, 1])).live == 0
    assert Postings.build([], []).scores([0]) is None
