from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragtide.builtin.retrievers import HybridRetriever, convex_fusion, reciprocal_rank_fusion
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Chunk, Filter, Hit, RetrievalRequest


def _hits(*pairs: tuple[str, float]) -> list[Hit]:
    return [Hit(Chunk(cid, cid.split("#")[0], 0, cid), score) for cid, score in pairs]


def test_rrf_rewards_agreement() -> None:
    keyword = _hits(("a", 9.0), ("b", 5.0), ("c", 1.0))
    dense = _hits(("b", 0.9), ("d", 0.8), ("a", 0.1))
    fused = reciprocal_rank_fusion([keyword, dense], [1.0, 1.0], k=60)
    assert [h.chunk.id for h in fused] == ["b", "a", "d", "c"]
    assert fused[0].score == pytest.approx(1 / 62 + 1 / 61)


def test_rrf_weights_shift_the_order() -> None:
    keyword = _hits(("a", 9.0), ("b", 5.0))
    dense = _hits(("b", 0.9), ("a", 0.1))
    assert reciprocal_rank_fusion([keyword, dense], [1.0, 0.1])[0].chunk.id == "a"
    assert reciprocal_rank_fusion([keyword, dense], [0.1, 1.0])[0].chunk.id == "b"


def test_convex_fusion_normalises_each_list() -> None:
    keyword = _hits(("a", 30.0), ("b", 20.0), ("c", 10.0))
    dense = _hits(("c", 0.9), ("b", 0.5), ("a", 0.1))
    fused = convex_fusion([keyword, dense], [1.0, 0.5])
    scores = {h.chunk.id: h.score for h in fused}
    assert scores == pytest.approx({"a": 1.0, "b": 0.5 + 0.5 * 0.5, "c": 0.5})
    assert fused[0].chunk.id == "a"


def test_convex_fusion_with_an_empty_list() -> None:
    fused = convex_fusion([_hits(("a", 2.0), ("b", 1.0)), []], [1.0, 1.0])
    assert [h.chunk.id for h in fused] == ["a", "b"]


@pytest.mark.anyio
async def test_hybrid_retriever_finds_by_keyword_and_by_vector(tmp_path: Path) -> None:
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db"))
    await store.start()
    vec = np.eye(3, dtype=np.float32)
    await store.put_document(
        "ns", make_document("kw"), make_chunks("kw", ["zebra stripes"]), vec[:1], "e"
    )
    await store.put_document(
        "ns", make_document("vec"), make_chunks("vec", ["unrelated"]), vec[1:2], "e"
    )
    await store.put_document(
        "other", make_document("x"), make_chunks("x", ["zebra"]), vec[1:2], "e"
    )
    retriever = HybridRetriever(HybridRetriever.Config(), store=store)
    hits = await retriever.retrieve(
        RetrievalRequest(namespace="ns", text="zebra", vector=vec[1], top_k=5)
    )
    assert {h.document_id for h in hits} == {"kw", "vec"}
    only = await retriever.retrieve(
        RetrievalRequest(
            namespace="ns",
            text="zebra",
            vector=vec[1],
            top_k=5,
            filter=Filter.any_of("document_id", ["kw"]),
        )
    )
    assert [h.document_id for h in only] == ["kw"]
    keyword_only = HybridRetriever(HybridRetriever.Config(fusion="keyword"), store=store)
    hits = await keyword_only.retrieve(
        RetrievalRequest(namespace="ns", text="zebra", vector=vec[1])
    )
    assert [h.document_id for h in hits] == ["kw"]
    await store.aclose()


# --- exact fusion and the retriever's requests (each pins a planted bug: see mutation/) ---


def test_rrf_default_k_is_60_and_scores_add_up() -> None:
    keyword = _hits(("a", 9.0), ("b", 5.0))
    dense = _hits(("b", 0.9), ("c", 0.5))
    fused = reciprocal_rank_fusion([keyword, dense], [1.0, 0.5])
    scores = {h.chunk.id: h.score for h in fused}
    assert scores == pytest.approx({"a": 1 / 61, "b": 1 / 62 + 0.5 / 61, "c": 0.5 / 62})
    assert [h.chunk.id for h in fused] == ["b", "a", "c"]


def test_rrf_limit_and_ties_keep_first_seen_order() -> None:
    keyword = _hits(("a", 9.0), ("b", 5.0))
    dense = _hits(("c", 0.9), ("d", 0.5))
    fused = reciprocal_rank_fusion([keyword, dense], [1.0, 1.0], k=10)
    assert [h.chunk.id for h in fused] == ["a", "c", "b", "d"]  # equal ranks: keyword first
    assert [h.chunk.id for h in reciprocal_rank_fusion([keyword, dense], [1.0, 1.0], limit=2)] == [
        "a",
        "c",
    ]
    # the fused hit carries the fused score and the first-seen hit's chunk
    assert fused[0].chunk is keyword[0].chunk and fused[0].score == pytest.approx(1 / 11)


