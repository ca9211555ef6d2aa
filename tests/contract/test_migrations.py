"""Version-1 databases open with the current stores: every namespace becomes the default
tenant's (``x`` -> ``default/x``), documents gain their byte count, nothing else changes.

A version-1 database is built from rows the current store computed (its version-1 tables
hold the same rows, less ``documents.bytes``), copied into the version-1 schema: SQLite's
as it was at 58066b3, PostgreSQL's by running migration 1 alone.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apsw
import numpy as np
import psycopg
import pytest

from ragtide.builtin.postgres_store import SCHEMA_VERSION as PG_SCHEMA_VERSION
from ragtide.builtin.sqlite_store import SCHEMA_VERSION as SQLITE_SCHEMA_VERSION
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.components import DocumentStore
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import DocumentInfo, Filter, TenantUsage
from tests.contract.pg_versions import write_schema_at
from tests.contract.test_postgres_store import URL, MakeStore, make_store

__all__ = ["make_store"]  # the fixture, re-exported for pytest

# The SQLite schema of version 1 (src/ragtide/builtin/sqlite_store.py at 58066b3).
SQLITE_V1_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta(key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS namespaces(
    name TEXT PRIMARY KEY,
    created_at REAL NOT NULL,
    generation INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS documents(
    namespace TEXT NOT NULL REFERENCES namespaces(name),
    id TEXT NOT NULL,
    title TEXT NOT NULL,
    source TEXT NOT NULL,
    content_hash TEXT NOT NULL,
    metadata TEXT NOT NULL,
    chunks INTEGER NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    PRIMARY KEY(namespace, id)
);
CREATE TABLE IF NOT EXISTS chunks(
    rowid INTEGER PRIMARY KEY,
    namespace TEXT NOT NULL,
    document_id TEXT NOT NULL,
    chunk_id TEXT NOT NULL,
    ordinal INTEGER NOT NULL,
    title TEXT NOT NULL,
    headings TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL,
    embedder TEXT NOT NULL,
    vector BLOB NOT NULL,
    term_ids BLOB NOT NULL,
    term_tfs BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS terms(id INTEGER PRIMARY KEY, term TEXT NOT NULL UNIQUE);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(namespace, document_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    title, headings, text, tokenize = 'porter unicode61 remove_diacritics 2'
);
"""
DOCUMENT_COLUMNS = (
    "namespace, id, title, source, content_hash, metadata, chunks, created_at, updated_at"
)

CORPUS: dict[str, dict[str, list[str]]] = {
    "kb": {
        "pods": ["A Pod runs containers that share storage", "Pods have resource limits"],
        "bread": ["Bread is baked from flour, water and yeast"],
        "caf\u00e9": ["Un caf\u00e9 cr\u00e8me co\u00fbte 3 \u20ac", "Caf\u00e9 opens at eight"],
    },
    "docs": {
        "pods": ["Pods in the docs namespace share nothing with kb"],
        "empty-ish": ["x"],
    },
}
KEYWORD_QUERIES = ["pods containers", "bread yeast", "caf\u00e9 cr\u00e8me", "share"]
VECTOR_QUERIES = [[1.0, 0.0, 0.0], [0.2, 1.0, 0.0], [0.3, 0.3, 0.9]]


