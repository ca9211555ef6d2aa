"""Contract suites: every implementation of a role must pass its role's suite.

The suites are pytest classes. A subclass provides the fixture the suite names and
inherits every test; the same suites run against the built-in SQLite and in-memory
components and against the production backends.
"""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from ragtide.components import DocumentStore, MemoryStore
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import ChatTurn, Filter

__all__ = ["DocumentStoreContract", "MemoryStoreContract"]


def _unit(rows: list[list[float]]) -> np.ndarray:
    m = np.asarray(rows, dtype=np.float32)
    unit: np.ndarray = m / np.linalg.norm(m, axis=1, keepdims=True)
    return unit


class MemoryStoreContract:
    """Needs a ``memory_store`` fixture yielding a started, empty ``MemoryStore``."""

    @pytest.mark.anyio
    async def test_is_a_memory_store(self, memory_store: MemoryStore) -> None:
        assert isinstance(memory_store, MemoryStore)

    @pytest.mark.anyio
    async def test_unknown_session_is_empty(self, memory_store: MemoryStore) -> None:
        assert await memory_store.load("ns", "nobody") == []

    @pytest.mark.anyio
    async def test_append_then_load_keeps_order(self, memory_store: MemoryStore) -> None:
        await memory_store.append("ns", "s1", ChatTurn.user("q1"), ChatTurn.assistant("a1"))
        await memory_store.append("ns", "s1", ChatTurn.user("q2"))
        turns = await memory_store.load("ns", "s1")
        assert [(t.role, t.content) for t in turns] == [
            ("user", "q1"),
            ("assistant", "a1"),
            ("user", "q2"),
        ]

    @pytest.mark.anyio
    async def test_limit_returns_the_latest_turns(self, memory_store: MemoryStore) -> None:
        for i in range(5):
            await memory_store.append("ns", "s", ChatTurn.user(f"q{i}"))
        assert [t.content for t in await memory_store.load("ns", "s", limit=2)] == ["q3", "q4"]

    @pytest.mark.anyio
    async def test_sessions_are_isolated_by_namespace(self, memory_store: MemoryStore) -> None:
        await memory_store.append("a", "same-id", ChatTurn.user("secret of a"))
        assert await memory_store.load("b", "same-id") == []
        assert await memory_store.delete("b", "same-id") is False
        assert len(await memory_store.load("a", "same-id")) == 1

    @pytest.mark.anyio
    async def test_delete(self, memory_store: MemoryStore) -> None:
        await memory_store.append("ns", "s", ChatTurn.user("q"))
        assert await memory_store.delete("ns", "s") is True
        assert await memory_store.load("ns", "s") == []
        assert await memory_store.delete("ns", "s") is False

    @pytest.mark.anyio
    async def test_concurrent_appends_lose_nothing(self, memory_store: MemoryStore) -> None:
        await asyncio.gather(
            *(memory_store.append("ns", "busy", ChatTurn.user(f"q{i}")) for i in range(50))
        )
        turns = await memory_store.load("ns", "busy", limit=100)
        assert sorted(t.content for t in turns) == sorted(f"q{i}" for i in range(50))