def test_fusion_refuses_lists_and_weights_of_different_lengths() -> None:
    lists = [_hits(("a", 1.0)), _hits(("b", 1.0))]
    with pytest.raises(ValueError):
        reciprocal_rank_fusion(lists, [1.0])
    with pytest.raises(ValueError):
        convex_fusion(lists, [1.0])


def test_convex_fusion_gives_a_one_candidate_list_its_full_weight() -> None:
    # One candidate (or all equal) has no span: it is the list's best, so 1 (x weight), not 0.
    fused = convex_fusion([_hits(("a", 3.0)), _hits(("b", 0.2))], [1.0, 0.5])
    assert {h.chunk.id: h.score for h in fused} == pytest.approx({"a": 1.0, "b": 0.5})
    assert [h.chunk.id for h in fused] == ["a", "b"]
    same = convex_fusion([_hits(("a", 2.0), ("b", 2.0))], [0.7])
    assert [h.score for h in same] == pytest.approx([0.7, 0.7])


def test_convex_fusion_scores_min_max_and_adds_weights() -> None:
    keyword = _hits(("a", 5.0), ("b", 3.0), ("c", 1.0))
    dense = _hits(("b", 0.8), ("c", 0.4))
    fused = convex_fusion([keyword, dense], [2.0, 1.5], limit=2)
    assert [(h.chunk.id, h.score) for h in fused] == [
        ("b", pytest.approx(2.0 * 0.5 + 1.5 * 1.0)),
        ("a", pytest.approx(2.0)),
    ]
    assert fused[1].chunk is keyword[0].chunk and fused[0].chunk is keyword[1].chunk
    everything = {h.chunk.id: h.score for h in convex_fusion([keyword, dense], [2.0, 1.5])}
    assert everything["c"] == pytest.approx(0.0)


class _RecordingStore:
    """Answers keyword and vector searches from fixed lists and records each request."""

    def __init__(self, keyword: list[Hit], dense: list[Hit]) -> None:
        self.keyword, self.dense = keyword, dense
        self.calls: list[tuple[object, ...]] = []

    async def keyword_search(self, ns: str, text: str, limit: int, flt: Filter) -> list[Hit]:
        self.calls.append(("keyword", ns, text, limit, flt))
        return self.keyword[:limit]

    async def vector_search(
        self, ns: str, vector: np.ndarray, limit: int, flt: Filter
    ) -> list[Hit]:
        self.calls.append(("vector", ns, vector.dtype, tuple(vector), limit, flt))
        return self.dense[:limit]


def _retriever(store: _RecordingStore, **config: object) -> HybridRetriever:
    return HybridRetriever(HybridRetriever.Config(**config), store=store)  # type: ignore[arg-type]


@pytest.mark.anyio
async def test_retriever_asks_each_list_for_the_larger_of_candidates_and_top_k() -> None:
    flt = Filter.any_of("document_id", ["x"])
    store = _RecordingStore(_hits(("a", 2.0)), _hits(("b", 0.5)))
    request = RetrievalRequest(namespace="ns", text="q", vector=[1, 0], filter=flt, top_k=5)
    await _retriever(store, candidates=20).retrieve(request)
    assert store.calls == [
        ("keyword", "ns", "q", 20, flt),
        ("vector", "ns", np.dtype(np.float32), (1.0, 0.0), 20, flt),
    ]
    store.calls.clear()
    await _retriever(store, candidates=3).retrieve(
        RetrievalRequest(namespace="ns", text="q", vector=[1, 0], filter=flt, top_k=10)
    )
    assert [c[-2] for c in store.calls] == [10, 10]


@pytest.mark.anyio
async def test_retriever_weighs_keyword_1_and_vector_by_vector_weight() -> None:
    store = _RecordingStore(_hits(("k1", 9.0), ("k2", 1.0)), _hits(("v1", 0.9), ("v2", 0.1)))
    request = RetrievalRequest(namespace="ns", text="q", vector=[1.0], top_k=4)
    convex = await _retriever(store, vector_weight=0.25).retrieve(request)
    assert [(h.chunk.id, h.score) for h in convex] == [
        ("k1", pytest.approx(1.0)),
        ("v1", pytest.approx(0.25)),
        ("k2", pytest.approx(0.0)),
        ("v2", pytest.approx(0.0)),
    ]
    rrf = await _retriever(store, fusion="rrf", rrf_k=1, vector_weight=0.25).retrieve(request)
    assert [(h.chunk.id, h.score) for h in rrf] == [
        ("k1", pytest.approx(1 / 2)),
        ("k2", pytest.approx(1 / 3)),
        ("v1", pytest.approx(0.25 / 2)),
        ("v2", pytest.approx(0.25 / 3)),
    ]
    heavy = await _retriever(store, vector_weight=4.0).retrieve(request)
    assert [h.chunk.id for h in heavy][:2] == ["v1", "k1"]


