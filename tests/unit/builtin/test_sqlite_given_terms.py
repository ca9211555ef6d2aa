"""The embedded store indexes a chunk by the term counts ingestion gives it (counted in the
parse workers), and analyses the chunk itself when none are given: the same index."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from ragtide.builtin.analyzer import Analyzer, encode_terms
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Filter

TEXTS = [
    "Grey herons wade in shallow water and hunt fish.",
    "Herons nest in colonies called heronries.",
    "Storks nest on roofs and chimneys in spring.",
    "Egrets and herons both hunt fish in marshes.",
]


async def _search(path: Path, given: bool, query: str) -> list[tuple[str, float]]:
    store = SQLiteStore(SQLiteStore.Config(path=path))
    await store.start()
    try:
        analyzer = Analyzer()
        chunks = make_chunks("birds", TEXTS, title="Wading birds")
        if given:
            chunks = [
                dataclasses.replace(c, terms=encode_terms(analyzer.chunk_terms(c))) for c in chunks
            ]
        vectors = np.eye(len(chunks), 4, dtype=np.float32)
        await store.put_documents("ns", [(make_document("birds"), chunks, vectors)], "e")
        hits = await store.keyword_search("ns", query, 10, Filter())
        return [(h.chunk.id, h.score) for h in hits]
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_given_term_counts_index_as_the_store_would_count_them(tmp_path: Path) -> None:
    for query in ("herons fish", "nest spring", "wading birds"):
        given = await _search(tmp_path / f"given-{query}", True, query)
        counted = await _search(tmp_path / f"counted-{query}", False, query)
        assert given and given == counted


@pytest.mark.anyio
async def test_the_given_counts_are_what_is_indexed(tmp_path: Path) -> None:
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db"))
    await store.start()
    try:
        chunk = make_chunks("d", ["apples and pears"])[0]
        chunk = dataclasses.replace(chunk, terms="zebra 2")
        vectors = np.ones((1, 4), np.float32)
        await store.put_documents("ns", [(make_document("d"), [chunk], vectors)], "e")
        assert [h.chunk.id for h in await store.keyword_search("ns", "zebra", 5, Filter())] == [
            chunk.id
        ]
        assert await store.keyword_search("ns", "apples", 5, Filter()) == []
    finally:
        await store.aclose()
