"""The embedded document store: one SQLite file; BM25 postings and vectors in numpy.

SQLite holds everything durable: documents, chunks with their vectors and analysed
terms, and an FTS5 index. Searching runs on a per-namespace cache built from those
rows and rebuilt when the namespace changes: the vectors as one float32 matrix (a
query is one matrix-vector product, with no extension to load) and the terms as
term-major BM25 postings (``ragtide.builtin.bm25``). FTS5's own ``bm25()`` stays
selectable (``keyword_index="fts5"``); it ranks the same way but scores every match
in SQL and was several times slower in the bench.

Concurrency: SQL reads run inline on the event loop thread (each is well under a
millisecond); writes run on a worker thread with their own connection. Index maintenance
never blocks serving (readers never wait for writers): each namespace's index is an
immutable snapshot, and only the reference to it changes. The writer thread, after
committing, makes the next snapshot from the write itself before the write returns
(new chunks appended as a small postings segment and matrix rows, deleted ones marked
dead; compacted when dead ones pile up), so this process reads its own writes and no
write rebuilds a namespace. A namespace's first load, and a reload after another
process's writes (noticed through ``PRAGMA data_version`` and the namespace's
generation, a file-wide counter that never repeats), run in a thread on a connection of
their own; meanwhile searches keep the snapshot they have, unless it is of a deleted
namespace or older than this process's own last write, when only that search waits.
WAL mode lets several processes share the file.

At scale (``docs/scaling.md``): keyword top-k is MaxScore over the postings
(``ragtide.builtin.wand``: the exact BM25 top-k without scoring every chunk); a namespace
of ``ann_min_chunks`` or more gets an HNSW index of its vectors (``ragtide.builtin.ann``,
built in the background, saved beside the file and memory-mapped at the next start,
rescored exactly); searches of big namespaces compute in a small thread pool, never on
the event loop; and at start the big namespaces are loaded before ``ping`` (``/ready``)
says the store is ready.

Starting at scale: reading a namespace row by row costs ~0.03-0.04 ms a chunk (~40 s at
1M), so a namespace of ``snapshot_min_chunks`` or more is saved after a load, in a
background thread, as a snapshot beside the file (``ragtide.builtin._snapshot``:
``<db>.snap/``, atomically replaced), and the next load maps its arrays read-only and
applies only what changed since through the writer's own steps (deleted rowids marked
dead, newer rows appended). A snapshot that does not fit the file (another incarnation,
model, BM25 parameters or format, a generation the file has not reached, a damaged
array) is ignored with a warning and replaced after a full load; one that cannot be
written costs a warning. Chunk rowids are never given twice (``_hold_rowids``), so
"newer than its largest rowid" is exactly what was written since.

Memory: the snapshots are held within ``index_budget_mb`` (each estimated by
``_Index.nbytes``: its arrays, postings, id maps and a full decoded-chunk cache). Past
it, installing a snapshot evicts the least recently searched others (never one a search
holds): only the reference goes, and the next search of an evicted namespace loads it
again, in a thread, as a first search does. A namespace larger than the whole budget is
served all the same (with a warning). Snapshots warmed at start count too. HNSW bases are
memory-mapped files, not counted, and go with their snapshot when it is evicted; so are
the float32 vectors of a namespace of ``ann_min_chunks`` or more (``_vectors``: a file
without a name beside the database, written a block at a time, never held twice), which
it needs only to rescore the HNSW candidates. Smaller namespaces keep theirs in memory.
A load gives its freed temporaries back to the system (``malloc_trim``).
Accounted bytes and evictions: ``ragtide_budget_bytes`` and ``ragtide_budget_evictions``
with ``store="search_indexes"``.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import gc
import hashlib
import json
import logging
import re
import threading
import time
import weakref
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal, NamedTuple, TypeVar

import apsw
import numpy as np
from pydantic import BaseModel, Field

from ragtide.builtin import _snapshot
from ragtide.builtin._rows import (
    KEY_COLUMNS,
    TENANT_COLUMNS,
    chunk_from_row,
    document_from_row,
    key_from_row,
    key_to_row,
    tenant_from_row,
)
from ragtide.builtin._vectors import FileRows, VectorFile, mapped, release
from ragtide.builtin.analyzer import decode_terms
from ragtide.builtin.ann import BuildCancelled, VectorBase, build_base, open_base, save_base
from ragtide.builtin.bm25 import Analyzer, Postings, pack
from ragtide.builtin.wand import SourceFilter, top_k
from ragtide.components import Vectors
from ragtide.errors import BackendUnavailable, InvalidRequest
from ragtide.observability import BUDGET_BYTES, BUDGET_EVICTIONS
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

_log = logging.getLogger(__name__)

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
_Write = tuple[DocumentInfo, Sequence[Chunk], Vectors]  # one document to put
_CHUNK_CACHE = 20_000  # chunks kept decoded per namespace; cleared when exceeded
_TERM_CACHE = 100_000  # query terms kept resolved; cleared when exceeded
_WRITER_TERMS = 200_000  # term ids the writer remembers (~20 MB); cleared when exceeded
_FIELD = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,63}")
_COMPACT_MIN = 1024  # deleted positions an index keeps before it is compacted ...
_COMPACT_SHARE = 4  # ... once they are also over 1/4 of its positions
_FILL_BLOCK = 1_024  # rows a load buffers before writing them to a vector file
_TERMS_GUESS = 96  # distinct terms a chunk has, to size a load's buffers (grown if short)
_LOAD_ROUNDS = 3  # loads a search waits for before it takes the newest it got
# A load from a saved snapshot applies the chunks written since through the writer's own
# path, this many rows at a time (their blobs are not all held at once) ...
_DELTA_BLOCK = 4_096
# ... if they are at most a quarter of the snapshot (past that, a full load costs about
# as much and leaves a compact index); and the snapshot is written again when what a
# load applied (chunks written and deleted since) passes a tenth of it.
_DELTA_SHARE = 4
_REFRESH_SHARE = 10
# What a snapshot holds beyond its numpy arrays, as ``_Index.nbytes`` estimates it. Rough
# on purpose, like the other budgets: a ceiling for the operator, not an exact RSS.
_INDEX_OVERHEAD = 8_192  # the snapshot's objects, dicts and array headers
_SEGMENT_OVERHEAD = 600  # a postings segment: its object and four array headers
_SOURCE_BYTES = 600  # a distinct (document id, metadata): tuple, strings, dict, map entry
_DECODED_CHUNK_BYTES = 2_048  # a decoded chunk: ~200 words of text, the Chunk, its slot

_Bools = np.ndarray[Any, np.dtype[np.bool_]]
_Ints = np.ndarray[Any, np.dtype[np.int64]]


class _Row(NamedTuple):
    """One chunk as an index takes it (the columns ``_index_of`` reads, in order)."""

    rowid: int
    document_id: str
    metadata: str  # JSON text, as in the file
    embedder: str
    vector: bytes | Vectors
    term_ids: bytes
    term_tfs: bytes


# What a load reads of each chunk (a full load, a snapshot's catch-up): ``_Row``'s columns.
_LOAD_COLUMNS = ", ".join(_Row._fields)


@dataclass(slots=True)
class _Delta:
    """What one write transaction did to one namespace, for the writer to apply."""

    prior: int  # the namespace's generation before the transaction
    incarnation: int
    generation: int
    deleted: list[int] = field(default_factory=list)  # rowids
    rows: list[_Row] = field(default_factory=list)
    dropped: bool = False


@dataclass(frozen=True, slots=True)
class _Mapped:
    """Where a snapshot lineage of at least ``min_rows`` chunks keeps its vectors: a
    memory-mapped file in ``directory`` (``ragtide.builtin._vectors``), not the heap."""

    directory: Path
    min_rows: int

    def wants(self, rows: int, dim: int) -> bool:
        return rows >= self.min_rows and dim > 0


def _file_of(mapped: _Mapped | None, rows: int, dim: int, capacity: int) -> VectorFile | None:
    """A vector file of ``capacity`` rows if ``mapped`` wants ``rows`` in one; None: keep
    them in memory (also when the directory refuses a file: served all the same)."""
    if mapped is None or not mapped.wants(rows, dim):
        return None
    try:
        return VectorFile(mapped.directory, dim, capacity)
    except OSError:
        _log.warning("could not make a vector file in %s", mapped.directory, exc_info=True)
        return None


@functools.cache
def _malloc_trim() -> Callable[[int], int] | None:
    try:
        trim: Callable[[int], int] = ctypes.CDLL(None).malloc_trim
        return trim
    except (OSError, AttributeError):  # not glibc
        return None


def _trim() -> None:
    """Give the C heap's free memory back to the system (glibc ``malloc_trim``). A load
    frees temporaries (its read buffers, about the size of the postings it keeps; three
    times that before the postings were built a piece at a time); glibc kept them (in the
    load thread's arena, and under the mmap threshold it raises as big arrays are freed),
    which was 2 of the 3.5 KB of RSS per chunk a load added (10k chunks: 1.6 after it)."""
    trim = _malloc_trim()
    if trim is not None:
        trim(0)


@dataclass(slots=True)
class _Index:
    """One namespace's search structures, as of one ``generation``: a snapshot.

    Chunks sit at positions ``0..size-1`` in rowid order; a deleted one stays, dead
    (``postings.alive``), until the index is compacted. A write makes the next snapshot:
    new chunks go past ``size`` into buffers the snapshots of one lineage share (an
    earlier snapshot never reads past its own ``size``), deletions copy the live mask.
    So a search holding a snapshot is never disturbed by the writer making the next.
    """

    generation: int
    incarnation: int  # which creation of the namespace (another after a delete)
    embedder: str  # the newest model's: only its vectors are searched
    # Rows ``0..size-1`` in use, room after them: in memory, or for a namespace of
    # ``ann_min_chunks`` or more a read-only mapping of ``vectors`` (a file).
    matrix: Vectors
    vector_ok: _Bools | None  # positions whose vector is the embedder's; None: all
    rowids: _Ints  # same length as ``matrix``
    # A position's document id and metadata, as an index into ``sources``: the chunks of
    # a document mostly share both, so a filter is evaluated once per distinct pair.
    source: np.ndarray[Any, np.dtype[np.int32]]  # same length as ``matrix``
    sources: list[tuple[str, dict[str, Any]]]  # shared, append-only
    source_ids: dict[tuple[str, str], int]  # (document id, metadata JSON) -> index
    postings: Postings
    claimed: list[int]  # how far the lineage's buffers are written
    vectors: VectorFile | None = None  # the lineage's file ``matrix`` maps; None: memory
    origin: FileRows | None = None  # the saved snapshot's file ``matrix`` maps, if it does
    writes: tuple[int, int] = (0, 0)  # the file's write counters at its load (``_write_counts``)
    masks: dict[Filter, _Bools] = field(default_factory=dict)  # by source, grown on use
    chunks: dict[int, Chunk] = field(default_factory=dict)  # by position, filled on demand
    unknown: set[str] = field(default_factory=set)  # query terms without an id (this snapshot)

    @property
    def size(self) -> int:
        return self.postings.chunks

    def vector_mask(self) -> _Bools | None:
        """Positions a vector search may return; None: every one."""
        alive, ok = self.postings.alive, self.vector_ok
        if ok is None:
            return alive
        return ok[: self.size] if alive is None else alive & ok[: self.size]

    def admits(self, filter: Filter) -> Callable[[_Ints], _Bools]:
        """Which of some positions ``filter`` admits (tested once per distinct source)."""
        count = len(self.sources)
        mask = self.masks.get(filter)
        if mask is None or len(mask) < count:
            done = 0 if mask is None else len(mask)
            tail = np.fromiter(
                (filter.matches(d, m) for d, m in self.sources[done:count]), np.bool_
            )
            mask = tail if mask is None else np.concatenate((mask, tail))
            if len(self.masks) < 256 or filter in self.masks:
                self.masks[filter] = mask
        return SourceFilter(mask, self.source)

    def document_id(self, position: int) -> str:
        return self.sources[int(self.source[position])][0]

    def nbytes(self) -> int:
        """The memory this snapshot is accounted for (``SQLiteStore.Config.index_budget_mb``).

        Counted: its numpy arrays as allocated (matrix, rowids, sources, vector mask; the
        postings' segments, lengths and live mask), room to grow included; a fixed cost per
        snapshot, segment and distinct (document, metadata); and the decoded-chunk cache as
        full (``min(size, _CHUNK_CACHE)`` chunks). Not counted: what searches add on the
        way (filter masks, MaxScore bounds, document frequencies, unknown query terms), the
        HNSW base and a big namespace's vectors (memory-mapped files: page cache the kernel
        drops under pressure, as the HNSW base's), and for the same reason every array
        mapped from a saved snapshot (``_snapshot``: a namespace loaded from one holds its
        matrix, rowids, sources, lengths, masks and postings segments in page cache until
        a write or compaction copies them into buffers of its own, which count). Buffers
        that snapshots of one lineage share are counted once per snapshot, which is right
        for the one snapshot installed.
        """
        postings = self.postings
        held: list[np.ndarray[Any, Any]] = [self.matrix, self.rowids, self.source, postings.lengths]
        held += [a for a in (self.vector_ok, postings.alive) if a is not None]
        for s in postings.segments:
            held += (s.terms, s.start, s.chunk, s.tf)
        arrays = sum(a.nbytes for a in held if not mapped(a))
        return (
            arrays
            + _INDEX_OVERHEAD
            + _SEGMENT_OVERHEAD * len(postings.segments)
            + _SOURCE_BYTES * len(self.sources)
            + _DECODED_CHUNK_BYTES * min(self.size, _CHUNK_CACHE)
        )

    @staticmethod
    def source_of(
        sources: list[tuple[str, dict[str, Any]]],
        ids: dict[tuple[str, str], int],
        document_id: str,
        metadata: str,
    ) -> int:
        key = (document_id, metadata)
        found = ids.get(key)
        if found is None:
            found = ids[key] = len(sources)
            sources.append((document_id, json.loads(metadata)))
        return found

    def live_positions(self, rowids: Sequence[int]) -> _Ints | None:
        """The live positions of ``rowids``; None if one is not live here.

        Live rowids rise with position: SQLite gives a new row one more than the largest
        rowid in the table, so a chunk appended is after every live one.
        """
        if not len(rowids):  # a write of new chunks only: nothing to look up
            return np.zeros(0, np.int64)
        alive = self.postings.alive
        live = np.arange(self.size) if alive is None else np.flatnonzero(alive)
        wanted = np.asarray(rowids, np.int64)
        found = np.searchsorted(self.rowids[live], wanted)
        if len(wanted) and (found.max() >= len(live) or (self.rowids[live[found]] != wanted).any()):
            return None
        return live[found]


def _spare(n: int) -> int:
    """Rows of room to append after ``n`` (a 16th, and a few for small namespaces: with 64
    a 50-chunk namespace's matrix was 117 rows, over half of its memory unused)."""
    return 8 + n // 16


def _index_of(
    rows: Sequence[_Row] | Any,
    count: int,
    embedder: str,
    dim: int,
    generation: int,
    incarnation: int,
    k1: float,
    b: float,
    mapped: _Mapped | None = None,
) -> _Index:
    """An index of ``count`` rows in rowid order (an iterable: a cursor is not held whole).

    The vectors are allocated once at their final size (plus room to grow) and filled row
    by row, so loading never holds them twice: in memory, or, for ``count`` rows that
    ``mapped`` wants in a file, written to it a block at a time from one small buffer.
    """
    spare = _spare(count)
    vectors = _file_of(mapped, count, dim, count + spare)
    if vectors is None:
        matrix = buffer = np.zeros((count + spare, dim), np.float32)
    else:
        matrix, buffer = vectors.matrix, np.zeros((_FILL_BLOCK, dim), np.float32)
    block = len(buffer)
    rowids = np.zeros(count + spare, np.int64)
    ok = np.ones(count + spare, np.bool_)
    source = np.zeros(count + spare, np.int32)
    sources: list[tuple[str, dict[str, Any]]] = []
    source_ids: dict[tuple[str, str], int] = {}
    # Every row's term ids and frequencies, copied as read: bytes objects kept per row
    # until the end were freed among the sources' objects made meanwhile, and Python's
    # allocator kept the arenas they shared (~0.6 KB per chunk after a load).
    ids = np.empty(count * _TERMS_GUESS, np.uint32)
    tfs = np.empty(len(ids), np.uint16)
    counts = np.zeros(count, np.int64)
    used = read = 0
    for i, row in enumerate(rows):
        if i >= count:
            raise BackendUnavailable("the namespace changed while it was read")
        rowid, document_id, meta, row_embedder, vector, term_ids, term_tfs = row
        rowids[i] = rowid
        values = np.frombuffer(vector, np.float32) if isinstance(vector, bytes) else vector
        at = i % block
        if row_embedder == embedder and len(values) == dim:
            buffer[at] = values
        else:
            ok[i] = False
            buffer[at] = 0
        if vectors is not None and at == block - 1:
            vectors.write(i - at, buffer)
        source[i] = _Index.source_of(sources, source_ids, document_id, meta)
        k = counts[i] = len(term_ids) // 4
        if used + k > len(ids):
            ids, tfs = _longer(ids, used, used + k), _longer(tfs, used, used + k)
        ids[used : used + k] = np.frombuffer(term_ids, np.uint32)
        tfs[used : used + k] = np.frombuffer(term_tfs, np.uint16)
        used += k
        read = i + 1
    if read != count:
        raise BackendUnavailable("the namespace changed while it was read")
    if vectors is not None and read % block:
        vectors.write(read - read % block, buffer[: read % block])
    postings = Postings.empty(k1, b).add_flat(ids[:used], tfs[:used], counts, spare=spare)
    del ids, tfs  # before the index is made: not held beside it
    return _Index(
        generation=generation,
        incarnation=incarnation,
        embedder=embedder,
        matrix=matrix,
        vector_ok=None if ok[:read].all() else ok,
        rowids=rowids,
        source=source,
        sources=sources,
        source_ids=source_ids,
        postings=postings,
        claimed=[read],
        vectors=vectors,
    )


def _longer(buffer: np.ndarray[Any, Any], used: int, needed: int) -> np.ndarray[Any, Any]:
    """``buffer[:used]`` in a buffer of at least ``needed`` (half as long again)."""
    longer = np.empty(max(needed, len(buffer) * 3 // 2), buffer.dtype)
    longer[:used] = buffer[:used]
    return longer


def _grown(buffer: np.ndarray[Any, Any], used: int, needed: int) -> np.ndarray[Any, Any]:
    """A copy of ``buffer[:used]`` with room for ``needed`` rows (and some)."""
    grown = np.zeros((needed + _spare(needed), *buffer.shape[1:]), buffer.dtype)
    grown[:used] = buffer[:used]
    return grown


def _moved(
    index: _Index, used: int, needed: int, mapped: _Mapped | None
) -> tuple[Vectors, VectorFile | None]:
    """The vectors of ``index``'s first ``used`` rows with room for ``needed`` (and some),
    in a lineage of their own: a file when ``mapped`` wants ``needed`` rows in one (copied
    a block at a time: never a second copy in memory), else memory."""
    made = _copied(
        mapped, index.matrix, used, needed + _spare(needed), size=needed, origin=index.origin
    )
    return (made.matrix, made) if made is not None else (_grown(index.matrix, used, needed), None)


def _copied(
    mapped: _Mapped | None,
    source: Vectors,
    rows: _Ints | int,
    capacity: int,
    *,
    size: int,
    origin: FileRows | None = None,
) -> VectorFile | None:
    """A new vector file of ``source[rows]`` (or its first ``rows``), room for ``capacity``,
    if ``mapped`` wants a lineage of ``size`` rows in one; None: keep them in memory (also
    when the directory refuses a file)."""
    if mapped is None or not mapped.wants(size, source.shape[1]):
        return None
    try:
        return VectorFile.copy_of(mapped.directory, source, rows, capacity, origin=origin)
    except OSError:
        _log.warning("could not make a vector file in %s", mapped.directory, exc_info=True)
        return None


def _advance(
    index: _Index, delta: _Delta, k1: float, b: float, mapped: _Mapped | None = None
) -> _Index | None:
    """The snapshot after ``delta`` from the one before it; None if it takes a full load.

    Costs in proportion to the change (and one pass over the live mask), never a rebuild:
    postings of the new chunks become a small segment; deleted chunks are marked dead.
    New vectors go after the others; a lineage whose room runs out continues in a bigger
    buffer (a file's is extended in place: nothing copied).
    """
    rows = delta.rows
    n = index.size
    positions = index.live_positions(delta.deleted)
    if positions is None:
        return None
    if rows and len(positions) == index.postings.live:
        # Nothing left of the old chunks: start a lineage of the new ones (the first
        # chunks of an empty namespace, or a new model's).
        last = rows[-1]
        dim = len(last.vector)
        return _index_of(
            rows, len(rows), last.embedder, dim, delta.generation, delta.incarnation, k1, b, mapped
        )
    dim = index.matrix.shape[1]
    if any(r.embedder != index.embedder or len(r.vector) != dim for r in rows):
        return None  # another model: only its vectors are searched from now on
    postings = index.postings.remove(positions)
    k = len(rows)
    matrix, rowids, claimed = index.matrix, index.rowids, index.claimed
    source, vectors = index.source, index.vectors
    if k:
        # No other snapshot of the lineage wrote past ``n``, and its buffers are its own:
        # arrays mapped from a saved snapshot are read-only, so appending to a namespace
        # loaded from one starts new buffers (the vectors copied, as on a branch).
        head = claimed[0] == n and rowids.flags.writeable and source.flags.writeable
        head = head and (vectors is not None or matrix.flags.writeable)
        if not head or n + k > len(rowids):
            rowids, source = _grown(rowids, n, n + k), _grown(source, n, n + k)
            if head and vectors is not None:  # the same file, longer: the lineage goes on
                matrix = vectors.grow(len(rowids))
                claimed[0] = n + k
            else:
                matrix, vectors = _moved(index, n, n + k, mapped)
                claimed = [n + k]
        else:
            claimed[0] = n + k
        added = np.asarray([r.vector for r in rows], np.float32)
        if vectors is None:
            matrix[n : n + k] = added
        else:
            vectors.write(n, added)
        rowids[n : n + k] = [r.rowid for r in rows]
        source[n : n + k] = [
            _Index.source_of(index.sources, index.source_ids, r.document_id, r.metadata)
            for r in rows
        ]
        postings = postings.add_flat(
            np.frombuffer(b"".join(r.term_ids for r in rows), np.uint32),
            np.frombuffer(b"".join(r.term_tfs for r in rows), np.uint16),
            np.fromiter((len(r.term_ids) // 4 for r in rows), np.int64, k),
            spare=_spare(n),
        )
    ok = index.vector_ok
    if ok is not None and len(ok) < n + k:
        ok = np.concatenate((ok[:n], np.ones(k + _spare(n + k), np.bool_)))
    following = _Index(
        generation=delta.generation,
        incarnation=delta.incarnation,
        embedder=index.embedder,
        matrix=matrix,
        vector_ok=ok,
        rowids=rowids,
        source=source,
        sources=index.sources,
        source_ids=index.source_ids,
        postings=postings,
        claimed=claimed,
        vectors=vectors,
        origin=index.origin if matrix is index.matrix else None,
        masks=index.masks,
        # Decoded chunks by position: a branch that could not append in place may hold
        # other chunks past ``n`` than this one.
        chunks=index.chunks if claimed is index.claimed else {},
    )
    if postings.dead > _COMPACT_MIN and postings.dead * _COMPACT_SHARE > postings.chunks:
        return _compacted(following, mapped)
    return following


def _compacted(index: _Index, mapped: _Mapped | None = None) -> _Index:
    """The same snapshot with its dead positions dropped (a new lineage). Vectors that
    ``mapped`` wants in a file are copied to a new one a block at a time."""
    postings, keep = index.postings.compact(spare=_spare(index.postings.live))
    live = len(keep)
    capacity = live + _spare(live)
    dim = index.matrix.shape[1]
    vectors = _copied(mapped, index.matrix, keep, capacity, size=live)
    if vectors is None:
        matrix = np.zeros((capacity, dim), np.float32)
        matrix[:live] = index.matrix[keep]
    else:
        matrix = vectors.matrix
    rowids = np.zeros(capacity, np.int64)
    rowids[:live] = index.rowids[keep]
    ok = None
    if index.vector_ok is not None:
        ok = np.ones(capacity, np.bool_)
        ok[:live] = index.vector_ok[keep]
    source = np.zeros(capacity, np.int32)
    source[:live] = index.source[keep]
    return _Index(
        generation=index.generation,
        incarnation=index.incarnation,
        embedder=index.embedder,
        matrix=matrix,
        vector_ok=ok,
        rowids=rowids,
        source=source,
        sources=index.sources,
        source_ids=index.source_ids,
        masks=index.masks,
        postings=postings,
        claimed=[live],
        vectors=vectors,
    )


def _best(positions: _Ints, scores: Vectors, limit: int) -> tuple[_Ints, Vectors]:
    """The ``limit`` best of ``positions`` by ``scores`` (aligned), best first."""
    k = min(limit, len(positions))
    if not k:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    best = np.argpartition(-scores, k - 1)[:k]
    best = best[np.argsort(-scores[best], kind="stable")]
    return positions[best], scores[best]


def _exact_vector_top(
    index: _Index, query: Vectors, limit: int, admit: Callable[[_Ints], _Bools] | None
) -> tuple[_Ints, Vectors]:
    """Brute force: every admitted live position's inner product with ``query``."""
    n = index.size
    valid = index.vector_mask()
    if valid is None and admit is None:
        scores = index.matrix[:n] @ query
        return _best(np.arange(n), scores, limit)
    candidates = np.arange(n) if valid is None else np.flatnonzero(valid)
    if admit is not None and len(candidates):
        candidates = candidates[admit(candidates)]
    if len(candidates) * 2 > n:  # most rows: one product over all, then pick
        scores = (index.matrix[:n] @ query)[candidates]
    else:
        scores = index.matrix[candidates] @ query
    return _best(candidates, scores, limit)


def _ann_vector_top(
    index: _Index,
    base: VectorBase,
    query: Vectors,
    limit: int,
    admit: Callable[[_Ints], _Bools] | None,
    oversample: int,
    expansion: int,
) -> tuple[_Ints, Vectors]:
    """The base's nearest (oversampled), the snapshot's tail past it, both rescored
    exactly; brute force when tombstones or a filter leave fewer than ``limit``."""
    n = index.size
    rowids = index.rowids[:n]
    keys = base.search(query, max(limit * oversample, 64), expansion)
    at = np.searchsorted(rowids, keys)
    at[at >= n] = max(n - 1, 0)
    candidates = at[rowids[at] == keys]  # tombstones: rowids no longer in the snapshot
    valid = index.vector_mask()
    if valid is not None:
        candidates = candidates[valid[candidates]]
    if admit is not None and len(candidates):
        candidates = candidates[admit(candidates)]
    if len(candidates) < limit:
        return _exact_vector_top(index, query, limit, admit)
    tail = np.arange(int(np.searchsorted(rowids, base.covered, "right")), n)
    if len(tail):
        if valid is not None:
            tail = tail[valid[tail]]
        if admit is not None and len(tail):
            tail = tail[admit(tail)]
        candidates = np.unique(np.concatenate((candidates, tail)))
    return _best(candidates, index.matrix[candidates] @ query, limit)


def _newer(a: _Index | None, b: _Index | None) -> _Index | None:
    """The later of two snapshots of one namespace (generations never repeat in a file)."""
    if a is None or (b is not None and b.generation > a.generation):
        return b
    return a


def _fits(base: VectorBase, index: _Index) -> bool:
    """Whether ``base`` holds vectors of ``index``'s namespace incarnation and model."""
    return (
        base.incarnation == index.incarnation
        and base.embedder == index.embedder
        and base.dim == index.matrix.shape[1]
    )


class _Rows:
    """``matrix[rows]`` read a slice at a time (a build never copies the whole matrix)."""

    def __init__(self, matrix: Vectors, rows: _Ints) -> None:
        self._matrix, self._rows = matrix, rows
        self.shape = (len(rows), matrix.shape[1])

    def __getitem__(self, part: slice) -> Vectors:
        return self._matrix[self._rows[part]]


class _Snapshots:
    """The resident snapshots by namespace, least recently searched first, and the bytes
    they are accounted for (``_Index.nbytes``) against a budget.

    Not locked itself: the store calls every method but ``get`` under its
    ``_swap_lock``. ``put`` evicts the least recently searched snapshots while the total
    is over the budget, never the one it installs nor one a search holds (``pin``), and
    returns what it evicted, for the caller to let go of outside the lock.
    """

    def __init__(self, budget: int) -> None:
        self.budget = budget  # bytes; 0: unlimited
        self.bytes = 0
        self._items: OrderedDict[str, tuple[_Index, int]] = OrderedDict()
        self._pins: dict[str, int] = {}  # namespace -> searches holding its snapshot

    def get(self, namespace: str) -> _Index | None:
        item = self._items.get(namespace)
        return None if item is None else item[0]

    def __contains__(self, namespace: str) -> bool:
        return namespace in self._items

    def __len__(self) -> int:
        return len(self._items)

    def names(self) -> list[str]:
        """Least recently searched first."""
        return list(self._items)

    def put(
        self, namespace: str, index: _Index, nbytes: int, *, searched: bool
    ) -> list[tuple[str, _Index]]:
        """Make ``index`` ``namespace``'s snapshot (the most recently searched if
        ``searched``, else where the one it replaces was); the evicted, oldest first."""
        old = self._items.get(namespace)
        self._items[namespace] = (index, nbytes)
        self.bytes += nbytes - (0 if old is None else old[1])
        if searched:
            self._items.move_to_end(namespace)
        excess = self.bytes - self.budget
        if not self.budget or excess <= 0:
            return []
        victims = []
        for name, (_, size) in self._items.items():
            if excess <= 0:
                break
            if name != namespace and name not in self._pins:
                victims.append(name)
                excess -= size
        evicted = [(name, self._items[name][0]) for name in victims]
        for name in victims:
            self.drop(name)
        _EVICTED.inc(len(victims))
        return evicted

    def drop(self, namespace: str) -> _Index | None:
        item = self._items.pop(namespace, None)
        if item is None:
            return None
        self.bytes -= item[1]
        return item[0]

    def pin(self, namespace: str) -> None:
        """A search holds the snapshot: the most recently searched, and not evicted until
        as many ``unpin``."""
        self._pins[namespace] = self._pins.get(namespace, 0) + 1
        if namespace in self._items:
            self._items.move_to_end(namespace)

    def unpin(self, namespace: str) -> None:
        left = self._pins.pop(namespace) - 1
        if left:
            self._pins[namespace] = left

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0


_live: weakref.WeakSet[SQLiteStore] = weakref.WeakSet()
BUDGET_BYTES.labels("search_indexes").set_function(lambda: sum(s.index_bytes for s in list(_live)))
_EVICTED = BUDGET_EVICTIONS.labels("search_indexes", "bytes")


class SQLiteStore:
    """``DocumentStore`` on one SQLite file (entry point ``sqlite``)."""

    # Ingestion may count chunks' terms in its parse workers (``Chunk.terms``): this store
    # indexes them as given, with the analyser it would use itself.
    takes_chunk_terms: ClassVar[bool] = True

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
        search_threads: int = Field(
            2, ge=0, description="Threads big searches compute in (0: on the event loop)."
        )
        offload_chunks: int = Field(
            20_000, ge=0, description="Namespace size from which a search leaves the loop."
        )
        ann_min_chunks: int = Field(
            50_000,
            ge=0,
            description="Namespace size from which vectors get an HNSW index (0: never).",
        )
        ann_quantisation: Literal["i8", "f16", "f32"] = Field(
            "i8", description="How the HNSW index stores vectors (scores are rescored exactly)."
        )
        ann_oversample: int = Field(4, ge=1, description="HNSW candidates per result wanted.")
        # 512: recall@30 0.997 on the scale bench's 30k corpus (128: 0.96, -0.02 nDCG@10)
        ann_expansion: int = Field(512, ge=16, description="HNSW search breadth (ef).")
        ann_threads: int = Field(1, ge=1, description="Threads an HNSW build uses.")
        # Loading a namespace costs ~0.025 ms of CPU per chunk (SciFact, 8,099 chunks:
        # 0.17-0.23 s); at 10,000 a namespace just below it made its first search after
        # ready take 1.6-2.2 s on a busy machine. From 500 chunks a load would cost more
        # than a search's p99, so such namespaces are loaded before /ready says yes;
        # smaller ones load on their first search in a few milliseconds.
        warm_min_chunks: int = Field(
            500,
            ge=0,
            description="Namespaces this big are loaded at start, /ready waiting (0: none).",
        )
        warm_max_chunks: int = Field(
            5_000_000, ge=0, description="Chunks loaded at start at most (largest first)."
        )
        index_budget_mb: float = Field(
            1024,
            ge=0,
            description="MiB the namespaces' search indexes may hold together (estimated); "
            "past it the least recently searched are dropped, to be reloaded by their next "
            "search (0: unlimited).",
        )
        # A full load costs ~0.03-0.04 ms a chunk: 0.3-0.4 s at 10,000, where mapping a
        # snapshot and opening its ~16 files costs a few milliseconds. Below it a snapshot
        # would save little and cost a directory and ~1.7 KB a chunk of disk (the vectors
        # again, and the postings) per namespace, for every small tenant.
        snapshot_min_chunks: int = Field(
            10_000,
            ge=0,
            description="Namespaces this big are saved as snapshots beside the file after a "
            "load and mapped by the next load instead of read row by row (0: never).",
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
        # namespace -> (generation, incarnation) as the file last said
        self._generations: dict[str, tuple[int, int]] = {}
        # The current snapshot of each namespace searched, within ``index_budget_mb``.
        # Only references change, under ``_swap_lock`` (held for a dict operation, never
        # for work): the writer thread installs the next snapshot after a write, a load's
        # thread one read from the file, evicting the least recently searched past the
        # budget (a search reloads an evicted namespace, as it loads one never searched).
        self._indexes = _Snapshots(round(config.index_budget_mb * 2**20))
        self._oversized: set[str] = set()  # namespaces warned of as larger than the budget
        self._swap_lock = threading.Lock()
        # The generation this process's own last write made: a search waits for at least
        # that (read-your-writes) when the writer could not advance the snapshot itself.
        self._required: dict[str, int] = {}
        self._loads: dict[str, asyncio.Task[_Index | None]] = {}
        # The writer's write under way: the namespaces it changed and how, from the change
        # in the transaction (``_bump``) until their snapshots are brought past it
        # (``_follow``). Meanwhile a search of one that sees the newer generation serves the
        # snapshot it has and starts no load (``_index``).
        self._pending: dict[str, _Delta] | None = None
        self._term_ids: dict[str, int] = {}  # query term -> id; ids never change
        self._written_terms = _WriterTerms()  # the writer thread's own
        self._analyzer = Analyzer()
        self._search_pool: ThreadPoolExecutor | None = None  # made in start()
        # HNSW bases by namespace (``ragtide.builtin.ann``), built one at a time in the
        # background and swapped in whole; a search uses the one it finds.
        self._bases: dict[str, VectorBase] = {}
        self._ann_pool: ThreadPoolExecutor | None = None
        self._building: dict[str, asyncio.Future[None]] = {}
        self._closing = False
        self._warming: asyncio.Task[None] | None = None  # loads at start; /ready waits
        self.rehearsals = 0  # searches run by the warm-up, one per warmed namespace
        # Snapshots being saved (``_snapshot``), one thread, one per namespace at a time.
        self._snapshot_pool: ThreadPoolExecutor | None = None
        self._saving: dict[str, Future[None]] = {}
        weights = (config.title_weight, config.headings_weight, config.text_weight)
        self._bm25 = "bm25(chunks_fts, {}, {}, {})".format(*weights)
        _live.add(self)

    @property
    def path(self) -> Path:
        return self._path

    @property
    def index_bytes(self) -> int:
        """Bytes the resident search snapshots are accounted for (``_Index.nbytes``): at
        most ``index_budget_mb``, plus the last one installed and those searches hold."""
        return self._indexes.bytes

    def index_loaded(self, namespace: str) -> bool:
        """Whether ``namespace``'s search snapshot is resident (its next search needs no
        load unless the namespace changed)."""
        return namespace in self._indexes

    # --- lifecycle -----------------------------------------------------------------------

    async def start(self) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        self._writer = self._connect()
        with self._write_lock:
            # The write lock first: processes starting together on one file then wait for
            # each other (busy_timeout) instead of failing on a read lock's upgrade, which
            # SQLite refuses at once when another reader also waits to write.
            self._writer.execute("BEGIN IMMEDIATE")
            try:
                self._writer.execute(_SCHEMA)
                _migrate(self._writer)
                _add_column(self._writer, "namespaces", "incarnation INTEGER NOT NULL DEFAULT 0")
            except BaseException:
                self._writer.execute("ROLLBACK")
                raise
            self._writer.execute("COMMIT")
        self._reader = self._connect()
        if self._config.search_threads:
            self._search_pool = ThreadPoolExecutor(
                self._config.search_threads, thread_name_prefix="ragtide-search"
            )
        self._ann_pool = ThreadPoolExecutor(1, thread_name_prefix="ragtide-ann")
        self._snapshot_pool = ThreadPoolExecutor(1, thread_name_prefix="ragtide-snapshot")
        self._closing = False

    async def warm(self) -> None:
        """Begin loading the namespaces of ``warm_min_chunks`` chunks or more, in the
        background; ``ping`` says not ready until they are loaded. For a process that
        serves searches: ``ragtide ingest`` and the worker load only what they search."""
        if self._config.warm_min_chunks and self._warming is None:
            big = await asyncio.to_thread(self._big_namespaces)
            if big:
                self._warming = asyncio.create_task(self._warm(big))

    def _connect(self) -> apsw.Connection:
        try:
            conn = apsw.Connection(str(self._path))
            conn.set_busy_timeout(self._config.busy_timeout_ms)
            conn.execute("PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;")
        except apsw.Error as exc:
            raise BackendUnavailable(f"cannot open the database {self._path}: {exc}") from exc
        return conn

    async def aclose(self) -> None:
        self._closing = True  # a base being built stops at its next batch
        if self._warming is not None:
            self._warming.cancel()
            await asyncio.gather(self._warming, return_exceptions=True)
            self._warming = None
        builds = list(self._building.values())
        if builds:
            await asyncio.gather(*builds, return_exceptions=True)
        if self._ann_pool is not None:
            await asyncio.to_thread(self._ann_pool.shutdown, True)
            self._ann_pool = None
        if self._snapshot_pool is not None:  # a save under way stops between two files
            await asyncio.to_thread(self._snapshot_pool.shutdown, True, cancel_futures=True)
            self._snapshot_pool = None
        self._bases.clear()
        loads = list(self._loads.values())
        if loads:  # threads cannot be cancelled: let them finish with their own connection
            await asyncio.gather(*loads, return_exceptions=True)
        self._indexes.clear()
        if self._search_pool is not None:
            await asyncio.to_thread(self._search_pool.shutdown, True)
            self._search_pool = None
        for conn in (self._reader, self._writer):
            if conn is not None:
                conn.close()
        self._reader = self._writer = None

    async def snapshots_saved(self) -> None:
        """Wait for the snapshots being saved (in the background after loads) to be on
        disk: for benches, tests and tools that want the next start to map them."""
        while True:
            pending = [f for f in self._saving.values() if not f.done()]
            if not pending:
                return
            await asyncio.gather(*map(asyncio.wrap_future, pending), return_exceptions=True)

    @property
    def _db(self) -> apsw.Connection:
        if self._reader is None:
            raise BackendUnavailable("the document store is not started")
        return self._reader

    async def ping(self) -> None:
        """Raise unless the file answers and the big namespaces' indexes are loaded: a
        process is ready when it can search every namespace within its usual time."""
        try:
            self._db.execute("SELECT 1").fetchall()
        except apsw.Error as exc:
            raise BackendUnavailable(f"the document store does not answer: {exc}") from exc
        if self._warming is not None and not self._warming.done():
            raise BackendUnavailable("the search indexes are still loading")

    def _big_namespaces(self) -> list[tuple[str, int]]:
        """Namespaces of at least ``warm_min_chunks`` chunks with their sizes, largest
        first (a thread: it reads every document row)."""
        conn = self._connect()
        try:
            rows = conn.execute(
                "SELECT namespace, sum(chunks) AS n FROM documents GROUP BY namespace"
                " HAVING n >= ? ORDER BY n DESC",
                (self._config.warm_min_chunks,),
            )
            return [(str(ns), int(n)) for ns, n in rows]
        finally:
            conn.close()

    async def _warm(self, big: list[tuple[str, int]]) -> None:
        """Load ``big`` namespaces, largest first, up to ``warm_max_chunks`` chunks in all
        (each in a thread; the HNSW base is mapped if saved, else its build starts in the
        background and exact search serves meanwhile).

        They count against ``index_budget_mb`` like any other: a namespace whose snapshot
        would not fit beside those loaded (estimated at the bytes per chunk of those) is
        left to its first search, so warming never evicts what it loaded itself.
        """
        cfg = self._config
        began = time.perf_counter()
        loaded = warm_bytes = skipped = failed = 0
        budget = self._indexes.budget
        for namespace, chunks in big:
            if loaded + chunks > cfg.warm_max_chunks:
                continue
            if budget and loaded and self.index_bytes + chunks * warm_bytes / loaded > budget:
                skipped += 1
                continue
            try:
                index = await self._index(namespace)
            except Exception:  # a warm-up: this one loads at its first search, the rest now
                _log.warning("could not load the indexes of %s at start", namespace, exc_info=True)
                failed += 1
                continue
            if index is not None:
                loaded += chunks
                warm_bytes += index.nbytes()
                self._base(namespace, index)
                await self._rehearse(namespace, index)
        _log.info(
            "indexes loaded",
            extra={
                "chunks": loaded,
                "over_budget": skipped,
                "failed": failed,
                "duration_s": round(time.perf_counter() - began, 3),
            },
        )

    async def _rehearse(self, namespace: str, index: _Index) -> None:
        """One keyword and one vector search of a warmed namespace before ready, so the
        first real one does not pay for what every first search pays: the search threads
        starting, the HNSW base's upper layers and the arrays' first pages faulted in
        from their files, the hits' reads. At 1M chunks the first keyword + vector search
        after a load took 54 + 29 ms, after a rehearsal 19 + 10 (the next ones 6-20 + 4-11).
        Its terms are spread over the namespace's vocabulary; its vector is a stored one."""
        self.rehearsals += 1
        try:
            segments = [s for s in index.postings.segments if len(s.terms)]
            if segments:
                terms = max(segments, key=len).terms
                picks = np.linspace(0, len(terms) - 1, min(8, len(terms))).astype(np.int64)
                ids = [int(t) for t in terms[picks]]
                await self._compute(index, top_k, index.postings, ids, 10, None)
            if index.size and index.matrix.shape[1]:
                query = np.array(index.matrix[index.size // 2], dtype=np.float32)
                await self._vector_hits(namespace, index, query, 10, Filter())
        except Exception:  # a warm-up, not a check: whatever failed, warming goes on
            _log.warning("could not rehearse a search of %s", namespace, exc_info=True)

    # --- namespaces ----------------------------------------------------------------------

    async def create_namespace(self, namespace: str) -> bool:
        return await self._write(self._create_namespace, namespace)

    def _create_namespace(self, conn: apsw.Connection, namespace: str) -> bool:
        conn.execute(
            "INSERT OR IGNORE INTO namespaces(name, created_at) VALUES(?, ?)",
            (namespace, time.time()),
        )
        if conn.changes() != 1:
            return False
        # A new incarnation: a namespace deleted and created again (here or by another
        # process) is never mistaken for the one before.
        generation = _next_generation(conn)
        conn.execute(
            "UPDATE namespaces SET generation = ?, incarnation = ? WHERE name = ?",
            (generation, generation, namespace),
        )
        return True

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
        return await self._write(self._delete_namespace, namespace)

    def _delete_namespace(self, conn: apsw.Connection, namespace: str) -> bool:
        if self._pending is not None:
            self._pending[namespace] = _Delta(0, 0, 0, dropped=True)
        _hold_rowids(conn)
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
            f"SELECT {TENANT_COLUMNS} FROM tenants WHERE id = ?", (tenant,)
        ).fetchone()
        return tenant_from_row(row, json.loads) if row else None

    async def list_tenants(self) -> list[TenantRecord]:
        rows = self._db.execute(f"SELECT {TENANT_COLUMNS} FROM tenants ORDER BY id")
        return [tenant_from_row(r, json.loads) for r in rows]

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
                f"INSERT INTO api_keys({KEY_COLUMNS}) VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                key_to_row(key),
            )

        await self._write(add)

    async def key_by_hash(self, key_hash: str) -> ApiKeyRecord | None:
        row = self._db.execute(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE hash = ?", (key_hash,)
        ).fetchone()
        return key_from_row(row, json.loads) if row else None

    async def list_keys(self, tenant: str) -> list[ApiKeyRecord]:
        rows = self._db.execute(
            f"SELECT {KEY_COLUMNS} FROM api_keys WHERE tenant = ? ORDER BY created_at, id",
            (tenant,),
        )
        return [key_from_row(r, json.loads) for r in rows]

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

    async def document_chunks(
        self,
        namespace: str,
        document_id: str,
        *,
        limit: int | None = None,
        after: int | None = None,
    ) -> list[Chunk]:
        rows = self._db.execute(
            "SELECT chunk_id, document_id, ordinal, text, title, headings, metadata FROM chunks"
            " WHERE namespace = ? AND document_id = ? AND (? IS NULL OR ordinal > ?)"
            " ORDER BY ordinal LIMIT ?",
            (namespace, document_id, after, after, -1 if limit is None else limit),
        )
        return [chunk_from_row(r, json.loads) for r in rows]

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
    ) -> str | None:
        previous = await self.put_documents(namespace, [(document, chunks, vectors)], embedder_id)
        return previous[0]

    async def put_documents(
        self, namespace: str, writes: Sequence[_Write], embedder_id: str
    ) -> list[str | None]:
        """``put_document`` for many documents in one transaction (each one created or
        replaced atomically, as they all are together); their previous hashes, in order.

        One commit, one generation and one snapshot step per batch instead of one per
        document: what a small document cost in ingestion was mostly those. A document id
        repeated in ``writes`` is written twice, in order, as two calls would.
        """
        for _, chunks, vectors in writes:
            if len(chunks) != len(vectors):
                raise InvalidRequest("one vector per chunk is required")
        if not writes:
            return []
        return await self._write(self._put_documents, namespace, writes, embedder_id)

    def _put_documents(
        self,
        conn: apsw.Connection,
        namespace: str,
        writes: Sequence[_Write],
        embedder_id: str,
    ) -> list[str | None]:
        """Write in the caller's transaction; each document's content hash before, or None."""
        self._create_namespace(conn, namespace)
        delta = self._bump(conn, namespace)
        added: dict[int, _Row] = {}  # rowid -> row, of the chunks this transaction wrote
        previous: list[str | None] = []
        for doc, chunks, vectors in writes:
            created = conn.execute(
                "SELECT created_at, content_hash FROM documents WHERE namespace = ? AND id = ?",
                (namespace, doc.id),
            ).fetchone()
            if created is not None:  # chunks exist only with their document's row
                for rowid in self._delete_chunks(conn, namespace, doc.id):
                    if added.pop(rowid, None) is None:  # not one written just before
                        delta.deleted.append(rowid)
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
            matrix = np.ascontiguousarray(vectors, dtype=np.float32)
            metadata = [_json_object(c.metadata) for c in chunks]
            # One document's term counts at a time (a batch's all at once held megabytes);
            # ingestion's parse workers have counted them already, in parallel.
            packed = self._packed_terms(conn, chunks)
            # Never a rowid given before (see ``_hold_rowids``): the first row's explicit
            # when deletes lowered the largest, the others follow it (None: SQLite's next).
            first = _next_rowid(conn)
            rowids = [
                int(r[0])
                for r in conn.executemany(
                    "INSERT INTO chunks(rowid, namespace, document_id, chunk_id, ordinal, title,"
                    " headings, text, metadata, embedder, vector, term_ids, term_tfs)"
                    " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) RETURNING rowid",
                    [
                        (
                            first if i == 0 else None,
                            namespace,
                            doc.id,
                            c.id,
                            c.ordinal,
                            c.title,
                            json.dumps(list(c.headings)) if c.headings else "[]",
                            c.text,
                            m,
                            embedder_id,
                            v.tobytes(),
                            p[0],
                            p[1],
                        )
                        for i, (c, v, m, p) in enumerate(
                            zip(chunks, matrix, metadata, packed, strict=True)
                        )
                    ],
                )
            ]
            conn.executemany(
                "INSERT INTO chunks_fts(rowid, title, headings, text) VALUES(?, ?, ?, ?)",
                [
                    (rowid, c.title, " / ".join(c.headings), c.text)
                    for rowid, c in zip(rowids, chunks, strict=True)
                ],
            )
            for rowid, vector, m, p in zip(rowids, matrix, metadata, packed, strict=True):
                added[rowid] = _Row(rowid, doc.id, m, embedder_id, vector, p[0], p[1])
            previous.append(None if created is None else str(created[1]))
        delta.rows.extend(added.values())
        return previous

    def _packed_terms(
        self, conn: apsw.Connection, chunks: Sequence[Chunk]
    ) -> list[tuple[bytes, bytes]]:
        """Each chunk's term counts as ``bm25.pack`` serialises them (ids sorted, counts
        capped at 65535), new terms given ids as ``_add_terms`` gives them; one document's
        chunks sorted at once instead of a sort and two arrays per chunk."""
        names: list[str] = []
        counts: list[int] = []
        sizes: list[int] = []
        for c in chunks:
            if c.terms is None:
                given: Mapping[str, int] = self._analyzer.chunk_terms(c)
                names += given
                counts += given.values()
                sizes.append(len(given))
            elif c.terms:
                parts = c.terms.split(" ")
                if len(parts) % 2:
                    decode_terms(c.terms)  # raises what it raises for a malformed text
                names += parts[::2]
                counts += map(int, parts[1::2])
                sizes.append(len(parts) // 2)
            else:
                sizes.append(0)
        ids = self._written_terms.ids_of(conn, names)
        if not names:
            return [(b"", b"")] * len(chunks)
        term_ids = np.fromiter(map(ids.__getitem__, names), np.int64, len(names))
        owner = np.repeat(np.arange(len(sizes)), sizes)
        order = np.lexsort((term_ids, owner))  # by chunk, then by term id
        term_ids = term_ids[order]
        try:
            tfs = np.asarray(counts, np.int64)[order]
        except OverflowError:  # a count past int64: ``pack`` caps it
            tfs = np.full(1, -1)
        repeated = (term_ids[1:] == term_ids[:-1]) & (owner[1:] == owner[:-1])
        if repeated.any() or tfs.min() < 0 or term_ids.max() > np.iinfo(np.uint32).max:
            # A term given twice (the last count stands), or a count ``pack`` refuses:
            # chunk by chunk, as ``decode_terms`` and ``pack`` do it.
            counted = [
                decode_terms(c.terms) if c.terms is not None else self._analyzer.chunk_terms(c)
                for c in chunks
            ]
            return [pack(t, ids) for t in counted]
        id_bytes = term_ids.astype(np.uint32).tobytes()
        tf_bytes = np.minimum(tfs, 65535).astype(np.uint16).tobytes()
        packed, at = [], 0
        for k in sizes:
            packed.append((id_bytes[4 * at : 4 * (at + k)], tf_bytes[2 * at : 2 * (at + k)]))
            at += k
        return packed

    async def delete_document(self, namespace: str, document_id: str) -> bool:
        return await self._write(self._delete_document, namespace, document_id)

    def _delete_document(self, conn: apsw.Connection, namespace: str, document_id: str) -> bool:
        rowids = self._delete_chunks(conn, namespace, document_id)
        conn.execute(
            "DELETE FROM documents WHERE namespace = ? AND id = ?", (namespace, document_id)
        )
        deleted: bool = conn.changes() > 0
        if deleted:
            self._bump(conn, namespace).deleted.extend(rowids)
        return deleted

    @staticmethod
    def _delete_chunks(conn: apsw.Connection, namespace: str, document_id: str) -> list[int]:
        """Delete a document's chunks; their rowids."""
        rowids = [
            int(r[0])
            for r in conn.execute(
                "SELECT rowid FROM chunks WHERE namespace = ? AND document_id = ?",
                (namespace, document_id),
            )
        ]
        if rowids:
            _hold_rowids(conn)
        conn.execute(
            "DELETE FROM chunks_fts WHERE rowid IN "
            "(SELECT rowid FROM chunks WHERE namespace = ? AND document_id = ?)",
            (namespace, document_id),
        )
        conn.execute(
            "DELETE FROM chunks WHERE namespace = ? AND document_id = ?", (namespace, document_id)
        )
        return rowids

    def _bump(self, conn: apsw.Connection, namespace: str) -> _Delta:
        """Give the (existing) namespace a new generation; the transaction's delta of it."""
        delta = self._pending.get(namespace) if self._pending is not None else None
        generation = _next_generation(conn)
        if delta is None or delta.dropped:
            row = conn.execute(
                "SELECT generation, incarnation FROM namespaces WHERE name = ?", (namespace,)
            ).fetchone()
            assert row is not None
            delta = _Delta(int(row[0]), int(row[1]), generation)
            if self._pending is not None:
                self._pending[namespace] = delta
        delta.generation = generation
        conn.execute("UPDATE namespaces SET generation = ? WHERE name = ?", (generation, namespace))
        return delta

    async def _write(self, fn: Callable[..., _R], *args: Any) -> _R:
        def run() -> _R:
            if self._writer is None:
                raise BackendUnavailable("the document store is not started")
            with self._write_lock:
                self._pending = {}
                try:
                    try:
                        with self._writer:  # one transaction: all of fn or nothing
                            result = fn(self._writer, *args)
                    except BaseException:
                        self._written_terms.rolled_back()
                        raise
                    self._written_terms.committed()
                    self._stale = True
                    for namespace, delta in self._pending.items():
                        self._follow(namespace, delta)
                except apsw.BusyError as exc:
                    raise BackendUnavailable("the database is locked by another writer") from exc
                finally:
                    self._pending = None
            return result

        return await asyncio.to_thread(run)

    def _follow(self, namespace: str, delta: _Delta) -> None:
        """Bring this process's snapshot of ``namespace`` past a committed write (writer
        thread, before the write returns): read-your-writes without a reload."""
        if delta.dropped:
            with self._swap_lock:
                dropped = [self._indexes.drop(namespace), self._bases.pop(namespace, None)]
                self._required.pop(namespace, None)
            dropped.clear()  # freed here, after the lock
            # The deleted namespace's vectors go with it (a build under way for it is
            # of an incarnation no search will take again).
            path = self._base_path(namespace)
            for gone in (path, path.with_suffix(".json")):
                gone.unlink(missing_ok=True)
            self._remove_snapshot(namespace)  # of an incarnation no load would take either
            return
        index = self._indexes.get(namespace)
        following = None
        if (
            index is not None
            and index.incarnation == delta.incarnation
            and index.generation == delta.prior
        ):
            try:
                following = _advance(
                    index, delta, self._config.bm25_k1, self._config.bm25_b, self._mapped()
                )
            except Exception:  # the write stands; the next search loads the namespace
                _log.exception("could not update the index of %s in place", namespace)
        nbytes = 0 if following is None else self._sized(namespace, following)
        evicted: list[object] = []
        with self._swap_lock:
            current = self._indexes.get(namespace)
            if following is not None and current is index:
                # A write is no search: the namespace keeps its place in the eviction order.
                evicted = self._put(namespace, following, nbytes, searched=False)
            elif current is None or current.generation < delta.generation:
                required = self._required.get(namespace, 0)
                self._required[namespace] = max(required, delta.generation)
        evicted.clear()  # freed here, in the writer thread, after the lock

    def _mapped(self) -> _Mapped | None:
        """Where snapshots of ``ann_min_chunks`` chunks or more keep their vectors (files
        beside the database, memory-mapped); None: in memory, whatever the size."""
        minimum = self._config.ann_min_chunks
        return _Mapped(self._path.parent, minimum) if minimum else None

    def _sized(self, namespace: str, index: _Index) -> int:
        """``index.nbytes()``, with a warning (once per namespace) when it alone is over
        the budget: it is served all the same, every other snapshot evicted meanwhile."""
        nbytes = index.nbytes()
        budget = self._indexes.budget
        if budget and nbytes > budget and namespace not in self._oversized:
            self._oversized.add(namespace)
            _log.warning(
                "search index larger than the whole index budget",
                extra={"namespace": namespace, "bytes": nbytes, "budget_bytes": budget},
            )
        return nbytes

    def _put(self, namespace: str, index: _Index, nbytes: int, *, searched: bool) -> list[object]:
        """``_Snapshots.put`` (``_swap_lock`` held); an evicted namespace loses its HNSW
        base too. The evicted snapshots and bases, to let go of after the lock."""
        evicted: list[object] = []
        for name, gone in self._indexes.put(namespace, index, nbytes, searched=searched):
            evicted += (gone, self._bases.pop(name, None))
        return evicted

    # --- search --------------------------------------------------------------------------

    async def keyword_search(
        self, namespace: str, text: str, limit: int, filter: Filter
    ) -> list[Hit]:
        if self._config.keyword_index == "fts5":
            return self._fts5_search(namespace, text, limit, filter)
        terms = self._analyzer.query_terms(text)
        if not terms or limit <= 0:
            return []
        index = await self._held(namespace)
        if index is None:
            return []
        try:
            if not index.postings.live:
                return []
            ids = self._query_ids(index, terms)
            if not ids:
                return []
            admit = index.admits(filter) if filter else None
            positions, scores = await self._compute(index, top_k, index.postings, ids, limit, admit)
            return self._hits(namespace, index, positions, scores)
        finally:
            self._release(namespace)

    async def _held(self, namespace: str) -> _Index | None:
        """``_index`` for a search, which holds it until ``_release``: the namespace is
        now the most recently searched, and its snapshot is not evicted meanwhile."""
        index = await self._index(namespace)
        if index is not None:
            with self._swap_lock:
                self._indexes.pin(namespace)
        return index

    def _release(self, namespace: str) -> None:
        with self._swap_lock:
            self._indexes.unpin(namespace)

    async def _compute(self, index: _Index, fn: Callable[..., _R], *args: Any) -> _R:
        """``fn(*args)`` in the bounded search pool for a big namespace (numpy lets go of
        the GIL, and the loop competes with only the pool's few threads); inline for a
        small one, where a thread hop costs more than the work."""
        pool = self._search_pool
        if pool is None or index.size < self._config.offload_chunks:
            return fn(*args)
        return await asyncio.get_running_loop().run_in_executor(pool, fn, *args)

    def _query_ids(self, index: _Index, terms: Sequence[str]) -> list[int]:
        """The ids of ``terms`` that have one. Ids are global and never change; a term
        without one may gain it with a write, which makes a new snapshot."""
        known, unknown = self._term_ids, index.unknown
        missing = [t for t in terms if t not in known and t not in unknown]
        if missing:
            if len(known) + len(missing) > _TERM_CACHE:
                known.clear()
            if len(unknown) + len(missing) > _TERM_CACHE:
                unknown.clear()
            found = _select_term_ids(self._db, missing)
            known.update(found)
            unknown.update(t for t in missing if t not in found)
        return [i for t in terms if (i := known.get(t, -1)) >= 0]

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
        if limit <= 0:
            return []
        index = await self._held(namespace)
        if index is None:
            return []
        try:
            if not index.postings.live or index.matrix.shape[1] != len(vector):
                return []
            return await self._vector_hits(namespace, index, vector, limit, filter)
        finally:
            self._release(namespace)

    async def _vector_hits(
        self, namespace: str, index: _Index, vector: Vectors, limit: int, filter: Filter
    ) -> list[Hit]:
        query = np.asarray(vector, dtype=np.float32)
        admit = index.admits(filter) if filter else None
        base = self._base(namespace, index)
        if base is None:
            positions, scores = await self._compute(
                index, _exact_vector_top, index, query, limit, admit
            )
        else:
            cfg = self._config
            positions, scores = await self._compute(
                index,
                _ann_vector_top,
                index,
                base,
                query,
                limit,
                admit,
                cfg.ann_oversample,
                cfg.ann_expansion,
            )
        return self._hits(namespace, index, positions, scores)

    def _base(self, namespace: str, index: _Index) -> VectorBase | None:
        """The HNSW base to search ``index`` with, if it has one that fits; starts building
        one (in the background) when the namespace is big enough and has none, or when
        the chunks written or deleted since make up a good share of it."""
        minimum = self._config.ann_min_chunks
        if not minimum or index.postings.live < minimum:
            return None
        base = self._bases.get(namespace)
        if base is not None and not _fits(base, index):
            base = None
        if namespace not in self._building and self._ann_pool is not None and not self._closing:
            stale = base is None
            if base is not None:
                covered = np.searchsorted(index.rowids[: index.size], base.covered, "right")
                tail = index.size - int(covered)
                stale = (
                    tail > max(minimum // 5, base.count // 10)
                    or base.count > 1.5 * index.postings.live
                )
            if stale:
                self._start_build(namespace, index)
        return base

    def _start_build(self, namespace: str, index: _Index) -> None:
        assert self._ann_pool is not None
        loop = asyncio.get_running_loop()
        build = loop.run_in_executor(self._ann_pool, self._build_base, namespace, index)
        self._building[namespace] = build

        def done(future: asyncio.Future[None]) -> None:
            self._building.pop(namespace, None)
            error = None if future.cancelled() else future.exception()
            if error is not None:
                _log.error("could not build the vector index of %s", namespace, exc_info=error)

        build.add_done_callback(done)

    def _base_path(self, namespace: str) -> Path:
        digest = hashlib.sha1(namespace.encode(), usedforsecurity=False).hexdigest()[:20]
        return self._path.with_name(self._path.name + ".ann") / f"{digest}.usearch"

    def _build_base(self, namespace: str, index: _Index) -> None:
        """Build, save and install a base of ``index``'s live vectors (the ann thread)."""
        n = index.size
        valid = index.vector_mask()
        rows = np.arange(n) if valid is None else np.flatnonzero(valid)
        began = time.perf_counter()
        try:
            base = build_base(
                index.rowids[rows],
                _Rows(index.matrix, rows),  # type: ignore[arg-type]
                covered=int(index.rowids[n - 1]) if n else 0,
                embedder=index.embedder,
                incarnation=index.incarnation,
                quantisation=self._config.ann_quantisation,
                threads=self._config.ann_threads,
                cancelled=lambda: self._closing,
            )
        except BuildCancelled:
            return
        finally:
            release(index.matrix)  # the build read every row of a vector file: unmap them
        current_index = self._indexes.get(namespace)
        # Not resident: evicted (the file then serves its next load) or deleted.
        incarnation = (
            self._file_incarnation(namespace)
            if current_index is None
            else current_index.incarnation
        )
        if incarnation != index.incarnation:
            return  # the namespace was deleted meanwhile: its vectors go with it
        try:
            base = save_base(base, self._base_path(namespace), namespace)
        except OSError:  # a read-only disk: kept in memory only
            _log.warning("could not save the vector index of %s", namespace, exc_info=True)
        else:
            # Served from the saved file, memory-mapped as the next start maps it: pages
            # the kernel can drop, where the graph just built is heap (~0.5 KB a chunk).
            mapped = open_base(
                self._base_path(namespace),
                embedder=base.embedder,
                dim=base.dim,
                incarnation=base.incarnation,
            )
            if mapped is not None and mapped.covered == base.covered:
                base = mapped
        with self._swap_lock:
            current = self._bases.get(namespace)
            resident = namespace in self._indexes  # an evicted namespace holds no base
            if resident and (
                current is None or not _fits(current, index) or current.covered <= base.covered
            ):
                self._bases[namespace] = base
        _log.info(
            "vector index built",
            extra={
                "namespace": namespace,
                "chunks": base.count,
                "duration_s": round(time.perf_counter() - began, 3),
            },
        )

    def _file_incarnation(self, namespace: str) -> int | None:
        """The namespace's incarnation as the file says (a thread's own connection)."""
        conn = self._connect()
        try:
            row = conn.execute(
                "SELECT incarnation FROM namespaces WHERE name = ?", (namespace,)
            ).fetchone()
        finally:
            conn.close()
        return None if row is None else int(row[0])

    def _open_base(self, namespace: str, index: _Index) -> None:
        """Map the saved base of ``index``'s namespace, if one fits (a load's thread)."""
        minimum = self._config.ann_min_chunks
        if not minimum or index.postings.live < minimum:
            return
        current = self._bases.get(namespace)
        if current is not None and _fits(current, index):
            return
        base = open_base(
            self._base_path(namespace),
            embedder=index.embedder,
            dim=int(index.matrix.shape[1]),
            incarnation=index.incarnation,
        )
        if base is not None:
            with self._swap_lock:
                self._bases[namespace] = base

    def _hits(self, namespace: str, index: _Index, positions_: _Ints, scores: Vectors) -> list[Hit]:
        """Hits of ``positions_`` (best first) with their scores; chunks read on demand."""
        positions: list[int] = positions_.tolist()
        values: list[float] = scores.tolist()
        chunks = index.chunks
        missing = [p for p in positions if p not in chunks]
        if missing:
            if len(chunks) > _CHUNK_CACHE:
                chunks.clear()
            by_rowid = {int(index.rowids[p]): p for p in missing}
            query = (
                "SELECT chunk_id, document_id, ordinal, text, title, headings, metadata, rowid"
                f" FROM chunks WHERE rowid IN ({','.join('?' * len(by_rowid))})"
                # "+": by rowid, never by scanning the namespace's index (which SQLite
                # picks for a long IN list: 20 ms at 100k chunks instead of 0.1 ms)
                " AND +namespace = ?"
            )
            for row in self._db.execute(query, (*by_rowid, namespace)):
                position = by_rowid[row[7]]
                # A snapshot behind the file may name a rowid reused since: only its own
                # document's chunk is that position's.
                if row[1] == index.document_id(position):
                    chunks[position] = chunk_from_row(row, json.loads)
        return [Hit(chunks[p], v) for p, v in zip(positions, values, strict=True) if p in chunks]

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
            rows = self._db.execute("SELECT name, generation, incarnation FROM namespaces")
            self._generations = {str(n): (int(g), int(i)) for n, g, i in rows}
            with self._swap_lock:  # drop the snapshots of namespaces deleted elsewhere
                for namespace in self._indexes.names():
                    if namespace not in self._generations:
                        self._indexes.drop(namespace)

    async def _index(self, namespace: str) -> _Index | None:
        """The snapshot to search ``namespace`` in; None if there is no such namespace.

        Never builds on the event loop. A snapshot behind another process's writes is
        served while the next one loads in a thread (stale by at most the load time),
        unless it is of a namespace since deleted (another incarnation) or older than
        this process's own last write: then this search, and only it, awaits the load.
        A snapshot this search waited for is served even if other loads have evicted it
        since (a budget smaller than the namespaces searched at once). While a write of
        this process to ``namespace`` is under way, its newer generation starts no load:
        the writer is about to install the snapshot past it.
        """
        loaded: _Index | None = None  # the newest snapshot the loads awaited here read
        for _ in range(_LOAD_ROUNDS):
            self._refresh()
            state = self._generations.get(namespace)
            if state is None:
                return None
            generation, incarnation = state
            index = _newer(self._indexes.get(namespace), loaded)
            usable = index is not None and index.incarnation == incarnation
            if usable and index is not None and index.generation >= generation:
                return index
            serve = (
                usable
                and index is not None
                and index.generation >= self._required.get(namespace, 0)
            )
            load = self._loads.get(namespace)
            writing = self._pending  # the writer thread's: taken once
            if load is None and serve and writing is not None and namespace in writing:
                # This process's own write, committed and being followed: a load would read
                # the namespace again only to get what the writer is about to install (at
                # 1M chunks, one load per write under steady uploads held a core). Another
                # process's write meanwhile is loaded at the next search after this one's.
                return index
            if load is None:
                load = self._loads[namespace] = asyncio.create_task(self._load(namespace))
                load.add_done_callback(lambda t: t.cancelled() or t.exception())
            if serve:
                return index
            loaded = _newer(loaded, await asyncio.shield(load))
            self._stale = True  # the load may have read past what _generations says
        index = _newer(self._indexes.get(namespace), loaded)
        state = self._generations.get(namespace)
        if index is None or state is None or index.incarnation != state[1]:
            return None
        return index

    async def _load(self, namespace: str) -> _Index | None:
        """Read ``namespace`` into a new snapshot in a thread and install it if newer."""
        try:
            return await asyncio.to_thread(self._load_index, namespace)
        finally:
            self._loads.pop(namespace, None)

    def _load_index(self, namespace: str) -> _Index | None:
        """``_read_index`` and install it if newer (a thread: evicting, and freeing what is
        evicted, stays off the event loop); the snapshot read."""
        index = self._read_index(namespace)
        _trim()  # the load's temporaries, freed but held by malloc otherwise
        if index is None:
            return None
        nbytes = self._sized(namespace, index)
        evicted: list[object] = []
        with self._swap_lock:
            current = self._indexes.get(namespace)
            if current is None or index.generation > current.generation:
                evicted = self._put(namespace, index, nbytes, searched=True)
        evicted.clear()  # freed here, in this thread, after the lock
        return index

    def _read_index(self, namespace: str) -> _Index | None:
        """A snapshot of ``namespace`` read in one transaction on a connection of its own
        (any thread but the event loop's); None if it does not exist.

        A namespace of ``snapshot_min_chunks`` or more is mapped from its saved snapshot
        when it has a usable one, with what changed since applied (``_from_snapshot``);
        otherwise it is read row by row and then saved, in the background, for the next
        load. A snapshot is saved again when a load applied more than a tenth of it:
        refreshing it after every write would rewrite the whole namespace each time, and
        never would make every start apply everything since the first one.
        """
        conn = self._connect()
        save = False
        try:
            conn.execute("BEGIN")  # one read transaction: the rows of the generation read
            head = conn.execute(
                "SELECT generation, incarnation FROM namespaces WHERE name = ?", (namespace,)
            ).fetchone()
            if head is None:
                return None
            writes = _write_counts(conn)
            row = conn.execute(
                "SELECT count(*), max(rowid) FROM chunks WHERE namespace = ?", (namespace,)
            ).fetchone()
            assert row is not None
            count, newest = row
            embedder, dim = "", 0
            if newest is not None:
                # Vectors of different models are not comparable: search the newest
                # model's only (re-ingesting after a model change re-embeds all).
                row = conn.execute(
                    "SELECT embedder, length(vector) FROM chunks WHERE rowid = ?", (newest,)
                ).fetchone()
                assert row is not None
                embedder, dim = str(row[0]), int(row[1]) // 4
            generation, incarnation = int(head[0]), int(head[1])
            mapped = self._mapped()
            minimum = self._config.snapshot_min_chunks
            loaded = None
            if minimum and count >= minimum:
                loaded = self._from_snapshot(
                    conn, namespace, generation, incarnation, embedder, dim, mapped, writes
                )
            if loaded is not None:
                index, save = loaded
            while loaded is None:
                rows = conn.execute(
                    f"SELECT {_LOAD_COLUMNS} FROM chunks WHERE namespace = ? ORDER BY rowid",
                    (namespace,),
                )
                try:
                    index = _index_of(
                        rows,
                        int(count),
                        embedder,
                        dim,
                        generation,
                        incarnation,
                        self._config.bm25_k1,
                        self._config.bm25_b,
                        mapped,
                    )
                    save = bool(minimum) and index.postings.live >= minimum
                    break
                except OSError:  # the vector file could not be written (a full disk)
                    if mapped is None:
                        raise
                    _log.warning(
                        "could not write the vectors of %s to a file: kept in memory",
                        namespace,
                        exc_info=True,
                    )
                    mapped = None  # read again, in the same transaction
        finally:
            conn.close()
        index.writes = writes
        self._open_base(namespace, index)
        if save:
            self._save_later(namespace, index)
        return index

    def _from_snapshot(
        self,
        conn: apsw.Connection,
        namespace: str,
        generation: int,
        incarnation: int,
        embedder: str,
        dim: int,
        mapped: _Mapped | None,
        writes: tuple[int, int],
    ) -> tuple[_Index, bool] | None:
        """``namespace``'s saved snapshot (``_snapshot``) mapped read-only and brought to
        ``generation`` by the writer's own steps (``_advance``): the rowids it holds that
        the file no longer has are deleted, then the chunks past its largest rowid are
        appended, ``_DELTA_BLOCK`` at a time (rowids are never given twice:
        ``_hold_rowids``). With it, whether to save it again. None: read the namespace
        row by row, because it has no snapshot, or one that must not be used (a warning
        says why: it is replaced after the full load), or one too far behind.

        Inside the caller's read transaction. Reading the namespace's rowids is cheap (its
        index covers them); the rows read are only those written since.
        """
        cfg = self._config
        began = time.perf_counter()

        def check(header: _snapshot.Header) -> str | None:
            if header.namespace != namespace:
                return f"of namespace {header.namespace!r}"
            if header.incarnation != incarnation:
                return "of an earlier incarnation (the namespace was deleted and made again)"
            if header.generation > generation:
                return "newer than the database (an older copy of the file restored?)"
            since = (writes[0] - header.file_writes, writes[1] - header.aware_writes)
            if header.generation != generation and since[0] != since[1]:
                return "written since by an older version, which may give rowids again"
            if (header.embedder, header.dim) != (embedder, dim):
                return "of another embedding model"
            if (header.k1, header.b) != (cfg.bm25_k1, cfg.bm25_b):
                return "of other BM25 parameters"
            return None

        directory = self._snapshot_dir(namespace)
        try:
            saved = _snapshot.open_snapshot(directory, check)
        except (_snapshot.Unusable, OSError) as exc:
            _log.warning("ignoring the saved search index of %s: %s", namespace, exc)
            return None
        if saved is None:
            return None
        h = saved.header
        index = _snapshot_index(saved, incarnation)
        if h.generation == generation:
            applied = 0
        else:
            present = np.fromiter(
                (
                    r[0]
                    for r in conn.execute(
                        "SELECT rowid FROM chunks WHERE namespace = ?", (namespace,)
                    )
                ),
                np.int64,
            )
            written = int(np.count_nonzero(present > h.max_rowid))
            if written * _DELTA_SHARE > h.live:
                _log.info(
                    "saved search index too far behind: read whole",
                    extra={"namespace": namespace, "chunks": h.live, "written_since": written},
                )
                return None
            kept = saved.rowids if saved.alive is None else saved.rowids[saved.alive]
            gone = kept[~np.isin(kept, present)]
            applied = written + len(gone)
            following = self._caught_up(conn, namespace, index, gone, generation, mapped)
            if following is None or following.postings.live != len(present):
                _log.warning(
                    "ignoring the saved search index of %s: what changed since does not apply",
                    namespace,
                )
                return None
            index = following
        # The collector's pass over what the load made (a source's tuple and metadata for
        # every document: ~85 ms at 300k chunks), paid here, in the load's thread, before
        # the namespace is served: a full load's own allocations trigger it while it reads,
        # but this load is quick enough to leave it to fall on the first search.
        gc.collect()
        _log.info(
            "search index mapped from its snapshot",
            extra={
                "namespace": namespace,
                "chunks": index.postings.live,
                "changed_since": applied,
                "duration_s": round(time.perf_counter() - began, 3),
            },
        )
        return index, applied * _REFRESH_SHARE > h.live

    def _caught_up(
        self,
        conn: apsw.Connection,
        namespace: str,
        index: _Index,
        gone: _Ints,
        generation: int,
        mapped: _Mapped | None,
    ) -> _Index | None:
        """``index`` without the chunks of rowids ``gone`` and with the namespace's chunks
        past its largest rowid, by ``_advance``; None where that says a full load."""
        k1, b = self._config.bm25_k1, self._config.bm25_b
        last = int(index.rowids[index.size - 1]) if index.size else 0
        delta = _Delta(index.generation, index.incarnation, generation, deleted=gone.tolist())
        following = _advance(index, delta, k1, b, mapped)
        rows = conn.execute(
            f"SELECT {_LOAD_COLUMNS} FROM chunks WHERE rowid > ? AND namespace = ? ORDER BY rowid",
            (last, namespace),
        )
        batch: list[_Row] = []
        for rowid, document_id, meta, row_embedder, vector, term_ids, term_tfs in rows:
            if following is None:
                return None
            values = np.frombuffer(vector, np.float32)
            batch.append(_Row(rowid, document_id, meta, row_embedder, values, term_ids, term_tfs))
            if len(batch) == _DELTA_BLOCK:
                delta = _Delta(generation, index.incarnation, generation, rows=batch)
                following, batch = _advance(following, delta, k1, b, mapped), []
        if batch and following is not None:
            delta = _Delta(generation, index.incarnation, generation, rows=batch)
            following = _advance(following, delta, k1, b, mapped)
        return following

    def _snapshot_dir(self, namespace: str) -> Path:
        digest = hashlib.sha1(namespace.encode(), usedforsecurity=False).hexdigest()
        return self._path.with_name(self._path.name + ".snap") / digest

    def _save_later(self, namespace: str, index: _Index) -> None:
        """Save ``index`` as ``namespace``'s snapshot in the snapshot thread (never on the
        event loop; a load's thread only hands it over), one save per namespace at a time:
        a load while one is under way leaves it be."""
        pool = self._snapshot_pool
        if pool is None or self._closing:
            return
        with self._swap_lock:
            running = self._saving.get(namespace)
            if running is not None and not running.done():
                return
            try:
                self._saving[namespace] = pool.submit(self._save_snapshot, namespace, index)
            except RuntimeError:  # the pool shut down meanwhile: the store is closing
                return

    def _save_snapshot(self, namespace: str, index: _Index) -> None:
        """Write ``index`` as ``namespace``'s snapshot (the snapshot thread). A disk that
        refuses it (full, read-only) costs a warning: the snapshot is an optimisation."""
        began = time.perf_counter()
        directory = self._snapshot_dir(namespace)
        try:
            done = _snapshot.save(
                directory, _saved_of(namespace, index), cancelled=self._is_closing
            )
        except OSError:
            _log.warning("could not save the search index of %s", namespace, exc_info=True)
            return
        finally:
            release(index.matrix)  # every row of a vector file was read: unmap them
        if not done:
            return
        try:
            current = self._file_incarnation(namespace)
        except BackendUnavailable:
            current = index.incarnation
        if current != index.incarnation:  # deleted meanwhile: no load may take it
            self._remove_snapshot(namespace)
            return
        _log.info(
            "search index saved",
            extra={
                "namespace": namespace,
                "chunks": index.postings.live,
                "duration_s": round(time.perf_counter() - began, 3),
            },
        )

    def _is_closing(self) -> bool:
        return self._closing

    def _remove_snapshot(self, namespace: str) -> None:
        try:
            _snapshot.remove(self._snapshot_dir(namespace))
        except OSError:
            _log.warning("could not remove the saved search index of %s", namespace, exc_info=True)


def _snapshot_index(saved: _snapshot.Saved, incarnation: int) -> _Index:
    """The index a saved snapshot holds, its arrays the read-only mappings: ``_advance``
    starts buffers of its own when it appends (nothing is ever written into them)."""
    h = saved.header
    sources: list[tuple[str, dict[str, Any]]] = []
    source_ids: dict[tuple[str, str], int] = {}
    parsed: dict[str, dict[str, Any]] = {}  # metadata texts repeat: one dict each
    for i, (document_id, meta) in enumerate(saved.sources):
        found = parsed.get(meta)
        if found is None:
            found = parsed[meta] = json.loads(meta)
        sources.append((document_id, found))
        source_ids[(document_id, meta)] = i
    postings = Postings(
        tuple(saved.segments),
        saved.lengths,
        saved.alive,
        h.chunks,
        h.live,
        h.total,
        h.k1,
        h.b,
        [h.chunks],
    ).prepare()
    return _Index(
        generation=h.generation,
        incarnation=incarnation,
        embedder=h.embedder,
        matrix=saved.matrix,
        vector_ok=saved.vector_ok,
        rowids=saved.rowids,
        source=saved.source,
        sources=sources,
        source_ids=source_ids,
        postings=postings,
        claimed=[h.chunks],
        origin=saved.origin,
    )


def _saved_of(namespace: str, index: _Index) -> _snapshot.Saved:
    """What saving ``index`` writes. The writer thread may meanwhile append to the lists
    and buffers it shares with later snapshots: only what ``index`` reads is taken."""
    n, postings = index.size, index.postings
    count = len(index.sources)
    texts = [""] * count
    for (_, meta), i in list(index.source_ids.items()):  # one C call: no resize midway
        if i < count:
            texts[i] = meta
    sources = [(document_id, texts[i]) for i, (document_id, _) in enumerate(index.sources[:count])]
    header = _snapshot.Header(
        namespace=namespace,
        incarnation=index.incarnation,
        generation=index.generation,
        embedder=index.embedder,
        dim=int(index.matrix.shape[1]),
        chunks=n,
        live=postings.live,
        max_rowid=int(index.rowids[n - 1]) if n else 0,
        total=postings.total,
        k1=postings.k1,
        b=postings.b,
        segments=len(postings.segments),
        sources=count,
        vector_ok=index.vector_ok is not None,
        alive=postings.alive is not None,
        file_writes=index.writes[0],
        aware_writes=index.writes[1],
    )
    return _snapshot.Saved(
        header,
        index.matrix,
        index.vector_ok,
        index.rowids,
        index.source,
        sources,
        postings.lengths,
        postings.alive,
        postings.segments,
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


def _next_generation(conn: apsw.Connection) -> int:
    """The next number of the file-wide generation counter (inside a write transaction).

    Generations never repeat across namespaces or incarnations, so a process's snapshot
    at generation g is of exactly that state of its namespace, whatever happened since.
    """
    generation = _file_generation(conn) + 1
    conn.execute(
        "INSERT OR REPLACE INTO meta(key, value) VALUES('generation', ?)", (str(generation),)
    )
    # This version's writers count their writes apart (``_write_counts``).
    conn.execute(
        "INSERT INTO meta(key, value) VALUES('aware_writes', '1') ON CONFLICT(key)"
        " DO UPDATE SET value = CAST(CAST(value AS INTEGER) + 1 AS TEXT)"
    )
    return generation


def _file_generation(conn: apsw.Connection) -> int:
    """The file-wide generation counter: the last generation given (a file from before
    the counter: the newest generation in it, which the next is given past)."""
    row = conn.execute(
        "SELECT coalesce((SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'generation'),"
        " (SELECT max(generation) FROM namespaces), 0)"
    ).fetchone()
    assert row is not None
    return int(row[0])


def _write_counts(conn: apsw.Connection) -> tuple[int, int]:
    """(writes, writes by writers that never give a rowid twice) of the file so far.

    Every write moves the file-wide generation counter by one; a writer of this version
    also counts ``aware_writes``. Between two reads, the two differences are equal unless
    an older Ragtide wrote meanwhile, whose inserts may have given the rowids of chunks it
    deleted to new ones: then a saved snapshot's rowids can no longer be trusted to name
    the same chunks (``SQLiteStore._from_snapshot``)."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'aware_writes'").fetchone()
    return _file_generation(conn), 0 if row is None else int(row[0])


def _hold_rowids(conn: apsw.Connection) -> None:
    """Remember the largest chunk rowid given so far (``meta`` 'chunk_rowid') before a
    delete may lower ``max(rowid)``, inside the write transaction.

    SQLite gives a new row ``max(rowid) + 1``: deleting the newest chunks (re-ingesting
    the last document does) would give their rowids to the next chunks written. A saved
    snapshot (``_snapshot``) tells the chunks written since it by ``rowid > max_rowid``
    and those deleted by rowids gone, so a rowid must never name two chunks: inserts
    start past the mark (``_next_rowid``), as ``AUTOINCREMENT`` would without a rewrite
    of the table. The HNSW bases' tombstones are keyed by rowid too.
    """
    conn.execute(
        "INSERT INTO meta(key, value)"
        " SELECT 'chunk_rowid', coalesce(max(rowid), 0) FROM chunks WHERE true"
        " ON CONFLICT(key) DO UPDATE SET"
        " value = max(CAST(value AS INTEGER), CAST(excluded.value AS INTEGER))"
    )


def _next_rowid(conn: apsw.Connection) -> int | None:
    """The rowid the next chunk must get if SQLite's own would be one given before; None:
    SQLite's own (``_hold_rowids``)."""
    row = conn.execute(
        "SELECT (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'chunk_rowid'),"
        " (SELECT max(rowid) FROM chunks)"
    ).fetchone()
    assert row is not None
    held, top = row
    if held is None or (top is not None and int(top) >= int(held)):
        return None
    return int(held) + 1


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


class _WriterTerms:
    """The term ids the writer has seen, so that a document's terms are looked up in
    the file only when new to it (most are not: looking up each document's every term
    was a fifth of a write). A committed term's id never changes (terms are never
    deleted), so a remembered one is right whatever another process wrote since; those
    a transaction gave are forgotten if it rolls back. Writer thread only."""

    def __init__(self) -> None:
        self.ids: dict[str, int] = {}
        self._given: list[str] = []  # given ids by the open transaction
        self._conn: apsw.Connection | None = None  # the connection they were read with

    def ids_of(self, conn: apsw.Connection, terms: Sequence[str]) -> dict[str, int]:
        """``ids``, holding an id for each of ``terms`` (given as ``_add_terms`` gives
        them to new ones). Another connection (the store started again, perhaps on a new
        file) starts from none."""
        if conn is not self._conn:
            self.ids.clear()
            self._conn = conn
        ids = self.ids
        missing = set(terms).difference(ids)
        if not missing:
            return ids
        if len(ids) + len(missing) > _WRITER_TERMS:
            ids.clear()
            missing = set(terms)
        added, new = _add_terms(conn, missing)
        ids.update(added)
        self._given += new
        return ids

    def committed(self) -> None:
        self._given.clear()

    def rolled_back(self) -> None:
        for term in self._given:
            self.ids.pop(term, None)
        self._given.clear()


def _json_object(value: Mapping[str, Any]) -> str:
    """``json.dumps(dict(value))`` (most chunks have no metadata: no encoder for them)."""
    return json.dumps(dict(value)) if value else "{}"


def _add_terms(conn: apsw.Connection, terms: set[str]) -> tuple[dict[str, int], list[str]]:
    """Give every term an id (new ones get the next, in term order) and return them all
    (in a write transaction: no other writer adds one meanwhile), and the new ones. Most
    terms of a chunk exist already: only the others are inserted."""
    ordered = sorted(terms)
    ids = _select_term_ids(conn, ordered)
    new: list[str] = []
    if len(ids) < len(ordered):
        new = [t for t in ordered if t not in ids]
        rows = conn.executemany(
            "INSERT INTO terms(term) VALUES(?) RETURNING id", [(t,) for t in new]
        )
        ids.update(zip(new, (int(r[0]) for r in rows), strict=True))
    return ids, new


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
