"""``AcmeRetriever``: keyword search that ranks chunks naming Acme's key terms higher."""

from __future__ import annotations

from pydantic import BaseModel, Field

from ragtide.components import DocumentStore
from ragtide.types import Hit, RetrievalRequest

__all__ = ["AcmeRetriever"]


class AcmeRetriever:
    """``Retriever`` (entry point ``acme-boost``): BM25 candidates, boosted by term, re-ranked.

    The store is asked with the request's namespace and filter exactly as the core set
    them: tenant isolation and the access policies' narrowing are the core's, and a
    plugin passes them on unchanged.
    """

    class Config(BaseModel):
        boost_terms: list[str] = Field(
            description="A chunk whose title or text contains one of these (any case) is boosted."
        )
        boost: float = Field(
            2.0, gt=0, description="What a boosted chunk's score is multiplied by."
        )
        candidates: int = Field(50, gt=0, le=1000, description="Keyword candidates to re-rank.")

    def __init__(self, config: Config, *, store: DocumentStore) -> None:
        self._store = store
        self._boost = config.boost
        self._candidates = config.candidates
        self._terms = tuple(t.casefold() for t in config.boost_terms if t)

    async def retrieve(self, request: RetrievalRequest) -> list[Hit]:
        hits = await self._store.keyword_search(
            request.namespace, request.text, self._candidates, request.filter
        )
        rescored = [Hit(h.chunk, h.score * self._boost) if self._boosted(h) else h for h in hits]
        rescored.sort(key=lambda h: h.score, reverse=True)  # stable: ties keep the store's order
        return rescored[: request.top_k]

    def _boosted(self, hit: Hit) -> bool:
        title, text = hit.chunk.title.casefold(), hit.chunk.text.casefold()
        return any(term in title or term in text for term in self._terms)
