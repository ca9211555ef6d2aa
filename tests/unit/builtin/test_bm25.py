from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ragtide.builtin import bm25
from ragtide.builtin.bm25 import Analyzer, Postings, Segment, pack, unpack


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


# --- edges the mutants found (mutation/reports/bm25.md) -------------------------------------


DOCS = [Counter({1: 2, 2: 1}), Counter({2: 3}), Counter({1: 1, 3: 4}), Counter({3: 1})]


@pytest.mark.parametrize(("k1", "b"), [(1.2, 0.75), (2.0, 0.0), (0.5, 1.0)])
def test_k1_and_b_reach_the_scores(k1: float, b: float) -> None:
    for postings in (
        _postings(DOCS, k1, b),
        Postings.empty(k1, b).add(*_arrays(DOCS)),
    ):
        assert (postings.k1, postings.b) == (k1, b)
        assert postings.scores([1, 3]) == pytest.approx(_reference(DOCS, [1, 3], k1, b), rel=1e-5)
    defaults = Postings.build(*_arrays(DOCS))  # lengths 3, 3, 5, 1: b matters for 1 and 3
    assert defaults.scores([1, 3]) == pytest.approx(
        _reference(DOCS, [1, 3], 1.2, 0.75), rel=1e-5
    )


def test_an_empty_chunk_counts_in_the_average_length() -> None:
    docs = [Counter({1: 1}), Counter()]  # total length 1 over 2 chunks: avgdl 0.5
    scores = _postings(docs).scores([1])
    assert scores == pytest.approx(_reference(docs, [1], 1.2, 0.75), rel=1e-5)


def test_removing_everything_then_adding_scores_as_a_fresh_build() -> None:
    emptied = _postings(DOCS).remove(np.arange(4))
    assert (emptied.live, emptied.total) == (0, 0.0)
    again = emptied.add(*_arrays([Counter({1: 1, 2: 1}), Counter({1: 3})]))
    fresh = _reference([Counter({1: 1, 2: 1}), Counter({1: 3})], [1], 1.2, 0.75)
    scores = again.scores([1])
    assert scores is not None and scores[4:] == pytest.approx(fresh, rel=1e-5)
    assert not scores[:4].any()


def test_compaction_renumbers_the_live_chunks() -> None:
    compacted, keep = _postings(DOCS).remove(np.array([1])).compact()
    live = [DOCS[0], DOCS[2], DOCS[3]]
    assert keep.tolist() == [0, 2, 3]
    assert (compacted.chunks, compacted.live, compacted.alive) == (3, 3, None)
    assert compacted.total == sum(sum(d.values()) for d in live)
    assert len(compacted.segments) == 1 and len(compacted.segments[0]) == 5  # entries
    assert compacted.scores([1, 2, 3]) == pytest.approx(
        _reference(live, [1, 2, 3], 1.2, 0.75), rel=1e-5
    )


def test_a_merge_drops_the_entries_of_deleted_chunks() -> None:
    # four one-entry chunks, one removed; one more chunk (1 * 4 >= 4) merges the segments
    postings = _postings([Counter({t: 1}) for t in range(4)]).remove(np.array([0]))
    merged = postings.add(*_arrays([Counter({9: 1})]))
    assert len(merged.segments) == 1
    assert len(merged.segments[0]) == 4  # 3 live + the new one; the dead entry is gone
    assert merged.scores([0]) is None and merged.scores([9]) is not None


def test_a_small_segment_stays_apart_from_a_larger_one() -> None:
    postings = _postings([Counter({t: 1}) for t in range(5)])  # 5 entries
    two = postings.add(*_arrays([Counter({9: 1})]))  # 1 * 4 < 5: not merged
    assert [len(s) for s in two.segments] == [5, 1]
    scores = two.scores([9])  # found in the second segment only
    assert scores is not None and scores[5] > 0 and not scores[:5].any()
    assert two.scores([0]) is not None and two.scores([0])[0] > 0  # type: ignore[index]


def test_appends_share_the_length_buffer_until_a_branch() -> None:
    base = Postings.build(*_arrays([Counter({1: 1})]), spare=2)
    a = base.add(*_arrays([Counter({2: 3})]))
    assert np.shares_memory(a.lengths, base.lengths)  # appended in place
    a2 = a.add(*_arrays([Counter({3: 2})]))  # exactly fills the room
    assert np.shares_memory(a2.lengths, a.lengths)
    b = base.add(*_arrays([Counter({2: 1, 3: 1})]))  # base was extended already: a copy
    assert not np.shares_memory(b.lengths, base.lengths)
    assert a2.lengths[1:3].tolist() == [3, 2] and b.lengths[1] == 2
    c = a2.add(*_arrays([Counter({4: 1})]))  # no room left: a grown copy
    assert not np.shares_memory(c.lengths, a2.lengths) and c.lengths[:4].tolist() == [1, 3, 2, 1]


def test_an_empty_segment_has_no_terms_and_one_start() -> None:
    segment = Segment.build(np.zeros(0, np.uint32), np.zeros(0, np.int32), np.zeros(0, np.uint16))
    assert len(segment) == 0 and segment.terms.tolist() == [] and segment.start.tolist() == [0]
    lo, hi = segment.spans(np.array([1, 2], np.int64))
    assert lo.tolist() == hi.tolist() == [0, 0]


