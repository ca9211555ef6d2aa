"""Replica-local keyword indexes for the PostgreSQL store: BM25 top-k off the database.

In SQL, a keyword search reads postings of every query term on the one shared server, so
the database's CPU per search grows with the namespace and adding API replicas adds no
keyword capacity. Here each replica holds the namespaces it serves as in-memory
``bm25.Postings`` and ranks them with ``wand.top_k``, the embedded store's exact MaxScore;
the database only returns the rows of the ``limit`` hits, by primary key, and in the same
statement the namespace's ``generation``, which every write bumps.

**Kept current from the change log.** Every write records the chunks it added and took
out in ``chunk_changes`` at the generation it set (migration 7). When a search sees a
generation newer than its index, the index catches up: one ``REPEATABLE READ`` snapshot
reads the changes since and the postings of the chunks added, and the next snapshot of
the postings adds and removes them (``Postings.add_flat`` / ``remove``, a reader keeps the
one it began with). The search then runs again, so a search never returns less than what
was committed when it began. One catch-up runs per namespace at a time; the searches
that want it wait for it. A catch-up that does not end with as many live chunks as the
namespace counts (a writer that logs nothing, say an older version in a rolling update)
drops the index, and the namespace is loaded again whole.

**Loaded in the background.** A namespace's first search on a replica is answered in SQL
and starts the load (one ``REPEATABLE READ`` snapshot: the chunk ids, then every term's
postings aggregated into one row per term, parsed in a thread batch by batch), so a
replica never waits for it; namespaces under ``min_chunks`` stay in SQL. Indexes are
dropped least recently used first beyond ``budget_bytes``. Statistics are the namespace's
live chunks', as in SQL and the SQLite store, so the hits and their scores are the exact
top-k of the unweighted BM25 (SQL's impact-ordered reads are approximate beyond them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from ragtide.builtin import wand
from ragtide.builtin.bm25 import Postings, Segment

__all__ = ["ROWS", "LocalIndex", "LocalKeywords"]

logger = logging.getLogger(__name__)

_I64 = npt.NDArray[np.int64]
_Conn = psycopg.AsyncConnection[Any]
Connect = Callable[[], Awaitable[_Conn]]

# The hits' rows and, in the same snapshot, the namespace's generation: one row with
# NULL chunk columns when no hit is found (or there was none), no row when the namespace
# is gone.
ROWS = (
    "SELECT c.chunk_id, c.document_id, c.ordinal, c.text, c.title, c.headings, c.metadata,"
    " n.generation, c.id FROM namespaces n LEFT JOIN chunks c"
    " ON c.namespace_id = %(ns_id)s::integer AND c.id = ANY(%(ids)s::int8[])"
    " WHERE n.id = %(ns_id)s::integer"
)
_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
_NAMESPACE = "SELECT generation, chunk_count FROM namespaces WHERE id = %(ns_id)s::integer"
_CHUNK_IDS = (
    "SELECT coalesce(string_agg(int8send(id), ''::bytea ORDER BY id), ''::bytea)"
    " FROM chunks WHERE namespace_id = %(ns_id)s::integer"
)
# One row per term: its chunks ascending and their frequencies (the columns' counts
# summed: the unweighted BM25 this index serves), big-endian.
_POSTINGS = (
    "SELECT term, string_agg(int8send(chunk), ''::bytea ORDER BY chunk),"
    " string_agg(int4send(tf_title + tf_headings + tf_text), ''::bytea ORDER BY chunk)"
    " FROM postings WHERE namespace_id = %(ns_id)s::integer{only} GROUP BY term"
)
_CHANGES = (
    "SELECT chunk, added FROM chunk_changes WHERE namespace_id = %(ns_id)s::integer"
    " AND generation > %(since)s"
)
_CHANGED = (
    "SELECT count(*) FROM chunk_changes WHERE namespace_id = %(ns_id)s::integer"
    " AND generation > %(since)s"
)
_BATCH = 20_000  # terms parsed per hop to a thread while loading
_RETRY_S = 60.0  # a namespace too small (or a load that failed) is looked at again after


class Stale(Exception):
    """The change log does not account for the namespace's chunks: load it again."""


@dataclass(frozen=True, slots=True)
class LocalIndex:
    """One namespace's postings at ``generation``: position ``i`` is chunk ``ids[i]``.

    ``vocab`` (term -> id) is shared by a namespace's successive indexes and only grows,
    so an older index reading it finds no postings for a newer term.
    """

    ns_id: int
    generation: int
    postings: Postings
    ids: _I64
    vocab: dict[str, int]

    @property
    def nbytes(self) -> int:
        p = self.postings
        arrays = sum(s.chunk.nbytes + s.tf.nbytes + s.start.nbytes for s in p.segments)
        return arrays + p.lengths.nbytes + self.ids.nbytes + 100 * len(self.vocab)

    def top(self, terms: Sequence[str], k: int) -> tuple[list[int], list[float]]:
        """Chunk ids and BM25 scores of the best ``k`` chunks for ``terms``, best first."""
        query = [self.vocab[t] for t in dict.fromkeys(terms) if t in self.vocab]
        positions, scores = wand.top_k(self.postings, query, k)
        return self.ids[positions].tolist(), scores.tolist()


