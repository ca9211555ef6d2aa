from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from ragtide.builtin.memory import InMemoryMemoryStore
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.testing import DocumentStoreContract, MemoryStoreContract
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Filter


class TestSQLiteStore(DocumentStoreContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db.sqlite"))
        await store.start()
        yield store
        await store.aclose()


class TestInMemoryMemoryStore(MemoryStoreContract):
    @pytest.fixture
    def memory_store(self) -> InMemoryMemoryStore:
        return InMemoryMemoryStore(InMemoryMemoryStore.Config())


class TestSQLiteTwoProcessesShareNamespaces:
    """Two stores on one file (as two processes would be): a namespace one of them
    deleted and re-created must never be searched through the other's stale cache."""

    @pytest.mark.anyio
    async def test_recreated_namespace_is_not_served_from_a_stale_cache(
        self, tmp_path: Path
    ) -> None:
        path = tmp_path / "db.sqlite"
        a = SQLiteStore(SQLiteStore.Config(path=path, poll_seconds=0))
        b = SQLiteStore(SQLiteStore.Config(path=path, poll_seconds=0))
        await a.start()
        await b.start()
        try:
            vec = np.asarray([[1.0, 0.0]], dtype=np.float32)
            for store, doc_id in ((a, "old"), (a, "old2")):
                await store.put_document(
                    "t1/docs",
                    make_document(doc_id),
                    make_chunks(doc_id, [f"{doc_id} words"]),
                    vec,
                    "e",
                )
            assert {
                h.document_id for h in await b.keyword_search("t1/docs", "words", 9, Filter())
            } == {"old", "old2"}
            # a deletes and re-creates it with as many writes: the generation counter
            # starts again and reaches the number b's cache was built at.
            assert await a.delete_namespace("t1/docs") is True
            for doc_id in ("new", "new2"):
                await a.put_document(
                    "t1/docs",
                    make_document(doc_id),
                    make_chunks(doc_id, [f"{doc_id} words"]),
                    vec,
                    "e",
                )
            kw = await b.keyword_search("t1/docs", "words", 9, Filter())
            vs = await b.vector_search("t1/docs", vec[0], 9, Filter())
            assert {h.document_id for h in kw} == {"new", "new2"}
            assert {h.document_id for h in vs} == {"new", "new2"}
        finally:
            await a.aclose()
            await b.aclose()

    @pytest.mark.anyio
    async def test_a_stale_cache_never_serves_another_tenants_chunks(self, tmp_path: Path) -> None:
        """The same ABA, worse: the deleted chunks' rowids are reused by another tenant's
        documents, and the stale cache decodes those rows by rowid alone."""
        path = tmp_path / "db.sqlite"
        a = SQLiteStore(SQLiteStore.Config(path=path, poll_seconds=0))
        b = SQLiteStore(SQLiteStore.Config(path=path, poll_seconds=0))
        await a.start()
        await b.start()
        vec = np.asarray([[1.0, 0.0]], dtype=np.float32)

        async def put(ns: str, doc_id: str, text: str) -> None:
            await a.put_document(ns, make_document(doc_id), make_chunks(doc_id, [text]), vec, "e")

        try:
            await put("t1/docs", "d1", "common words of t1")
            await put("t1/docs", "d2", "common words of t1")
            # b builds its cache of t1/docs without decoding a chunk (nothing matches).
            assert await b.keyword_search("t1/docs", "unmatched", 9, Filter()) == []
            assert await a.delete_namespace("t1/docs") is True
            await put("t2/docs", "d1", "secret of t2")  # takes the freed rowids
            await put("t2/docs", "d2", "secret of t2")
            await put("t1/docs", "d3", "fresh words of t1")
            await put("t1/docs", "d4", "fresh words of t1")
            texts = {h.chunk.text for h in await b.keyword_search("t1/docs", "words", 9, Filter())}
            texts |= {h.chunk.text for h in await b.vector_search("t1/docs", vec[0], 9, Filter())}
            assert not any("t2" in t for t in texts), texts
            assert texts == {"fresh words of t1"}
        finally:
            await a.aclose()
            await b.aclose()
