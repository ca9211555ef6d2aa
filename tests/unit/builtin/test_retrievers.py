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
