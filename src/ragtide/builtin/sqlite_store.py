"""The embedded document store: one SQLite file; BM25 postings and vectors in numpy.

SQLite holds everything durable: documents, chunks with their vectors and analysed
terms, and an FTS5 index. Searching runs on a per-namespace cache built from those
rows and rebuilt when the namespace changes: the vectors as one float32 matrix (a
query is one matrix-vector product, with no extension to load) and the terms as
term-major BM25 postings (``ragtide.builtin.bm25``). FTS5's own ``bm25()`` stays
selectable (``keyword_index="fts5"``); it ranks the same way but scores every match
in SQL and was several times slower in the bench.

Concurrency: reads run inline on the event loop thread (each is well under a
millisecond); writes run on a worker thread with their own connection. WAL mode lets
several processes share the file: every write bumps the namespace's ``generation``
and readers reload their vector cache when ``PRAGMA data_version`` says another
connection committed.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar

import apsw
import numpy as np
from pydantic import BaseModel, Field

from ragtide.builtin._rows import chunk_from_row, document_from_row
from ragtide.builtin.bm25 import Analyzer, Postings, pack, unpack
from ragtide.components import Vectors
from ragtide.errors import BackendUnavailable, InvalidRequest
from ragtide.text import content_words
from ragtide.types import (
    ApiKeyRecord,
    Chunk,
    DocumentInfo,
    Filter,
    Hit,
    TenantRecord,
    TenantUsage,
)

__all__ = ["SQLiteStore"]

SCHEMA_VERSION = 2

_SCHEMA = """
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
CREATE TABLE IF NOT EXISTS tenants(
    id TEXT PRIMARY KEY,
    config TEXT NOT NULL,
    version INTEGER NOT NULL,
    webhook_secret TEXT NOT NULL,
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS api_keys(
    id TEXT PRIMARY KEY,
    tenant TEXT NOT NULL,
    prefix TEXT NOT NULL,
    hash TEXT NOT NULL UNIQUE,
    scopes TEXT NOT NULL,
    namespaces TEXT,
    description TEXT NOT NULL,
    created_at REAL NOT NULL,
    expires_at REAL,
    revoked_at REAL
);
CREATE INDEX IF NOT EXISTS api_keys_by_tenant ON api_keys(tenant);
CREATE INDEX IF NOT EXISTS chunks_by_document ON chunks(namespace, document_id);
CREATE VIRTUAL TABLE IF NOT EXISTS chunks_fts USING fts5(
    title, headings, text, tokenize = 'porter unicode61 remove_diacritics 2'
);
"""

_R = TypeVar("_R")
_TENANT_COLUMNS = "id, config, version, webhook_secret, created_at, updated_at"
_KEY_COLUMNS = (
    "id, tenant, prefix, hash, scopes, namespaces, description, created_at, expires_at, revoked_at"
)


def _tenant_from_row(row: Any) -> TenantRecord:
    return TenantRecord(row[0], json.loads(row[1]), int(row[2]), row[3], row[4], row[5])


def _key_to_row(key: ApiKeyRecord) -> tuple[Any, ...]:
    namespaces = None if key.namespaces is None else json.dumps(list(key.namespaces))
    return (
        key.id,
        key.tenant,
        key.prefix,
        key.hash,
        json.dumps(list(key.scopes)),
        namespaces,
        key.description,
        key.created_at,
        key.expires_at,
        key.revoked_at,
    )


def _key_from_row(row: Any) -> ApiKeyRecord:
    namespaces = None if row[5] is None else tuple(json.loads(row[5]))
    return ApiKeyRecord(
        row[0],
        row[1],
        row[2],
        row[3],
        tuple(json.loads(row[4])),
        namespaces,
        row[6],
        row[7],
        row[8],
        row[9],
    )


_CHUNK_CACHE = 20_000  # chunks kept decoded per namespace; cleared when exceeded
_TERM_CACHE = 100_000  # query terms kept resolved per namespace; cleared when exceeded
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")


@dataclass(slots=True)
class _Cache:
    """One namespace's search structures, valid for one ``generation``."""

    generation: int
    embedder: str
    matrix: Vectors  # rows of the newest embedder's chunks only
    vector_rows: np.ndarray[Any, np.dtype[np.int64]]  # positions of ``matrix`` rows
    rowids: np.ndarray[Any, np.dtype[np.int64]]
    document_ids: list[str]
    metadata: list[dict[str, Any]]
    postings: Postings
    masks: dict[Filter, np.ndarray[Any, np.dtype[np.bool_]]] = field(default_factory=dict)
    chunks: dict[int, Chunk] = field(default_factory=dict)  # by rowid, filled on demand
    # Query term -> id, or -1 for a term without one. A term that gains an id later can
    # only gain postings here through a write, which makes a new generation and a new cache.
    terms: dict[str, int] = field(default_factory=dict)

    def term_ids(
        self, terms: Sequence[str], lookup: Callable[[list[str]], dict[str, int]]
    ) -> list[int]:
        """The ids of ``terms`` that have one; ``lookup`` resolves the ones not seen yet."""
        known = self.terms
        missing = [t for t in terms if t not in known]
        if missing:
            if len(known) + len(missing) > _TERM_CACHE:
                known.clear()
                missing = list(terms)
            found = lookup(missing)
            known.update((t, found.get(t, -1)) for t in missing)
        return [i for t in terms if (i := known[t]) >= 0]

    def mask(self, filter: Filter) -> np.ndarray[Any, np.dtype[np.bool_]]:
        mask = self.masks.get(filter)
        if mask is None:
            pairs = zip(self.document_ids, self.metadata, strict=True)
            mask = np.fromiter((filter.matches(d, m) for d, m in pairs), np.bool_, len(self.rowids))
            if len(self.masks) < 256:
                self.masks[filter] = mask
        return mask


class SQLiteStore:
    """``DocumentStore`` on one SQLite file (entry point ``sqlite``)."""

    class Config(BaseModel):
        path: Path | None = Field(None, description="Database file; default <data_dir>/ragtide.db")
        keyword_index: Literal["postings", "fts5"] = Field(
            "postings", description="Rank keywords with in-memory postings or FTS5's bm25()."
        )
        bm25_k1: float = Field(1.2, gt=0)
        bm25_b: float = Field(0.75, ge=0, le=1)
        title_weight: float = Field(1.0, ge=0, description="FTS5 bm25() weight of titles.")
        headings_weight: float = Field(0.5, ge=0)
        text_weight: float = Field(1.0, ge=0)
        busy_timeout_ms: int = Field(5000, gt=0)
        poll_seconds: float = Field(
            0.05, ge=0, description="How stale other processes' writes may look to searches."
        )

    def __init__(self, config: Config, *, data_dir: Path | None = None) -> None:
        path = config.path or (data_dir or Path(".")) / "ragtide.db"
        self._path = path
        self._config = config
        self._reader: apsw.Connection | None = None
        self._writer: apsw.Connection | None = None
        self._write_lock = threading.Lock()
        self._data_version = -1
        self._stale = True
        self._polled = 0.0
        self._generations: dict[str, int] = {}
        self._caches: dict[str, _Cache] = {}
        self._analyzer = Analyzer()
        weights = (config.title_weight, config.headings_weight, config.text_weight)
        self._bm25 = "bm25(chunks_fts, {}, {}, {})".format(*weights)

    @property
    def path(self) -> Path:
        return self._path

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._connect()
        with self._write_lock, self._writer:
            self._writer.execute(_SCHEMA)
            _migrate(self._writer)
        self._reader = self._connect()

    def _connect(self) -> apsw.Connection:
        try:
            conn = apsw.Connection(str(self._path))
            conn.set_busy_timeout(self._config.busy_timeout_ms)
            conn.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        except apsw.Error as exc:
            raise BackendUnavailable(f"cannot open the database {self._path}: {exc}") from exc
        return conn

    async def aclose(self) -> None:
        for conn in (self._reader, self._writer):
            if conn is not None:
                conn.close()
        self._reader = self._writer = None

    @property
    def _db(self) -> apsw.Connection:
        if self._reader is None:
            raise BackendUnavailable("the document store is not started")
        return self._reader

    async def ping(self) -> None:
        try:
            self._db.execute("SELECT 1").fetchall()
        except apsw.Error as exc:
            raise BackendUnavailable(f"the document store does not answer: {exc}") from exc

    # --- namespaces ----------------------------------------------------------------------

    async def create_namespace(self, namespace: str) -> bool:
        return await self._write(self._create_namespace, namespace)

    def _create_namespace(self, conn: apsw.Connection, namespace: str) -> bool:
        conn.execute(
            "INSERT OR IGNORE INTO namespaces(name, created_at) VALUES(?, ?)",
            (namespace, time.time()),
        )
        return conn.changes() == 1

    async def namespace_exists(self, namespace: str) -> bool:
        self._refresh()
        row = self._db.execute("SELECT 1 FROM namespaces WHERE name = ?", (namespace,)).fetchone()
        return row is not None

    async def list_namespaces(self, prefix: str = "") -> list[str]:
        low, high = prefix_bounds(prefix)
        rows = self._db.execute(
            "SELECT name FROM namespaces WHERE name >= ? AND (? IS NULL OR name < ?) ORDER BY name",
            (low, high, high),
        )
        return [r[0] for r in rows]

    async def delete_namespace(self, namespace: str) -> bool:
        deleted = await self._write(self._delete_namespace, namespace)
        self._caches.pop(namespace, None)
        self._generations.pop(namespace, None)
        return deleted

    @staticmethod
    def _delete_namespace(conn: apsw.Connection, namespace: str) -> bool:
        conn.execute(
            "DELETE FROM chunks_fts WHERE rowid IN (SELECT rowid FROM chunks WHERE namespace = ?)",
            (namespace,),
        )
        conn.execute("DELETE FROM chunks WHERE namespace = ?", (namespace,))
        conn.execute("DELETE FROM documents WHERE namespace = ?", (namespace,))
        conn.execute("DELETE FROM namespaces WHERE name = ?", (namespace,))
        return bool(conn.changes() > 0)

    # --- tenants and keys (TenantStore) ----------------------------------------------------

    async def get_tenant(self, tenant: str) -> TenantRecord | None:
        row = self._db.execute(
            f"SELECT {_TENANT_COLUMNS} FROM tenants WHERE id = ?", (tenant,)
        ).fetchone()
        return _tenant_from_row(row) if row else None

    async def list_tenants(self) -> list[TenantRecord]:
        rows = self._db.execute(f"SELECT {_TENANT_COLUMNS} FROM tenants ORDER BY id")
        return [_tenant_from_row(r) for r in rows]

    async def put_tenant(
        self, tenant: str, config: Mapping[str, Any], webhook_secret: str
    ) -> tuple[TenantRecord, bool]:
        def put(conn: apsw.Connection) -> bool:
            now = time.time()
            conn.execute(
                "INSERT INTO tenants(id, config, version, webhook_secret, created_at, updated_at)"
                " VALUES(?, ?, 1, ?, ?, ?) ON CONFLICT(id) DO UPDATE SET"
                " config = excluded.config, version = tenants.version + 1,"
                " updated_at = excluded.updated_at",
                (tenant, json.dumps(dict(config)), webhook_secret, now, now),
            )
            row = conn.execute("SELECT version FROM tenants WHERE id = ?", (tenant,)).fetchone()
            return bool(row is not None and row[0] == 1)

        created = await self._write(put)
        record = await self.get_tenant(tenant)
        assert record is not None
        return record, created

    async def delete_tenant(self, tenant: str) -> bool:
        def delete(conn: apsw.Connection) -> bool:
            conn.execute("DELETE FROM api_keys WHERE tenant = ?", (tenant,))
            conn.execute("DELETE FROM tenants WHERE id = ?", (tenant,))
            return bool(conn.changes() > 0)

        return await self._write(delete)

    async def add_key(self, key: ApiKeyRecord) -> None:
        def add(conn: apsw.Connection) -> None:
            conn.execute(
                f"INSERT INTO api_keys({_KEY_COLUMNS}) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                _key_to_row(key),
            )

        await self._write(add)

    async def key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        row = self._db.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE hash = ?", (key_hash,)
        ).fetchone()
        return _key_from_row(row) if row else None

    async def list_keys(self, tenant: str) -> list[ApiKeyRecord]:
        rows = self._db.execute(
            f"SELECT {_KEY_COLUMNS} FROM api_keys WHERE tenant = ? ORDER BY created_at, id",
            (tenant,),
        )
        return [_key_from_row(r) for r in rows]

    async def revoke_key(self, tenant: str, key_id: str, at: float) -> bool:
        def revoke(conn: apsw.Connection) -> bool:
            conn.execute(
                "UPDATE api_keys SET revoked_at = ?"
                " WHERE tenant = ? AND id = ? AND revoked_at IS NULL",
                (at, tenant, key_id),
            )
            return bool(conn.changes() > 0)

        return await self._write(revoke)

    async def tenant_usage(self, tenant: str) -> TenantUsage:
        low, high = prefix_bounds(tenant + "/")
        namespaces = self._db.execute(
            "SELECT count(*) FROM namespaces WHERE name >= ? AND name < ?", (low, high)
        ).fetchone()
        docs = self._db.execute(
            "SELECT count(*), coalesce(sum(chunks), 0), coalesce(sum(bytes), 0) FROM documents"
            " WHERE namespace >= ? AND namespace < ?",
            (low, high),
        ).fetchone()
        assert namespaces is not None and docs is not None
        return TenantUsage(int(namespaces[0]), int(docs[0]), int(docs[1]), int(docs[2]))

    # --- documents -----------------------------------------------------------------------

    async def get_document(self, namespace: str, document_id: str) -> DocumentInfo | None:
        row = self._db.execute(
            "SELECT id, title, source, content_hash, chunks, created_at, updated_at, metadata "
            "FROM documents WHERE namespace = ? AND id = ?",
            (namespace, document_id),
        ).fetchone()
        return document_from_row(row, json.loads) if row else None

    async def list_documents(
        self, namespace: str, *, limit: int | None = None, after: str | None = None
    ) -> list[DocumentInfo]:
        rows = self._db.execute(
            "SELECT id, title, source, content_hash, chunks, created_at, updated_at, metadata "
            "FROM documents WHERE namespace = ? AND (? IS NULL OR id > ?) ORDER BY id LIMIT ?",
            (namespace, after, after, -1 if limit is None else limit),
        )
        return [document_from_row(r, json.loads) for r in rows]

    async def counts(self, namespace: str) -> tuple[int, int]:
        row = self._db.execute(
            "SELECT count(*), coalesce(sum(chunks), 0) FROM documents WHERE namespace = ?",
            (namespace,),
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    async def put_document(
        self,
        namespace: str,
        document: DocumentInfo,
        chunks: Sequence[Chunk],
        vectors: Vectors,
        embedder_id: str,
    ) -> None:
        if len(chunks) != len(vectors):
            raise InvalidRequest("one vector per chunk is required")
        await self._write(self._put_document, namespace, document, chunks, vectors, embedder_id)

    def _put_document(
        self,
        conn: apsw.Connection,
        namespace: str,
        doc: DocumentInfo,
        chunks: Sequence[Chunk],
        vectors: Vectors,
        embedder_id: str,
    ) -> None:
        self._create_namespace(conn, namespace)
        created = conn.execute(
            "SELECT created_at FROM documents WHERE namespace = ? AND id = ?", (namespace, doc.id)
        ).fetchone()
        self._delete_chunks(conn, namespace, doc.id)
        conn.execute(
            "INSERT OR REPLACE INTO documents(namespace, id, title, source, content_hash,"
            " metadata, chunks, created_at, updated_at, bytes)"
            " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (
                namespace,
                doc.id,
                doc.title,
                doc.source,
                doc.content_hash,
                json.dumps(dict(doc.metadata)),
                len(chunks),
                created[0] if created else doc.created_at,
                doc.updated_at,
                sum(len(c.text.encode()) for c in chunks),
            ),
        )
        vectors = np.ascontiguousarray(vectors, dtype=np.float32)
        counts = [
            self._analyzer.term_counts(f"{c.title}\n{' '.join(c.headings)}\n{c.text}")
            for c in chunks
        ]
        ids = _add_terms(conn, set().union(*counts))
        for chunk, vector, terms in zip(chunks, vectors, counts, strict=True):
            headings = " / ".join(chunk.headings)
            conn.execute(
                "INSERT INTO chunks(namespace, document_id, chunk_id, ordinal, title, headings,"
                " text, metadata, embedder, vector, term_ids, term_tfs)"
                " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    namespace,
                    doc.id,
                    chunk.id,
                    chunk.ordinal,
                    chunk.title,
                    json.dumps(list(chunk.headings)),
                    chunk.text,
                    json.dumps(dict(chunk.metadata)),
                    embedder_id,
                    vector.tobytes(),
                    *pack(terms, ids),
                ),
            )
            conn.execute(
                "INSERT INTO chunks_fts(rowid, title, headings, text) VALUES(?, ?, ?, ?)",
                (conn.last_insert_rowid(), chunk.title, headings, chunk.text),
            )
        self._bump(conn, namespace)

    async def delete_document(self, namespace: str, document_id: str) -> bool:
        return await self._write(self._delete_document, namespace, document_id)

    def _delete_document(self, conn: apsw.Connection, namespace: str, document_id: str) -> bool:
        self._delete_chunks(conn, namespace, document_id)
        conn.execute(
            "DELETE FROM documents WHERE namespace = ? AND id = ?", (namespace, document_id)
        )
        deleted: bool = conn.changes() > 0
        if deleted:
            self._bump(conn, namespace)
        return deleted

    @staticmethod
    def _delete_chunks(conn: apsw.Connection, namespace: str, document_id: str) -> None:
        conn.execute(
            "DELETE FROM chunks_fts WHERE rowid IN "
            "(SELECT rowid FROM chunks WHERE namespace = ? AND document_id = ?)",
            (namespace, document_id),
        )
        conn.execute(
            "DELETE FROM chunks WHERE namespace = ? AND document_id = ?", (namespace, document_id)
        )

    @staticmethod
    def _bump(conn: apsw.Connection, namespace: str) -> None:
        conn.execute(
            "UPDATE namespaces SET generation = generation + 1 WHERE name = ?", (namespace,)
        )

    async def _write(self, fn: Callable[..., _R], *args: Any) -> _R:
        def run() -> _R:
            if self._writer is None:
                raise BackendUnavailable("the document store is not started")
            with self._write_lock:
                try:
                    with self._writer:  # one transaction: all of fn or nothing
                        result = fn(self._writer, *args)
                    self._stale = True
                except apsw.BusyError as exc:
                    raise BackendUnavailable("the database is locked by another writer") from exc
            return result

        return await asyncio.to_thread(run)

    # --- search --------------------------------------------------------------------------

    async def keyword_search(
        self, namespace: str, text: str, limit: int, filter: Filter
    ) -> list[Hit]:
        if self._config.keyword_index == "fts5":
            return self._fts5_search(namespace, text, limit, filter)
        terms = self._analyzer.query_terms(text)
        cache = self._cache(namespace)
        if not terms or limit <= 0 or cache is None:
            return []
        scores = cache.postings.scores(
            cache.term_ids(terms, lambda missing: _select_term_ids(self._db, missing))
        )
        if scores is None:
            return []
        return self._top(cache, scores, np.arange(len(scores)), limit, filter, positive=True)

    def _fts5_search(self, namespace: str, text: str, limit: int, filter: Filter) -> list[Hit]:
        terms = list(dict.fromkeys(content_words(text)))[:64]
        if not terms or limit <= 0:
            return []
        match = " OR ".join('"' + t.replace('"', '""') + '"' for t in terms)
        where, params = _filter_sql(filter)
        sql = (
            f"SELECT c.chunk_id, c.document_id, c.ordinal, c.text, c.title, c.headings,"
            f" c.metadata, {self._bm25} AS rank FROM chunks_fts"
            f" JOIN chunks c ON c.rowid = chunks_fts.rowid"
            f" WHERE chunks_fts MATCH ? AND c.namespace = ?{where} ORDER BY rank LIMIT ?"
        )
        rows = self._db.execute(sql, (match, namespace, *params, limit))
        return [Hit(chunk_from_row(row, json.loads), -float(row[7])) for row in rows]

    async def vector_search(
        self, namespace: str, vector: Vectors, limit: int, filter: Filter
    ) -> list[Hit]:
        cache = self._cache(namespace)
        if cache is None or limit <= 0 or not len(cache.vector_rows):
            return []
        if cache.matrix.shape[1] != len(vector):
            return []
        scores = cache.matrix @ np.asarray(vector, dtype=np.float32)
        return self._top(cache, scores, cache.vector_rows, limit, filter, positive=False)

    def _top(
        self,
        cache: _Cache,
        scores: Vectors,
        rows: np.ndarray[Any, np.dtype[Any]],
        limit: int,
        filter: Filter,
        positive: bool,
    ) -> list[Hit]:
        """The ``limit`` best of ``scores`` (one per entry of ``rows``) as hits."""
        if filter or positive:
            valid = scores > 0 if positive else np.ones(len(scores), np.bool_)
            if filter:
                valid &= cache.mask(filter)[rows]
            candidates = np.flatnonzero(valid)
            if not len(candidates):
                return []
            k = min(limit, len(candidates))
            best = candidates[np.argpartition(-scores[candidates], k - 1)[:k]]
        else:  # every row is a candidate: skip building the mask
            k = min(limit, len(scores))
            best = np.argpartition(-scores, k - 1)[:k]
        best = best[np.argsort(-scores[best], kind="stable")]
        rowids: list[int] = cache.rowids[rows[best]].tolist()
        values: list[float] = scores[best].tolist()
        missing = [r for r in rowids if r not in cache.chunks]
        if missing:
            if len(cache.chunks) > _CHUNK_CACHE:
                cache.chunks.clear()
            query = (
                "SELECT chunk_id, document_id, ordinal, text, title, headings, metadata, rowid"
                f" FROM chunks WHERE rowid IN ({','.join('?' * len(missing))})"
            )
            cache.chunks.update(
                (r[7], chunk_from_row(r, json.loads)) for r in self._db.execute(query, missing)
            )
        chunks = cache.chunks
        return [Hit(chunks[r], v) for r, v in zip(rowids, values, strict=True) if r in chunks]

    def _refresh(self) -> None:
        """Re-read the namespaces' generations if the file may have changed.

        This process's own writes mark the view stale at once (``_stale``); another
        process's commits are noticed through ``PRAGMA data_version`` at most
        ``poll_seconds`` later, which saves a query per search on the hot path.
        """
        now = time.monotonic()
        if not self._stale and now - self._polled < self._config.poll_seconds:
            return
        self._stale, self._polled = False, now
        version = self._db.execute("PRAGMA data_version").fetchone()
        if version is not None and version[0] != self._data_version:
            self._data_version = version[0]
            rows = self._db.execute("SELECT name, generation FROM namespaces")
            self._generations = {str(name): int(gen) for name, gen in rows}

    def _cache(self, namespace: str) -> _Cache | None:
        self._refresh()
        generation = self._generations.get(namespace)
        if generation is None:
            return None
        cache = self._caches.get(namespace)
        if cache is None or cache.generation != generation:
            cache = self._caches[namespace] = self._load(namespace, generation)
        return cache

    def _load(self, namespace: str, generation: int) -> _Cache:
        rows: list[Any] = self._db.execute(
            "SELECT rowid, document_id, metadata, embedder, vector, term_ids, term_tfs"
            " FROM chunks WHERE namespace = ? ORDER BY rowid",
            (namespace,),
        ).fetchall()
        # Vectors of different models are not comparable: search the newest model's only
        # (re-ingesting after a model change re-embeds every document).
        embedder = rows[-1][3] if rows else ""
        vector_rows = np.array([i for i, r in enumerate(rows) if r[3] == embedder], np.int64)
        blobs = b"".join(rows[i][4] for i in vector_rows)
        if len(vector_rows):
            matrix = np.frombuffer(blobs, dtype=np.float32).reshape(len(vector_rows), -1).copy()
        else:  # an empty namespace is an ordinary one: nothing to find
            matrix = np.zeros((0, 0), dtype=np.float32)
        terms = [unpack(r[5], r[6]) for r in rows]
        postings = Postings.build(
            [t[0] for t in terms],
            [t[1] for t in terms],
            self._config.bm25_k1,
            self._config.bm25_b,
        )
        return _Cache(
            generation=generation,
            embedder=embedder,
            matrix=matrix,
            vector_rows=vector_rows,
            rowids=np.fromiter((r[0] for r in rows), dtype=np.int64, count=len(rows)),
            document_ids=[r[1] for r in rows],
            metadata=[json.loads(r[2]) for r in rows],
            postings=postings,
        )