def test_query_terms_are_unique_and_at_most_64() -> None:
    words = " ".join(f"word{i}x" for i in range(70))
    terms = Analyzer().query_terms(words + " " + words)
    assert len(terms) == 64 and len(set(terms)) == 64
    assert Analyzer().query_terms(words, limit=3) == terms[:3]


def test_term_counts_count_stems() -> None:
    assert Analyzer().term_counts("Cats and a cat chased dogs") == Counter(
        {"cat": 2, "chase": 1, "dog": 1}
    )


def test_compaction_leaves_room_and_its_lineage_appends_in_place() -> None:
    compacted, _ = _postings(DOCS).remove(np.array([1])).compact(spare=2)
    assert len(compacted.lengths) == 3 + 2
    more = compacted.add(*_arrays([Counter({5: 1}), Counter({5: 2})]))
    assert np.shares_memory(more.lengths, compacted.lengths)
    assert more.lengths[:5].tolist() == [3, 5, 1, 1, 2]


def test_a_snapshot_after_a_removal_still_appends_in_place() -> None:
    base = Postings.build(*_arrays(DOCS), spare=2)
    removed = base.remove(np.array([0]))
    more = removed.add(*_arrays([Counter({5: 1})]))
    assert np.shares_memory(more.lengths, base.lengths)
    assert more.live == 4 and more.scores([1]) is not None


@settings(deadline=None)  # the first example loads the compiled pass
@given(
    st.lists(
        st.dictionaries(st.integers(0, 12), st.integers(1, 6), min_size=1, max_size=6),
        min_size=1,
        max_size=40,
    )
)
def test_a_segments_frontier_holds_each_terms_shortest_chunk_per_frequency(
    raw: list[dict[int, int]],
) -> None:
    postings = _postings([Counter(d) for d in raw])
    lengths = postings.lengths
    for segment in postings.segments:
        table = segment.frontier(lengths)
        assert table is not None
        for i, term in enumerate(segment.terms.tolist()):
            shortest: dict[int, float] = {}
            for position, counts in enumerate(raw):
                if term in counts:
                    f = counts[term]
                    shortest[f] = min(shortest.get(f, math.inf), float(lengths[position]))
            tf, length = table.of(i)
            assert dict(zip(tf.tolist(), length.tolist(), strict=True)) == shortest


def test_large_segments_of_large_namespaces_get_their_frontier_when_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    raw = [{t: 1 + (t + i) % 3 for t in range(i % 5, i % 5 + 4)} for i in range(300)]
    docs = [Counter(d) for d in raw]
    small = _postings(docs)
    assert all(not s.bounds for s in small.segments)
    monkeypatch.setattr(bm25, "EAGER_FRONTIER", 100)  # large segments...
    assert all(not s.bounds for s in _postings(docs).segments)  # ...of a small namespace
    monkeypatch.setattr(bm25, "EAGER_FRONTIER_CHUNKS", 200)
    large = _postings(docs)
    assert large.segments and all(s.bounds for s in large.segments)
    assert small.prepare() is small and all(s.bounds for s in small.segments)
    compacted, _ = large.remove(np.arange(0, 300, 3)).compact()
    assert all(s.bounds for s in compacted.segments)


@given(
    st.lists(
        st.lists(
            st.dictionaries(st.integers(0, 40), st.integers(1, 6), min_size=1, max_size=6),
            min_size=1,
            max_size=8,
        ),
        min_size=1,
        max_size=6,
    ),
    st.sets(st.integers(0, 47)),
    st.integers(1, 30),
)
def test_a_streamed_merge_makes_the_compacted_segment(
    batches: list[list[dict[int, int]]], removed: set[int], block: int
) -> None:
    # Postings written batch by batch (segments, some merged), some chunks removed.
    postings = Postings.empty()
    for batch in batches:
        postings = postings.add(*_arrays([Counter(d) for d in batch]))
    postings = postings.remove(np.array(sorted(r for r in removed if r < postings.chunks)))
    compacted, keep = postings.compact()
    remap = np.full(postings.chunks, -1, np.int32)
    remap[keep] = np.arange(len(keep), dtype=np.int32)
    merged = bm25.Merged(postings.segments, postings.alive, remap, block=block)
    [segment] = compacted.segments
    assert merged.terms.tolist() == segment.terms.tolist()
    assert merged.start.tolist() == segment.start.tolist()
    assert len(merged) == len(segment)
    for pieces, whole in ((merged.chunk, segment.chunk), (merged.tf, segment.tf)):
        made = [p.tolist() for p in pieces]
        assert [x for piece in made for x in piece] == whole.tolist()


def test_a_streamed_merge_holds_one_block_of_terms_at_a_time() -> None:
    docs = [Counter({t: 1 + i % 3 for t in range(i % 7, i % 7 + 5)}) for i in range(60)]
    postings = _postings(docs).add(*_arrays(docs[:10]))
    merged = bm25.Merged(postings.segments, None, None, block=50)
    pieces = list(merged.chunk)
    assert len(pieces) > 3 and max(len(p) for p in pieces) < 100  # whole terms, ~50 entries
    assert sum(len(p) for p in pieces) == len(merged) == 70 * 5
