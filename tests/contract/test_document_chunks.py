"""``DocumentStore.document_chunks`` on both built-in stores: a document's chunks in
ordinal order, a page at a time, never another document's or another namespace's."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import numpy as np
import pytest

from ragtide.builtin.postgres_store import PostgresStore
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.components import DocumentStore
from ragtide.testing.fakes import make_chunks, make_document
from tests.contract.test_postgres_store import MakeStore, make_store  # noqa: F401 (fixture)


async def _put(store: DocumentStore, ns: str, doc_id: str, texts: list[str]) -> None:
    vectors = np.ones((len(texts), 2), dtype=np.float32) / np.sqrt(np.float32(2))
    chunks = make_chunks(doc_id, texts, title=f"Title of {doc_id}")
    await store.put_document(ns, make_document(doc_id), chunks, vectors, "test-embedder")


class DocumentChunksContract:
    """Needs a ``store`` fixture yielding a started, empty ``DocumentStore``."""

    @pytest.mark.anyio
    async def test_chunks_in_ordinal_order_with_their_fields(self, store: DocumentStore) -> None:
        await _put(store, "t1/docs", "guide", ["first part", "second part", "third part"])
        chunks = await store.document_chunks("t1/docs", "guide")
        assert [c.ordinal for c in chunks] == [0, 1, 2]
        assert [c.text for c in chunks] == ["first part", "second part", "third part"]
        assert [c.id for c in chunks] == ["guide#0", "guide#1", "guide#2"]
        assert {c.document_id for c in chunks} == {"guide"}
        assert {c.title for c in chunks} == {"Title of guide"}

    @pytest.mark.anyio
    async def test_pages_by_ordinal(self, store: DocumentStore) -> None:
        await _put(store, "t1/docs", "long", [f"part {i}" for i in range(7)])
        seen: list[int] = []
        after: int | None = None
        while True:
            page = await store.document_chunks("t1/docs", "long", limit=3, after=after)
            if not page:
                break
            assert len(page) <= 3
            seen += [c.ordinal for c in page]
            after = page[-1].ordinal
        assert seen == list(range(7))
        assert await store.document_chunks("t1/docs", "long", after=6) == []
        assert [c.ordinal for c in await store.document_chunks("t1/docs", "long", after=4)] == [
            5,
            6,
        ]

    @pytest.mark.anyio
    async def test_only_that_document_of_that_namespace(self, store: DocumentStore) -> None:
        await _put(store, "t1/docs", "a", ["a of t1"])
        await _put(store, "t1/docs", "ab", ["ab of t1"])
        await _put(store, "t2/docs", "a", ["a of t2"])
        await _put(store, "t1/kb", "a", ["a of t1 kb"])
        assert [c.text for c in await store.document_chunks("t1/docs", "a")] == ["a of t1"]
        assert [c.text for c in await store.document_chunks("t2/docs", "a")] == ["a of t2"]
        assert await store.document_chunks("t1/docs", "missing") == []
        assert await store.document_chunks("t3/docs", "a") == []

    @pytest.mark.anyio
    async def test_replaced_and_deleted_documents(self, store: DocumentStore) -> None:
        await _put(store, "t1/docs", "d", ["old one", "old two", "old three"])
        await _put(store, "t1/docs", "d", ["new one"])
        assert [c.text for c in await store.document_chunks("t1/docs", "d")] == ["new one"]
        assert await store.delete_document("t1/docs", "d") is True
        assert await store.document_chunks("t1/docs", "d") == []


class TestSQLiteDocumentChunks(DocumentChunksContract):
    @pytest.fixture
    async def store(self, tmp_path: Path) -> AsyncIterator[SQLiteStore]:
        store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db.sqlite"))
        await store.start()
        yield store
        await store.aclose()


@pytest.mark.integration
class TestPostgresDocumentChunks(DocumentChunksContract):
    @pytest.fixture
    async def store(self, make_store: MakeStore) -> PostgresStore:  # noqa: F811
        return await make_store()
