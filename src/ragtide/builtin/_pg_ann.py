"""HNSW graphs of large namespaces' vectors, held by PostgreSQL-backed replicas.

A vector search of a namespace too large for the replica's exact search
(``local_vector_max_chunks``) walks the database's HNSW index: ~7 ms of the one shared
server's CPU per search at 1M chunks, so vector capacity did not grow with replicas. A
replica that loaded such a namespace whole builds a graph of its vectors instead
(``usearch``, the embedded store's library and settings: vectors quantised to i8, inner
product on unit vectors) in a child process, reading the vectors in batches; saves it in
the database beside the keyword index (``_pg_snapshot``, kind ``vectors``), where the
other replicas read it instead of building it again. Every replica searches a view of
those saved bytes (~530 bytes a vector at 256 dimensions).

A graph stands for every chunk of one embedder whose id is at most ``covered`` (ids grow
with each write of a namespace). What it does not know is its index's business
(``_pg_local.LocalIndex.nearest``): chunks written after it (the *tail*) are searched
exactly from vectors the catch-ups read, deleted ones are dropped by the index's live
mask, and the database orders the candidates by their exact distance when it reads them
(``_pg_local.rows_sql``), so scores are exact and only recall is approximate.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg

from ragtide.builtin._ann_child import Buffer, GraphBuild
from ragtide.builtin.ann import nearest_keys

__all__ = ["Graph", "build", "extend", "from_stream", "unit_rows"]

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
    id, standing for every such chunk with an id up to ``covered``: a view of ``buffer``,
    usearch's own bytes, which are also what is saved of it."""

    index: Any  # usearch.index.Index, a view
    embedder: str
    dim: int
    covered: int
    count: int
    buffer: Buffer

    @property
    def nbytes(self) -> int:
        return int(self.buffer.nbytes)

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


def from_stream(head: dict[str, Any], buffer: Buffer) -> Graph:
    """The graph whose bytes are ``buffer`` and which ``head`` describes, as a view of
    ``buffer`` (not a copy: the graph holds it); in a thread. Raises ``ValueError`` if the
    bytes are not a graph of that many vectors."""
    from usearch.index import Index

    index = Index.restore(buffer.data, view=True)
    if index is None or len(index) != int(head["count"]) or index.ndim != int(head["dim"]):
        raise ValueError("the saved graph is not what its head says")
    dim, covered = int(head["dim"]), int(head["covered"])
    return Graph(index, str(head["embedder"]), dim, covered, len(index), buffer)


async def build(conn: _Conn, ns_id: int, embedder: str, covered: int) -> Graph | None:
    """The graph of the namespace's ``embedder`` vectors up to chunk ``covered``, read
    ``_ROWS`` at a time by id (``conn`` in autocommit: no transaction is held open for the
    minutes a large graph takes) and built in a child process (``_ann_child``); None if
    there are none or they are of several dimensions (searched in the database then).
    Chunks deleted meanwhile may be in it: searches drop those the index no longer has."""
    pages = _pages(conn, {"ns_id": ns_id, "embedder": embedder, "covered": covered})
    try:
        first = await anext(pages, None)
        if first is None:
            return None
        dim = first[1].shape[1]
        # the embedded store's settings: i8, M 32, ef_add 128, one core
        async with _started(GraphBuild(dim=dim)) as child:
            await asyncio.to_thread(child.add, *first)
            async for keys, unit in pages:
                if unit.shape[1] != dim:
                    return None
                await asyncio.to_thread(child.add, keys, unit)
            count, data = await asyncio.to_thread(child.result)
    except _Mixed:
        return None
    finally:
        await pages.aclose()
    return await asyncio.to_thread(from_stream, _head(embedder, dim, covered, count), data)


async def extend(graph: Graph, keys: _I64, unit: _F32, covered: int) -> Graph:
    """``graph`` with the unit vectors ``unit`` added, keyed ``keys``, standing for every
    chunk up to ``covered``: a new graph, made in a child process from ``graph``'s bytes
    (searches go on reading ``graph`` meanwhile)."""
    async with _started(GraphBuild(dim=graph.dim, base=graph.buffer)) as child:
        for start in range(0, len(keys), _ROWS):
            batch = slice(start, start + _ROWS)
            await asyncio.to_thread(child.add, keys[batch], unit[batch])
        count, data = await asyncio.to_thread(child.result)
    head = _head(graph.embedder, graph.dim, covered, count)
    return await asyncio.to_thread(from_stream, head, data)


@contextlib.asynccontextmanager
async def _started(build: GraphBuild) -> AsyncIterator[GraphBuild]:
    """``build``'s child, started and stopped in threads (a base is megabytes to write)."""
    await asyncio.to_thread(build.start)
    try:
        yield build
    finally:
        await asyncio.to_thread(build.close)


def _head(embedder: str, dim: int, covered: int, count: int) -> dict[str, Any]:
    return {"embedder": embedder, "dim": dim, "covered": covered, "count": count}


class _Mixed(Exception):
    """The vectors are of several dimensions."""


async def _pages(conn: _Conn, params: dict[str, Any]) -> AsyncGenerator[tuple[_I64, _F32], None]:
    """The vectors ``_READ`` finds, a page at a time, as chunk ids and unit rows."""
    after = 0
    while True:
        page = params | {"after": after, "rows": _ROWS}
        rows = await (await conn.execute(_READ, page, binary=True)).fetchall()
        if not rows:
            return
        parsed = await asyncio.to_thread(_parse, rows)
        if parsed is None:
            raise _Mixed
        yield parsed
        after = int(parsed[0][-1])


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
