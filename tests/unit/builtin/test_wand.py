"""MaxScore top-k (``wand.top_k``) against exhaustive BM25 (``Postings.scores``)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import numpy.typing as npt
from hypothesis import given, settings
from hypothesis import strategies as st

from ragtide.builtin.bm25 import Postings
from ragtide.builtin.wand import EXHAUSTIVE_BELOW, top_k


def _postings(docs: list[Counter[int]], split: int = 0) -> Postings:
    """Postings of ``docs``, added in two batches at ``split`` (two segments) if given."""
    ids = [np.array(sorted(d), np.uint32) for d in docs]
    tfs = [np.array([d[t] for t in sorted(d)], np.uint16) for d in docs]
    if 0 < split < len(docs):
        return Postings.build(ids[:split], tfs[:split]).add(ids[split:], tfs[split:])
    return Postings.build(ids, tfs)


def _exact(
    postings: Postings,
    query: list[int],
    admitted: npt.NDArray[np.bool_] | None = None,
) -> list[tuple[int, float]]:
    """The exhaustive ranking: every positive score, best first, ties by position."""
    scores = postings.scores(query)
    if scores is None:
        return []
    ok = scores > 0
    if postings.alive is not None:
        ok &= postings.alive[: len(scores)]
    if admitted is not None:
        ok &= admitted
    positions = np.flatnonzero(ok)
    order = np.lexsort((positions, -scores[positions]))
    return [(int(p), float(scores[p])) for p in positions[order]]


def _same(
    got: tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]],
    ranking: list[tuple[int, float]],
    k: int,
) -> None:
    """``got`` is ``ranking``'s top ``k`` (a near-tie may swap chunks of equal score)."""
    positions, scores = got
    want = ranking[:k]
    assert len(positions) == len(want)
    # Same scores in the same order; positions the same except among (rounding-)ties.
    for (p, s), (wp, ws) in zip(
        zip(positions.tolist(), scores.tolist(), strict=True), want, strict=True
    ):
        assert abs(s - ws) <= 1e-5 * max(1.0, abs(ws))
        if p != wp:
            tied = [q for q, v in ranking if abs(v - ws) <= 1e-5 * max(1.0, abs(ws))]
            assert p in tied


_DOCS = st.lists(
    st.dictionaries(st.integers(0, 40), st.integers(1, 6), min_size=1, max_size=12),
    min_size=1,
    max_size=80,
)


@settings(max_examples=300, deadline=None)
@given(
    _DOCS,
    st.lists(st.integers(0, 45), min_size=1, max_size=8),
    st.integers(1, 12),
    st.integers(0, 80),
)
def test_top_k_is_exhaustive_bm25s_top_k(
    raw: list[dict[int, int]], query: list[int], k: int, split: int
) -> None:
    postings = _postings([Counter(d) for d in raw], split)
    for below in (0, EXHAUSTIVE_BELOW):  # MaxScore, and the small namespaces' exhaustive path
        _same(top_k(postings, query, k, exhaustive_below=below), _exact(postings, query), k)
    # MaxScore's essential postings summed per chunk or densely, and its look-ups by binary
    # search or by a table of the positions
    for ratio, cost in ((0.0, 0.0), (1e9, 0.0), (0.0, 1e9), (1e9, 1e9)):
        got = top_k(postings, query, k, exhaustive_below=0, dense_ratio=ratio, scatter_cost=cost)
        _same(got, _exact(postings, query), k)


@settings(max_examples=200, deadline=None)
@given(
    _DOCS,
    st.lists(st.integers(0, 45), min_size=1, max_size=8),
    st.integers(1, 12),
    st.data(),
)
def test_top_k_with_deletions_and_a_filter(
    raw: list[dict[int, int]], query: list[int], k: int, data: st.DataObject
) -> None:
    postings = _postings([Counter(d) for d in raw], len(raw) // 2)
    n = len(raw)
    dead = data.draw(st.lists(st.integers(0, n - 1), max_size=n, unique=True))
    if len(dead) < n:  # at least one live chunk
        postings = postings.remove(np.asarray(dead, np.int64))
    admitted = np.asarray(data.draw(st.lists(st.booleans(), min_size=n, max_size=n)), np.bool_)
    for below, ratio, cost in ((0, 0.0, 0.0), (0, 1e9, 1e9), (EXHAUSTIVE_BELOW, 16.0, 1.0)):
        got = top_k(
            postings,
            query,
            k,
            lambda p: admitted[p],
            exhaustive_below=below,
            dense_ratio=ratio,
            scatter_cost=cost,
        )
        _same(got, _exact(postings, query, admitted), k)


def test_frequent_terms_are_skipped_when_rare_ones_decide() -> None:
    # 2,000 chunks hold the common term 0; five hold the rare term 1 as well.
    docs = [Counter({0: 1, 2 + i % 50: 1}) for i in range(2_000)]
    for i in range(5):
        docs[i * 300][1] = 3
    postings = _postings(docs)
    positions, scores = top_k(postings, [0, 1], 5, exhaustive_below=0)
    assert sorted(positions.tolist()) == [0, 300, 600, 900, 1200]
    _same((positions, scores), _exact(postings, [0, 1]), 5)


def test_no_known_term_no_live_chunk_or_k_zero_is_empty() -> None:
    postings = _postings([Counter({1: 1}), Counter({2: 2})])
    for below in (0, EXHAUSTIVE_BELOW):
        assert len(top_k(postings, [7], 3, exhaustive_below=below)[0]) == 0
        assert len(top_k(postings, [1], 0, exhaustive_below=below)[0]) == 0
        assert len(top_k(postings, [-1], 3, exhaustive_below=below)[0]) == 0
        gone = postings.remove(np.array([0, 1]))
        assert len(top_k(gone, [1, 2], 3, exhaustive_below=below)[0]) == 0
        got = top_k(postings, [2, 1], 5, exhaustive_below=below)
        _same(got, _exact(postings, [2, 1]), 5)
