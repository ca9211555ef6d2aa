"""Replica-local keyword indexes for the PostgreSQL store: BM25 top-k off the database.

In SQL, a keyword search reads postings of every query term on the one shared server, so
the database's CPU per search grows with the namespace and adding API replicas adds no
keyword capacity. Here each replica holds the namespaces it serves as in-memory
``bm25.Postings`` and ranks them with ``wand.top_k``, the embedded store's exact MaxScore;
the database only returns the rows of the ``limit`` hits, by primary key, and in the same
statement the namespace's ``generation``, which every write bumps (``rows_sql``; a filter
is checked there, on the ranked chunks).

**Kept current from the change log.** Every write records the chunks it added and took
out in ``chunk_changes`` at the generation it set (migration 7). When a search sees a
generation newer than its index, the index catches up: one ``REPEATABLE READ`` snapshot
reads the changes since and the postings of the chunks added, and the next snapshot of
the postings adds and removes them (``Postings.add_flat`` / ``remove``, a reader keeps the
one it began with). The search then runs again, so a search never returns less than what
was committed when it began. One catch-up runs per namespace at a time; the searches
that want it wait for it. A catch-up that does not end with as many live chunks and tokens
as the namespace counts (a writer that logs nothing, say an older version in a rolling
update) drops the index, and the namespace is loaded again whole; so does a log pruned past the
index (writers keep a namespace's last ``change_log_generations``).

**Told of writes.** A writer's transaction also sends ``NOTIFY ragtide_changes`` (the
schema, the namespace and the generation it set), delivered on commit. Each replica
``LISTEN``s on a connection of its own to the primary and starts a namespace's catch-up as
soon as it hears of a generation its index lacks, so the search after a write finds the
index current, or waits for a catch-up already under way, instead of ranking at the old
generation, learning of the new one from the statement and ranking again. It is only a
hint: a notification lost (the listener reconnecting, a read replica behind) leaves the
generation check above to find the change.

**Loaded in the background.** A namespace's first search on a replica is answered in SQL
and starts the load (one ``REPEATABLE READ`` snapshot: the chunk ids, then every term's
postings aggregated into one row per term, parsed in a thread batch by batch), so a
replica never waits for it (``warm`` starts the largest namespaces' at start); namespaces
under ``min_chunks`` stay in SQL, asked on a pooled connection.

**Saved for the other replicas.** The replica that loads a large namespace
(``saved_min_chunks``) from its postings saves the index in the database
(``_pg_snapshot``), then builds an HNSW graph of its vectors and saves that too
(``_pg_ann``); the next replicas read both (seconds, and little of the database's CPU,
where the postings cost ~37 us of it a chunk) and catch up from the log. ``warm`` waits
for the namespaces that have a snapshot, so a replica is ready when it can rank them.

**Saved again as writes accumulate.** When ``refresh_share`` of a saved namespace was
written or deleted since its snapshot, or lies past its graph (the tail every search scans
exactly), one replica (an advisory lock) saves its index again from memory, its segments
merged as the stream is written (``bm25.Merged``: no second copy of the postings), and
saves a copy of its graph with the tail added; the others, due too, find that graph and
search with it. So a new replica catches up a few percent of a namespace however long it
has been written to, rather than loading it whole past a quarter, and the tail stays small.

Indexes are dropped least recently used first beyond ``budget_bytes``. Statistics are the
namespace's live chunks', as in SQL and the SQLite store, so the hits and their scores are
the exact top-k of the unweighted BM25 (SQL's impact-ordered reads are approximate beyond
them).
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import dataclasses
import itertools
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from ragtide.builtin import _pg_ann, _pg_snapshot, wand
from ragtide.builtin._pg_ann import Graph
from ragtide.builtin._pg_snapshot import Saved, Streamed, Unusable, head_of, parse, parts
from ragtide.builtin.bm25 import Merged, Postings, Segment
from ragtide.observability import (
    BUDGET_BYTES,
    BUDGET_EVICTIONS,
    LOCAL_INDEX_CATCH_UP_SECONDS,
    LOCAL_INDEX_LISTENERS,
    LOCAL_INDEX_NOTIFICATIONS,
    LOCAL_INDEX_NOTIFIED_AHEAD,
    LOCAL_INDEX_UPDATES,
)

__all__ = ["CHANNEL", "LocalIndex", "LocalKeywords", "rows_sql"]

logger = logging.getLogger(__name__)

_I64 = npt.NDArray[np.int64]
_I32 = npt.NDArray[np.int32]
_U32 = npt.NDArray[np.uint32]
_U16 = npt.NDArray[np.uint16]
_F32 = npt.NDArray[np.float32]
_Conn = psycopg.AsyncConnection[Any]
CHANNEL = "ragtide_changes"  # NOTIFY payload: "<schema> <namespace id> <generation>"
_LISTEN_RETRY_S = (0.5, 30.0)  # the listener's pause before reconnecting: first, most
_FOLLOW_GAP_S = 0.1  # catch-ups started by notifications: at most ten a second
Connect = Callable[[], Awaitable[_Conn]]  # a connection of a load's own
Count = Callable[[int], Awaitable[int | None]]  # a namespace's chunks, None if it is gone
Pooled = Callable[[], AbstractAsyncContextManager[_Conn]]  # a pooled connection, lent


def rows_sql(where: str = "", *, by_vector: bool = False) -> str:
    """The rows of the ranked chunks ``%(ids)s`` that ``where`` (``filter_sql``) admits,
    the first ``%(limit)s`` of them in rank order, and, in the same snapshot, the
    namespace's generation: one row with NULL chunk columns when none is admitted, no
    row when the namespace is gone. ``by_vector``: ``%(ids)s`` are candidates in no
    order, ordered by their exact cosine similarity to ``%(q)s`` (the last column)."""
    if by_vector:
        similarity = "1 - (c.embedding <=> %(q)s::vector)"
        order, where = "similarity DESC, c.id", f"{where} AND c.embedding IS NOT NULL"
    else:
        similarity, order = "NULL::float8", "u.rank"
    return (
        "SELECT c.chunk_id, c.document_id, c.ordinal, c.text, c.title, c.headings,"
        " c.metadata, n.generation, c.id, c.similarity FROM namespaces n LEFT JOIN LATERAL ("
        f" SELECT c.*, {similarity} AS similarity"
        " FROM unnest(%(ids)s::int8[]) WITH ORDINALITY AS u(id, rank)"
        " JOIN chunks c ON c.namespace_id = %(ns_id)s::integer AND c.id = u.id"
        f" WHERE TRUE{where} ORDER BY {order} LIMIT %(limit)s) c ON TRUE"
        " WHERE n.id = %(ns_id)s::integer"
    )


# Both lists of a hybrid search in one statement (``PostgresStore.hybrid_search``): the
# rows of the ranked chunks ``%(words)s`` and of the first ``%(limit)s`` of a graph's
# candidates ``%(near)s`` by their exact cosine similarity to ``%(q)s`` (the last column;
# NULL for the others), a chunk in both once, in no order; and the namespace's generation,
# as ``rows_sql`` gives them.
BOTH_SQL = (
    "SELECT c.chunk_id, c.document_id, c.ordinal, c.text, c.title, c.headings,"
    " c.metadata, n.generation, c.id, c.similarity FROM namespaces n LEFT JOIN LATERAL ("
    " SELECT c.*, r.similarity FROM (SELECT id, max(similarity) AS similarity FROM ("
    " SELECT u.id, NULL::float8 AS similarity FROM unnest(%(words)s::int8[]) AS u(id)"
    " UNION ALL (SELECT v.id, 1 - (v.embedding <=> %(q)s::vector) AS similarity"
    " FROM unnest(%(near)s::int8[]) AS u(id)"
    " JOIN chunks v ON v.namespace_id = %(ns_id)s::integer AND v.id = u.id"
    " WHERE v.embedding IS NOT NULL ORDER BY similarity DESC, v.id LIMIT %(limit)s)"
    ") AS lists GROUP BY id) AS r"
    " JOIN chunks c ON c.namespace_id = %(ns_id)s::integer AND c.id = r.id) c ON TRUE"
    " WHERE n.id = %(ns_id)s::integer"
)
_SNAPSHOT = "SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY"
# Held by the replica building a namespace's vector graph or refreshing its saved index and
# graph (on the primary, for the session).
_BUILD_LOCK = (
    "SELECT pg_try_advisory_lock(hashtext(current_schema() || '.graph_build'), %(ns_id)s::integer)"
)
_NAMESPACE = (
    "SELECT generation, chunk_count, log_since, embedder, token_count FROM namespaces"
    " WHERE id = %(ns_id)s::integer"
)
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
_ENTRIES = (  # the postings a load will read: each term's document frequency, summed
    "SELECT coalesce(sum(df), 0) FROM terms WHERE namespace_id = %(ns_id)s::integer"
)
# The vectors of the namespace's current embedder, by chunk id (pgvector's binary form:
# int16 dimensions, int16 unused, float4 values, big-endian), all of one dimension.
_VECTORS = (
    "SELECT coalesce(string_agg(int8send(c.id), ''::bytea ORDER BY c.id), ''::bytea),"
    " coalesce(string_agg(vector_send(c.embedding), ''::bytea ORDER BY c.id), ''::bytea),"
    " count(DISTINCT vector_dims(c.embedding))"
    " FROM chunks c WHERE c.namespace_id = %(ns_id)s::integer AND c.embedder = %(embedder)s{only}"
)
_CHANGES = (
    "SELECT chunk, added FROM chunk_changes WHERE namespace_id = %(ns_id)s::integer"
    " AND generation > %(since)s"
)
# How many changes the log holds since ``since``, counted up to ``%(upto)s`` at most: a
# catch-up only asks whether a run is longer than it reads (or than it is worth), and a
# bulk run is not scanned whole to say so.
_CHANGED = (
    "SELECT count(*) FROM (SELECT FROM chunk_changes WHERE namespace_id = %(ns_id)s::integer"
    " AND generation > %(since)s LIMIT %(upto)s) AS run"
)
# Terms fetched and parsed at a time while loading: the batch's rows and its temporaries
# (~20 bytes a posting) are the load's memory beyond the index.
_BATCH = 500
_WARMING = -1  # the key of the warm-up's task (namespace ids are positive)
_BLOCK = 1 << 20  # entries summed at a time into the chunks' lengths
_POOLED_CHANGES = 20_000  # chunks a catch-up reads on a pooled connection at most
# The chunks a run of the log added and still has (``_net`` in SQL), as an array: the
# postings and vectors of a catch-up read by primary key, not by a join the planner
# might answer with a scan of the namespace.
_ADDED = (
    "ARRAY(SELECT chunk FROM chunk_changes WHERE namespace_id = %(ns_id)s::integer"
    " AND generation > %(since)s GROUP BY chunk HAVING bool_and(added))"
)


# A condition of a catch-up's reads at once: no rows if the run is longer than a pooled
# catch-up reads (it is read again on a connection of its own, in batches). ``%(upto)s``
# is more than ``%(most)s``, so a count that reaches it is too long.
_UNLESS_BULK = f" AND ({_CHANGED}) <= %(most)s"


def _added_only(column: str) -> str:
    """``_POSTINGS``' or ``_VECTORS``' condition for a catch-up read at once: the chunks
    ``_ADDED`` (``_UNLESS_BULK``)."""
    return f" AND {column} = ANY({_ADDED}){_UNLESS_BULK}"


_RETRIES_KEPT = 100_000
_RETRY_S = 60.0  # a namespace too small (or a load that failed) is looked at again after
# Candidates a vector graph gives for ``k`` hits: ``GRAPH_OVERSAMPLE k + GRAPH_MARGIN``,
# which the database orders by their exact distance (i8 quantisation may swap neighbours
# near the k-th: at 8 dimensions, within the first 20). Measured at 1M chunks and 256
# dimensions (bench/experiments/pg_graph_oversample.py, k = 30, no margin): nDCG@10 the
# same from 1x to 3x on both halves of the queries, the database's CPU 0.55 -> 1.6 ms.
GRAPH_OVERSAMPLE = 1.0
GRAPH_MARGIN = 10
# A namespace whose due refresh (``LocalKeywords._refresh``) another replica holds, or which
# one was looked at, is looked at again after this long (not at each catch-up).
_LOOK_AGAIN_S = 30.0


class _Bulk(Exception):
    """More changed than a catch-up reads on a pooled connection: read in batches."""


class Stale(Exception):
    """The change log does not account for the namespace's chunks: load it again."""