def _unit(rows: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    m = np.asarray(rows, dtype=np.float32)
    unit: np.ndarray[Any, np.dtype[np.float32]] = m / np.linalg.norm(m, axis=1, keepdims=True)
    return unit


async def _fill(store: DocumentStore) -> None:
    for ns, docs in CORPUS.items():
        for n, (doc_id, texts) in enumerate(docs.items()):
            rows = [[1.0 + n, float(i), 0.5 * n] for i in range(len(texts))]
            chunks = make_chunks(doc_id, texts, metadata={"ns": ns, "n": n})
            await store.put_document(ns, make_document(doc_id), chunks, _unit(rows), "e")
    await store.create_namespace("empty")


def _bytes(ns: str) -> int:
    return sum(len(t.encode()) for texts in CORPUS[ns].values() for t in texts)


@dataclass
class Snapshot:
    documents: list[DocumentInfo]
    counts: tuple[int, int]
    keyword: list[list[tuple[str, str, float]]]
    vector: list[list[tuple[str, str, float]]]


async def _snapshot(store: DocumentStore, ns: str) -> Snapshot:
    keyword = [
        [(h.chunk.id, h.chunk.text, round(h.score, 5)) for h in hits]
        for hits in [await store.keyword_search(ns, q, 20, Filter()) for q in KEYWORD_QUERIES]
    ]
    vector = [
        [(h.chunk.id, h.chunk.text, round(h.score, 5)) for h in hits]
        for hits in [
            await store.vector_search(ns, _unit([q])[0], 20, Filter()) for q in VECTOR_QUERIES
        ]
    ]
    return Snapshot(await store.list_documents(ns), await store.counts(ns), keyword, vector)


async def _assert_migrated(store: Any, before: dict[str, Snapshot]) -> None:
    assert await store.list_namespaces() == ["default/docs", "default/empty", "default/kb"]
    assert await store.list_namespaces("default/") == [
        "default/docs",
        "default/empty",
        "default/kb",
    ]
    for ns, snapshot in before.items():
        assert not await store.namespace_exists(ns)
        assert await store.counts(ns) == (0, 0)
        assert await store.namespace_exists(f"default/{ns}")
        after = await _snapshot(store, f"default/{ns}")
        assert after == snapshot, ns
        assert any(after.keyword) and all(after.vector)
    total = sum(_bytes(ns) for ns in CORPUS)
    chunks = sum(len(t) for docs in CORPUS.values() for t in docs.values())
    docs = sum(len(d) for d in CORPUS.values())
    assert await store.tenant_usage("default") == TenantUsage(3, docs, chunks, total)
    # The store writes on: a migrated namespace and a new tenant's.
    chunks_new = make_chunks("new", ["brand new pods text"])
    await store.put_document(
        "default/kb", make_document("new"), chunks_new, _unit([[1.0, 0.0, 0.0]]), "e"
    )
    await store.put_document(
        "t1/kb", make_document("pods"), chunks_new, _unit([[1.0, 0.0, 0.0]]), "e"
    )
    hits = await store.keyword_search("default/kb", "pods", 20, Filter())
    assert {h.document_id for h in hits} == {"pods", "new"}
    usage = await store.tenant_usage("default")
    assert (usage.documents, usage.bytes) == (docs + 1, total + len("brand new pods text"))
    assert await store.tenant_usage("t1") == TenantUsage(1, 1, 1, len("brand new pods text"))


# --- SQLite ------------------------------------------------------------------------------


def _write_v1_file(source: Path, target: Path, *, meta_row: bool) -> None:
    conn = apsw.Connection(str(target))
    with conn:
        conn.execute(SQLITE_V1_SCHEMA)
        if meta_row:
            conn.execute("INSERT INTO meta(key, value) VALUES('schema_version', '1')")
    conn.execute("ATTACH DATABASE ? AS cur", (str(source),))
    with conn:
        conn.execute(
            "INSERT INTO namespaces SELECT name, created_at, generation FROM cur.namespaces"
        )
        columns = DOCUMENT_COLUMNS
        conn.execute(f"INSERT INTO documents({columns}) SELECT {columns} FROM cur.documents")
        conn.execute("INSERT INTO chunks SELECT * FROM cur.chunks")
        conn.execute("INSERT INTO terms SELECT * FROM cur.terms")
        conn.execute(
            "INSERT INTO chunks_fts(rowid, title, headings, text)"
            " SELECT rowid, title, headings, text FROM cur.chunks_fts"
        )
    conn.execute("DETACH DATABASE cur")
    columns = {r[1] for r in conn.execute("PRAGMA table_info(documents)")}
    assert "bytes" not in columns
    conn.close()


@pytest.mark.anyio
@pytest.mark.parametrize("meta_row", [True, False], ids=["meta-v1", "no-meta-row"])
@pytest.mark.parametrize("keyword_index", ["postings", "fts5"])
async def test_sqlite_version_1_file_moves_to_the_default_tenant(
    tmp_path: Path, meta_row: bool, keyword_index: str
) -> None:
    config: dict[str, Any] = {"keyword_index": keyword_index}
    current = SQLiteStore(SQLiteStore.Config(path=tmp_path / "current.sqlite", **config))
    await current.start()
    await _fill(current)
    before = {ns: await _snapshot(current, ns) for ns in CORPUS}
    await current.aclose()
    old = tmp_path / "v1.sqlite"
    _write_v1_file(tmp_path / "current.sqlite", old, meta_row=meta_row)

    for opening in range(2):  # the second opening finds it migrated: nothing moves again
        store = SQLiteStore(SQLiteStore.Config(path=old, **config))
        await store.start()
        try:
            if opening == 0:
                await _assert_migrated(store, before)
            else:
                assert "default/kb" in await store.list_namespaces("default/")
                assert await store.list_namespaces("default/default") == []
                assert await store.counts("default/kb") == (4, 6)
        finally:
            await store.aclose()
    conn = apsw.Connection(str(old))
    version = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    stored = dict(conn.execute("SELECT namespace || '/' || id, bytes FROM documents").fetchall())
    conn.close()
    assert version is not None and int(version[0]) == SQLITE_SCHEMA_VERSION
    for ns, docs in CORPUS.items():
        for doc_id, texts in docs.items():
            assert stored[f"default/{ns}/{doc_id}"] == sum(len(t.encode()) for t in texts)


@pytest.mark.anyio
async def test_sqlite_new_file_starts_at_the_current_version(tmp_path: Path) -> None:
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "new.sqlite"))
    await store.start()
    await store.put_document(
        "kb", make_document("d"), make_chunks("d", ["x"]), _unit([[1, 0]]), "e"
    )
    await store.aclose()
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "new.sqlite"))
    await store.start()
    try:
        # A current file is not migrated again: its namespaces keep their names.
        assert await store.list_namespaces() == ["kb"]
    finally:
        await store.aclose()