@pytest.mark.anyio
async def test_retriever_top_k_and_single_list_modes() -> None:
    store = _RecordingStore(_hits(("k1", 9.0), ("k2", 5.0), ("k3", 1.0)), _hits(("v1", 0.9)))
    request = RetrievalRequest(namespace="ns", text="q", vector=[1.0], top_k=2)
    assert len(await _retriever(store).retrieve(request)) == 2
    assert len(await _retriever(store, fusion="rrf").retrieve(request)) == 2
    store.calls.clear()
    keyword = await _retriever(store, fusion="keyword").retrieve(request)
    assert [h.chunk.id for h in keyword] == ["k1", "k2"] and [c[0] for c in store.calls] == [
        "keyword"
    ]
    store.calls.clear()
    vector = await _retriever(store, fusion="vector").retrieve(request)
    assert [h.chunk.id for h in vector] == ["v1"] and [c[0] for c in store.calls] == ["vector"]
    store.calls.clear()
    no_vector = RetrievalRequest(namespace="ns", text="q", vector=None, top_k=2)
    assert [h.chunk.id for h in await _retriever(store).retrieve(no_vector)] == ["k1", "k2"]
    assert [c[0] for c in store.calls] == ["keyword"]
    # a keyword-less store answer falls back to the dense list in the single-list modes
    empty = _RecordingStore([], _hits(("v1", 0.9)))
    assert [h.chunk.id for h in await _retriever(empty, fusion="vector").retrieve(request)] == [
        "v1"
    ]


def test_retriever_config_defaults() -> None:
    config = HybridRetriever.Config()
    assert (config.fusion, config.candidates, config.rrf_k, config.vector_weight) == (
        "convex",
        20,
        60,
        0.5,
    )


def test_convex_fusion_skips_an_empty_keyword_list_and_keeps_the_dense_one() -> None:
    fused = convex_fusion([[], _hits(("v1", 0.9), ("v2", 0.1))], [1.0, 0.5])
    assert [(h.chunk.id, h.score) for h in fused] == [
        ("v1", pytest.approx(0.5)),
        ("v2", pytest.approx(0.0)),
    ]


@pytest.mark.anyio
async def test_retriever_with_nothing_found_or_no_vector_returns_a_list() -> None:
    empty = _RecordingStore([], [])
    no_vector = RetrievalRequest(namespace="ns", text="q", vector=None, top_k=3)
    for fusion in ("rrf", "convex", "keyword", "vector"):
        assert await _retriever(empty, fusion=fusion).retrieve(no_vector) == []
    store = _RecordingStore(_hits(("k1", 2.0)), [])
    assert [h.chunk.id for h in await _retriever(store, fusion="rrf").retrieve(no_vector)] == ["k1"]


class _BothStore(_RecordingStore):
    """A store that also gives both lists at once (``HybridSearcher``), or declines."""

    def __init__(self, keyword: list[Hit], dense: list[Hit], *, declines: bool) -> None:
        super().__init__(keyword, dense)
        self.declines = declines

    async def hybrid_search(
        self, ns: str, text: str, vector: np.ndarray, limit: int, flt: Filter
    ) -> tuple[list[Hit], list[Hit]] | None:
        self.calls.append(("both", ns, text, tuple(vector), limit, flt))
        return None if self.declines else (self.keyword[:limit], self.dense[:limit])


@pytest.mark.anyio
async def test_retriever_takes_both_lists_at_once_where_the_store_gives_them() -> None:
    keyword, dense = _hits(("k1", 9.0), ("k2", 1.0)), _hits(("v1", 0.9), ("k2", 0.5))
    request = RetrievalRequest(namespace="ns", text="q", vector=[1, 0], top_k=5)
    alone = await _retriever(_RecordingStore(keyword, dense)).retrieve(request)
    store = _BothStore(keyword, dense, declines=False)
    fused = await _retriever(store).retrieve(request)
    assert [c[0] for c in store.calls] == ["both"]
    assert store.calls[0][4] == 20  # the larger of candidates and top_k
    assert [(h.chunk.id, h.score) for h in fused] == [(h.chunk.id, h.score) for h in alone]
    # Declined: each list on its own.
    declining = _BothStore(keyword, dense, declines=True)
    assert [h.chunk.id for h in await _retriever(declining).retrieve(request)] == [
        h.chunk.id for h in alone
    ]
    assert [c[0] for c in declining.calls] == ["both", "keyword", "vector"]
    # One list wanted, or no vector: never asked for both.
    for fusion in ("keyword", "vector"):
        single = _BothStore(keyword, dense, declines=False)
        await _retriever(single, fusion=fusion).retrieve(request)
        assert "both" not in [c[0] for c in single.calls]
    no_vector = _BothStore(keyword, dense, declines=False)
    await _retriever(no_vector).retrieve(RetrievalRequest(namespace="ns", text="q", top_k=5))
    assert [c[0] for c in no_vector.calls] == ["keyword"]
