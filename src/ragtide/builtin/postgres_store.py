"""The production document store: PostgreSQL with pgvector, BM25 computed in SQL.

Schema (one PostgreSQL schema per store config, ``ragtide`` by default)::

    namespaces(id, name, generation, embedder, chunk_count, token_count)  BM25 N and avgdl
    documents(namespace_id, id, ...)                                      one row per document
    chunks(id, namespace_id, document_id, position, ..., embedding vector, length)
    postings(namespace_id, term, chunk, length, tf_title, tf_headings, tf_text, impact)
    terms(namespace_id, term, df)                                         BM25 document frequency

**Partitioned by namespace.** ``documents``, ``chunks``, ``postings`` and ``terms`` are
hash-partitioned on ``namespace_id`` (``_pg_sql.PARTITIONS`` partitions each, migration 6);
their keys include it, so they are co-located on it (Citus's distribution column). Every
statement scoped to a namespace gets its id as a parameter (cached by name, ``_scoped``),
so the planner reads that namespace's partition of each table and no other; joins of
chunks and postings carry the namespace too.

**Keyword ranking equals the SQLite store's.** Both analyse text with the shared
``ragtide.builtin.bm25.Analyzer`` (content words, Snowball stems) and score with Okapi BM25
and Lucene's idf. Here the statistics live in tables kept current by every write:
``postings`` holds each chunk's term counts per column (title, headings, text) and its
length, ``terms.df`` the number of chunks with the term, and ``namespaces.chunk_count`` and
``token_count`` give N and avgdl. A query is one SQL statement:
``idf = ln(1 + (N - df + 0.5) / (df + 0.5))``, ``f`` = the column-weighted count (all
weights 1.0 by default, which is exactly the SQLite store's unweighted count), and
``score = sum(idf * f * (k1 + 1) / (f + k1 * (1 - b + b * length / avgdl)))`` over the
distinct query terms. Statistics are per namespace, as in the SQLite store.

**Keyword top-k reads a bounded number of postings.** Each posting carries its impact (the
``f / (f + k1 * (...))`` part, with the average length at its write), indexed per term best
first: a query reads each term's ``keyword_candidates`` best postings and scores the best
chunks exactly. Unless that top is provably exact, a second read takes each term's postings
that score at least the ``limit``-th hit's score over ``keyword_reach`` (``_keyword_reach``):
the depth follows the scores, so it grows with the namespace where a fixed count lost
quality (SciFact nDCG@10 at 310k chunks: 0.5588 against 0.5794 exact; 0.5804 with it),
rare terms are read deeper than common ones, and each term's read is capped
(``keyword_reach_max``): the cost is bounded by the number of terms. ``keyword_exact_top``
reads deeper whenever a chunk it has not seen could still beat the last hit
(``_keyword_top_is_exact``). Filtered searches scan every posting of the terms.

**Or off the database, in the replica.** With the column weights at 1.0 (the default), a
keyword search of a namespace of ``local_keyword_min_chunks`` or more is ranked by the
replica's own in-memory index of it (``_pg_local``: loaded in the background on its first
search, kept current from the ``chunk_changes`` log every write appends to, exact BM25
top-k by the embedded store's MaxScore); the database returns the hits' rows by primary
key and checks a filter on them (``_local_search``). At 102k chunks that is 0.25 ms of
database CPU per search against 24 ms for the two reads above, and the exact top-k.
Namespaces of up to ``local_vector_max_chunks`` keep their vectors there too and are
searched exactly by the replica; larger ones by HNSW in the database (below). The first
replica to load a large namespace from its postings saves the index in the database
(``_pg_snapshot``, ``local_snapshot_min_chunks``); the others read that and catch up from
the log, and a serving replica's readiness waits for those loads (``local_warm_wait_s``).

**Vectors of any dimension share one column.** ``embedding`` is a dimension-less
``vector``; each dimension seen gets a partial HNSW index on half-precision vectors,
``(embedding::halfvec(d)) halfvec_cosine_ops WHERE vector_dims(embedding) = d``; a query
of dimension ``d`` walks exactly that expression for twice ``limit`` candidates and orders
them by their exact float32 distance. Like the SQLite store, a search covers only
the namespace's newest embedder. Filters are applied during the HNSW scan with pgvector's
iterative scans (``hnsw.iterative_scan = relaxed_order``); when that still yields fewer than
``limit`` hits, an exact scan of the namespace answers instead, so a filter never starves.

**Writes** lock the namespace row first (bumping its ``generation``), so the statistics of
one namespace are updated by one transaction at a time and never deadlock. Documents are
written in batches (``put_documents``): chunk ids reserved from the sequence, the rows made
in a thread (``_pg_rows``: analysis, and the postings as one binary ``COPY`` payload),
chunks and postings sent with binary ``COPY``, the term counts upserted in one statement
(``terms`` leaves room on its pages for HOT updates), a few round trips per batch. A new
dimension's index is built ``CONCURRENTLY``, partition by partition (writers go on);
``bulk_load`` drops the vector indexes and the keyword index and builds them after a large
load instead.
**Migrations** run under ``pg_advisory_xact_lock``, so replicas starting together apply them
once; a warm start only reads ``schema_version`` (and checks that the keyword index
exists). Every call is bounded (pool wait, ``statement_timeout``, and a client-side
deadline); a lost server raises
``BackendUnavailable``, rejected data (NaN, NUL bytes) ``InvalidRequest``.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import re
import struct
import time
import weakref
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format
from psycopg.rows import TupleRow
from psycopg.types.json import set_json_loads
from psycopg_pool import AsyncConnectionPool
from pydantic import BaseModel, Field, field_validator

from ragtide.builtin._pg_local import BOTH_SQL, CHANNEL, LocalIndex, LocalKeywords, rows_sql
from ragtide.builtin._pg_rows import Prepared, Weights, Write, postings_copy, prepare
from ragtide.builtin._pg_sql import (
    COPY_CHUNKS,
    COPY_POSTINGS,
    DELETE_CHUNKS,
    DELETE_NAMESPACE,
    DOCUMENT_COLUMNS,
    HNSW_MAX_DIMS,
    IDENT,
    LOCK_NAMESPACE,
    LOG_ADDED,
    LOG_DELETED,
    MIGRATIONS,
    NOTIFY,
    NS_ID,
    PARTITION_INDEXES,
    PARTITIONED,
    POSTINGS_INDEX,
    PRUNE_LOG,
    SCHEMA_VERSION,
    UPSERT_DOCUMENTS,
    UPSERT_TERMS,
    filter_sql,
    keyword_sql,
    vector_sql,
    vector_text,
)
from ragtide.builtin._rows import (
    KEY_COLUMNS,
    TENANT_COLUMNS,
    chunk_from_row,
    document_from_row,
    key_from_row,
    key_to_row,
    tenant_from_row,
)
from ragtide.builtin.bm25 import Analyzer
from ragtide.components import Vectors
from ragtide.errors import BackendUnavailable, InvalidRequest, RagtideError
from ragtide.observability import POSTGRES_SEARCHES
from ragtide.types import (
    ApiKeyRecord,
    Chunk,
    DocumentInfo,
    Filter,
    Hit,
    TenantRecord,
    TenantUsage,
)

__all__ = ["PostgresStore"]

logger = logging.getLogger(__name__)

_Conn = psycopg.AsyncConnection[TupleRow]


# COPY column types (binary format), in COPY_CHUNKS' and COPY_POSTINGS' column order.
_CHUNK_TYPES = (
    *("int8", "int4", "text", "int4", "text", "int4", "text", "jsonb", "text", "jsonb"),
    *("text", "vector", "int4"),
)


class _VectorDumper(Dumper):
    """A float32 row as pgvector's binary ``vector``: dimensions, unused, big-endian floats."""

    format = Format.BINARY

    def dump(self, obj: Any) -> bytes:
        array = np.asarray(obj, dtype=">f4")
        return struct.pack(">HH", len(array), 0) + array.tobytes()


