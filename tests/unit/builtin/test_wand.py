"""MaxScore top-k (``wand.top_k``) against exhaustive BM25 (``Postings.scores``)."""

from __future__ import annotations

from collections import Counter

import numpy as np
import numpy.typing as npt
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragtide.builtin import _maxscore, wand
from ragtide.builtin.bm25 import Postings
from ragtide.builtin.wand import EXHAUSTIVE_BELOW, SourceFilter, top_k


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
    # MaxScore compiled, and the small namespaces' exhaustive path
    for below in (0, EXHAUSTIVE_BELOW):
        _same(top_k(postings, query, k, exhaustive_below=below), _exact(postings, query), k)
    # MaxScore in numpy: its essential postings summed per chunk or densely, and its
    # look-ups by binary search or by a table of the positions
    for ratio, cost in ((0.0, 0.0), (1e9, 0.0), (0.0, 1e9), (1e9, 1e9)):
        got = top_k(
            postings,
            query,
            k,
            exhaustive_below=0,
            dense_ratio=ratio,
            scatter_cost=cost,
            compiled=False,
        )
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
    for compiled in (True, False):  # no filter: the compiled loop skips the dead itself
        got = top_k(postings, query, k, exhaustive_below=0, compiled=compiled)
        _same(got, _exact(postings, query), k)
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
    # A filter decided per source (document and metadata), as the embedded store's are:
    # the compiled loop reads its mask itself.
    source = np.asarray(data.draw(st.lists(st.integers(0, 5), min_size=n, max_size=n)), np.int32)
    by_source = np.asarray(data.draw(st.lists(st.booleans(), min_size=6, max_size=6)), np.bool_)
    for compiled in (True, False):
        admit = SourceFilter(by_source, source)
        got = top_k(postings, query, k, admit, exhaustive_below=0, compiled=compiled)
        _same(got, _exact(postings, query, by_source[source]), k)


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


def test_ties_go_to_the_earlier_position_across_segments() -> None:
    # 600 chunks that score alike, in three segments: the top 7 are the first seven.
    docs = [Counter({0: 2, 1: 1}) for _ in range(600)]
    ids = [np.array(sorted(d), np.uint32) for d in docs]
    tfs = [np.array([d[t] for t in sorted(d)], np.uint16) for d in docs]
    postings = Postings.build(ids[:400], tfs[:400]).add(ids[400:500], tfs[400:500])
    postings = postings.add(ids[500:], tfs[500:])
    assert len(postings.segments) > 1
    for compiled in (True, False):
        positions, _ = top_k(postings, [0, 1], 7, exhaustive_below=0, compiled=compiled)
        assert positions.tolist() == list(range(7))
    gone = postings.remove(np.array([1, 3], np.int64))
    positions, _ = top_k(gone, [0, 1], 7, exhaustive_below=0)
    assert positions.tolist() == [0, 2, 4, 5, 6, 7, 8]