class DocumentStoreContract:
    """Needs a ``store`` fixture yielding a started, empty ``DocumentStore``."""

    async def _put(
        self,
        store: DocumentStore,
        ns: str,
        doc_id: str,
        texts: list[str],
        vectors: list[list[float]],
        metadata: dict[str, object] | None = None,
        content_hash: str = "h",
    ) -> None:
        await store.put_document(
            ns,
            make_document(doc_id, content_hash=content_hash),
            make_chunks(doc_id, texts, metadata=metadata),
            _unit(vectors),
            "test-embedder",
        )

    @pytest.mark.anyio
    async def test_is_a_document_store(self, store: DocumentStore) -> None:
        assert isinstance(store, DocumentStore)
        await store.ping()

    @pytest.mark.anyio
    async def test_namespaces(self, store: DocumentStore) -> None:
        assert not await store.namespace_exists("docs")
        assert await store.create_namespace("docs") is True
        assert await store.create_namespace("docs") is False
        assert await store.namespace_exists("docs")
        assert "docs" in await store.list_namespaces()

    @pytest.mark.anyio
    async def test_put_creates_namespace_and_counts(self, store: DocumentStore) -> None:
        await self._put(store, "ns", "d1", ["alpha beta", "gamma delta"], [[1, 0], [0, 1]])
        assert await store.namespace_exists("ns")
        assert await store.counts("ns") == (1, 2)
        doc = await store.get_document("ns", "d1")
        assert doc is not None and doc.chunks == 2 and doc.content_hash == "h"

    @pytest.mark.anyio
    async def test_keyword_search_ranks_matches(self, store: DocumentStore) -> None:
        await self._put(store, "ns", "cats", ["cats purr and sleep all day"], [[1, 0]])
        await self._put(store, "ns", "dogs", ["dogs bark at the mail carrier"], [[0, 1]])
        hits = await store.keyword_search("ns", "why do dogs bark", 5, Filter())
        assert [h.document_id for h in hits] == ["dogs"]
        assert hits[0].chunk.text == "dogs bark at the mail carrier"

    @pytest.mark.anyio
    async def test_vector_search_orders_by_similarity(self, store: DocumentStore) -> None:
        await self._put(store, "ns", "a", ["first"], [[1, 0, 0]])
        await self._put(store, "ns", "b", ["second"], [[0.8, 0.6, 0]])
        await self._put(store, "ns", "c", ["third"], [[0, 0, 1]])
        hits = await store.vector_search("ns", _unit([[1, 0.1, 0]])[0], 2, Filter())
        assert [h.document_id for h in hits] == ["a", "b"]
        assert hits[0].score > hits[1].score

    @pytest.mark.anyio
    async def test_search_never_crosses_namespaces(self, store: DocumentStore) -> None:
        await self._put(store, "tenant-a", "secret", ["the launch code is swordfish"], [[1, 0]])
        await self._put(store, "tenant-b", "public", ["nothing to see"], [[0, 1]])
        assert await store.keyword_search("tenant-b", "launch code swordfish", 10, Filter()) == []
        hits = await store.vector_search("tenant-b", _unit([[1, 0]])[0], 10, Filter())
        assert {h.document_id for h in hits} == {"public"}

    @pytest.mark.anyio
    async def test_filter_is_respected(self, store: DocumentStore) -> None:
        await self._put(store, "ns", "open", ["report on budgets"], [[1, 0]], {"acl": ["all"]})
        await self._put(store, "ns", "hr", ["report on salaries"], [[1, 0.1]], {"acl": ["hr"]})
        only_all = Filter.any_of("acl", ["all"])
        kw = await store.keyword_search("ns", "report", 10, only_all)
        vec = await store.vector_search("ns", _unit([[1, 0]])[0], 10, only_all)
        assert [h.document_id for h in kw] == ["open"]
        assert [h.document_id for h in vec] == ["open"]
        by_id = await store.keyword_search("ns", "report", 10, Filter.any_of("document_id", ["hr"]))
        assert [h.document_id for h in by_id] == ["hr"]

    @pytest.mark.anyio
    async def test_replace_document_replaces_chunks(self, store: DocumentStore) -> None:
        await self._put(store, "ns", "d", ["old words here"], [[1, 0]], content_hash="v1")
        await self._put(
            store, "ns", "d", ["new text", "more new text"], [[0, 1], [1, 1]], content_hash="v2"
        )
        assert await store.keyword_search("ns", "old words", 10, Filter()) == []
        assert len(await store.keyword_search("ns", "new", 10, Filter())) == 2
        assert await store.counts("ns") == (1, 2)
        doc = await store.get_document("ns", "d")
        assert doc is not None and doc.content_hash == "v2"

    @pytest.mark.anyio
    async def test_delete_document(self, store: DocumentStore) -> None:
        await self._put(store, "ns", "d", ["ephemeral note"], [[1, 0]])
        await self._put(store, "ns", "keep", ["durable note"], [[0, 1]])
        assert await store.delete_document("ns", "d") is True
        assert await store.delete_document("ns", "d") is False
        assert await store.get_document("ns", "d") is None
        assert [h.document_id for h in await store.keyword_search("ns", "note", 10, Filter())] == [
            "keep"
        ]
        hits = await store.vector_search("ns", _unit([[1, 0]])[0], 10, Filter())
        assert [h.document_id for h in hits] == ["keep"]

    @pytest.mark.anyio
    async def test_list_documents_is_scoped(self, store: DocumentStore) -> None:
        await self._put(store, "x", "one", ["a"], [[1, 0]])
        await self._put(store, "y", "two", ["b"], [[1, 0]])
        assert [d.id for d in await store.list_documents("x")] == ["one"]

    @pytest.mark.anyio
    async def test_list_documents_pages_in_byte_order(self, store: DocumentStore) -> None:
        ids = ["b", "a", "B", "a/2", "\u00e9", "a-1", "Z9"]
        for doc_id in ids:
            await self._put(store, "p", doc_id, [doc_id], [[1, 0]])
        await self._put(store, "q", "0", ["other namespace"], [[1, 0]])
        expected = sorted(ids, key=lambda i: i.encode())
        assert [d.id for d in await store.list_documents("p")] == expected
        pages, after = [], None
        while True:
            page = await store.list_documents("p", limit=3, after=after)
            if not page:
                break
            pages.append([d.id for d in page])
            after = page[-1].id
        assert pages == [expected[0:3], expected[3:6], expected[6:]]

    @pytest.mark.anyio
    async def test_query_syntax_is_not_interpreted(self, store: DocumentStore) -> None:
        await self._put(store, "ns", "d", ["quotes and stars"], [[1, 0]])
        for text in ['"unbalanced', "NEAR(a b)", "col:value", "a* OR -b", "()", "'; DROP TABLE"]:
            await store.keyword_search("ns", text, 5, Filter())  # must not raise