class PostgresStore:
    """``DocumentStore`` on PostgreSQL with pgvector (entry point ``postgres``)."""

    class Config(BaseModel):
        url: str = Field(description="libpq URL or DSN, e.g. postgresql://user@host:5432/db")
        db_schema: str = Field(
            "ragtide", pattern=IDENT.pattern, description="PostgreSQL schema of the tables."
        )
        extension_schema: str = Field(
            "public", pattern=IDENT.pattern, description="Schema pgvector is installed in."
        )
        search_url: str | None = Field(
            None,
            description="A read-only DSN (e.g. a streaming replica) for keyword and vector"
            " searches; everything else, and every write, uses url. Searches there see"
            " writes once the replica has replayed them.",
        )
        min_pool_size: int = Field(1, ge=0)
        max_pool_size: int = Field(10, gt=0)
        pool_timeout_s: float = Field(5.0, gt=0, description="Wait for a pooled connection.")
        pool_check_idle_s: float = Field(
            1.0,
            ge=0,
            description="A pooled connection idle this long is checked by a round trip"
            " before it is lent (one back sooner is not: at 50 searches/s those checks were"
            " a sixth of a search's time on the event loop). 0: check every time.",
        )
        namespace_cache_s: float = Field(
            1.0,
            ge=0,
            description="A namespace seen to exist is taken to exist this long without"
            " asking (another replica's deletion shows after at most this long; its"
            " searches find nothing meanwhile, its writes are refused). 0: ask every time.",
        )
        statement_timeout_ms: int = Field(5000, gt=0)
        connect_timeout_s: int = Field(3, gt=0)
        call_timeout_s: float = Field(
            15.0, gt=0, description="Client-side bound on one call, should the server hang."
        )
        migration_timeout_ms: int = Field(
            300_000, gt=0, description="Statement timeout of migrations and index builds."
        )
        index_build_memory_mb: int = Field(
            2048,
            ge=64,
            description="maintenance_work_mem of an index build (the database server's"
            " memory, per build, one at a time; a build takes only what it needs). An HNSW"
            " graph that outgrows it is finished on disk, far slower: at 1M chunks of 256"
            " dimensions 181 s with 2 GB, most of ~1,000 s with 512 MB.",
        )
        random_page_cost: float = Field(
            1.1,
            gt=0,
            description="The planner's cost of reading a random page, on the store's"
            " connections (PostgreSQL's default is 4.0, for disks): the tables' hot pages"
            " are in memory. At 4.0 the keyword top-k's probes of one (chunk, term) each"
            " scanned the term's whole list in the impact index instead of the primary key.",
        )
        hnsw_m: int = Field(16, ge=2, le=100)
        hnsw_ef_construction: int = Field(64, ge=4, le=1000)
        hnsw_ef_search: int = Field(100, ge=1, le=1000)
        hnsw_max_scan_tuples: int = Field(
            20_000, gt=0, description="Iterative scans stop after this many tuples."
        )
        keyword_candidates: int = Field(
            1000,
            ge=0,
            description="Postings read per query term, best impact first, for the keyword"
            " top-k (0: every posting, exact; cost then grows with the namespace).",
        )
        keyword_rescore: int = Field(
            60, gt=0, description="Chunks scored exactly over all query terms (at least limit)."
        )
        keyword_reach: float = Field(
            5.0,
            ge=0,
            description="When the lists were cut, a second read takes each term's postings"
            " that score at least the limit-th hit's score divided by this: a chunk whose"
            " best term gives that much is seen, however long the lists (0: one read).",
        )
        keyword_reach_max: int = Field(
            16_000, gt=0, description="Postings the second read takes per term at most."
        )
        keyword_reach_rescore: int = Field(
            120,
            gt=0,
            description="Chunks the second read scores exactly (at least limit): its heads"
            " are deeper, more chunks have a similar part of the score.",
        )
        keyword_reach_share: int = Field(
            100,
            gt=0,
            description="The second read also scores exactly at least one in this many of"
            " the chunks it read: the deeper the lists are read, the more are.",
        )
        keyword_exact_top: bool = Field(
            False,
            description="Read deeper until no unseen chunk can beat the limit-th hit: exact"
            " top-k, but long queries then often read every posting (measured: 3x the CPU"
            " of the exact scan at 100k chunks, SciFact queries).",
        )
        local_keyword_mb: int = Field(
            512,
            ge=0,
            description="Memory each replica may give to in-memory keyword indexes of the"
            " namespaces it searches (``_pg_local``): the BM25 top-k is then ranked in the"
            " replica and the database only returns the hits' rows. Used while the column"
            " weights are all 1.0; 0 ranks every search in SQL.",
        )
        change_log_generations: int = Field(
            1000,
            ge=1,
            description="Writes of a namespace whose changes stay in the change log that"
            " local keyword indexes catch up from; an index older than that is loaded again.",
        )
        change_log_max_generations: int = Field(
            100_000,
            ge=1,
            description="The log also keeps the changes since the namespace's saved index"
            " (so that replicas starting from it catch up instead of loading the namespace"
            " whole), but never more than this many writes.",
        )
        local_vector_max_chunks: int = Field(
            50_000,
            ge=0,
            description="Namespaces with a local keyword index and at most this many chunks"
            " also keep their vectors in the replica (4 bytes a dimension a chunk) and are"
            " searched exactly there; larger ones by the database's HNSW index.",
        )
        local_keyword_min_chunks: int = Field(
            2000, ge=0, description="Namespaces smaller than this are searched in SQL."
        )
        local_snapshot_min_chunks: int = Field(
            50_000,
            ge=0,
            description="A replica that loads a namespace of at least this many chunks (and"
            " more than ``local_vector_max_chunks``) from its postings saves the index in"
            " the database; the other replicas read that snapshot instead (``_pg_snapshot``:"
            " seconds and little database CPU where the postings cost tens of seconds at"
            " 1M chunks).",
        )
        local_vector_graphs: bool = Field(
            True,
            description="Saved namespaces (``local_snapshot_min_chunks``) also get an HNSW"
            " graph of their vectors in the replica (``_pg_ann``: built once by the replica"
            " that saved the keyword index, saved beside it, read by the others), so that"
            " their vector searches cost the database two primary-key reads rather than"
            " its own HNSW walk; ~0.5 KB a chunk more per replica at 256 dimensions.",
        )
        local_graph_expansion: int = Field(
            512,
            ge=16,
            description="Search breadth (ef) of the replica's vector graphs: recall against"
            " CPU, as the embedded store's ``ann_expansion``.",
        )
        local_refresh_share: float = Field(
            0.05,
            gt=0,
            le=1,
            description="When this share of a saved namespace (and ``local_refresh_min_chunks``)"
            " was written or deleted since its saved index, or lies past its vector graph,"
            " one replica saves the index again from memory and adds those chunks to the"
            " graph, which the others then search with: new replicas catch up little, and the"
            " exact search of a graph's tail stays small.",
        )
        local_refresh_min_chunks: int = Field(
            10_000, ge=1, description="See ``local_refresh_share``."
        )
        local_notifications: bool = Field(
            True,
            description="Writers NOTIFY each commit and every replica LISTENs (a connection of"
            " its own to the primary), catching its local indexes up before the next search"
            " asks; off, a search finds the change by the namespace's generation and catches"
            " up then (either way it returns what was committed when it began).",
        )
        local_warm_wait_s: float = Field(
            30.0,
            ge=0,
            description="How long a serving replica's start (readiness) waits for the"
            " namespaces it can load from snapshots; the others load in the background"
            " and are searched in SQL until then.",
        )
        bm25_k1: float = Field(1.2, ge=0)
        bm25_b: float = Field(0.75, ge=0, le=1)
        title_weight: float = Field(1.0, ge=0, description="BM25 weight of title terms.")
        headings_weight: float = Field(1.0, ge=0, description="BM25 weight of heading terms.")
        text_weight: float = Field(1.0, ge=0, description="BM25 weight of body terms.")

        @field_validator("url", "search_url")
        @classmethod
        def _libpq_url(cls, url: str | None) -> str | None:
            """Accept SQLAlchemy-style ``postgresql+psycopg://``: libpq knows no driver part."""
            if url is None:
                return None
            return re.sub(r"^postgres(?:ql)?\+[A-Za-z0-9_]+://", "postgresql://", url)

    def __init__(self, config: Config, *, data_dir: Path | None = None) -> None:
        self._config = config
        self._pool: AsyncConnectionPool[_Conn] | None = None
        self._search_pool: AsyncConnectionPool[_Conn] | None = None  # search_url's
        self._analyzer = Analyzer()  # queries only: the event loop's thread
        self._indexed: set[int] = set()
        self._ns_ids: dict[str, int] = {}  # namespace name -> id, see _scoped
        self._confirmed: dict[str, float] = {}  # namespace name -> when seen to exist
        self._fresh = _Freshness(config.pool_check_idle_s)
        self._index_lock = asyncio.Lock()
        self._deferring = False  # inside bulk_load: vector indexes wait for its end
        self._deferred: set[int] = set()
        self._kwargs = self._connect_kwargs(config.statement_timeout_ms)
        self._weights = Weights(
            config.bm25_k1,
            config.bm25_b,
            config.title_weight,
            config.headings_weight,
            config.text_weight,
        )
        self.migration_seconds = 0.0  # how long start() spent on migrations
        self._vector_oid: int | None = None
        self.exact_scans = 0  # vector searches the HNSW scan could not fill
        self.keyword_escalations = 0  # keyword searches that had to read deeper
        self.keyword_reads_by_score = 0  # keyword searches read again by score (reach)
        self.local_keyword_searches = 0  # keyword searches ranked by a local index
        self.local_vector_searches = 0  # vector searches ranked by a local index
        unweighted = (config.title_weight, config.headings_weight, config.text_weight) == (1, 1, 1)
        self.local_keywords: LocalKeywords | None = None
        if config.local_keyword_mb and unweighted:
            self.local_keywords = LocalKeywords(
                self._search_connection,
                self._chunk_count,
                lambda: self._connection(search=True),
                k1=config.bm25_k1,
                b=config.bm25_b,
                budget_bytes=config.local_keyword_mb << 20,
                min_chunks=config.local_keyword_min_chunks,
                vector_max_chunks=config.local_vector_max_chunks,
                save=self._maintenance_connection,
                saved_min_chunks=config.local_snapshot_min_chunks,
                graphs=config.local_vector_graphs,
                expansion=config.local_graph_expansion,
                refresh_share=config.local_refresh_share,
                refresh_min_chunks=config.local_refresh_min_chunks,
                listen=self._maintenance_connection if config.local_notifications else None,
                schema=config.db_schema,
            )

    # --- lifecycle -----------------------------------------------------------------------

    def _connect_kwargs(self, statement_timeout_ms: int) -> dict[str, Any]:
        c = self._config
        options = {
            "search_path": f"{c.db_schema},{c.extension_schema}",
            "statement_timeout": str(statement_timeout_ms),
            "idle_in_transaction_session_timeout": str(int(c.call_timeout_s * 2000)),
            "hnsw.ef_search": str(c.hnsw_ef_search),
            "hnsw.iterative_scan": "relaxed_order",
            "hnsw.max_scan_tuples": str(c.hnsw_max_scan_tuples),
            "random_page_cost": str(c.random_page_cost),
        }
        return {
            "autocommit": True,
            "connect_timeout": c.connect_timeout_s,
            "application_name": "ragtide",
            "options": " ".join(f"-c {k}={v}" for k, v in options.items()),
        }

    async def _maintenance_connection(self) -> _Conn:
        """A connection outside the pool, with the long timeout of migrations and DDL."""
        kwargs = self._connect_kwargs(self._config.migration_timeout_ms)
        return await psycopg.AsyncConnection.connect(self._config.url, **kwargs)

    async def _chunk_count(self, ns_id: int) -> int | None:
        rows = await self._fetch(
            "SELECT chunk_count FROM namespaces WHERE id = %s", (ns_id,), search=True
        )
        return int(rows[0][0]) if rows else None

    async def _search_connection(self) -> _Conn:
        """A connection outside the pools to where searches go, with the long timeout:
        the loads of local keyword indexes."""
        c = self._config
        kwargs = self._connect_kwargs(c.migration_timeout_ms)
        if c.search_url is not None:
            kwargs["options"] += " -c default_transaction_read_only=on"
        return await psycopg.AsyncConnection.connect(c.search_url or c.url, **kwargs)

    async def start(self) -> None:
        if self._pool is not None:
            return
        c = self._config
        began = time.perf_counter()
        try:
            async with asyncio.timeout(c.connect_timeout_s + c.migration_timeout_ms / 1000):
                async with await self._maintenance_connection() as conn:
                    if 0 < await self._migrate(conn) < _PARTITIONED_SINCE:
                        # Migration 6 wrote every row of the partitioned tables: set their
                        # visibility maps (index-only scans read the heap until then: the
                        # keyword searches of a migrated 10k-chunk corpus cost 2.5x) and
                        # statistics now rather than when autovacuum comes by.
                        await conn.execute(f"VACUUM (ANALYZE) {', '.join(PARTITIONED)}")
                    repair = await self._postings_index_lost(conn)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise _translate(exc, "cannot prepare the document store") from exc
        self.migration_seconds = time.perf_counter() - began
        if repair:
            logger.warning("keyword index missing: building it", extra={"schema": c.db_schema})
            await self._create_index(*POSTINGS_INDEX)
        pool = await self._open_pool(c.url, self._kwargs, "")
        if c.search_url is not None:
            kwargs = dict(self._kwargs)
            kwargs["options"] += " -c default_transaction_read_only=on"
            try:
                self._search_pool = await self._open_pool(c.search_url, kwargs, "-search")
            except BaseException:
                await pool.close()
                raise
        self._pool = pool

    async def _open_pool(
        self, url: str, kwargs: dict[str, Any], suffix: str
    ) -> AsyncConnectionPool[_Conn]:
        c = self._config
        pool: AsyncConnectionPool[_Conn] = AsyncConnectionPool(
            url,
            min_size=c.min_pool_size,
            max_size=max(c.max_pool_size, c.min_pool_size),
            kwargs=kwargs,
            configure=_configure,
            check=self._fresh.check,
            reset=self._fresh.returned,
            timeout=c.pool_timeout_s,
            name=f"ragtide-store-{c.db_schema}{suffix}",
            open=False,
        )
        try:
            await pool.open(wait=True, timeout=c.connect_timeout_s + c.pool_timeout_s)
        except (psycopg.Error, OSError, TimeoutError) as exc:
            await pool.close()
            raise _translate(exc, "cannot connect to the document store") from exc
        return pool

    async def _migrate(self, conn: _Conn) -> int:
        """Apply the migrations the schema lacks; the version it had."""
        c = self._config
        if await self._schema_version(conn) == SCHEMA_VERSION:
            return SCHEMA_VERSION  # warm start: no lock, no DDL
        async with conn.transaction():
            # One global key: CREATE EXTENSION is database-wide, whatever the schema.
            await conn.execute("SELECT pg_advisory_xact_lock(%s)", (_lock_key("migrate"),))
            await conn.execute(f"CREATE EXTENSION IF NOT EXISTS vector SCHEMA {c.extension_schema}")
            await conn.execute(f"CREATE SCHEMA IF NOT EXISTS {c.db_schema}")
            # Migrations build indexes (6 rebuilds every one): the memory of an index build.
            await conn.execute(
                "SELECT set_config('maintenance_work_mem', %s, true)",
                (f"{c.index_build_memory_mb}MB",),
            )
            await conn.execute(
                "CREATE TABLE IF NOT EXISTS schema_version("
                " version integer PRIMARY KEY, applied_at timestamptz NOT NULL DEFAULT now())"
            )
            current = await self._schema_version(conn)
            for version in range(current + 1, SCHEMA_VERSION + 1):
                await conn.execute(MIGRATIONS[version - 1])
                await conn.execute("INSERT INTO schema_version(version) VALUES (%s)", (version,))
                logger.info("schema migrated", extra={"schema": c.db_schema, "version": version})
            if current > SCHEMA_VERSION:
                logger.warning(
                    "schema is newer than this code",
                    extra={"schema": c.db_schema, "version": current, "known": SCHEMA_VERSION},
                )
            return current

    async def _schema_version(self, conn: _Conn) -> int:
        table = f"{self._config.db_schema}.schema_version"
        cur = await conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,))
        row = await cur.fetchone()
        if not row or not row[0]:
            return 0
        cur = await conn.execute(f"SELECT coalesce(max(version), 0) FROM {table}")
        row = await cur.fetchone()
        return int(row[0]) if row else 0

    async def warm(self) -> None:
        """Begin loading the local keyword indexes of the largest namespaces, as many as
        ``local_keyword_mb`` holds (a serving process; ``Runtime.warm``). Readiness waits
        up to ``local_warm_wait_s`` for those with a saved snapshot, which load in seconds;
        the others load in the background and are ranked in SQL until then, exactly as
        before (loading 1M chunks from the postings takes tens of seconds)."""
        if self.local_keywords is None:
            return
        try:
            rows = await self._fetch(
                "SELECT n.id, n.chunk_count, s.namespace_id IS NOT NULL, n.name FROM namespaces n"
                " LEFT JOIN index_snapshots s ON s.namespace_id = n.id AND s.kind = 'keywords'"
                " WHERE n.chunk_count >= %s ORDER BY n.chunk_count DESC LIMIT 1000",
                (self._config.local_keyword_min_chunks,),
                search=True,
            )
        except BackendUnavailable as exc:  # readiness reports the database; searches load
            logger.warning("cannot warm the keyword indexes", extra={"error": str(exc)})
            return
        await self.local_keywords.warm(
            [(int(r[0]), int(r[1]), bool(r[2])) for r in rows],
            wait_s=self._config.local_warm_wait_s,
        )
        await self._rehearse([(int(r[0]), str(r[3])) for r in rows if r[2]][:_REHEARSED])

    async def _rehearse(self, namespaces: Sequence[tuple[int, str]]) -> None:
        """One keyword, one vector and one hybrid search of each namespace loaded for
        readiness, so the first searches after ready do not pay for the pool's
        connections' first checks, their first statements and the first reads of the
        indexes: the first ``/search`` after ready at 1M chunks took 35-41 ms against a
        p99 of 19-20 ms."""
        local = self.local_keywords
        if local is None:
            return
        try:
            for ns_id, name in namespaces:
                index = local.get(ns_id)
                if index is None:
                    continue
                term = next(iter(index.vocab), None)
                if term is not None:
                    await self.keyword_search(name, term, 10, Filter())
                dim = index.graph.dim if index.graph is not None else 0
                if not dim and index.vectors is not None:
                    dim = index.vectors.matrix.shape[1]
                if dim:
                    query = np.zeros(dim, np.float32)
                    query[0] = 1.0
                    await self.vector_search(name, query, 10, Filter())
                    # and both at once, as /search asks for them (``hybrid_search``)
                    await self.hybrid_search(name, term or "", query, 10, Filter())
        except RagtideError as exc:  # a rehearsal, not a check: readiness asks the database
            logger.warning("could not rehearse a search", extra={"error": str(exc)})

    async def aclose(self) -> None:
        if self.local_keywords is not None:
            await self.local_keywords.aclose()
        pool, self._pool = self._pool, None
        search, self._search_pool = self._search_pool, None
        for each in (pool, search):
            if each is not None:
                await each.close(timeout=self._config.pool_timeout_s)

    @asynccontextmanager
    async def _connection(
        self, wait_s: float | None = None, *, search: bool = False
    ) -> AsyncIterator[_Conn]:
        if self._pool is None:
            raise BackendUnavailable("the document store is not started")
        pool = self._search_pool if search and self._search_pool is not None else self._pool
        try:
            async with asyncio.timeout(self._config.call_timeout_s):
                async with pool.connection(timeout=wait_s) as conn:
                    yield conn
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise _translate(exc, "the document store failed") from exc

    async def _fetch(
        self, sql: str, params: Any = None, *, search: bool = False
    ) -> list[tuple[Any, ...]]:
        async with self._connection(search=search) as conn:
            cur = await conn.execute(sql, params)
            return await cur.fetchall()

    async def _scoped(
        self, namespace: str, sql: str, params: dict[str, Any], *, search: bool = False
    ) -> list[tuple[Any, ...]]:
        """Rows of ``sql``, a statement scoped to ``namespace`` by its id (``NS_ID``).

        The id is a parameter so that the planner reads the namespace's partitions alone.
        It is cached by name: ids are never reused, so a namespace deleted (and perhaps
        created again) since its id was cached gives no row, and an empty answer is
        checked against the id the name has now (and asked again under it).
        """
        cached = self._ns_ids.get(namespace)
        ns_id = cached if cached is not None else await self._namespace_id(namespace, search)
        if ns_id is None:
            return []
        rows = await self._fetch(sql, params | {"ns_id": ns_id}, search=search)
        if rows or cached is None:
            return rows
        current = await self._namespace_id(namespace, search)
        if current is None or current == ns_id:
            return rows
        return await self._fetch(sql, params | {"ns_id": current}, search=search)

    async def _searched_ns_id(self, namespace: str) -> int | None:
        """The id of the namespace a search reads: cached by name, else asked; None if
        there is no such namespace."""
        cached = self._ns_ids.get(namespace)
        return cached if cached is not None else await self._namespace_id(namespace, True)

    async def _namespace_id(self, namespace: str, search: bool) -> int | None:
        rows = await self._fetch(
            "SELECT id FROM namespaces WHERE name = %s", (namespace,), search=search
        )
        if not rows:
            self._forget(namespace)
            return None
        if len(self._ns_ids) >= _NS_IDS_KEPT:
            self._ns_ids.clear()
        self._ns_ids[namespace] = ns_id = int(rows[0][0])
        return ns_id

    async def ping(self) -> None:
        # Readiness must answer within its own deadline, naming the store, rather than
        # wait the whole pool timeout for a connection that will not come.
        wait = min(1.0, self._config.pool_timeout_s)
        for search in (False, True) if self._search_pool is not None else (False,):
            async with self._connection(wait_s=wait, search=search) as conn:
                await conn.execute("SELECT 1")

    # --- namespaces ----------------------------------------------------------------------

    async def create_namespace(self, namespace: str) -> bool:
        rows = await self._fetch(
            "INSERT INTO namespaces(name, created_at) VALUES (%s, %s)"
            " ON CONFLICT (name) DO NOTHING RETURNING id",
            (namespace, time.time()),
        )
        return bool(rows)

    async def namespace_exists(self, namespace: str) -> bool:
        seen = self._confirmed.get(namespace)
        if seen is not None and time.monotonic() - seen < self._config.namespace_cache_s:
            return True  # every search asks: not a round trip each time
        if await self._fetch("SELECT 1 FROM namespaces WHERE name = %s", (namespace,)):
            if len(self._confirmed) >= _NS_IDS_KEPT:
                self._confirmed.clear()
            self._confirmed[namespace] = time.monotonic()
            return True
        self._forget(namespace)
        return False

    def _forget(self, namespace: str) -> None:
        """``namespace`` is gone (or may be): its cached id and existence with it."""
        self._ns_ids.pop(namespace, None)
        self._confirmed.pop(namespace, None)

    async def list_namespaces(self, prefix: str = "") -> list[str]:
        rows = await self._fetch(
            'SELECT name FROM namespaces WHERE starts_with(name, %s) ORDER BY name COLLATE "C"',
            (prefix,),
        )
        return [r[0] for r in rows]

    async def delete_namespace(self, namespace: str) -> bool:
        try:
            async with self._connection() as conn, conn.transaction():
                cur = await conn.execute(  # lock the row: writers of this namespace wait
                    "SELECT id FROM namespaces WHERE name = %s FOR UPDATE", (namespace,)
                )
                row = await cur.fetchone()
                if row is None:
                    return False
                async with conn.pipeline():
                    for statement in DELETE_NAMESPACE:
                        await conn.execute(statement, {"id": row[0]})
                return True
        finally:  # after the commit: a search meanwhile may have seen it still there
            self._forget(namespace)

    # --- tenants and keys (TenantStore) ----------------------------------------------------

    async def get_tenant(self, tenant: str) -> TenantRecord | None:
        rows = await self._fetch(f"SELECT {TENANT_COLUMNS} FROM tenants WHERE id = %s", (tenant,))
        return tenant_from_row(rows[0]) if rows else None

    async def list_tenants(self) -> list[TenantRecord]:
        rows = await self._fetch(f'SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id COLLATE "C"')
        return [tenant_from_row(r) for r in rows]

    async def put_tenant(
        self, tenant: str, config: Mapping[str, Any], webhook_secret: str
    ) -> tuple[TenantRecord, bool]:
        now = time.time()
        rows = await self._fetch(
            "INSERT INTO tenants(id, config, version, webhook_secret, created_at, updated_at)"
            " VALUES (%s, %s::jsonb, 1, %s, %s, %s) ON CONFLICT (id) DO UPDATE SET"
            " config = excluded.config, version = tenants.version + 1,"
            f" updated_at = excluded.updated_at RETURNING {TENANT_COLUMNS}",
            (tenant, json.dumps(dict(config)), webhook_secret, now, now),
        )
        record = tenant_from_row(rows[0])
        return record, record.version == 1

    async def delete_tenant(self, tenant: str) -> bool:
        async with self._connection() as conn, conn.transaction():
            await conn.execute("DELETE FROM api_keys WHERE tenant = %s", (tenant,))
            cur = await conn.execute("DELETE FROM tenants WHERE id = %s RETURNING 1", (tenant,))
            return await cur.fetchone() is not None

    async def add_key(self, key: ApiKeyRecord) -> None:
        await self._fetch(
            f"INSERT INTO api_keys({KEY_COLUMNS}) VALUES"
            " (%s, %s, %s, %s, %s::jsonb, %s::jsonb, %s, %s, %s, %s) RETURNING 1",
            key_to_row(key),
        )

    async def key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        rows = await self._fetch(f"SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = %s", (key_hash,))
        return key_from_row(rows[0]) if rows else None

    async def list_keys(self, tenant: str) -> list[ApiKeyRecord]:
        rows = await self._fetch(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant = %s ORDER BY created_at, id",
            (tenant,),
        )
        return [key_from_row(r) for r in rows]

    async def revoke_key(self, tenant: str, key_id: str, at: float) -> bool:
        rows = await self._fetch(
            "UPDATE api_keys SET revoked_at = %s"
            " WHERE tenant = %s AND id = %s AND revoked_at IS NULL RETURNING 1",
            (at, tenant, key_id),
        )
        return bool(rows)

    async def tenant_usage(self, tenant: str) -> TenantUsage:
        rows = await self._fetch(
            "SELECT count(DISTINCT n.id), count(d.id), coalesce(sum(d.chunks), 0),"
            " coalesce(sum(d.bytes), 0)"
            " FROM namespaces n LEFT JOIN documents d ON d.namespace_id = n.id"
            " WHERE n.tenant = %s",
            (tenant,),
        )
        return TenantUsage(*(int(v) for v in rows[0]))

    # --- documents -----------------------------------------------------------------------

    async def get_document(self, namespace: str, document_id: str) -> DocumentInfo | None:
        rows = await self._scoped(
            namespace,
            f"SELECT {DOCUMENT_COLUMNS} FROM documents"
            f" WHERE namespace_id = {NS_ID} AND id = %(doc)s",
            {"doc": document_id},
        )
        return document_from_row(rows[0]) if rows else None

    async def document_chunks(
        self,
        namespace: str,
        document_id: str,
        *,
        limit: int | None = None,
        after: int | None = None,
    ) -> list[Chunk]:
        rows = await self._scoped(
            namespace,
            "SELECT chunk_id, document_id, ordinal, text, title, headings, metadata FROM chunks"
            f" WHERE namespace_id = {NS_ID} AND document_id = %(doc)s"
            " AND (%(after)s::integer IS NULL OR ordinal > %(after)s) ORDER BY ordinal"
            " LIMIT %(limit)s",
            {"doc": document_id, "after": after, "limit": limit},
        )
        return [chunk_from_row(r) for r in rows]

    async def list_documents(
        self, namespace: str, *, limit: int | None = None, after: str | None = None
    ) -> list[DocumentInfo]:
        rows = await self._scoped(
            namespace,
            f"SELECT {DOCUMENT_COLUMNS} FROM documents WHERE namespace_id = {NS_ID}"
            ' AND (%(after)s::text IS NULL OR id COLLATE "C" > %(after)s)'
            ' ORDER BY id COLLATE "C" LIMIT %(limit)s',
            {"after": after, "limit": limit},
        )
        return [document_from_row(r) for r in rows]

    async def counts(self, namespace: str) -> tuple[int, int]:
        rows = await self._scoped(
            namespace,
            "SELECT count(*), coalesce(sum(chunks), 0) FROM documents"
            f" WHERE namespace_id = {NS_ID} HAVING count(*) > 0",
            {},
        )
        return (int(rows[0][0]), int(rows[0][1])) if rows else (0, 0)

    async def put_document(
        self,
        namespace: str,
        document: DocumentInfo,
        chunks: Sequence[Chunk],
        vectors: Vectors,
        embedder_id: str,
    ) -> str | None:
        return (await self.put_documents(namespace, [(document, chunks, vectors)], embedder_id))[0]

    async def put_documents(
        self, namespace: str, writes: Sequence[Write], embedder_id: str
    ) -> list[str | None]:
        """``put_document`` for many documents in one transaction (each one is created or
        replaced atomically, as they all are together); the previous hashes in order.

        Chunks and postings are COPYed; a batch costs a handful of round trips whatever its
        size. A document id repeated in ``writes`` starts a new transaction.
        """
        for _, chunks, vectors in writes:
            if len(chunks) != len(vectors):
                raise InvalidRequest("one vector per chunk is required")
        previous: list[str | None] = []
        run: list[Write] = []
        in_run: set[str] = set()
        for write in writes:
            if write[0].id in in_run:
                previous += await self._put_run(namespace, run, embedder_id)
                run, in_run = [], set()
            run.append(write)
            in_run.add(write[0].id)
        if run:
            previous += await self._put_run(namespace, run, embedder_id)
        return previous

    async def _put_run(
        self, namespace: str, run: Sequence[Write], embedder_id: str
    ) -> list[str | None]:
        count = sum(len(chunks) for _, chunks, _ in run)
        now = time.time()
        ids = [doc.id for doc, _, _ in run]
        async with self._connection() as conn:
            # Outside the write transaction (sequences are not transactional): the
            # namespace's id (if it exists) and average length for the impacts, and the
            # chunk ids.
            cur = await conn.execute(
                "SELECT n.id, CASE WHEN n.chunk_count > 0"
                " THEN n.token_count::float8 / n.chunk_count ELSE 0 END,"
                " ARRAY(SELECT nextval(pg_get_serial_sequence('chunks', 'id'))"
                "  FROM generate_series(1, %s))"
                " FROM (SELECT 1) one LEFT JOIN namespaces n ON n.name = %s",
                (count, namespace),
            )
            row = await cur.fetchone()
            if row is None:
                raise BackendUnavailable("the document store returned no row")
            ns_id, avgdl, chunk_ids = int(row[0] or 0), float(row[1] or 0), list(row[2])
            # The rows and the postings' COPY payload, in a thread: most of the
            # application's work (analysis), off the event loop.
            prepared, payload = await asyncio.to_thread(
                self._rows, ns_id, avgdl, chunk_ids, run, embedder_id
            )
            if prepared.dimension:
                await self._ensure_vector_index(prepared.dimension)
            async with conn.transaction():
                hashes, locked_id, generation = await self._replace(
                    conn, namespace, ids, now, prepared
                )
                if locked_id != ns_id:  # created just now (or deleted and created again)
                    prepared = prepared.in_namespace(locked_id)
                    payload = postings_copy(locked_id, prepared.postings)
                if prepared.chunks:
                    await self._copy(conn, COPY_CHUNKS, _CHUNK_TYPES, prepared.chunks)
                    async with conn.cursor().copy(_binary(COPY_POSTINGS)) as copy:
                        await copy.write(payload)
                    await self._count(conn, locked_id, prepared, embedder_id)
                    added = [row[0] for row in prepared.chunks]
                    log = {"ns_id": locked_id, "generation": generation, "ids": added}
                    await conn.execute(LOG_ADDED, log)
                await self._prune_log(conn, locked_id, generation)
        return [hashes.get(doc_id) for doc_id in ids]

    def _rows(
        self, ns_id: int, avgdl: float, chunk_ids: list[int], run: Sequence[Write], embedder: str
    ) -> tuple[Prepared, bytes]:
        prepared = prepare(ns_id, avgdl, chunk_ids, run, embedder, self._weights)
        return prepared, postings_copy(ns_id, prepared.postings)

    async def _replace(
        self, conn: _Conn, namespace: str, ids: list[str], now: float, prepared: Prepared
    ) -> tuple[dict[str, str], int, int]:
        """Lock the namespace, take the documents' chunks out and upsert the documents:
        their previous hashes, the namespace's id and the generation this write set."""
        async with conn.pipeline():
            locked = await conn.execute(LOCK_NAMESPACE, {"name": namespace, "now": now})
            # After the lock: writers of these ids have committed or not begun,
            # so of concurrent writers of one new id exactly one finds nothing.
            old = await conn.execute(
                "SELECT id, content_hash FROM documents"
                " WHERE namespace_id = (SELECT id FROM namespaces WHERE name = %s)"
                " AND id = ANY(%s::text[])",
                (namespace, ids),
            )
        row = await locked.fetchone()
        if row is None:
            raise BackendUnavailable("the document store returned no row")
        ns_id, generation = int(row[0]), int(row[1])
        hashes = {str(r[0]): str(r[1]) for r in await old.fetchall()}
        async with conn.pipeline():
            if hashes:
                replaced = {"ns_id": ns_id, "docs": sorted(hashes), "generation": generation}
                for statement in (LOG_DELETED, *DELETE_CHUNKS):
                    await conn.execute(statement, replaced)
            await conn.execute(UPSERT_DOCUMENTS, {"ns_id": ns_id} | prepared.documents)
            await self._notify(conn, ns_id, generation)
        return hashes, ns_id, generation

    async def _notify(self, conn: _Conn, ns_id: int, generation: int) -> None:
        """Tell the replicas (``LocalKeywords``) of the generation this write sets: sent
        when its transaction commits, not at all if it rolls back."""
        if self._config.local_notifications:
            note = f"{self._config.db_schema} {ns_id} {generation}"
            await conn.execute(NOTIFY, {"channel": CHANNEL, "note": note})

    async def _count(self, conn: _Conn, ns_id: int, prepared: Prepared, embedder_id: str) -> None:
        """Add the written chunks to the namespace's BM25 statistics."""
        terms = sorted(prepared.df)
        # One text each (terms hold no newline): psycopg quotes array elements one by one
        # in Python, ~0.1 ms per chunk for ~13 terms each.
        counts = ",".join(map(str, map(prepared.df.__getitem__, terms)))
        async with conn.pipeline():
            await conn.execute(
                UPSERT_TERMS, {"ns_id": ns_id, "terms": "\n".join(terms), "df": counts}
            )
            await conn.execute(
                "UPDATE namespaces SET chunk_count = chunk_count + %s,"
                " token_count = token_count + %s, embedder = %s WHERE id = %s",
                (len(prepared.chunks), prepared.tokens, embedder_id, ns_id),
            )

    async def _copy(
        self, conn: _Conn, statement: str, types: Sequence[str], rows: list[tuple[Any, ...]]
    ) -> None:
        """Binary COPY: vectors go as pgvector's binary form (no float to text and back)."""
        cursor = conn.cursor()
        if "vector" in types:
            if self._vector_oid is None:
                cur = await conn.execute("SELECT 'vector'::regtype::oid")
                self._vector_oid = int(await _one(cur))
            dumper = type("_VectorDumper", (_VectorDumper,), {"oid": self._vector_oid})
            cursor.adapters.register_dumper(np.ndarray, dumper)
            oids: list[int | str] = [self._vector_oid if t == "vector" else t for t in types]
        else:
            oids = list(types)
        async with cursor.copy(_binary(statement)) as copy:
            copy.set_types(oids)
            for row in rows:
                await copy.write_row(row)

    async def delete_document(self, namespace: str, document_id: str) -> bool:
        doc: dict[str, Any] = {"name": namespace, "doc": document_id, "docs": [document_id]}
        async with self._connection() as conn, conn.transaction():
            cur = await conn.execute(
                "UPDATE namespaces SET generation = generation + 1 WHERE name = %(name)s"
                " RETURNING id, generation",
                doc,
            )
            row = await cur.fetchone()
            if row is None:
                return False
            doc["ns_id"], doc["generation"] = row
            async with conn.pipeline():
                for statement in (LOG_DELETED, *DELETE_CHUNKS):
                    await conn.execute(statement, doc)
                cur = await conn.execute(
                    "DELETE FROM documents WHERE namespace_id = %(ns_id)s AND id = %(doc)s"
                    " RETURNING 1",
                    doc,
                )
            if await cur.fetchone() is None:
                raise psycopg.Rollback()  # nothing deleted: leave the generation alone
            await self._notify(conn, doc["ns_id"], doc["generation"])
            await self._prune_log(conn, doc["ns_id"], doc["generation"])
            return True
        return False  # rolled back

    async def _prune_log(self, conn: _Conn, ns_id: int, generation: int) -> None:
        """Every tenth of ``change_log_generations``, drop the changes older than that,
        but none a saved index of the namespace needs to catch up, unless older than
        ``change_log_max_generations``."""
        c = self._config
        kept = c.change_log_generations
        if generation % max(1, kept // 10) == 0 and generation > kept:
            floor = max(0, generation - max(kept, c.change_log_max_generations))
            params = {"ns_id": ns_id, "upto": generation - kept, "floor": floor}
            for statement in PRUNE_LOG:
                await conn.execute(statement, params)

    @asynccontextmanager
    async def bulk_load(self) -> AsyncIterator[None]:
        """Load a large corpus with the search indexes built after it, not row by row.

        Keeping an HNSW graph current costs ~2 ms of database CPU per chunk (most of a
        write); building it over the loaded rows costs a fraction of that. Likewise the
        keyword index ``postings_by_impact``: ~70 postings per chunk land all over it (one
        place per term), 60% of a write's database CPU at 10k chunks and growing with the
        table once it outgrows ``shared_buffers``; a sorted build afterwards costs a few
        percent of that. These indexes are dropped on entry and built (``CONCURRENTLY``)
        on exit, with ``index_build_memory_mb``. Meanwhile searches of every namespace are
        slower, never wrong: vector searches scan exactly, keyword searches read their
        terms' whole posting lists by one scan (in every process: see keyword_sql). Meant for
        the first load or a re-embedding, one loader at a time; a store that starts while
        no loader holds the bulk-load lock builds a missing keyword index (a loader that
        died).
        """
        c = self._config
        holder = await self._maintenance_connection_or_raise()
        try:
            # A sign for starting stores that a load is under way (not a queue: a second
            # loader goes on without it).
            key = _lock_key(f"{c.db_schema}.bulk_load")
            await holder.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            async with self._index_lock:
                self._deferring = True
                try:
                    dims = await self._vector_index_dimensions()
                    for dimension in dims:
                        await self._drop_index(f"chunks_halfvec_{dimension}", "chunks")
                    self._indexed -= set(dims)
                    await self._drop_index(*POSTINGS_INDEX[:2])
                except BaseException:
                    self._deferring = False
                    raise
            deferred = set(dims)
            try:
                yield
            finally:
                async with self._index_lock:
                    deferred |= self._deferred
                    self._deferring, self._deferred = False, set()
                    await self._create_index(*POSTINGS_INDEX)
                    for dimension in sorted(deferred):
                        await self._create_vector_index(dimension)
                        self._indexed.add(dimension)
        finally:
            # Unlocked before the close: a closed connection's backend lets its locks go
            # only as it exits, and a store starting meanwhile would still see a load.
            with contextlib.suppress(psycopg.Error):
                await holder.execute("SELECT pg_advisory_unlock_all()")
            await holder.close()

    async def _maintenance_connection_or_raise(self) -> _Conn:
        try:
            return await self._maintenance_connection()
        except (psycopg.Error, OSError) as exc:
            raise _translate(exc, "cannot connect to the document store") from exc

    async def _build_partitioned(self, conn: _Conn, name: str, table: str, definition: str) -> None:
        """``_create_index``'s build, its lock held: ``ON ONLY`` the table, then each
        partition's ``CONCURRENTLY``, attached."""
        c = self._config
        if await self._index_valid(conn, name):
            return
        await conn.execute(
            "SELECT set_config('maintenance_work_mem', %s, false)",
            (f"{c.index_build_memory_mb}MB",),
        )
        await conn.execute(f"CREATE INDEX IF NOT EXISTS {name} ON ONLY {table} {definition}")
        cur = await conn.execute(
            PARTITION_INDEXES, {"index": f"{c.db_schema}.{name}", "table": table}
        )
        for partition, attached, valid in await cur.fetchall():
            if attached is not None and valid:
                continue  # built before an interruption
            child = _partition_index(name, table, partition)
            await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {child}")
            await conn.execute(f"CREATE INDEX CONCURRENTLY {child} ON {partition} {definition}")
            await conn.execute(f"ALTER INDEX {name} ATTACH PARTITION {child}")
        logger.info("index created", extra={"index": name})

    async def _index_valid(self, conn: _Conn, name: str) -> bool:
        """Whether this schema's index ``name`` exists and is valid (a partitioned one is
        once every partition's index is attached)."""
        cur = await conn.execute(
            "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
            (f"{self._config.db_schema}.{name}",),
        )
        row = await cur.fetchone()
        return row is not None and bool(row[0])

    async def _postings_index_lost(self, conn: _Conn) -> bool:
        """Whether ``postings_by_impact`` is missing (or invalid) with no loader holding the
        bulk-load lock: a bulk load that dropped it died before its end."""
        if await self._index_valid(conn, POSTINGS_INDEX[0]):
            return False
        key = _lock_key(f"{self._config.db_schema}.bulk_load")
        cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
        if not await _one(cur):
            return False  # a bulk load is under way: it builds the index at its end
        await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        return True

    async def _vector_index_dimensions(self) -> list[int]:
        rows = await self._fetch(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s"
            " AND indexname ~ '^chunks_halfvec_[0-9]+$'",
            (self._config.db_schema,),
        )
        return sorted(int(r[0].rsplit("_", 1)[1]) for r in rows)

    async def _drop_index(self, name: str, table: str) -> None:
        """Drop the partitioned index ``name`` of ``table`` and its partitions' indexes.

        A partitioned index cannot be dropped ``CONCURRENTLY``: the drop takes an exclusive
        lock on the table for a moment (it waits for the statements in flight, and new
        ones wait for it). Partitions' indexes an interrupted build left unattached go too,
        concurrently (writes would keep them current)."""
        c = self._config
        try:
            async with await self._maintenance_connection() as conn:
                await conn.execute(f"DROP INDEX IF EXISTS {name}")
                cur = await conn.execute(
                    PARTITION_INDEXES, {"index": f"{c.db_schema}.{name}", "table": table}
                )
                for partition, _, _ in await cur.fetchall():
                    child = _partition_index(name, table, partition)
                    await conn.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {child}")
        except (psycopg.Error, OSError) as exc:
            raise _translate(exc, f"cannot drop the index {name}") from exc

    async def _ensure_vector_index(self, dimension: int) -> None:
        if self._deferring and dimension <= HNSW_MAX_DIMS:
            self._deferred.add(dimension)  # built when the bulk load ends
            return
        if dimension in self._indexed:
            return
        if dimension > HNSW_MAX_DIMS:
            logger.warning("no HNSW index beyond 4000 dimensions", extra={"dims": dimension})
            self._indexed.add(dimension)
            return
        async with self._index_lock:
            if dimension not in self._indexed:
                await self._create_vector_index(dimension)
                self._indexed.add(dimension)

    async def _create_vector_index(self, dimension: int) -> None:
        c = self._config
        await self._create_index(
            f"chunks_halfvec_{dimension}",
            "chunks",
            f"USING hnsw ((embedding::halfvec({dimension})) halfvec_cosine_ops)"
            f" WITH (m = {c.hnsw_m}, ef_construction = {c.hnsw_ef_construction})"
            f" WHERE vector_dims(embedding) = {dimension}",
        )

    async def _create_index(self, name: str, table: str, definition: str) -> None:
        """Build index ``name`` on the partitioned ``table`` (``definition``: what follows
        ``ON table``) unless it is valid or another process builds it.

        ``CONCURRENTLY``, so that the build does not block the writers of every namespace.
        PostgreSQL builds no partitioned index concurrently, so the index is made ``ON
        ONLY`` the table (empty, invalid), then each partition's is built ``CONCURRENTLY``
        and attached to it: it is valid once every partition's is (a build that was
        interrupted resumes with the partitions left). A concurrent build cannot run in a
        transaction, so the builder holds a session advisory lock. Waiting for that lock
        would deadlock with the build (which waits for every open transaction), so a
        second builder only tries it, and leaves the work to the first.
        """
        c = self._config
        try:
            async with asyncio.timeout(c.connect_timeout_s + c.migration_timeout_ms / 1000):
                async with await self._maintenance_connection() as conn:
                    key = _lock_key(f"{c.db_schema}.{name}")
                    cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
                    if not await _one(cur):
                        return  # being built right now; searches work without it meanwhile
                    try:
                        await self._build_partitioned(conn, name, table, definition)
                    finally:
                        # Unlocked, not left to the close: a closed connection's backend
                        # releases its locks only as it exits, and a build asked for just
                        # after would take this one for still under way and skip it.
                        with contextlib.suppress(psycopg.Error):  # the build's error wins
                            await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))
        except (psycopg.Error, OSError, TimeoutError) as exc:
            raise _translate(exc, f"cannot create the index {name}") from exc

    # --- search --------------------------------------------------------------------------

    async def keyword_search(
        self, namespace: str, text: str, limit: int, filter: Filter
    ) -> list[Hit]:
        terms = self._analyzer.query_terms(text)
        if not terms or limit <= 0:
            return []
        where, params = filter_sql(filter)
        c = self._config
        params |= {
            "ns": namespace,
            "terms": terms,
            "limit": limit,
            "k1": c.bm25_k1,
            "b": c.bm25_b,
            "wt": c.title_weight,
            "wh": c.headings_weight,
            "wx": c.text_weight,
        }
        if self.local_keywords is not None:
            hits = await self._local_search(
                "keyword", namespace, lambda i, k: i.top(terms, k), limit, where, params
            )
            if hits is not None:
                return hits
        _RANKED["keyword", "database"].inc()
        params["rescore"] = max(c.keyword_rescore, limit)
        params["floor"] = 0.0
        # Filtered, or the keyword index is being rebuilt (bulk_load): the one-scan path.
        candidates = 0 if where or self._deferring else c.keyword_candidates
        while True:
            params["candidates"] = candidates
            sql = keyword_sql(where, candidates=candidates)
            rows = await self._scoped(namespace, sql, params, search=True)
            if not candidates or _keyword_top_is_exact(rows, limit):
                return [Hit(chunk_from_row(r), float(r[7])) for r in rows]
            if not c.keyword_exact_top:
                rows = await self._keyword_reach(namespace, params, rows, limit)
                return [Hit(chunk_from_row(r), float(r[7])) for r in rows]
            # A chunk outside the heads might beat the limit-th hit: read deeper, up to
            # every posting (each step reads 8x as many).
            self.keyword_escalations += 1
            candidates = candidates * 8 if candidates * 8 < _EXACT_BEYOND else 0

    async def _local_search(
        self,
        kind: str,
        namespace: str,
        rank: Callable[[LocalIndex, int], tuple[list[int], list[float] | None] | None],
        limit: int,
        where: str,
        params: dict[str, Any],
    ) -> list[Hit] | None:
        """The hits ``rank`` orders by the replica's own index (``_pg_local``), read by id,
        or None when it has none at the namespace's generation yet, or ``rank`` cannot use
        it (SQL answers then).

        A filter (``where``) is checked by the database on the ranked chunks: the first
        ``limit`` it admits are the filtered top-k whenever the ranking went that deep.
        When it admits fewer, the ranking goes 8x deeper, up to ``_FILTERED_DEPTH``; a
        filter narrower than that is left to SQL."""
        local = self.local_keywords
        assert local is not None
        ns_id = await self._searched_ns_id(namespace)
        if ns_id is None:
            return None
        depth = max(4 * limit, _FILTERED_FIRST) if where else limit
        index, caught_up = await local.current(ns_id), False
        while index is not None:
            ranked = await asyncio.to_thread(rank, index, depth)
            if ranked is None:
                return None
            ids, scores = ranked
            # Without scores: candidates of a vector graph, ordered by the database exactly.
            sql = rows_sql(where, by_vector=scores is None)
            values = params | {"ns_id": ns_id, "ids": ids, "limit": limit}
            rows, index = await self._read_ranked(
                namespace, ns_id, index, sql, values, caught_up=caught_up
            )
            if rows is None:
                caught_up = True
                continue
            if scores is None:
                hits = [Hit(chunk_from_row(r), float(r[9])) for r in rows if r[8] is not None]
            else:
                score = dict(zip(ids, scores, strict=True))
                hits = [Hit(chunk_from_row(r), score[int(r[8])]) for r in rows if r[8] is not None]
            if len(hits) < limit and len(ids) >= depth:  # admitted too few of those ranked
                if depth >= _FILTERED_DEPTH:
                    return None
                depth *= 8
                continue
            if kind == "keyword":
                self.local_keyword_searches += 1
            else:
                self.local_vector_searches += 1
            _RANKED[kind, "replica"].inc()
            return hits
        return None

    async def _read_ranked(
        self,
        namespace: str,
        ns_id: int,
        index: LocalIndex,
        sql: str,
        values: dict[str, Any],
        *,
        caught_up: bool = False,
    ) -> tuple[list[tuple[Any, ...]] | None, LocalIndex | None]:
        """The rows of ``sql``, which reads what ``index`` ranked, as of its generation:
        (rows, index) when the database is at it; (None, the index caught up) when it is
        past it, to rank again; (None, None) when the namespace is gone or the database is
        behind the index (SQL answers then).

        ``caught_up``: the search caught the index up once already, so it holds every
        write committed before the search began; writes the database shows past it came
        while the search ran, and the rows are served as ranked (a deleted chunk's row is
        missing). Under a stream of writes a search no longer chases the newest generation
        catch-up after catch-up; a slow catch-up made each search wait for several, and a
        replica at 50 searches/s fell seconds behind."""
        local = self.local_keywords
        assert local is not None
        rows = await self._fetch(sql, values, search=True)
        if not rows:  # the namespace is gone (perhaps made again under a new id)
            local.drop(ns_id)
            self._forget(namespace)
            return None, None
        generation = int(rows[0][7])
        if generation < index.generation:  # a replica behind what the index has seen
            return None, None
        if generation > index.generation and not caught_up:
            return None, await local.catch_up(ns_id, generation)
        return rows, index

    async def hybrid_search(
        self, namespace: str, text: str, vector: Vectors, limit: int, filter: Filter
    ) -> tuple[list[Hit], list[Hit]] | None:
        """Both lists of a hybrid search (``HybridSearcher``), ranked by the replica's own
        index and read in one statement (``BOTH_SQL``): a chunk in both is read once, and
        the graph's candidates are ordered by their exact similarity as ``vector_search``
        orders them. None (each list asked on its own) with a filter, without a local index
        at the namespace's generation, or when it holds no vectors of the query's size."""
        local = self.local_keywords
        query = np.asarray(vector, dtype=np.float32).ravel()
        if local is None or limit <= 0 or not len(query) or not np.isfinite(query).all():
            return None
        if filter_sql(filter)[0]:
            return None
        ns_id = await self._searched_ns_id(namespace)
        if ns_id is None:
            return None
        terms = self._analyzer.query_terms(text)
        index, caught_up = await local.current(ns_id), False
        while index is not None:
            ranked = await asyncio.to_thread(_both_ranked, index, terms, query, limit)
            if ranked is None:
                return None
            (words, scores), (near, similar) = ranked
            graphed = near if similar is None else []  # else ranked exactly already
            values = {
                "ns_id": ns_id,
                "words": words if graphed else [*words, *near],
                "near": graphed,
                "q": vector_text(query),
                "limit": limit,
            }
            rows, index = await self._read_ranked(
                namespace, ns_id, index, BOTH_SQL, values, caught_up=caught_up
            )
            if rows is None:
                caught_up = True
                continue
            read = {int(r[8]): r for r in rows if r[8] is not None}
            keyword = _read_hits(read, words, scores)
            if similar is None:  # a graph's candidates: the database's first by similarity
                found = sorted(
                    (r for r in read.values() if r[9] is not None),
                    key=lambda r: (-float(r[9]), int(r[8])),
                )
                dense = [Hit(chunk_from_row(r), float(r[9])) for r in found]
            else:
                dense = _read_hits(read, near, similar)
            self.local_keyword_searches += 1
            self.local_vector_searches += 1
            _RANKED["keyword", "replica"].inc()
            _RANKED["vector", "replica"].inc()
            return keyword, dense
        return None

    async def _keyword_reach(
        self, namespace: str, params: dict[str, Any], rows: list[tuple[Any, ...]], limit: int
    ) -> list[tuple[Any, ...]]:
        """The hits of a read by count (``rows``) merged with those of a read by score.

        Heads of a fixed count lose as the namespace grows: the lists lengthen, the heads
        hold a smaller share of them, and the chunks best over all the terms, which are
        seldom the best for any one term, are past every head or among many with a
        similar part of the score (at 310k SciFact chunks a third of the exact top 10 was
        missed that way, nine in ten of them in the heads but not among the candidates).
        A chunk of the top ``limit`` scores at least the ``limit``-th hit found, so its
        best term gives at least that over the number of terms: reading each term down to
        the ``limit``-th score over ``keyword_reach`` finds every such chunk whose best
        term gives that share. The floor comes from the data, so the read deepens as the
        namespace grows (capped at ``keyword_reach_max`` per term), and rare terms are read
        deeper than common ones. Deeper heads hold more chunks with a similar part of the
        score, so the chunks scored exactly grow with them (``keyword_reach_share``); both
        reads' hits are scored exactly and merged."""
        c = self._config
        if c.keyword_reach <= 0 or len(rows) < limit:
            return rows
        floor = float(rows[limit - 1][7]) / c.keyword_reach
        if floor >= float(rows[0][11]):
            return rows  # every cut term was read below the floor already
        self.keyword_reads_by_score += 1
        deeper = params | {
            "candidates": c.keyword_reach_max,
            "floor": floor,
            "rescore": max(c.keyword_reach_rescore, limit),
            "share": c.keyword_reach_share,
        }
        sql = keyword_sql("", candidates=c.keyword_reach_max, floor=True)
        more = await self._scoped(namespace, sql, deeper, search=True)
        best = {int(r[10]): r for r in (*rows, *more)}  # the same exact score in both
        return sorted(best.values(), key=lambda r: (-float(r[7]), int(r[10])))[:limit]

    async def vector_search(
        self, namespace: str, vector: Vectors, limit: int, filter: Filter
    ) -> list[Hit]:
        query = np.asarray(vector, dtype=np.float32).ravel()
        if limit <= 0 or not len(query) or not np.isfinite(query).all():
            return []
        dims = len(query)
        where, params = filter_sql(filter)
        # Candidates beyond the limit: half precision may swap neighbours at the edge.
        depth = max(2 * limit, limit + 10)
        if self.local_keywords is not None:
            exact = params | {"q": vector_text(query)}  # a graph's candidates are ordered by it
            hits = await self._local_search(
                "vector", namespace, lambda i, k: i.nearest(query, k), limit, where, exact
            )
            if hits is not None:
                return hits
        _RANKED["vector", "database"].inc()
        text = vector_text(query)
        params |= {"ns": namespace, "q": text, "qh": text, "limit": limit, "depth": depth}
        rows: list[tuple[Any, ...]] = []
        if dims <= HNSW_MAX_DIMS:
            sql = vector_sql(dims, where, indexed=True)
            rows = await self._scoped(namespace, sql, params, search=True)
        if len(rows) < limit:  # few matches, or the filter outran the iterative scan
            self.exact_scans += 1
            sql = vector_sql(dims, where, indexed=False)
            rows = await self._scoped(namespace, sql, params, search=True)
        return [Hit(chunk_from_row(r), float(r[7])) for r in rows]