@dataclass(slots=True)
class Room:
    """Buffers whose first ``written`` rows are the arrays of a lineage of snapshots (each
    snapshot's arrays are views of its first rows), and the room past them."""

    buffers: tuple[npt.NDArray[Any], ...]
    written: int

    @property
    def nbytes(self) -> int:
        return sum(int(b.nbytes) for b in self.buffers)


def appended(
    arrays: tuple[npt.NDArray[Any], ...], more: tuple[npt.NDArray[Any], ...], room: Room | None
) -> tuple[tuple[npt.NDArray[Any], ...], Room]:
    """Each of ``arrays`` (of equal length) followed by its part of ``more``, as views of
    buffers with room to grow: written in place past ``arrays`` when they are the first
    rows of ``room`` and nothing was appended past them since, else copied into new
    buffers a quarter longer. A catch-up appends a few rows to arrays as long as the
    namespace (its chunk ids) or its graph's tail (their vectors): it no longer copies
    them whole each time, and what an earlier snapshot reads is never written."""
    n, k = len(arrays[0]), len(more[0])
    if room is None or room.written != n or n + k > len(room.buffers[0]):
        size = max(n + k, n + n // 4 + 64)
        buffers = tuple(np.empty((size, *a.shape[1:]), a.dtype) for a in arrays)
        for buffer, array in zip(buffers, arrays, strict=True):
            buffer[:n] = array
        room = Room(buffers, n)
    for buffer, rows in zip(room.buffers, more, strict=True):
        buffer[n : n + k] = rows
    room.written = n + k
    return tuple(buffer[: n + k] for buffer in room.buffers), room


@dataclass(frozen=True, slots=True)
class Vectors:
    """Unit vectors of the chunks the namespace's current embedder wrote: row ``i`` is the
    chunk at position ``positions[i]`` of the index (deleted ones are masked by it)."""

    embedder: str
    positions: _I64
    matrix: _F32
    room: Room | None = None  # buffers the two are views of (``appended``)

    @property
    def nbytes(self) -> int:
        if self.room is not None:
            return self.room.nbytes
        return int(self.positions.nbytes + self.matrix.nbytes)

    def added(self, positions: _I64, matrix: _F32) -> Vectors:
        if not len(matrix):
            return self
        if not len(self.matrix):
            return Vectors(self.embedder, positions, matrix)
        if matrix.shape[1] != self.matrix.shape[1]:
            raise Stale("vectors of another dimension")
        arrays = (self.positions, self.matrix)
        (grown, more), room = appended(arrays, (positions, matrix), self.room)
        return Vectors(self.embedder, grown, more, room)

    def renumbered(self, keep: _I64, size: int) -> Vectors:
        """After ``Postings.compact``: ``keep`` are the old positions of the new ones."""
        remap = np.full(size, -1, np.int64)
        remap[keep] = np.arange(len(keep))
        new = remap[self.positions]
        kept = new >= 0
        return Vectors(self.embedder, new[kept], self.matrix[kept])


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
    # All the vectors of a namespace of up to ``vector_max_chunks``; with a ``graph``,
    # those of the chunks added since it (its tail).
    vectors: Vectors | None = None
    graph: Graph | None = None
    expansion: int = 512  # the graph's search breadth
    ids_room: Room | None = None  # the buffer ``ids`` is a view of (``appended``)

    @property
    def nbytes(self) -> int:
        p = self.postings
        arrays = sum(s.chunk.nbytes + s.tf.nbytes + s.start.nbytes for s in p.segments)
        held = self.vectors.nbytes if self.vectors is not None else 0
        graph = self.graph.nbytes if self.graph is not None else 0
        ids = self.ids_room.nbytes if self.ids_room is not None else self.ids.nbytes
        return arrays + p.lengths.nbytes + ids + 100 * len(self.vocab) + held + graph

    def nearest(self, query: _F32, k: int) -> tuple[list[int], list[float] | None] | None:
        """Chunk ids and cosine similarities of the ``k`` chunks nearest ``query``, best
        first (ties by id), exactly; None if the index holds no vectors of its dimension.
        With a graph: candidates for the ``k`` nearest, in no order and without scores
        (the database orders them exactly, ``rows_sql(by_vector=True)``)."""
        vectors, graph = self.vectors, self.graph
        if vectors is None or (graph is not None and graph.dim != len(query)):
            return None
        if graph is None and vectors.matrix.shape[1] != len(query):
            return None
        norm = float(np.linalg.norm(query))
        if norm == 0:
            return [], []
        unit = (query / norm).astype(np.float32)
        if graph is not None:
            return self._candidates(graph, unit, k), None
        rows, similarity = self._exact(vectors, unit, k)
        ids = self.ids[vectors.positions[rows]]
        order = np.lexsort((ids, -similarity))
        return ids[order].tolist(), similarity[order].tolist()

    def _exact(self, vectors: Vectors, unit: _F32, k: int) -> tuple[_I64, _F32]:
        """The rows of ``vectors`` of the (up to) ``k`` live chunks most similar to
        ``unit``, in no order, and their cosine similarities."""
        if not len(vectors.positions):
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        similarity = vectors.matrix @ unit
        alive = self.postings.alive
        if alive is not None:
            similarity[~alive[vectors.positions]] = -np.inf
        k = min(k, int(np.count_nonzero(similarity > -np.inf)))
        if k <= 0:
            return np.zeros(0, np.int64), np.zeros(0, np.float32)
        if k < len(similarity):
            rows = np.argpartition(-similarity, k - 1)[:k]
        else:
            rows = np.arange(len(similarity))
        return rows, similarity[rows]

    def _candidates(self, graph: Graph, unit: _F32, k: int) -> list[int]:
        """The live chunks among the graph's ``GRAPH_OVERSAMPLE k + GRAPH_MARGIN`` nearest
        to ``unit``, and the tail's ``k`` nearest (exactly)."""
        keys = graph.search(unit, int(GRAPH_OVERSAMPLE * k) + GRAPH_MARGIN, self.expansion)
        at = np.minimum(np.searchsorted(self.ids, keys), len(self.ids) - 1)
        found = self.ids[at] == keys if len(self.ids) else np.zeros(len(keys), bool)
        alive = self.postings.alive
        if alive is not None:
            found &= alive[at]
        chosen = [keys[found]]
        tail = self.vectors
        if tail is not None:
            rows, _ = self._exact(tail, unit, k)
            chosen.append(self.ids[tail.positions[rows]])
        candidates: list[int] = np.unique(np.concatenate(chosen)).tolist()
        return candidates

    def top(self, terms: Sequence[str], k: int) -> tuple[list[int], list[float]]:
        """Chunk ids and BM25 scores of the best ``k`` chunks for ``terms``, best first."""
        query = [self.vocab[t] for t in dict.fromkeys(terms) if t in self.vocab]
        positions, scores = wand.top_k(self.postings, query, k)
        return self.ids[positions].tolist(), scores.tolist()


_live: weakref.WeakSet[LocalKeywords] = weakref.WeakSet()
BUDGET_BYTES.labels("keyword_indexes").set_function(lambda: sum(k.nbytes for k in list(_live)))
_EVICTED = BUDGET_EVICTIONS.labels("keyword_indexes", "bytes")
_TOO_LARGE = BUDGET_EVICTIONS.labels("keyword_indexes", "too_large")
_LOADED = LOCAL_INDEX_UPDATES.labels("load")
_LOADED_SAVED = LOCAL_INDEX_UPDATES.labels("load_saved")
_SAVED = LOCAL_INDEX_UPDATES.labels("save")
_GRAPH_BUILT = LOCAL_INDEX_UPDATES.labels("graph_build")
_REFRESHED = LOCAL_INDEX_UPDATES.labels("refresh")
_GRAPH_EXTENDED = LOCAL_INDEX_UPDATES.labels("graph_extend")
_GRAPH_ADOPTED = LOCAL_INDEX_UPDATES.labels("graph_adopt")
_EMPTY = Segment(
    np.zeros(0, np.uint32), np.zeros(1, np.int64), np.zeros(0, np.int32), np.zeros(0, np.uint16)
)
_CAUGHT_UP = LOCAL_INDEX_UPDATES.labels("catch_up")
_STALE = LOCAL_INDEX_UPDATES.labels("stale")
_FAILED = LOCAL_INDEX_UPDATES.labels("failed")
_CATCH_UP_READ = LOCAL_INDEX_CATCH_UP_SECONDS.labels("read")
_CATCH_UP_APPLY = LOCAL_INDEX_CATCH_UP_SECONDS.labels("apply")


class LocalKeywords:
    """The local indexes of one store: loads, catch-ups and the memory budget."""

    def __init__(
        self,
        connect: Connect,
        count: Count,
        pooled: Pooled,
        *,
        k1: float,
        b: float,
        budget_bytes: int,
        min_chunks: int,
        vector_max_chunks: int = 0,
        save: Connect | None = None,
        saved_min_chunks: int = 0,
        graphs: bool = False,
        expansion: int = 512,
        refresh_share: float = 0.05,
        refresh_min_chunks: int = 10_000,
        listen: Connect | None = None,
        schema: str = "",
    ) -> None:
        self._connect = connect
        # A connection to the primary that LISTENs for the writes of ``schema``
        self._listen, self._schema = listen, schema
        self._listener: asyncio.Task[None] | None = None
        self._notified: dict[int, int] = {}  # the newest generation heard of, per namespace
        self._heard_at: dict[int, float] = {}  # when it was heard of
        self._caught_at: dict[int, float] = {}  # when its last catch-up (or load) ended
        self._closed = False
        self._save = save  # a connection to the primary: snapshots are written there
        self._saved_min_chunks = saved_min_chunks
        self._graphs = graphs  # vector graphs of the saved namespaces (``_pg_ann``)
        self._expansion = expansion
        self._refresh_share, self._refresh_min = refresh_share, refresh_min_chunks
        self._count = count
        self._pooled = pooled
        self._k1, self._b = k1, b
        self._budget = budget_bytes
        self._min_chunks = min_chunks
        self._vector_max_chunks = vector_max_chunks
        self._indexes: OrderedDict[int, LocalIndex] = OrderedDict()  # least recent first
        self._tasks: dict[int, asyncio.Task[Any]] = {}  # a load or a catch-up per namespace
        self._retry_at: dict[int, float] = {}
        self._loading = asyncio.Semaphore(1)
        self._saving: asyncio.Task[Any] | None = None  # one snapshot written at a time
        self._refused: set[int] = set()  # namespaces whose snapshot was unusable here
        self._saved_upto: dict[int, int] = {}  # the largest chunk id a saved snapshot holds
        self._look_at: dict[int, float] = {}  # when a namespace's refresh is looked at again
        self.loads = 0  # namespaces loaded whole or from a snapshot
        self.loads_saved = 0  # of which from a snapshot
        self.saves = 0  # snapshots written
        self.graphs_built = 0  # vector graphs built (and saved)
        self.refreshes = 0  # snapshots saved again as writes accumulated
        self.graphs_extended = 0  # graphs extended by their tails (and saved)
        self.graphs_adopted = 0  # newer graphs another replica saved, searched with here
        self.catch_ups = 0  # indexes brought up to a newer generation from the log
        self.notifications = 0  # writes heard of (of this schema)
        _live.add(self)

    @property
    def nbytes(self) -> int:
        return sum(index.nbytes for index in list(self._indexes.values()))

    def get(self, ns_id: int) -> LocalIndex | None:
        """The namespace's index, or None after starting its load (if it should have one)."""
        self._start_listening()
        index = self._indexes.get(ns_id)
        if index is not None:
            self._indexes.move_to_end(ns_id)
            return index
        if ns_id not in self._tasks and time.monotonic() >= self._retry_at.get(ns_id, 0.0):
            self._start(ns_id, self._load(ns_id))
        return None

    async def warm(self, namespaces: Sequence[tuple[int, int, bool]], *, wait_s: float) -> None:
        """Begin loading ``namespaces`` ((id, chunks, has a snapshot), largest first) one
        after another in the background, as many as the budget holds, those with a saved
        snapshot first; wait up to ``wait_s`` for those (readiness: a snapshot of 1M chunks
        loads in seconds, a namespace without one in tens of seconds, searched in SQL
        meanwhile)."""
        self._start_listening()
        room, chosen = self._budget, []
        for ns_id, count, saved in namespaces:
            if self._min_chunks <= count and count * _BYTES_PER_CHUNK <= room:
                room -= count * _BYTES_PER_CHUNK
                chosen.append((not (saved and self._saveable(count)), ns_id))
        if not chosen or _WARMING in self._tasks:
            return
        chosen.sort(key=lambda c: c[0])  # stable: largest first within each group
        first = asyncio.Event()
        self._start(_WARMING, self._warm(chosen, first))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(first.wait(), wait_s)

    async def _warm(self, namespaces: list[tuple[bool, int]], first: asyncio.Event) -> None:
        try:
            for whole, ns_id in namespaces:
                if whole:
                    first.set()
                if ns_id not in self._indexes and ns_id not in self._tasks:
                    await self._start(ns_id, self._load(ns_id))
        finally:
            first.set()

    def drop(self, ns_id: int) -> None:
        self._indexes.pop(ns_id, None)

    async def current(self, ns_id: int) -> LocalIndex | None:
        """``get``, caught up first to the newest generation a notification told of (the
        index as it is if that catch-up fails or ends short: the statement's generation
        check decides then)."""
        index = self.get(ns_id)
        if index is None or index.generation >= self._notified.get(ns_id, 0):
            return index
        await self.catch_up(ns_id, self._notified[ns_id], told=True)
        return self._indexes.get(ns_id)

    async def catch_up(
        self, ns_id: int, generation: int, *, told: bool = False
    ) -> LocalIndex | None:
        """The namespace's index at ``generation`` or newer, or None if it has none (then
        a load may be under way) or its catch-up did not get there. ``told``: the
        generation is a notification's, which a catch-up may find the database never
        reached (then it is forgotten, and not waited for)."""
        while True:
            if told:
                generation = min(generation, self._notified.get(ns_id, 0))
            index = self._indexes.get(ns_id)
            if index is None:
                return None
            if index.generation >= generation:
                return index
            task = self._tasks.get(ns_id)
            ours = task is None  # else a load, or a catch-up begun before ``generation``
            if task is None:
                task = self._start(ns_id, self._catch_up(index))
            with contextlib.suppress(Exception):
                await asyncio.shield(task)
            if ours:
                index = self._indexes.get(ns_id)
                return index if index is not None and index.generation >= generation else None

    # --- notifications ---------------------------------------------------------------------

    def _start_listening(self) -> None:
        if self._listen is not None and self._listener is None and not self._closed:
            self._listener = asyncio.create_task(self._listening())

    async def _listening(self) -> None:
        """LISTEN on a connection of its own to the primary, reconnecting after a pause
        that doubles while it fails (a catch-up only waits for the next search then)."""
        assert self._listen is not None
        pause, most = _LISTEN_RETRY_S
        while True:
            try:
                async with await self._listen() as conn:
                    await conn.set_autocommit(True)
                    await conn.execute(f"LISTEN {CHANNEL}")
                    pause = _LISTEN_RETRY_S[0]
                    LOCAL_INDEX_LISTENERS.inc()
                    try:
                        async for note in conn.notifies():
                            self._heard(note.payload)
                    finally:
                        LOCAL_INDEX_LISTENERS.dec()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning("not listening for writes", extra={"error": str(exc)})
            await asyncio.sleep(pause)
            pause = min(most, pause * 2)

    def _heard(self, payload: str) -> None:
        """A write committed: catch the namespace's index up now if it lacks it."""
        parts = payload.rsplit(" ", 2)
        if len(parts) != 3 or parts[0] != self._schema:
            return  # another schema's (or not ours)
        try:
            ns_id, generation = int(parts[1]), int(parts[2])
        except ValueError:
            return
        self.notifications += 1
        LOCAL_INDEX_NOTIFICATIONS.inc()
        if ns_id not in self._indexes and ns_id not in self._tasks:
            return  # not held here (a load's own snapshot will have it)
        if generation <= self._notified.get(ns_id, 0):
            return
        if len(self._notified) >= _RETRIES_KEPT:
            self._notified.clear()
            self._heard_at.clear()
            self._caught_at.clear()
        self._notified[ns_id] = generation
        self._heard_at[ns_id] = time.monotonic()
        self._follow(ns_id)

    def _follow(self, ns_id: int) -> None:
        """Start a catch-up of the namespace's index if a notification told of a newer
        generation and nothing runs for it (one ending starts the next), but not within
        ``_FOLLOW_GAP_S`` of the last one's end: under a stream of writes a replica
        catches up a few times a second, each time all that was written, rather than
        once per write; a search that comes meanwhile starts its own at once."""
        index = self._indexes.get(ns_id)
        if self._closed or index is None or ns_id in self._tasks:
            return
        if index.generation >= self._notified.get(ns_id, 0):
            return
        last = self._caught_at.get(ns_id)
        wait = 0.0 if last is None else last + _FOLLOW_GAP_S - time.monotonic()
        if wait > 0:
            asyncio.get_running_loop().call_later(wait, self._follow, ns_id)
        else:
            self._start(ns_id, self._catch_up(index))

    async def settle(self) -> None:
        """Wait for the loads, catch-ups and snapshot writes under way (a warm-up, or a
        test) to end."""
        while self._tasks or self._saving is not None:
            saving = [self._saving] if self._saving is not None else []
            await asyncio.gather(*self._tasks.values(), *saving, return_exceptions=True)

    async def aclose(self) -> None:
        self._closed = True
        tasks = list(self._tasks.values()) + ([self._saving] if self._saving else [])
        if self._listener is not None:
            tasks.append(self._listener)
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
                _STALE.inc()
                why = {"namespace_id": ns_id, "why": str(exc)}
                logger.info("local keyword index stale", extra=why)
            except Exception as exc:  # the searches go on in SQL; log, retry later
                self._indexes.pop(ns_id, None)
                _FAILED.inc()
                self._later(ns_id)
                logger.warning(
                    "local keyword index failed", extra={"namespace_id": ns_id, "error": str(exc)}
                )
            finally:
                self._tasks.pop(ns_id, None)
            if ns_id in self._notified and progressed():
                self._caught_at[ns_id] = time.monotonic()
                self._follow(ns_id)  # told of a newer generation meanwhile

        before = self._indexes.get(ns_id)

        def progressed() -> bool:  # not a read replica behind the primary, asked again
            after = self._indexes.get(ns_id)
            return after is not None and (before is None or after.generation > before.generation)

        task = asyncio.create_task(run())
        self._tasks[ns_id] = task
        return task

    async def _load(self, ns_id: int) -> None:
        # Asked on a pooled connection first: most namespaces are small, and a load opens
        # a connection of its own (a backend forked on the server).
        count = await self._count(ns_id)
        if count is None or not self._fits(count):
            self._later(ns_id)
            return
        async with self._loading:  # one at a time: a load costs the database ~37 us a chunk
            await self._load_now(ns_id)

    async def _load_now(self, ns_id: int) -> None:
        began = time.perf_counter()
        if await self._load_saved(ns_id):
            how = "snapshot"
        else:
            loaded = await self._load_whole(ns_id)
            if loaded is None:
                return
            index, vocabulary, embedder = loaded
            self._keep(index)
            self._save_later(index, vocabulary, embedder)
            how = "whole"
        self.loads += 1
        kept = self._indexes.get(ns_id)
        if kept is not None:  # the compiled ranking loop, ready before the first search
            await asyncio.to_thread(kept.top, list(itertools.islice(kept.vocab, 2)), 10)
        logger.info(
            "local keyword index loaded",
            extra={
                "namespace_id": ns_id,
                "chunks": len(kept.ids) if kept is not None else 0,
                "from": how,
                "seconds": round(time.perf_counter() - began, 3),
            },
        )

    async def _load_whole(self, ns_id: int) -> tuple[LocalIndex, list[str], str] | None:
        """The namespace's index from its postings, its vocabulary in term id order and
        its embedder."""
        async with await self._connect() as conn, conn.transaction():
            await conn.execute(_SNAPSHOT)
            head = await (await conn.execute(_NAMESPACE, {"ns_id": ns_id})).fetchone()
            if head is None:
                return None
            generation, count = int(head[0]), int(head[1])
            if not self._fits(count):
                self._later(ns_id)
                return None
            self._make_room(count * _BYTES_PER_CHUNK)
            blob = await (await conn.execute(_CHUNK_IDS, {"ns_id": ns_id})).fetchone()
            ids = np.frombuffer(blob[0] if blob else b"", ">i8").astype(np.int64)
            expected = await (await conn.execute(_ENTRIES, {"ns_id": ns_id})).fetchone()
            sink = _Sink(int(expected[0]) if expected else 0)
            vocab: dict[str, int] = {}
            await self._postings(conn, ns_id, sink, vocab, ids, "", {})
            vocabulary = list(vocab)  # before a catch-up can add to it
            vectors = None
            if count <= self._vector_max_chunks:
                vectors = await self._vectors(conn, ns_id, str(head[3]), ids, "", {})
        postings = await asyncio.to_thread(self._build, sink.entries(), ids)
        await asyncio.to_thread(_give_back)
        _LOADED.inc()
        index = LocalIndex(ns_id, generation, postings, ids, vocab, vectors)
        return index, vocabulary, str(head[3])

    # --- snapshots shared through the database (``_pg_snapshot``) ------------------------

    def _saveable(self, count: int) -> bool:
        """Whether a namespace of ``count`` chunks is loaded from and saved as a snapshot:
        large enough to be worth it, and without local vectors (a snapshot has none)."""
        return count >= max(self._saved_min_chunks, self._vector_max_chunks + 1)

    async def _load_saved(self, ns_id: int) -> bool:
        """Load the namespace from its saved snapshot and catch it up, with its saved
        vector graph if there is one; False if there is no snapshot this replica can use
        (then it is loaded whole, and saved again)."""
        began = time.perf_counter()
        try:
            async with await self._connect() as conn, conn.transaction():
                await conn.execute(_SNAPSHOT)
                head = await (await conn.execute(_NAMESPACE, {"ns_id": ns_id})).fetchone()
                if head is None or not self._saveable(int(head[1])) or not self._fits(int(head[1])):
                    return False
                generation, count, log_since = int(head[0]), int(head[1]), int(head[2])
                saved_at = await _pg_snapshot.saved_generation(conn, ns_id, "keywords")
                # Usable if the log still holds every change since it, and it is not newer
                # than this snapshot of the namespace (a read replica that lags).
                if saved_at is None or not log_since <= saved_at <= generation:
                    return False
                self._make_room(count * _BYTES_PER_CHUNK)
                found = await _pg_snapshot.read(conn, ns_id, "keywords")
                if found is None:
                    return False
                described, buffer = found
                saved = await asyncio.to_thread(parse, described, buffer, described["sha256"])
                graph = await self._read_graph(conn, ns_id, str(head[3]))
        except Unusable as exc:  # replaced by the whole load's, even of the same generation
            self._refused.add(ns_id)
            logger.warning(
                "saved keyword index unusable", extra={"namespace_id": ns_id, "why": str(exc)}
            )
            return False
        saved_generation = int(described["generation"])
        self._saved_upto[ns_id] = int(saved.ids[-1]) if len(saved.ids) else 0
        index = await asyncio.to_thread(self._from_saved, ns_id, saved_generation, saved)
        read_s = time.perf_counter() - began
        if index.generation < generation:
            try:
                await self._catch_up(index)
            except Stale as exc:
                why = {"namespace_id": ns_id, "why": str(exc)}
                logger.info("saved keyword index too old to catch up", extra=why)
                return False
        else:
            self._keep(index)
        if graph is not None:
            await self._attach(ns_id, graph)
        if (loaded := self._indexes.get(ns_id)) is not None:
            self._refresh_later(loaded)
        self.loads_saved += 1
        _LOADED_SAVED.inc()
        logger.info(
            "saved keyword index read",
            extra={
                "namespace_id": ns_id,
                "bytes": len(buffer),
                "generation": saved_generation,
                "graph": graph is not None,
                "read_s": round(read_s, 3),
            },
        )
        return True

    async def _read_graph(self, conn: _Conn, ns_id: int, embedder: str) -> Graph | None:
        """The namespace's saved vector graph, if it is of ``embedder`` and fits."""
        if not self._graphs:
            return None
        try:
            found = await _pg_snapshot.read(conn, ns_id, "vectors")
            if found is None or found[0].get("embedder") != embedder:
                return None
            return await asyncio.to_thread(_pg_ann.from_stream, *found)
        except (Unusable, ValueError) as exc:  # built again by the next whole load
            why = {"namespace_id": ns_id, "why": str(exc)}
            logger.warning("saved vector graph unusable", extra=why)
            return None

    def _from_saved(self, ns_id: int, generation: int, saved: Saved) -> LocalIndex:
        n = len(saved.ids)
        segment = Segment(saved.terms, saved.start, saved.chunk, saved.tf)
        total = float(saved.lengths.sum(dtype=np.float64))
        segments = (segment,) if len(segment) else ()
        postings = Postings(segments, saved.lengths, None, n, n, total, self._k1, self._b, [n])
        postings.prepare()
        vocab = dict(zip(saved.vocabulary, range(len(saved.vocabulary)), strict=True))
        return LocalIndex(ns_id, generation, postings, saved.ids, vocab)

    def _save_later(self, index: LocalIndex, vocabulary: list[str], embedder: str) -> None:
        """Write ``index`` (just loaded whole) as the namespace's snapshot, then build its
        vector graph, save it and search with it, in the background, if the namespace
        should have them and no other such work is under way here."""
        if self._save is None or self._saving is not None or index.vectors is not None:
            return
        if not self._saveable(len(index.ids)) or len(index.postings.segments) > 1:
            return

        async def save() -> None:
            await self._write_saved(index, vocabulary)
            if self._graphs:
                await self._build_graph(index.ns_id, index.generation, embedder, index.ids)

        # A failure is logged; the next whole load saves and builds again.
        self._in_background(index.ns_id, save(), "cannot save the keyword index or build its graph")

    def _in_background(self, ns_id: int, work: Awaitable[None], failure: str) -> None:
        """Run ``work`` as this replica's one saving task (``_saving``); a failure is
        logged as ``failure``, and the work is looked at again later by its caller."""

        async def run() -> None:
            try:
                await work
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.warning(failure, extra={"namespace_id": ns_id, "error": str(exc)})
            finally:
                self._saving = None

        self._saving = asyncio.create_task(run())

    async def _write_saved(
        self, index: LocalIndex, vocabulary: list[str], *, again: bool = False
    ) -> None:
        """Save ``index`` as the namespace's snapshot (``again``: a refresh of one)."""
        assert self._save is not None
        began = time.perf_counter()
        saved = await asyncio.to_thread(_saveable_form, index, vocabulary)
        head, arrays = await asyncio.to_thread(head_of, saved, index.generation)
        replace = index.ns_id in self._refused
        async with await self._save() as conn:
            stream = parts(head, arrays)
            if not await _pg_snapshot.write(
                conn, index.ns_id, "keywords", head, stream, replace=replace
            ):
                return
        self._refused.discard(index.ns_id)
        self._saved_upto[index.ns_id] = int(head["covered"])
        if again:
            self.refreshes += 1
            _REFRESHED.inc()
        else:
            self.saves += 1
            _SAVED.inc()
        logger.info(
            "keyword index saved again" if again else "keyword index saved",
            extra={
                "namespace_id": index.ns_id,
                "generation": index.generation,
                "bytes": head["size"],
                "seconds": round(time.perf_counter() - began, 3),
            },
        )

    async def _build_graph(self, ns_id: int, generation: int, embedder: str, ids: _I64) -> None:
        """Build the graph of the vectors of chunks up to the newest of ``ids`` (the index
        just loaded whole), save it, and give it to the namespace's index; unless one as
        new is saved already (read instead) or another replica is building it (a graph
        costs minutes of a core at 1M chunks: replicas that load a namespace whole at the
        same time build it once)."""
        assert self._save is not None
        async with await self._save() as building:
            await building.set_autocommit(True)
            lock = await (await building.execute(_BUILD_LOCK, {"ns_id": ns_id})).fetchone()
            if lock is None or not lock[0]:
                return
            async with building.transaction():
                saved_at = await _pg_snapshot.saved_generation(building, ns_id, "vectors")
                if saved_at is not None and saved_at >= generation:
                    graph = await self._read_graph(building, ns_id, embedder)
                    if graph is not None:
                        await self._as_task(ns_id, lambda: self._attach(ns_id, graph))
                        return
            await self._build_and_save(ns_id, generation, embedder, ids)

    async def _build_and_save(self, ns_id: int, generation: int, embedder: str, ids: _I64) -> None:
        began = time.perf_counter()
        covered = int(ids[-1]) if len(ids) else 0
        async with await self._connect() as conn:
            await conn.set_autocommit(True)
            graph = await _pg_ann.build(conn, ns_id, embedder, covered)
        if graph is None:
            return
        built_s = time.perf_counter() - began
        saved = await self._write_graph(ns_id, generation, graph)
        self.graphs_built += 1
        _GRAPH_BUILT.inc()
        logger.info(
            "vector graph built",
            extra={
                "namespace_id": ns_id,
                "chunks": graph.count,
                "build_s": round(built_s, 3),
                "saved": saved,
                "seconds": round(time.perf_counter() - began, 3),
            },
        )
        await self._as_task(ns_id, lambda: self._attach(ns_id, graph))

    async def _write_graph(self, ns_id: int, generation: int, graph: Graph) -> bool:
        """Save ``graph`` (of the namespace at ``generation``) for the other replicas:
        its bytes, which it is a view of; whether it was written (not if a newer one is
        saved)."""
        assert self._save is not None
        size = len(graph.buffer)
        arrays = [["graph", "|u1", 0, size]]  # one array: usearch's own bytes
        head = _pg_snapshot.stream_head(size, generation, arrays=arrays, **graph.described)
        async with await self._save() as conn:
            stream = parts(head, [graph.buffer])
            return await _pg_snapshot.write(conn, ns_id, "vectors", head, stream, replace=True)

    async def _quiet(self, ns_id: int) -> None:
        """Wait until no load or catch-up of the namespace is under way (nothing then
        writes its index's vocabulary, and a change of its index is not lost)."""
        while (task := self._tasks.get(ns_id)) is not None:
            with contextlib.suppress(Exception):
                await asyncio.shield(task)

    async def _as_task(self, ns_id: int, work: Callable[[], Awaitable[None]]) -> None:
        """``work`` as the namespace's task, after the one under way (a catch-up)."""
        await self._quiet(ns_id)
        await self._start(ns_id, work())

    async def _attach(self, ns_id: int, graph: Graph) -> None:
        """Search the namespace's vectors with ``graph`` from now on: the index's chunks
        past it (its tail) are read for an exact search beside it. Not when the index
        keeps all its vectors, the namespace's embedder is another, or the tail is larger
        than an exact search should scan, or the two do not fit the budget (the database's
        HNSW index then)."""
        index = self._indexes.get(ns_id)
        if index is None or index.vectors is not None or index.graph is not None:
            return
        tail = index.ids[index.ids > graph.covered]
        if len(tail) > self._tail_max(len(index.ids)):
            return
        if index.nbytes + graph.nbytes > self._budget:  # the index would evict itself
            _TOO_LARGE.inc()
            return
        self._make_room(graph.nbytes)
        # A pooled connection unless the tail is a bulk read (the long timeout then).
        lent = self._pooled() if len(tail) <= _POOLED_CHANGES else await self._connect()
        async with lent as conn, conn.transaction():
            await conn.execute(_SNAPSHOT)
            head = await (await conn.execute(_NAMESPACE, {"ns_id": ns_id})).fetchone()
            if head is None or str(head[3]) != graph.embedder:
                return
            only = " AND c.id = ANY(%(tail)s::int8[])"
            values = {"tail": tail.tolist()}
            vectors = await self._vectors(conn, ns_id, graph.embedder, index.ids, only, values)
        if vectors is None:
            return
        current = self._indexes.get(ns_id)
        if current is not index:  # changed meanwhile (this runs as the namespace's task)
            return
        if not len(vectors.matrix):
            empty = np.zeros((0, graph.dim), np.float32)
            vectors = Vectors(graph.embedder, np.zeros(0, np.int64), empty)
        attached = dataclasses.replace(
            index, vectors=vectors, graph=graph, expansion=self._expansion
        )
        self._keep(attached)

    # --- refreshing what is saved as writes accumulate -------------------------------------

    def _drift(self, index: LocalIndex) -> int:
        """How far the namespace's saved index and graph are behind ``index``: the chunks
        added since the snapshot, and those deleted (as far as the index counts them), or
        the chunks past its graph (its tail), whichever is more."""
        added = _past(index, self._saved_upto.get(index.ns_id, 0))
        tail = 0
        if index.graph is not None and index.vectors is not None:
            tail = len(index.vectors.positions)
        return max(added + index.postings.dead, tail)

    def _due(self, index: LocalIndex) -> bool:
        share = int(self._refresh_share * index.postings.live)
        return self._drift(index) >= max(self._refresh_min, share)

    def _refresh_later(self, index: LocalIndex) -> None:
        """``_refresh`` the namespace in the background if what is saved of it has
        drifted from ``index`` by ``refresh_share`` of it (and ``refresh_min_chunks``),
        unless other such work is under way here or it was looked at lately."""
        ns_id = index.ns_id
        if self._saving is not None or not self._saveable(index.postings.live):
            return
        if time.monotonic() < self._look_at.get(ns_id, 0.0) or not self._due(index):
            return
        self._look_at[ns_id] = time.monotonic() + _LOOK_AGAIN_S  # also after a failure
        failure = "cannot refresh the saved keyword index or graph"
        self._in_background(ns_id, self._refresh(ns_id), failure)

    async def _refresh(self, ns_id: int) -> None:
        """Bring what is saved of the namespace up to this replica's index: a newer graph
        another replica saved is searched with here; otherwise, when still due, this
        replica (one at a time, ``_BUILD_LOCK``) saves its index anew and its graph with
        the tail added. A new replica then catches up a few percent of the namespace, not
        all that was written since it was first saved (past a quarter it would load it
        whole), and each replica's exact search of its graph's tail stays small."""
        connect = self._save or self._connect  # without a primary: only adopt graphs
        async with await connect() as conn:
            await conn.set_autocommit(True)
            if self._save is not None:
                lock = await (await conn.execute(_BUILD_LOCK, {"ns_id": ns_id})).fetchone()
                if lock is None or not lock[0]:
                    return  # another replica is at it
            keywords = await _pg_snapshot.saved_head(conn, ns_id, "keywords")
            if keywords is not None:  # a snapshot of an earlier version says nothing
                upto = max(self._saved_upto.get(ns_id, 0), int(keywords.get("covered", 0)))
                self._saved_upto[ns_id] = upto
            index = self._indexes.get(ns_id)
            held = index.graph if index is not None else None
            if held is not None:
                head = await _pg_snapshot.saved_head(conn, ns_id, "vectors")
                if head is not None and int(head.get("covered", 0)) > held.covered:
                    async with conn.transaction():
                        newer = await self._read_graph(conn, ns_id, held.embedder)
                    if newer is not None:
                        await self._as_task(ns_id, lambda: self._adopt(ns_id, newer))
            index = self._indexes.get(ns_id)
            if index is not None and index.graph is None and index.vectors is None:
                await self._regain_graph(conn, index)
            index = self._indexes.get(ns_id)
            if self._save is None or index is None or not self._due(index):
                return
            await self._write_refreshed(index)
            if index.graph is not None and index.vectors is not None:
                await self._extend_graph(index)

    async def _regain_graph(self, conn: _Conn, index: LocalIndex) -> None:
        """Give ``index``, which searches its vectors in the database, a graph again: the
        saved one if it is of the namespace's embedder and its tail is small enough, else
        (when this replica writes, holding ``_BUILD_LOCK``) one built anew. An index
        lost its graph when a bulk write made its tail too large, or found the saved one
        too far behind when it was loaded."""
        if not self._graphs:
            return
        ns_id = index.ns_id
        await self._quiet(ns_id)  # a load under way may be attaching the saved graph
        if (index := self._indexes.get(ns_id) or index).graph is not None:
            return
        namespace = await (await conn.execute(_NAMESPACE, {"ns_id": ns_id})).fetchone()
        if namespace is None:
            return
        embedder = str(namespace[3])
        head = await _pg_snapshot.saved_head(conn, ns_id, "vectors")
        if head is not None and head.get("embedder") == embedder:
            if index.nbytes + int(head["size"]) > self._budget:
                return  # no room here for this namespace's graph
            if _past(index, int(head.get("covered", 0))) <= self._tail_max(len(index.ids)):
                async with conn.transaction():
                    graph = await self._read_graph(conn, ns_id, embedder)
                if graph is not None:
                    await self._as_task(ns_id, lambda: self._attach(ns_id, graph))
                    return
        if self._save is not None:
            await self._build_and_save(ns_id, index.generation, embedder, index.ids)

    async def _write_refreshed(self, index: LocalIndex) -> None:
        """Save ``index`` as the namespace's snapshot again, once no catch-up is writing
        its vocabulary."""
        await self._quiet(index.ns_id)
        vocabulary = list(index.vocab)  # at least the index's terms (it only grows)
        await self._write_saved(index, vocabulary, again=True)

    async def _extend_graph(self, index: LocalIndex) -> None:
        """Add the live chunks of ``index``'s tail to a copy of its graph, save that and
        search with it."""
        graph, tail = index.graph, index.vectors
        assert graph is not None and tail is not None
        began = time.perf_counter()
        alive = index.postings.alive
        rows = np.arange(len(tail.positions))
        if alive is not None:
            rows = rows[alive[tail.positions]]
        keys = index.ids[tail.positions[rows]]
        covered = int(index.ids[-1])  # any chunk up to it is in the graph, or deleted
        grown = await _pg_ann.extend(graph, keys, tail.matrix[rows], covered)
        saved = await self._write_graph(index.ns_id, index.generation, grown)
        self.graphs_extended += 1
        _GRAPH_EXTENDED.inc()
        logger.info(
            "vector graph extended",
            extra={
                "namespace_id": index.ns_id,
                "added": len(keys),
                "chunks": grown.count,
                "saved": saved,
                "seconds": round(time.perf_counter() - began, 3),
            },
        )
        await self._as_task(index.ns_id, lambda: self._adopt(index.ns_id, grown))

    async def _adopt(self, ns_id: int, graph: Graph) -> None:
        """Search with ``graph``, which covers more of the namespace than its index's
        graph, from now on: the index's tail keeps the chunks past it."""
        index = self._indexes.get(ns_id)
        held = index.graph if index is not None else None
        if index is None or held is None or index.vectors is None:
            return
        same = (graph.embedder, graph.dim) == (held.embedder, held.dim)
        if not same or graph.covered <= held.covered:
            return
        tail = index.vectors
        past = index.ids[tail.positions] > graph.covered
        kept = Vectors(tail.embedder, tail.positions[past], tail.matrix[past])
        self._keep(dataclasses.replace(index, vectors=kept, graph=graph))
        self.graphs_adopted += 1
        _GRAPH_ADOPTED.inc()

    def _tail_max(self, count: int) -> int:
        """The most chunks a graph's tail may hold: beyond, searched in the database."""
        return max(self._vector_max_chunks, count // 4)  # a catch-up reloads past a quarter

    async def _postings(
        self,
        conn: _Conn,
        ns_id: int,
        sink: _Sink,
        vocab: dict[str, int],
        ids: _I64,
        only: str,
        params: dict[str, Any],
    ) -> None:
        """The namespace's postings (of chunks ``ids``) into ``sink``, batch by batch: a
        server-side cursor, each batch parsed in a thread."""
        sql = _POSTINGS.format(only=only)
        if only:
            # Every row is read: without this the planner plans a cursor for its first
            # tenth and, for a catch-up's few chunks, walks the namespace's whole keyword
            # index in term order to skip the sort (measured at 1M chunks: past the 5 s
            # timeout for 201 chunks; 3 ms planned for all rows). A whole load keeps
            # that walk: it reads every posting, already in term order.
            await conn.execute("SET LOCAL cursor_tuple_fraction = 1.0")
        async with conn.cursor(name="ragtide_local_postings") as cur:
            await cur.execute(sql, {"ns_id": ns_id} | params)
            while rows := await cur.fetchmany(_BATCH):
                await asyncio.to_thread(sink.add, rows, vocab, ids)

    async def _vectors(
        self,
        conn: _Conn,
        ns_id: int,
        embedder: str,
        ids: _I64,
        only: str,
        params: dict[str, Any],
    ) -> Vectors | None:
        """The vectors ``embedder`` wrote of the chunks ``ids`` (positions in ``ids``);
        None when they are of several dimensions (searched in SQL)."""
        sql = _VECTORS.format(only=only)
        row = await (
            await conn.execute(sql, {"ns_id": ns_id, "embedder": embedder} | params)
        ).fetchone()
        return await _vectors_of(row, embedder, ids)

    def _build(self, entries: _Entries, ids: _I64) -> Postings:
        n = len(ids)
        # A fresh vocabulary numbers the terms in the order their rows came (one row per
        # term): the entries are term-major already, term ids 0, 1, 2, ...
        start = np.zeros(len(entries.terms) + 1, np.int64)
        np.cumsum(entries.counts, out=start[1:])
        segment = Segment(entries.terms, start, entries.positions, entries.tf)
        # Each chunk's length, the sum of its frequencies; by blocks, as bincount makes
        # int64 and float64 copies of what it is given.
        counted = np.zeros(n, np.float64)
        for lo in range(0, len(entries.positions), _BLOCK):
            block = slice(lo, lo + _BLOCK)
            tf = entries.tf[block]
            counted += np.bincount(entries.positions[block], weights=tf, minlength=n)
        lengths = counted.astype(np.float32)
        total = float(lengths.sum(dtype=np.float64))
        segments = (segment,) if len(segment) else ()
        return Postings(segments, lengths, None, n, n, total, self._k1, self._b, [n]).prepare()

    async def _catch_up(self, index: LocalIndex) -> None:
        """Read the changes since ``index`` and apply them. Usually on a pooled connection:
        catch-ups follow writes, and a connection of their own would fork a backend on the
        server per write and replica; a catch-up of more than ``_POOLED_CHANGES`` chunks
        (a bulk write) takes a connection of its own, with the long statement timeout."""
        began = time.monotonic()
        try:
            async with self._pooled() as conn:
                read = await self._changes_at_once(conn, index)
        except _Bulk:
            async with await self._connect() as conn, conn.transaction():
                read = await self._changes(conn, index)
        if read is None:  # the namespace is gone
            self._indexes.pop(index.ns_id, None)
            return
        generation, count, tokens, new, gone, entries, fresh = read
        self._unless_told_ahead(index.ns_id, generation, began)
        applying = time.monotonic()
        _CATCH_UP_READ.observe(applying - began)
        caught = await asyncio.to_thread(self._apply, index, generation, new, gone, entries, fresh)
        _CATCH_UP_APPLY.observe(time.monotonic() - applying)
        # Every writer keeps the namespace's counts, logging or not (an older version
        # during a rolling update): a catch-up must end at both.
        if caught.postings.live != count:
            raise Stale(f"{caught.postings.live} chunks indexed, {count} in the namespace")
        if abs(caught.postings.total - tokens) > 0.5:
            raise Stale(f"{caught.postings.total:.0f} tokens indexed, {tokens} in the namespace")
        self._keep(caught)
        self.catch_ups += 1
        _CAUGHT_UP.inc()
        self._refresh_later(caught)

    async def _changes_at_once(self, conn: _Conn, index: LocalIndex) -> _Read | None:
        """``_changes`` in one round trip (a pipeline: the snapshot, the namespace, the log
        and the postings and vectors of the chunks it added, chosen in SQL); ``_Bulk``
        when more changed than a pooled catch-up reads."""
        ns_id, since, held = index.ns_id, index.generation, index.vectors
        worth = _worth(index)
        upto = max(worth, _POOLED_CHANGES) + 1
        params = {"ns_id": ns_id, "since": since, "most": _POOLED_CHANGES, "upto": upto}
        async with conn.transaction():
            async with conn.pipeline():
                await conn.execute(_SNAPSHOT)
                head_read = await conn.execute(_NAMESPACE, params)
                changed_read = await conn.execute(_CHANGED, params)
                changes_read = await conn.execute(_CHANGES + _UNLESS_BULK, params)
                postings_read = await conn.execute(
                    _POSTINGS.format(only=_added_only("chunk")), params
                )
                vectors_read = None
                if held is not None:
                    vectors_read = await conn.execute(
                        _VECTORS.format(only=_added_only("c.id")),
                        params | {"embedder": held.embedder},
                    )
            head = await head_read.fetchone()
            if head is None:
                return None
            generation, count, tokens = self._checked(index, head)
            changed = int((await changed_read.fetchone() or (0,))[0])
            if changed > worth:
                raise Stale("more changed than a catch-up is worth")
            if changed > _POOLED_CHANGES:
                raise _Bulk
            new, gone = await asyncio.to_thread(_net, await changes_read.fetchall())
            sink = _Sink(0)
            if len(new):
                await asyncio.to_thread(sink.add, await postings_read.fetchall(), index.vocab, new)
            fresh = None
            if held is not None and vectors_read is not None and len(new):
                fresh = await _vectors_of(await vectors_read.fetchone(), held.embedder, new)
                if fresh is None:
                    raise Stale("vectors of another dimension")
        return generation, count, tokens, new, gone, sink.entries(), fresh

    def _unless_told_ahead(self, ns_id: int, generation: int, began: float) -> None:
        """Forget a notification of a generation past ``generation``, the database's as a
        catch-up that began after it was heard read it: the primary notifies on commit, so
        the database read is behind it (a read replica) or it was not a write's (a forged
        NOTIFY), and searches would each start a catch-up for it until a write got there."""
        if self._notified.get(ns_id, 0) > generation and began > self._heard_at.get(ns_id, began):
            self._notified[ns_id] = generation
            LOCAL_INDEX_NOTIFIED_AHEAD.inc()
            logger.info(
                "notified generation not in the database",
                extra={"namespace_id": ns_id, "generation": generation},
            )

    def _checked(self, index: LocalIndex, head: tuple[Any, ...]) -> tuple[int, int, int]:
        """The namespace's generation, chunk and token counts (``_NAMESPACE``'s row),
        if ``index`` can catch up to them."""
        if index.generation < int(head[2]):
            raise Stale("the changes since the index was made are pruned from the log")
        held = index.vectors
        if held is not None and held.embedder != str(head[3]):
            raise Stale("the namespace's embedder changed")
        return int(head[0]), int(head[1]), int(head[4])

    async def _changes(self, conn: _Conn, index: LocalIndex) -> _Read | None:
        """In one snapshot (``conn`` in a transaction): the namespace's generation, chunk
        and token counts, the chunks added since ``index`` (with their postings and
        vectors) and those taken out; None if the namespace is gone."""
        ns_id, since = index.ns_id, index.generation
        params = {"ns_id": ns_id, "since": since}
        await conn.execute(_SNAPSHOT)
        head = await (await conn.execute(_NAMESPACE, params)).fetchone()
        if head is None:
            return None
        generation, count, tokens = self._checked(index, head)
        held = index.vectors
        changes = await (await conn.execute(_CHANGES, params)).fetchall()
        new, gone = await asyncio.to_thread(_net, changes)
        sink = _Sink(0)
        fresh = None
        if len(new):
            # The ids as an array the planner cannot count: given them, it took each
            # chunk for ~1,500 postings (ANALYZE's estimate of the distinct chunks; ~80
            # in fact) and chose, from ~2,900 chunks up at 1M, a scan of the namespace's
            # whole postings (15 GB) over the primary key's 45 ms.
            only = " AND chunk = ANY(ARRAY(SELECT unnest(%(new)s::int8[])))"
            values = {"new": new.tolist()}
            await self._postings(conn, ns_id, sink, index.vocab, new, only, values)
            if held is not None:
                only = " AND c.id = ANY(%(new)s::int8[])"
                fresh = await self._vectors(conn, ns_id, held.embedder, new, only, values)
                if fresh is None:
                    raise Stale("vectors of another dimension")
        return generation, count, tokens, new, gone, sink.entries(), fresh

    def _apply(
        self,
        index: LocalIndex,
        generation: int,
        new: _I64,
        gone: _I64,
        entries: _Entries,
        fresh: Vectors | None,
    ) -> LocalIndex:
        postings, ids, vectors, graph = index.postings, index.ids, index.vectors, index.graph
        ids_room = index.ids_room
        if graph is not None and fresh is not None and len(fresh.matrix):
            if fresh.matrix.shape[1] != graph.dim:
                raise Stale("vectors of another dimension")
        if vectors is not None and fresh is not None:  # positions in ``new``: shift them
            vectors = vectors.added(fresh.positions + len(ids), fresh.matrix)
        if len(gone):
            postings = postings.remove(np.flatnonzero(np.isin(ids, gone)))
        if len(new):
            terms, positions = entries.term_of_each(), entries.positions
            order = np.lexsort((terms, positions))  # chunk-major, as add_flat takes them
            counts = np.bincount(positions, minlength=len(new)).astype(np.int64)
            postings = postings.add_flat(terms[order], entries.tf[order], counts)
            (ids,), ids_room = appended((ids,), (new,), ids_room)
        if postings.dead > postings.live:
            size = len(postings)
            postings, keep = postings.compact()
            ids, ids_room = ids[keep], None
            if vectors is not None:
                vectors = vectors.renumbered(keep, size)
        if graph is not None and vectors is not None:
            if len(vectors.positions) > self._tail_max(postings.live):  # the database's HNSW
                vectors, graph = None, None
        return LocalIndex(
            index.ns_id,
            generation,
            postings,
            ids,
            index.vocab,
            vectors,
            graph,
            index.expansion,
            ids_room,
        )

    def _later(self, ns_id: int) -> None:
        """Look at the namespace again in ``_RETRY_S``, not at each search."""
        if len(self._retry_at) >= _RETRIES_KEPT:
            self._retry_at.clear()
        self._retry_at[ns_id] = time.monotonic() + _RETRY_S

    def _fits(self, count: int) -> bool:
        """Whether a namespace of ``count`` chunks should be loaded."""
        if count < self._min_chunks:
            return False
        if count * _BYTES_PER_CHUNK > self._budget:
            _TOO_LARGE.inc()
            return False
        return True

    def _make_room(self, nbytes: int) -> None:
        """Drop the least recently used indexes until ``nbytes`` more fit the budget."""
        total = self.nbytes
        while self._indexes and total + nbytes > self._budget:
            _, evicted = self._indexes.popitem(last=False)
            total -= evicted.nbytes
            _EVICTED.inc()

    def _keep(self, index: LocalIndex) -> None:
        """Keep ``index`` as its namespace's newest, then the budget (it may go itself)."""
        self._indexes[index.ns_id] = index
        self._indexes.move_to_end(index.ns_id)
        self._retry_at.pop(index.ns_id, None)
        self._make_room(0)


# A load is not started when the namespace's chunks would take more than the budget:
# ~85 postings a chunk (6 bytes each; SciFact and SQuAD texts) and its length and id.
_BYTES_PER_CHUNK = 520


def _worth(index: LocalIndex) -> int:
    """The most changes a catch-up of ``index`` reads: past them, loading is cheaper."""
    return max(1000, index.postings.live // 4)


def _past(index: LocalIndex, upto: int) -> int:
    """How many of ``index``'s chunks have an id greater than ``upto``."""
    return len(index.ids) - int(np.searchsorted(index.ids, upto, side="right"))


def _saveable_form(index: LocalIndex, vocabulary: list[str]) -> Saved | Streamed:
    """What ``_pg_snapshot`` saves of ``index``: its own arrays when it is one segment of
    live chunks (as loaded whole); otherwise its live chunks renumbered in order, with its
    segments' entries merged as they are written (``bm25.Merged``); in a thread."""
    p = index.postings
    if p.alive is None and len(p.segments) <= 1:
        s = p.segments[0] if p.segments else _EMPTY
        lengths = p.lengths[: p.chunks]
        return Saved(index.ids, lengths, s.terms, s.start, s.chunk, s.tf, vocabulary)
    if p.alive is None:
        ids, lengths, remap = index.ids, p.lengths[: p.chunks], None
    else:
        keep = np.flatnonzero(p.alive[: p.chunks])
        remap = np.full(p.chunks, -1, np.int32)
        remap[keep] = np.arange(len(keep), dtype=np.int32)
        ids, lengths = index.ids[keep], p.lengths[keep]
    merged = Merged(p.segments, p.alive, remap)
    return Streamed(ids, lengths, merged.terms, merged.start, merged.chunk, merged.tf, vocabulary)


async def _vectors_of(row: tuple[Any, ...] | None, embedder: str, ids: _I64) -> Vectors | None:
    """``_VECTORS``' row parsed in a thread; None when the vectors are of several
    dimensions (searched in SQL)."""
    if row is None or int(row[2]) > 1:
        return None
    return await asyncio.to_thread(_parse_vectors, embedder, bytes(row[0]), bytes(row[1]), ids)


def _parse_vectors(embedder: str, id_blob: bytes, vector_blob: bytes, ids: _I64) -> Vectors:
    """``_VECTORS``' row as unit vectors at their chunks' positions in ``ids``."""
    chunk = np.frombuffer(id_blob, ">i8").astype(np.int64)
    if not len(chunk):
        return Vectors(embedder, np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
    matrix = _pg_ann.unit_rows(vector_blob, len(chunk))
    return Vectors(embedder, np.searchsorted(ids, chunk).astype(np.int64), matrix)


def _give_back() -> None:
    """Return the heap the load's rows freed to the system (glibc keeps it otherwise: at 1M
    chunks ~300 MB of RSS beyond the index)."""
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def _net(changes: list[tuple[Any, ...]]) -> tuple[_I64, _I64]:
    """The chunks a run of the log added and still has, and those it took out (ids are
    never reused: a chunk is added once and taken out at most once)."""
    added = {int(c) for c, was_added in changes if was_added}
    removed = {int(c) for c, was_added in changes if not was_added}
    return np.array(sorted(added - removed), np.int64), np.array(sorted(removed), np.int64)


@dataclass(frozen=True, slots=True)
class _Entries:
    """Postings read from ``_POSTINGS`` rows: row ``i`` is term ``terms[i]`` with
    ``counts[i]`` entries, the next ones of ``positions`` (in ``ids``, ascending) and ``tf``."""

    terms: _U32
    counts: _I64
    positions: _I32
    tf: _U16

    def term_of_each(self) -> _U32:
        return np.repeat(self.terms, self.counts)


# What a catch-up read: the namespace's generation, chunk and token counts, the chunks
# added since and those taken out, the added ones' postings and vectors.
_Read = tuple[int, int, int, _I64, _I64, _Entries, Vectors | None]


class _Sink:
    """``_Entries`` filled batch by batch into arrays sized ahead for ``expected`` entries
    (grown if more come): a load holds the index and one batch, not a second copy."""

    def __init__(self, expected: int) -> None:
        self._terms: list[_U32] = []
        self._counts: list[_I64] = []
        self._positions = np.empty(expected, np.int32)
        self._tf = np.empty(expected, np.uint16)
        self._size = 0

    def add(self, rows: list[tuple[Any, ...]], vocab: dict[str, int], ids: _I64) -> None:
        """One batch of rows (terms new to ``vocab`` get the next ids); in a thread."""
        if not rows:
            return
        terms = np.fromiter((vocab.setdefault(r[0], len(vocab)) for r in rows), np.uint32)
        chunks = [np.frombuffer(r[1], ">i8") for r in rows]
        counts = np.fromiter((len(c) for c in chunks), np.int64, len(rows))
        end = self._size + int(counts.sum())
        if end > len(self._positions):
            room = max(end, 2 * len(self._positions))
            self._positions = np.resize(self._positions, room)
            self._tf = np.resize(self._tf, room)
        self._positions[self._size : end] = np.searchsorted(ids, np.concatenate(chunks))
        tf = np.concatenate([np.frombuffer(r[2], ">i4") for r in rows])
        self._tf[self._size : end] = np.clip(tf, 0, 65535)
        self._terms.append(terms)
        self._counts.append(counts)
        self._size = end

    def entries(self) -> _Entries:
        def joined(parts: list[Any], dtype: type[np.generic]) -> Any:
            return np.concatenate(parts) if parts else np.zeros(0, dtype)

        return _Entries(
            joined(self._terms, np.uint32),
            joined(self._counts, np.int64),
            self._positions[: self._size],
            self._tf[: self._size],
        )