class LocalKeywords:
    """The local indexes of one store: loads, catch-ups and the memory budget."""

    def __init__(
        self,
        connect: Connect,
        *,
        k1: float,
        b: float,
        budget_bytes: int,
        min_chunks: int,
    ) -> None:
        self._connect = connect
        self._k1, self._b = k1, b
        self._budget = budget_bytes
        self._min_chunks = min_chunks
        self._indexes: OrderedDict[int, LocalIndex] = OrderedDict()  # least recent first
        self._tasks: dict[int, asyncio.Task[Any]] = {}  # a load or a catch-up per namespace
        self._retry_at: dict[int, float] = {}
        self.loads = 0  # namespaces loaded whole
        self.catch_ups = 0  # indexes brought up to a newer generation from the log

    def get(self, ns_id: int) -> LocalIndex | None:
        """The namespace's index, or None after starting its load (if it should have one)."""
        index = self._indexes.get(ns_id)
        if index is not None:
            self._indexes.move_to_end(ns_id)
            return index
        if ns_id not in self._tasks and time.monotonic() >= self._retry_at.get(ns_id, 0.0):
            self._start(ns_id, self._load(ns_id))
        return None

    def drop(self, ns_id: int) -> None:
        self._indexes.pop(ns_id, None)

    async def catch_up(self, ns_id: int, generation: int) -> LocalIndex | None:
        """The namespace's index at ``generation`` or newer, or None if it has none (then
        a load may be under way)."""
        index = self._indexes.get(ns_id)
        if index is None:
            return None
        if index.generation >= generation:
            return index
        task = self._tasks.get(ns_id)
        if task is None:
            task = self._start(ns_id, self._catch_up(index))
        with contextlib.suppress(Exception):
            await asyncio.shield(task)
        index = self._indexes.get(ns_id)
        return index if index is not None and index.generation >= generation else None

    async def settle(self) -> None:
        """Wait for the loads and catch-ups under way (a warm-up, or a test) to end."""
        while self._tasks:
            await asyncio.gather(*self._tasks.values(), return_exceptions=True)

    async def aclose(self) -> None:
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        self._indexes.clear()

    # --- loading -------------------------------------------------------------------------

    def _start(self, ns_id: int, work: Awaitable[None]) -> asyncio.Task[Any]:
        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Stale as exc:  # the next search starts a load
                self._indexes.pop(ns_id, None)
                why = {"namespace_id": ns_id, "why": str(exc)}
                logger.info("local keyword index stale", extra=why)
            except Exception as exc:  # the searches go on in SQL; log, retry later
                self._indexes.pop(ns_id, None)
                self._retry_at[ns_id] = time.monotonic() + _RETRY_S
                logger.warning(
                    "local keyword index failed", extra={"namespace_id": ns_id, "error": str(exc)}
                )
            finally:
                self._tasks.pop(ns_id, None)

        task = asyncio.create_task(run())
        self._tasks[ns_id] = task
        return task

    async def _load(self, ns_id: int) -> None:
        began = time.perf_counter()
        async with await self._connect() as conn, conn.transaction():
            await conn.execute(_SNAPSHOT)
            head = await (await conn.execute(_NAMESPACE, {"ns_id": ns_id})).fetchone()
            if head is None:
                return
            generation, count = int(head[0]), int(head[1])
            if count < self._min_chunks or count * _BYTES_PER_CHUNK > self._budget:
                self._retry_at[ns_id] = time.monotonic() + _RETRY_S
                return
            blob = await (await conn.execute(_CHUNK_IDS, {"ns_id": ns_id})).fetchone()
            ids = np.frombuffer(blob[0] if blob else b"", ">i8").astype(np.int64)
            vocab: dict[str, int] = {}
            parts = await self._postings(conn, ns_id, vocab, ids, "", {})
        postings = await asyncio.to_thread(self._build, parts, ids)
        self._keep(LocalIndex(ns_id, generation, postings, ids, vocab))
        self.loads += 1
        logger.info(
            "local keyword index loaded",
            extra={
                "namespace_id": ns_id,
                "chunks": len(ids),
                "seconds": round(time.perf_counter() - began, 3),
            },
        )

    async def _postings(
        self,
        conn: _Conn,
        ns_id: int,
        vocab: dict[str, int],
        ids: _I64,
        only: str,
        params: dict[str, Any],
    ) -> list[tuple[npt.NDArray[np.uint32], _I64, npt.NDArray[np.uint16]]]:
        """(term id, position in ``ids``, tf) of the namespace's postings, batch by batch
        (a server-side cursor; the parsing in a thread)."""
        parts = []
        sql = _POSTINGS.format(only=only)
        async with conn.cursor(name="ragtide_local_postings") as cur:
            await cur.execute(sql, {"ns_id": ns_id} | params)
            while rows := await cur.fetchmany(_BATCH):
                parts.append(await asyncio.to_thread(_parse, rows, vocab, ids))
        return parts

    def _build(
        self,
        parts: list[tuple[npt.NDArray[np.uint32], _I64, npt.NDArray[np.uint16]]],
        ids: _I64,
    ) -> Postings:
        terms, positions, tfs = _joined(parts)
        n = len(ids)
        segment = Segment.build(terms, positions.astype(np.int32), tfs)
        lengths = np.bincount(positions, weights=tfs, minlength=n).astype(np.float32)
        total = float(lengths.sum(dtype=np.float64))
        segments = (segment,) if len(segment) else ()
        return Postings(segments, lengths, None, n, n, total, self._k1, self._b, [n])

    async def _catch_up(self, index: LocalIndex) -> None:
        ns_id, since = index.ns_id, index.generation
        params = {"ns_id": ns_id, "since": since}
        async with await self._connect() as conn, conn.transaction():
            await conn.execute(_SNAPSHOT)
            head = await (await conn.execute(_NAMESPACE, params)).fetchone()
            if head is None:
                self._indexes.pop(ns_id, None)
                return
            generation, count = int(head[0]), int(head[1])
            changed = await (await conn.execute(_CHANGED, params)).fetchone()
            if changed is not None and int(changed[0]) > max(1000, index.postings.live // 4):
                raise Stale("more changed than a catch-up is worth")
            changes = await (await conn.execute(_CHANGES, params)).fetchall()
            added = {int(c) for c, was_added in changes if was_added}
            removed = {int(c) for c, was_added in changes if not was_added}
            new = np.array(sorted(added - removed), np.int64)
            parts = []
            if len(new):
                only = " AND chunk = ANY(%(new)s::int8[])"
                values = {"new": new.tolist()}
                parts = await self._postings(conn, ns_id, index.vocab, new, only, values)
        gone = np.array(sorted(removed), np.int64)
        caught = await asyncio.to_thread(self._apply, index, generation, new, gone, parts)
        if caught.postings.live != count:
            raise Stale(f"{caught.postings.live} chunks indexed, {count} in the namespace")
        self._keep(caught)
        self.catch_ups += 1

    def _apply(
        self,
        index: LocalIndex,
        generation: int,
        new: _I64,
        gone: _I64,
        parts: list[tuple[npt.NDArray[np.uint32], _I64, npt.NDArray[np.uint16]]],
    ) -> LocalIndex:
        postings, ids = index.postings, index.ids
        if len(gone):
            postings = postings.remove(np.flatnonzero(np.isin(ids, gone)))
        if len(new):
            terms, positions, tfs = _joined(parts)
            order = np.lexsort((terms, positions))  # chunk-major, as add_flat takes them
            counts = np.bincount(positions, minlength=len(new)).astype(np.int64)
            postings = postings.add_flat(terms[order], tfs[order], counts)
            ids = np.concatenate((ids, new))
        if postings.dead > postings.live:
            postings, keep = postings.compact()
            ids = ids[keep]
        return LocalIndex(index.ns_id, generation, postings, ids, index.vocab)

    def _keep(self, index: LocalIndex) -> None:
        self._indexes[index.ns_id] = index
        self._indexes.move_to_end(index.ns_id)
        self._retry_at.pop(index.ns_id, None)
        total = sum(i.nbytes for i in self._indexes.values())
        while total > self._budget and self._indexes:
            _, evicted = self._indexes.popitem(last=False)
            total -= evicted.nbytes


# A load is not started when the namespace's chunks would take more than the budget:
# ~70 postings a chunk (6 bytes each) and its length and id.
_BYTES_PER_CHUNK = 440


def _parse(
    rows: list[tuple[Any, ...]], vocab: dict[str, int], ids: _I64
) -> tuple[npt.NDArray[np.uint32], _I64, npt.NDArray[np.uint16]]:
    """One batch of ``_POSTINGS`` rows as (term id, position in ``ids``, tf)."""
    terms, chunks, tfs = [], [], []
    for term, chunk_blob, tf_blob in rows:
        chunk = np.frombuffer(chunk_blob, ">i8")
        tid = vocab.setdefault(term, len(vocab))
        terms.append(np.full(len(chunk), tid, np.uint32))
        chunks.append(chunk)
        tfs.append(np.frombuffer(tf_blob, ">i4"))
    if not terms:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64), np.zeros(0, np.uint16)
    chunk = np.concatenate(chunks).astype(np.int64)
    tf = np.clip(np.concatenate(tfs), 0, 65535).astype(np.uint16)
    return np.concatenate(terms), np.searchsorted(ids, chunk), tf


def _joined(
    parts: list[tuple[npt.NDArray[np.uint32], _I64, npt.NDArray[np.uint16]]],
) -> tuple[npt.NDArray[np.uint32], _I64, npt.NDArray[np.uint16]]:
    if not parts:
        return np.zeros(0, np.uint32), np.zeros(0, np.int64), np.zeros(0, np.uint16)
    return (
        np.concatenate([p[0] for p in parts]),
        np.concatenate([p[1] for p in parts]),
        np.concatenate([p[2] for p in parts]),
    )
