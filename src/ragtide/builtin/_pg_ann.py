"""HNSW graphs of large namespaces' vectors, held by PostgreSQL-backed replicas.

A vector search of a namespace too large for the replica's exact search
(``local_vector_max_chunks``) walks the database's HNSW index: ~7 ms of the one shared
server's CPU per search at 1M chunks, so vector capacity did not grow with replicas. A
replica that loaded such a namespace whole builds a graph of its vectors instead
(``usearch``, the embedded store's library and settings: vectors quantised to i8, inner
product on unit vectors), off the event loop, reading the vectors in batches; saves it in
the database beside the keyword index (``_pg_snapshot``, kind ``vectors``), where the
other replicas read it instead of building it again.

A graph stands for every chunk of one embedder whose id is at most ``covered`` (ids grow
with each write of a namespace). What it does not know is its index's business
(``_pg_local.LocalIndex.nearest``): chunks written after it (the *tail*) are searched
exactly from vectors the catch-ups read, deleted ones are dropped by the index's live
mask, and the database orders the candidates by their exact distance when it reads them
(``_pg_local.rows_sql``), so scores are exact and only recall is approximate.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from ragtide.builtin.ann import nearest_keys, new_index

__all__ = ["FileParts", "Graph", "build", "extended", "from_stream", "read_view", "unit_rows"]

_I64 = npt.NDArray[np.int64]
_F32 = npt.NDArray[np.float32]
_Conn = psycopg.AsyncConnection[Any]
_ROWS = 4_096  # vectors read and added at a time

# The vectors a graph is built from: the namespace's embedder's, up to a chunk id, by id
# a page at a time after the last one read (pgvector's binary form: int16 dimensions,
# int16 unused, float4 values, big-endian).
_READ = (
    "SELECT c.id, vector_send(c.embedding) FROM chunks c"
    " WHERE c.namespace_id = %(ns_id)s::integer AND c.embedder = %(embedder)s"
    " AND c.id > %(after)s AND c.id <= %(covered)s ORDER BY c.id LIMIT %(rows)s"
)


@dataclass(frozen=True, slots=True)
class Graph:
    """An immutable HNSW graph of ``count`` unit vectors of ``embedder``, keyed by chunk
    id, standing for every such chunk with an id up to ``covered``."""

    index: Any  # usearch.index.Index
    embedder: str
    dim: int
    covered: int
    count: int
    buffer: bytearray | None = None  # what a graph read from the database is a view of

    @property
    def nbytes(self) -> int:
        if self.buffer is not None:
            return len(self.buffer)
        return int(self.index.memory_usage)

    def search(self, unit: _F32, k: int, expansion: int) -> _I64:
        """Chunk ids of (about) the ``k`` nearest vectors to ``unit``, nearest first."""
        if not self.count:
            return np.zeros(0, np.int64)
        return nearest_keys(self.index, unit, min(k, self.count), expansion)

    @property
    def described(self) -> dict[str, Any]:
        """What a saved graph's head says of it (``from_stream``)."""
        return {
            "embedder": self.embedder,
            "dim": self.dim,
            "covered": self.covered,
            "count": self.count,
        }

    def save(self, path: str) -> int:
        """Write the graph to the file ``path`` (``usearch``'s own format), and its size; in
        a thread. To a file, not to memory: at 1M vectors the bytes would be another
        ~560 MB of the replica's while they are written to the database."""
        self.index.save(path)
        return os.path.getsize(path)


@dataclass(frozen=True, slots=True)
class FileParts:
    """A file's bytes, read ``size`` at a time each time it is iterated (``_pg_snapshot``'s
    ``Pieces``: a saved graph written to the database from its file)."""

    path: str
    length: int
    size: int = 32 << 20

    def __len__(self) -> int:
        return self.length

    def __iter__(self) -> Iterator[np.ndarray[Any, Any]]:
        with open(self.path, "rb") as file:
            while data := file.read(self.size):
                yield np.frombuffer(data, np.uint8)


