"""Contract suites: every implementation of a role must pass its role's suite.

The suites are pytest classes. A subclass provides the fixture the suite names and
inherits every test; the same suites run against the built-in SQLite and in-memory
components and against the production backends.
"""

from __future__ import annotations

import asyncio
from typing import Any

import numpy as np
import pytest

from ragtide.components import DocumentStore, MemoryStore, TenantStore
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.testing.sessions import SessionListContract
from ragtide.types import ApiKeyRecord, ChatTurn, Filter, TenantUsage

__all__ = ["DocumentStoreContract", "MemoryStoreContract", "TenantStoreContract"]


def _unit(rows: list[list[float]]) -> np.ndarray:
    m = np.asarray(rows, dtype=np.float32)
    unit: np.ndarray = m / np.linalg.norm(m, axis=1, keepdims=True)
    return unit


class MemoryStoreContract(SessionListContract):
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

    # --- delete_namespace ----------------------------------------------------------------

    @pytest.mark.anyio
    async def test_delete_namespace_removes_only_its_sessions(
        self, memory_store: MemoryStore
    ) -> None:
        await memory_store.append("t1/docs", "s1", ChatTurn.user("t1 one"))
        await memory_store.append("t1/docs", "s2", ChatTurn.user("t1 two"), ChatTurn.user("x"))
        await memory_store.append("t2/docs", "s1", ChatTurn.user("t2 one"))
        await memory_store.append("t1/kb", "s1", ChatTurn.user("t1 kb"))
        assert await memory_store.delete_namespace("t1/docs") == 2
        assert await memory_store.load("t1/docs", "s1") == []
        assert await memory_store.load("t1/docs", "s2") == []
        assert [t.content for t in await memory_store.load("t2/docs", "s1")] == ["t2 one"]
        assert [t.content for t in await memory_store.load("t1/kb", "s1")] == ["t1 kb"]
        assert await memory_store.delete_namespace("t1/docs") == 0
        assert await memory_store.delete_namespace("nobody/docs") == 0
        # The namespace is usable again, and starts empty.
        await memory_store.append("t1/docs", "s1", ChatTurn.user("again"))
        assert [t.content for t in await memory_store.load("t1/docs", "s1")] == ["again"]

    @pytest.mark.anyio
    @pytest.mark.parametrize(
        "doomed",
        ["a", "a*", "[x]", "a?", "a\\", "t/a", "a:b", "a%3Ab", "a]", "*", "?"],
    )
    async def test_delete_namespace_is_literal(
        self, memory_store: MemoryStore, doomed: str
    ) -> None:
        """No other namespace goes with it: not one the name is a prefix of, nor one that
        a glob or an escape of the name would match."""
        others = ["a", "ab", "a*", "ax", "[x]", "x", "a?", "a\\", "a:b", "a%3Ab", "a]"]
        others += ["t/a", "t/ab", "*", "?", "b"]
        names = list(dict.fromkeys([doomed, *others]))
        for name in names:
            await memory_store.append(name, "s", ChatTurn.user(f"in {name}"))
            await memory_store.append(name, "b:c", ChatTurn.user(f"second in {name}"))
        assert await memory_store.delete_namespace(doomed) == 2
        for name in names:
            turns = await memory_store.load(name, "s")
            if name == doomed:
                assert turns == [] and await memory_store.load(name, "b:c") == []
            else:
                assert [t.content for t in turns] == [f"in {name}"], name
                assert len(await memory_store.load(name, "b:c")) == 1, name

    @pytest.mark.anyio
    async def test_delete_namespace_with_many_sessions(self, memory_store: MemoryStore) -> None:
        for i in range(1200):
            await memory_store.append("big", f"s{i}", ChatTurn.user("q"))
        await memory_store.append("bigger", "s0", ChatTurn.user("kept"))
        assert await memory_store.delete_namespace("big") == 1200
        assert await memory_store.load("big", "s1199") == []
        assert len(await memory_store.load("bigger", "s0")) == 1


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
        """Operators of FTS5, tsquery or Lucene are plain words here: a query neither
        fails, nor filters, nor finds what its words do not."""
        await self._put(store, "ns", "d", ["quotes and stars"], [[1, 0]])
        await self._put(store, "ns", "e", ["tables of values"], [[0, 1]])

        async def found(text: str) -> list[str]:
            return [h.document_id for h in await store.keyword_search("ns", text, 5, Filter())]

        assert await found('"quotes') == ["d"]
        assert await found("stars*") == ["d"]
        assert await found("NEAR(quotes stars)") == ["d"]
        assert await found("-quotes") == ["d"]  # not a negation
        assert sorted(await found("quotes OR values")) == ["d", "e"]
        assert sorted(await found("quotes AND values")) == ["d", "e"]  # not a conjunction
        assert await found("col:value") == ["e"]  # "value" is a word, "col:" no column
        assert await found("()") == [] and await found("*") == []
        # an injection attempt is a query for its words; the tables are intact afterwards
        assert await found("'; DROP TABLE chunks; --") == ["e"]
        assert sorted(await found("quotes values")) == ["d", "e"]

    # --- tenants: namespaces ``tenant/name`` -----------------------------------------------

    async def _two_tenants(self, store: DocumentStore) -> None:
        """``t1/docs`` and ``t2/docs`` with the same document ids, vectors and shared words;
        only the texts tell them apart."""
        for tenant in ("t1", "t2"):
            for doc_id, vector in (("d1", [1.0, 0.0, 0.0]), ("d2", [0.0, 1.0, 0.0])):
                await self._put(
                    store,
                    f"{tenant}/docs",
                    doc_id,
                    [f"shared words of {tenant} {doc_id}", f"more shared words {tenant} {doc_id}"],
                    [vector, [0.5, 0.5, 0.1]],
                    {"owner": tenant},
                    content_hash=f"{tenant}-{doc_id}",
                )

    @staticmethod
    async def _visible(store: DocumentStore, ns: str) -> set[str]:
        """Every chunk text of ``ns`` that any read reaches."""
        texts: set[str] = set()
        for text in ("shared words", "t1 t2 d1 d2 more"):
            texts.update(h.chunk.text for h in await store.keyword_search(ns, text, 50, Filter()))
        for row in ([1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.5, 0.5, 0.1], [0.0, 0.0, 1.0]):
            hits = await store.vector_search(ns, _unit([row])[0], 50, Filter())
            texts.update(h.chunk.text for h in hits)
        return texts

    @pytest.mark.anyio
    async def test_tenants_with_the_same_ids_never_meet(self, store: DocumentStore) -> None:
        await self._two_tenants(store)
        for own, other in (("t1", "t2"), ("t2", "t1")):
            ns = f"{own}/docs"
            assert await store.counts(ns) == (2, 4)
            assert [d.id for d in await store.list_documents(ns)] == ["d1", "d2"]
            for doc_id in ("d1", "d2"):
                doc = await store.get_document(ns, doc_id)
                assert doc is not None and doc.content_hash == f"{own}-{doc_id}"
            texts = await self._visible(store, ns)
            assert len(texts) == 4
            assert all(own in t and other not in t for t in texts), texts
            by_owner = Filter.any_of("owner", [other])
            assert await store.keyword_search(ns, "shared words", 50, by_owner) == []
            assert await store.vector_search(ns, _unit([[1, 0, 0]])[0], 50, by_owner) == []
            by_id = Filter.any_of("document_id", ["d1"])
            hits = await store.keyword_search(ns, "shared words", 50, by_id)
            assert hits and all(own in h.chunk.text for h in hits)

    @pytest.mark.anyio
    async def test_list_namespaces_by_tenant_prefix(self, store: DocumentStore) -> None:
        for ns in ["t1/docs", "t1/kb", "t10/docs", "t2/docs", "t1-x/docs", "t/docs", "docs"]:
            assert await store.create_namespace(ns) is True
        assert await store.list_namespaces("t1/") == ["t1/docs", "t1/kb"]
        assert await store.list_namespaces("t10/") == ["t10/docs"]
        assert await store.list_namespaces("t/") == ["t/docs"]
        assert await store.list_namespaces("nobody/") == []
        everything = await store.list_namespaces()
        assert everything == sorted(everything, key=str.encode)
        assert set(everything) >= {"t1/docs", "t1/kb", "t10/docs", "t2/docs", "docs"}

    @pytest.mark.anyio
    async def test_delete_namespace_removes_only_that_namespace(self, store: DocumentStore) -> None:
        await self._two_tenants(store)
        await self._put(store, "t1/kb", "d1", ["shared words of t1 kb"], [[1, 0, 0]])
        before = await self._visible(store, "t2/docs")
        assert await store.delete_namespace("t1/docs") is True
        assert not await store.namespace_exists("t1/docs")
        assert await store.list_namespaces("t1/") == ["t1/kb"]
        assert await store.get_document("t1/docs", "d1") is None
        assert await store.list_documents("t1/docs") == []
        assert await store.counts("t1/docs") == (0, 0)
        assert await self._visible(store, "t1/docs") == set()
        # The other tenant's namespace of the same name, and t1's other one, are intact.
        assert await store.counts("t2/docs") == (2, 4)
        assert await self._visible(store, "t2/docs") == before
        assert await store.counts("t1/kb") == (1, 1)
        assert await store.delete_namespace("t1/docs") is False
        assert await store.delete_namespace("nobody/docs") is False

    @pytest.mark.anyio
    async def test_namespace_recreated_after_delete_starts_empty(
        self, store: DocumentStore
    ) -> None:
        await self._two_tenants(store)
        assert await store.delete_namespace("t1/docs") is True
        assert await store.create_namespace("t1/docs") is True
        assert await store.counts("t1/docs") == (0, 0)
        assert await self._visible(store, "t1/docs") == set()
        await self._put(store, "t1/docs", "new", ["shared words anew"], [[1, 0, 0]])
        assert [d.id for d in await store.list_documents("t1/docs")] == ["new"]
        assert await store.counts("t1/docs") == (1, 1)
        assert await self._visible(store, "t1/docs") == {"shared words anew"}
        # Writing straight into a deleted namespace (no create first) starts empty too.
        assert await store.delete_namespace("t2/docs") is True
        await self._put(store, "t2/docs", "d2", ["shared words again"], [[0, 1, 0]])
        assert await store.counts("t2/docs") == (1, 1)
        assert await self._visible(store, "t2/docs") == {"shared words again"}

    @pytest.mark.anyio
    async def test_search_in_an_empty_namespace_finds_nothing(self, store: DocumentStore) -> None:
        assert await store.create_namespace("t1/empty") is True
        assert await store.keyword_search("t1/empty", "anything", 5, Filter()) == []
        assert await store.vector_search("t1/empty", _unit([[1, 0]])[0], 5, Filter()) == []
        assert await store.list_documents("t1/empty") == []
        # Emptied by deleting its last document.
        await self._put(store, "t1/emptied", "only", ["the only words"], [[1, 0]])
        await self._put(store, "t2/emptied", "only", ["the only words"], [[1, 0]])
        assert await store.delete_document("t1/emptied", "only") is True
        assert await store.counts("t1/emptied") == (0, 0)
        assert await store.keyword_search("t1/emptied", "only words", 5, Filter()) == []
        assert await store.vector_search("t1/emptied", _unit([[1, 0]])[0], 5, Filter()) == []
        filtered = Filter.any_of("document_id", ["only"])
        assert await store.keyword_search("t1/emptied", "only words", 5, filtered) == []
        assert await store.vector_search("t1/emptied", _unit([[1, 0]])[0], 5, filtered) == []
        assert await store.namespace_exists("t1/emptied")
        assert len(await store.keyword_search("t2/emptied", "only words", 5, Filter())) == 1
        # A namespace that never existed is no error either.
        assert await store.keyword_search("t9/never", "only words", 5, Filter()) == []
        assert await store.vector_search("t9/never", _unit([[1, 0]])[0], 5, Filter()) == []


