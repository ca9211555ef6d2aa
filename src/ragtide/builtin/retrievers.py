"""Hybrid retrieval: BM25 and dense candidates from a ``DocumentStore``, fused."""

from __future__ import annotations

from collections.abc import Sequence
from operator import itemgetter
from typing import Literal

import numpy as np
from pydantic import BaseModel, Field

from ragtide.components import DocumentStore, HybridSearcher
from ragtide.types import Hit, RetrievalRequest

__all__ = ["HybridRetriever", "convex_fusion", "reciprocal_rank_fusion"]


def reciprocal_rank_fusion(
    ranked: Sequence[Sequence[Hit]],
    weights: Sequence[float],
    k: int = 60,
    limit: int | None = None,
) -> list[Hit]:
    """Score each chunk by sum(weight / (k + rank)) over the lists that contain it."""
    scores: dict[str, float] = {}
    hits: dict[str, Hit] = {}
    for hits_list, weight in zip(ranked, weights, strict=True):
        for rank, hit in enumerate(hits_list, start=1):
            cid = hit.chunk.id
            if cid in scores:
                scores[cid] += weight / (k + rank)
            else:
                scores[cid] = weight / (k + rank)
                hits[cid] = hit
    return _best(scores, hits, limit)


def convex_fusion(
    ranked: Sequence[Sequence[Hit]], weights: Sequence[float], limit: int | None = None
) -> list[Hit]:
    """Score each chunk by the weighted sum of its min-max normalised scores.

    A chunk missing from a list gets 0 from it: the list's worst candidate.
    """
    scores: dict[str, float] = {}
    hits: dict[str, Hit] = {}
    for hits_list, weight in zip(ranked, weights, strict=True):
        if not hits_list:
            continue
        values = [h.score for h in hits_list]
        low = min(values)
        span = max(values) - low
        for hit, value in zip(hits_list, values, strict=True):
            cid = hit.chunk.id
            score = weight * ((value - low) / span if span > 0 else 1.0)
            if cid in scores:
                scores[cid] += score
            else:
                scores[cid] = score
                hits[cid] = hit
    return _best(scores, hits, limit)


def _best(scores: dict[str, float], hits: dict[str, Hit], limit: int | None) -> list[Hit]:
    # A stable sort: ties keep first-seen order (keyword list first).
    ranked = sorted(scores.items(), key=itemgetter(1), reverse=True)
    return [Hit(hits[cid].chunk, score) for cid, score in ranked[:limit]]


class HybridRetriever:
    """``Retriever`` (entry point ``hybrid``): keyword + vector candidates, then fusion."""

    class Config(BaseModel):
        fusion: Literal["rrf", "convex", "keyword", "vector"] = Field(
            "convex", description="How the keyword and vector lists are combined."
        )
        candidates: int = Field(20, gt=0, le=1000, description="Candidates from each list.")
        rrf_k: int = Field(60, gt=0)
        vector_weight: float = Field(
            0.5, ge=0, description="Weight of the vector list (the keyword list weighs 1)."
        )

    def __init__(self, config: Config, *, store: DocumentStore) -> None:
        self._config = config
        self._store = store
        # Both lists in one round trip, where the store can and both are wanted.
        fused = config.fusion in ("rrf", "convex")
        self._both = store if fused and isinstance(store, HybridSearcher) else None

    async def retrieve(self, request: RetrievalRequest) -> list[Hit]:
        cfg = self._config
        limit = max(cfg.candidates, request.top_k)
        keyword: list[Hit] = []
        dense: list[Hit] = []
        vector = None if request.vector is None else np.asarray(request.vector, np.float32)
        both = None
        if self._both is not None and vector is not None:
            both = await self._both.hybrid_search(
                request.namespace, request.text, vector, limit, request.filter
            )
        if both is not None:
            keyword, dense = both
        else:
            if cfg.fusion != "vector":
                keyword = await self._store.keyword_search(
                    request.namespace, request.text, limit, request.filter
                )
            if cfg.fusion != "keyword" and vector is not None:
                dense = await self._store.vector_search(
                    request.namespace, vector, limit, request.filter
                )
        lists, weights = (keyword, dense), (1.0, cfg.vector_weight)
        if cfg.fusion == "rrf":
            return reciprocal_rank_fusion(lists, weights, cfg.rrf_k, request.top_k)
        if cfg.fusion == "convex":
            return convex_fusion(lists, weights, request.top_k)
        return (keyword or dense)[: request.top_k]