def _both_ranked(
    index: LocalIndex, terms: list[str], query: Any, limit: int
) -> tuple[tuple[list[int], list[float]], tuple[list[int], list[float] | None]] | None:
    """The keyword top ``limit`` and the nearest ``limit`` (or a graph's candidates for
    them) of ``index``, in one thread hop; None if it holds no vectors of the query's
    size."""
    nearest = index.nearest(query, limit)
    if nearest is None:
        return None
    return (index.top(terms, limit) if terms else ([], [])), nearest


def _read_hits(read: dict[int, tuple[Any, ...]], ids: list[int], scores: list[float]) -> list[Hit]:
    """The hits of the ranked ``ids`` (with their ``scores``) that were ``read``, in order."""
    return [Hit(chunk_from_row(read[i]), s) for i, s in zip(ids, scores, strict=True) if i in read]


# A filtered search ranks this many chunks locally first (or 4x the limit), then 8x more
# while the filter admits too few, up to the second: past that, SQL.
_FILTERED_FIRST = 100
_FILTERED_DEPTH = 10_000
_RANKED = {
    (kind, where): POSTGRES_SEARCHES.labels(kind, where)
    for kind in ("keyword", "vector")
    for where in ("replica", "database")
}
_PARTITIONED_SINCE = 6  # the migration that partitions the tables
_NS_IDS_KEPT = 100_000  # namespace ids cached by name (~100 bytes each)
_REHEARSED = 8  # the largest namespaces loaded for readiness that a search rehearses
_EXACT_BEYOND = 100_000  # postings per term past which reading deeper is the exact scan