def _migrate(conn: apsw.Connection) -> None:
    """Bring an older file up to ``SCHEMA_VERSION`` inside the caller's transaction.

    2: namespaces belong to tenants. Every namespace of a version-1 file becomes the
    default tenant's (``name`` -> ``default/name``) and documents gain their byte count.
    """
    row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
    if row is None:  # a new file: the schema above is already the newest
        if _has_rows(conn):
            version = 1
        else:
            conn.execute(
                "INSERT INTO meta(key, value) VALUES('schema_version', ?)", (str(SCHEMA_VERSION),)
            )
            _add_column(conn, "documents", "bytes INTEGER NOT NULL DEFAULT 0")
            return
    else:
        version = int(row[0])
    if version < 2:
        for table, column in (
            ("namespaces", "name"),
            ("documents", "namespace"),
            ("chunks", "namespace"),
        ):
            conn.execute(
                f"UPDATE {table} SET {column} = 'default/' || {column}"
                f" WHERE instr({column}, '/') = 0"
            )
        _add_column(conn, "documents", "bytes INTEGER NOT NULL DEFAULT 0")
        conn.execute(
            "UPDATE documents SET bytes = coalesce((SELECT sum(length(CAST(c.text AS BLOB)))"
            " FROM chunks c WHERE c.namespace = documents.namespace"
            " AND c.document_id = documents.id), 0)"
        )
    conn.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES('schema_version', ?)",
        (str(SCHEMA_VERSION),),
    )