def from_stream(head: dict[str, Any], buffer: bytearray) -> Graph:
    """A graph ``Graph.stream`` wrote, with ``head``'s description, as a view of
    ``buffer`` (not a copy: the graph holds it); in a thread. Raises ``ValueError`` if the
    bytes are not a graph of that many vectors."""
    from usearch.index import Index

    index = Index.restore(buffer, view=True)
    if index is None or len(index) != int(head["count"]) or index.ndim != int(head["dim"]):
        raise ValueError("the saved graph is not what its head says")
    dim, covered = int(head["dim"]), int(head["covered"])
    return Graph(index, str(head["embedder"]), dim, covered, len(index), buffer)


def extended(graph: Graph, keys: _I64, unit: _F32, covered: int) -> Graph:
    """A copy of ``graph`` with the unit vectors ``unit`` added, keyed ``keys``, standing
    for every chunk up to ``covered``; in a thread (searches go on reading ``graph``
    meanwhile: a view of a saved graph cannot grow, and one being added to is not searched).
    """
    index = graph.index.copy()
    for start in range(0, len(keys), _ROWS):
        batch = slice(start, start + _ROWS)
        index.add(keys[batch].astype(np.uint64), unit[batch], threads=1)
    return Graph(index, graph.embedder, graph.dim, covered, len(index))


def read_view(path: str, described: dict[str, Any]) -> Graph:
    """The graph ``Graph.save`` wrote to ``path`` (``described`` by its ``described``),
    read into memory and searched as a view of those bytes (what the other replicas
    hold); in a thread."""
    buffer = bytearray(os.path.getsize(path))
    with open(path, "rb") as file:
        file.readinto(buffer)
    return from_stream(described, buffer)


async def build(
    conn: _Conn,
    ns_id: int,
    embedder: str,
    covered: int,
) -> Graph | None:
    """The graph of the namespace's ``embedder`` vectors up to chunk ``covered``, read
    ``_ROWS`` at a time by id (``conn`` in autocommit: no transaction is held open for the
    minutes a large graph takes) and added in a thread (one core); None if they are of
    several dimensions (searched in the database then). Chunks deleted meanwhile may be
    in it: searches drop those the index no longer has."""
    index: Any = None
    dim, after = 0, 0
    params = {"ns_id": ns_id, "embedder": embedder, "covered": covered, "rows": _ROWS}
    while True:
        cur = await conn.execute(_READ, params | {"after": after}, binary=True)
        rows = await cur.fetchall()
        if not rows:
            break
        parsed = await asyncio.to_thread(_parse, rows)
        if parsed is None:
            return None
        keys, unit = parsed
        if index is None:
            dim = unit.shape[1]
            index = new_index(dim)  # the embedded store's settings: i8, M 32, ef_add 128
        elif unit.shape[1] != dim:
            return None
        await asyncio.to_thread(index.add, keys.astype(np.uint64), unit, threads=1)
        after = int(keys[-1])
    if index is None:
        return None
    return Graph(index, embedder, dim, covered, len(index))


def _parse(rows: list[tuple[Any, ...]]) -> tuple[_I64, _F32] | None:
    """Binary rows of ``_READ`` as chunk ids and unit vectors; None if they are of
    several dimensions."""
    keys = np.fromiter((int(r[0]) for r in rows), np.int64, len(rows))
    blobs = [bytes(r[1]) for r in rows]
    dims = {int.from_bytes(b[:2], "big") for b in blobs}
    if len(dims) != 1:
        return None
    return keys, unit_rows(b"".join(blobs), len(rows))


def unit_rows(blob: bytes, count: int) -> _F32:
    """``count`` vectors of one dimension in pgvector's binary form (``vector_send``:
    int16 dimensions, int16 unused, float4 values, big-endian), concatenated, as unit
    float32 rows (zero vectors stay zero)."""
    dim = int.from_bytes(blob[:2], "big")
    raw = np.frombuffer(blob, np.uint8).reshape(count, 4 + 4 * dim)
    matrix = raw[:, 4:].copy().view(">f4").astype(np.float32)
    norms = np.linalg.norm(matrix, axis=1, keepdims=True)
    np.divide(matrix, norms, out=matrix, where=norms > 0)
    return matrix