def test_the_compiled_loop_scores_few_chunks_when_rare_terms_decide(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # 20,000 chunks hold the common term 0; ten also hold the rare term 1.
    docs = [Counter({0: 1 + i % 3, 2 + i % 50: 1}) for i in range(20_000)]
    for i in range(10):
        docs[i * 1_999][1] = 2
    postings = _postings(docs, 12_000)
    loops = _maxscore.kernels()
    assert loops is not None
    scored: list[int] = []

    def counting(*args: object) -> int:
        assert loops is not None
        scored.append(loops.daat(*args))
        return scored[-1]

    monkeypatch.setattr(_maxscore, "kernels", lambda: loops._replace(daat=counting))
    got = top_k(postings, [0, 1], 5, exhaustive_below=0)
    _same(got, _exact(postings, [0, 1]), 5)
    assert scored  # the loop ran, segment by segment
    assert sum(scored) < 100  # not the 20,000 chunks the common term names


def test_read_only_arrays_as_a_saved_snapshot_maps_them() -> None:
    # Mapped (read-only) and in-memory arrays alike: the loops are compiled once, for
    # read-only inputs (a second compilation would hold the GIL for a second mid-serving).
    rng = np.random.default_rng(7)
    docs = [Counter({int(t): int(rng.integers(1, 4)) for t in rng.integers(0, 30, 6)})]
    docs += [Counter({int(t): 1 for t in rng.integers(0, 30, 5)}) for _ in range(300)]
    postings = _postings(docs, 200).remove(np.arange(0, 300, 7, dtype=np.int64))
    assert postings.alive is not None
    for array in (postings.lengths, postings.alive):
        array.flags.writeable = False
    for segment in postings.segments:
        segment.chunk.flags.writeable = False
        segment.tf.flags.writeable = False
    writable = _postings(docs, 100)
    for query in ([1, 2, 3], [5], [0, 9, 17, 29]):
        _same(top_k(postings, query, 9, exhaustive_below=0), _exact(postings, query), 9)
        _same(top_k(writable, query, 9, exhaustive_below=0), _exact(writable, query), 9)
    loops = _maxscore.kernels()
    assert loops is not None
    assert len(loops.daat.signatures) == 1  # type: ignore[attr-defined]
    assert len(loops.accumulate.signatures) == 1  # type: ignore[attr-defined]


def _points(
    postings: Postings, term: int
) -> list[tuple[npt.NDArray[np.generic], npt.NDArray[np.float32]]]:
    """``term``'s points in each segment that has it."""
    points = []
    for segment in postings.segments:
        lo, hi = segment.spans(np.array([term], np.int64))
        if hi[0] > lo[0]:
            i = int(np.searchsorted(segment.terms, term))
            points.append(wand._points(segment, postings.lengths, i, int(lo[0]), int(hi[0])))
    return points


@settings(max_examples=60, deadline=None)
@given(
    entries=st.lists(st.tuples(st.integers(1, 12), st.integers(0, 40)), min_size=1, max_size=40),
    split=st.integers(0, 40),
)
def test_a_terms_bound_is_the_most_any_entry_of_it_scores(
    entries: list[tuple[int, int]], split: int
) -> None:
    # Term 0 at frequency tf in chunks padded to other lengths by other terms: its bound
    # holds for every entry and is no looser than rounding, over one segment or two.
    docs = [Counter({0: tf, 1 + i % 7: 1 + pad}) for i, (tf, pad) in enumerate(entries)]
    postings = _postings(docs, split)
    k1, b = postings.k1, postings.b
    avgdl = postings.total / postings.live
    got = wand._bound(1.0, _points(postings, 0), k1, b, avgdl)
    # Without numba, from the entries each time: the same bound.
    bare = _postings(docs, split)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_maxscore, "kernels", lambda: None)
        assert wand._bound(1.0, _points(bare, 0), k1, b, avgdl) == got
    lengths = postings.lengths.astype(np.float64)
    best = max(
        tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths[i] / avgdl))
        for i, (tf, _) in enumerate(entries)
    )
    assert best <= got <= best * (1 + 2e-5) + 2e-6


def test_a_terms_bound_is_not_its_top_frequency_in_its_shortest_chunk() -> None:
    # The highest frequency is in a long chunk, the shortest chunk has the term once:
    # the bound is the better of those two entries, well below the two combined.
    postings = _postings([Counter({0: 1}), Counter({0: 9, 1: 300}), Counter({1: 5})])
    k1, b = postings.k1, postings.b
    avgdl = postings.total / postings.live
    got = wand._bound(1.0, _points(postings, 0), k1, b, avgdl)

    def saturation(tf: float, length: float) -> float:
        return tf * (k1 + 1) / (tf + k1 * (1 - b + b * length / avgdl))

    assert got == pytest.approx(max(saturation(1, 1), saturation(9, 309)), rel=2e-5)
    assert got < 0.8 * saturation(9, 1)