def _key(
    key_id: str,
    tenant: str,
    *,
    scopes: tuple[str, ...] = ("read",),
    namespaces: tuple[str, ...] | None = None,
    created_at: float = 1_700_000_000.0,
    expires_at: float | None = None,
) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=key_id,
        tenant=tenant,
        prefix=f"rt_{key_id[:4]}",
        hash=f"sha256-of-{key_id}",
        scopes=scopes,
        namespaces=namespaces,
        description=f"key {key_id} of {tenant}",
        created_at=created_at,
        expires_at=expires_at,
    )


class TenantStoreContract:
    """Needs a ``tenant_store`` fixture yielding a started, empty store that is both a
    ``TenantStore`` and a ``DocumentStore`` (usage is counted from its documents)."""

    @pytest.mark.anyio
    async def test_is_a_tenant_store(self, tenant_store: Any) -> None:
        assert isinstance(tenant_store, TenantStore)
        assert isinstance(tenant_store, DocumentStore)
        assert await tenant_store.get_tenant("nobody") is None
        assert await tenant_store.list_tenants() == []

    @pytest.mark.anyio
    async def test_put_creates_then_replaces(self, tenant_store: Any) -> None:
        first, created = await tenant_store.put_tenant("acme", {"quota": {"docs": 5}}, "s1")
        assert created is True
        assert (first.id, first.version, first.webhook_secret) == ("acme", 1, "s1")
        assert dict(first.config) == {"quota": {"docs": 5}}
        assert first.created_at == first.updated_at > 0
        assert await tenant_store.get_tenant("acme") == first

        second, created = await tenant_store.put_tenant("acme", {"quota": {"docs": 9}}, "s2")
        assert created is False
        assert second.version == 2
        assert second.webhook_secret == "s1"  # generated once, never replaced
        assert second.created_at == first.created_at
        assert second.updated_at >= first.updated_at
        assert dict(second.config) == {"quota": {"docs": 9}}
        assert await tenant_store.get_tenant("acme") == second
        third, _ = await tenant_store.put_tenant("acme", {}, "s3")
        assert third.version == 3 and dict(third.config) == {}
        assert [t.id for t in await tenant_store.list_tenants()] == ["acme"]

    @pytest.mark.anyio
    async def test_list_is_sorted(self, tenant_store: Any) -> None:
        ids = ["b", "ab", "a", "a-1", "a0", "z", "10", "1"]
        for tenant in ids:
            await tenant_store.put_tenant(tenant, {"name": tenant}, f"secret-{tenant}")
        listed = await tenant_store.list_tenants()
        assert [t.id for t in listed] == sorted(ids, key=str.encode)
        assert all(dict(t.config) == {"name": t.id} for t in listed)
        assert all(t.webhook_secret == f"secret-{t.id}" for t in listed)

    @pytest.mark.anyio
    async def test_delete_removes_the_tenant_and_its_keys(self, tenant_store: Any) -> None:
        await tenant_store.put_tenant("acme", {}, "s")
        await tenant_store.put_tenant("acme2", {}, "s")
        await tenant_store.add_key(_key("k1", "acme"))
        await tenant_store.add_key(_key("k2", "acme"))
        await tenant_store.add_key(_key("k3", "acme2"))
        assert await tenant_store.delete_tenant("acme") is True
        assert await tenant_store.get_tenant("acme") is None
        assert await tenant_store.list_keys("acme") == []
        assert await tenant_store.key_by_hash("sha256-of-k1") is None
        assert await tenant_store.key_by_hash("sha256-of-k2") is None
        assert await tenant_store.key_by_hash("sha256-of-k3") == _key("k3", "acme2")
        assert [t.id for t in await tenant_store.list_tenants()] == ["acme2"]
        assert await tenant_store.delete_tenant("acme") is False
        assert await tenant_store.delete_tenant("nobody") is False
        # Re-created, it starts again at version 1 with no keys.
        record, created = await tenant_store.put_tenant("acme", {}, "new")
        assert created and record.version == 1 and record.webhook_secret == "new"
        assert await tenant_store.list_keys("acme") == []

    @pytest.mark.anyio
    async def test_keys_round_trip(self, tenant_store: Any) -> None:
        keys = [
            _key("all", "acme", scopes=("read", "write", "admin")),
            _key("some", "acme", scopes=("read",), namespaces=("docs", "kb")),
            _key("none", "acme", scopes=("write",), namespaces=(), expires_at=1_800_000_000.5),
            _key("noscope", "acme", scopes=(), created_at=1_700_000_001.25),
        ]
        for key in keys:
            await tenant_store.add_key(key)
        for key in keys:
            got = await tenant_store.key_by_hash(key.hash)
            assert got == key
            assert got is not None and isinstance(got.scopes, tuple)
            assert got.namespaces is None or isinstance(got.namespaces, tuple)
        assert (await tenant_store.key_by_hash("sha256-of-all")).namespaces is None
        assert (await tenant_store.key_by_hash("sha256-of-none")).namespaces == ()
        assert await tenant_store.key_by_hash("sha256-of-nothing") is None
        assert await tenant_store.key_by_hash("") is None

    @pytest.mark.anyio
    async def test_revoke_only_within_the_tenant_and_once(self, tenant_store: Any) -> None:
        await tenant_store.add_key(_key("k1", "acme"))
        await tenant_store.add_key(_key("k2", "other"))
        assert await tenant_store.revoke_key("other", "k1", 10.0) is False
        assert await tenant_store.revoke_key("acm", "k1", 10.0) is False
        assert (await tenant_store.key_by_hash("sha256-of-k1")).revoked_at is None
        assert await tenant_store.revoke_key("acme", "k1", 10.0) is True
        assert (await tenant_store.key_by_hash("sha256-of-k1")).revoked_at == 10.0
        assert await tenant_store.revoke_key("acme", "k1", 20.0) is False
        assert (await tenant_store.key_by_hash("sha256-of-k1")).revoked_at == 10.0
        assert await tenant_store.revoke_key("acme", "nope", 10.0) is False
        assert (await tenant_store.key_by_hash("sha256-of-k2")).revoked_at is None
        [listed] = await tenant_store.list_keys("acme")
        assert listed.revoked_at == 10.0

    @pytest.mark.anyio
    async def test_list_keys_per_tenant(self, tenant_store: Any) -> None:
        await tenant_store.add_key(_key("k3", "a", created_at=3.0))
        await tenant_store.add_key(_key("k1", "a", created_at=1.0))
        await tenant_store.add_key(_key("k2", "a", created_at=1.0))
        await tenant_store.add_key(_key("k4", "ab", created_at=0.5))
        await tenant_store.add_key(_key("k5", "b", created_at=0.5))
        assert [k.id for k in await tenant_store.list_keys("a")] == ["k1", "k2", "k3"]
        assert [k.id for k in await tenant_store.list_keys("ab")] == ["k4"]
        assert await tenant_store.list_keys("nobody") == []
        assert all(k.tenant == "a" for k in await tenant_store.list_keys("a"))

    @pytest.mark.anyio
    async def test_usage_counts_only_the_tenant(self, tenant_store: Any) -> None:
        store = tenant_store

        async def put(ns: str, doc_id: str, texts: list[str]) -> None:
            vectors = _unit([[1.0, float(i)] for i in range(len(texts))])
            chunks = make_chunks(doc_id, texts)
            await store.put_document(ns, make_document(doc_id), chunks, vectors, "e")

        assert await store.tenant_usage("a") == TenantUsage(0, 0, 0, 0)
        await put("a/docs", "d1", ["abc", "caf\u00e9"])  # 3 + 5 bytes
        await put("a/docs", "d2", ["x" * 10])
        await put("a/kb", "d1", ["\u20ac"])  # 3 bytes
        await store.create_namespace("a/empty")
        # Tenants whose ids begin with "a", or that "a" sorts next to, are not a's.
        await put("ab/docs", "d1", ["y" * 100])
        await put("a-b/docs", "d1", ["y" * 100])
        await put("a0/docs", "d1", ["y" * 100])
        await put("b/docs", "d1", ["y" * 100])
        await put("docs", "d1", ["y" * 100])  # a bare name: no tenant's prefix
        assert await store.tenant_usage("a") == TenantUsage(3, 3, 4, 21)
        assert await store.tenant_usage("ab") == TenantUsage(1, 1, 1, 100)
        assert await store.tenant_usage("a-b") == TenantUsage(1, 1, 1, 100)
        assert await store.tenant_usage("nobody") == TenantUsage(0, 0, 0, 0)
        # Replacing and deleting documents, and deleting namespaces, update it.
        await put("a/docs", "d2", ["x" * 4, "z"])
        assert await store.tenant_usage("a") == TenantUsage(3, 3, 5, 16)
        assert await store.delete_document("a/docs", "d1") is True
        assert await store.tenant_usage("a") == TenantUsage(3, 2, 3, 8)
        assert await store.delete_namespace("a/kb") is True
        assert await store.tenant_usage("a") == TenantUsage(2, 1, 2, 5)
        assert await store.tenant_usage("ab") == TenantUsage(1, 1, 1, 100)