# --- PostgreSQL ---------------------------------------------------------------------------


@pytest.mark.anyio
@pytest.mark.integration
async def test_postgres_version_1_schema_moves_to_the_default_tenant(
    make_store: MakeStore,
) -> None:
    source_schema = f"test_{uuid.uuid4().hex[:16]}"
    current = await make_store(db_schema=source_schema)
    await _fill(current)
    before = {ns: await _snapshot(current, ns) for ns in CORPUS}

    target = f"test_{uuid.uuid4().hex[:16]}"
    try:
        await write_schema_at(1, source_schema, target)  # as a version-1 store left it
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
            cur = await conn.execute(
                "SELECT count(*) FROM information_schema.columns WHERE table_schema = %s"
                " AND table_name = 'documents' AND column_name = 'bytes'",
                (target,),
            )
            assert (await cur.fetchone()) == (0,)  # no byte counts before version 2
        store = await make_store(db_schema=target)
        await _assert_migrated(store, before)
        again = await make_store(db_schema=target)  # a warm start moves nothing again
        assert await again.list_namespaces("default/default") == []
        assert await again.counts("default/kb") == (4, 6)
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
            cur = await conn.execute(f"SELECT version FROM {target}.schema_version ORDER BY 1")
            assert [r[0] for r in await cur.fetchall()] == list(range(1, PG_SCHEMA_VERSION + 1))
            cur = await conn.execute(
                f"SELECT n.name || '/' || d.id, d.bytes, n.tenant FROM {target}.documents d"
                f" JOIN {target}.namespaces n ON n.id = d.namespace_id"
            )
            stored = {r[0]: (r[1], r[2]) for r in await cur.fetchall()}
        for ns, docs in CORPUS.items():
            for doc_id, texts in docs.items():
                expected = sum(len(t.encode()) for t in texts)
                assert stored[f"default/{ns}/{doc_id}"] == (expected, "default")
    finally:
        async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
            await conn.execute(f"DROP SCHEMA IF EXISTS {target} CASCADE")