class _Freshness:
    """The pool's check of a connection before it is lent: a round trip
    (``check_connection``) for one idle ``idle_s`` or more, none for one returned sooner,
    which has just worked. A server that went away since is found by the next statement
    instead (a 503 ``backend_unavailable``, and the pool drops the broken connection);
    the idle connections of an outage of more than ``idle_s`` are checked as before."""

    def __init__(self, idle_s: float) -> None:
        self._idle_s = idle_s
        self._returned: weakref.WeakKeyDictionary[_Conn, float] = weakref.WeakKeyDictionary()

    async def check(self, conn: _Conn) -> None:
        returned = self._returned.get(conn)
        if returned is None or time.monotonic() - returned >= self._idle_s:
            await AsyncConnectionPool.check_connection(conn)

    async def returned(self, conn: _Conn) -> None:
        """The pool's ``reset``: ``conn`` is back, idle and working."""
        self._returned[conn] = time.monotonic()


async def _configure(conn: _Conn) -> None:
    """A pooled connection's setup: jsonb columns (a chunk's headings and metadata, two in
    each row a search reads) decoded by orjson, not the standard library's json."""
    set_json_loads(orjson.loads, conn)


def _keyword_top_is_exact(rows: list[tuple[Any, ...]], limit: int) -> bool:
    """Whether no chunk outside the heads can beat the ``limit``-th hit (see keyword_sql):
    always when no term was cut; else the page must be full and its last score at least
    the bound. Impacts order postings by the average length at their write, scores use
    today's: the bound holds as long as the average has not drifted much since."""
    if not rows:
        return True  # no posting of any term: every list was read whole
    cut, bound = int(rows[0][8]), float(rows[0][9])
    return cut == 0 or (len(rows) >= limit and float(rows[-1][7]) >= bound)


def _partition_index(name: str, table: str, partition: str) -> str:
    """The name of ``partition``'s index of the partitioned index ``name`` of ``table``:
    ``postings_by_impact`` -> ``postings_p3_by_impact``."""
    return partition + name.removeprefix(table)


def _binary(copy_statement: str) -> str:
    return copy_statement.replace("FROM STDIN", "FROM STDIN (FORMAT BINARY)")


def _lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for ``name``."""
    digest = hashlib.blake2b(f"ragtide:{name}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


async def _one(cur: psycopg.AsyncCursor[TupleRow]) -> Any:
    row = await cur.fetchone()
    if row is None:
        raise BackendUnavailable("the document store returned no row")
    return row[0]


def _translate(exc: BaseException, what: str) -> RagtideError:
    if isinstance(exc, psycopg.errors.DataError):
        return InvalidRequest(f"the document store rejected the data: {_first_line(exc)}")
    if isinstance(exc, TimeoutError):
        return BackendUnavailable(f"{what}: no answer in time")
    return BackendUnavailable(f"{what}: {_first_line(exc)}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