def _has_rows(conn: apsw.Connection) -> bool:
    return conn.execute("SELECT 1 FROM namespaces LIMIT 1").fetchone() is not None


def _add_column(conn: apsw.Connection, table: str, definition: str) -> None:
    name = definition.split()[0]
    columns = {r[1] for r in conn.execute(f"PRAGMA table_info({table})")}
    if name not in columns:
        conn.execute(f"ALTER TABLE {table} ADD COLUMN {definition}")


def prefix_bounds(prefix: str) -> tuple[str, str | None]:
    """[low, high) of the keys that start with ``prefix`` in byte order."""
    if not prefix:
        return "", None
    return prefix, prefix[:-1] + chr(ord(prefix[-1]) + 1)


def _add_terms(conn: apsw.Connection, terms: set[str]) -> dict[str, int]:
    """Give every term an id (new ones get the next) and return them all."""
    ordered = sorted(terms)
    conn.executemany("INSERT OR IGNORE INTO terms(term) VALUES(?)", ((t,) for t in ordered))
    return _select_term_ids(conn, ordered)


def _select_term_ids(conn: apsw.Connection, terms: Sequence[str]) -> dict[str, int]:
    """The ids of those ``terms`` that have one."""
    ids: dict[str, int] = {}
    for i in range(0, len(terms), 10_000):  # bounded by SQLite's limit on parameters
        batch = terms[i : i + 10_000]
        marks = ",".join("?" * len(batch))
        rows = conn.execute(f"SELECT term, id FROM terms WHERE term IN ({marks})", batch)
        ids.update((str(term), int(term_id)) for term, term_id in rows)
    return ids


def _filter_sql(filter: Filter) -> tuple[str, list[str]]:
    clauses, params = [], []
    for cond in filter.conditions:
        values = sorted(cond.values)
        marks = ",".join("?" * len(values)) or "NULL"
        if cond.field == "document_id":
            clauses.append(f" AND c.document_id IN ({marks})")
        else:
            if not _FIELD.fullmatch(cond.field):
                raise InvalidRequest(f"invalid filter field {cond.field!r}")
            clauses.append(
                f" AND EXISTS (SELECT 1 FROM json_each(c.metadata, '$.\"{cond.field}\"')"
                f" WHERE CAST(value AS TEXT) IN ({marks}))"
            )
        params.extend(values)
    return "".join(clauses), params
