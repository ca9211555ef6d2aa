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
import os
import struct
import subprocess
import sys
from collections.abc import AsyncGenerator
from dataclasses import dataclass
from typing import IO, Any

import numpy as np
import numpy.typing as npt
import psycopg

from ragtide.builtin.ann import nearest_keys, new_index

__all__ = ["Buffer", "Graph", "build", "extend", "from_stream", "main", "unit_rows"]

_I64 = npt.NDArray[np.int64]
_F32 = npt.NDArray[np.float32]
Buffer = npt.NDArray[np.uint8]  # bytes a graph is a view of (never zeroed: ``np.empty``)
_Conn = psycopg.AsyncConnection[Any]
_ROWS = 4_096  # vectors read and added at a time
_NICE = 10  # the child yields the CPU to the replica's searches

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


# --- building and extending graphs in a child process ------------------------------------
#
# usearch holds the GIL while it copies and serialises a graph (~0.5 s each at 1M
# vectors), and a graph being built takes twice the memory of the view a replica searches.
# So graphs are built and extended by ``python -m ragtide.builtin._pg_ann`` (``main``),
# fed through a pipe and answering through another, at a lower priority: the replica only
# writes bytes and reads the new graph's into a buffer, in threads (the GIL let go), and
# its memory grows by the new view alone.
#
# In: the base graph's size (u64; 0: none) and bytes, then batches of a u32 row count
# and u32 dimensions, the rows' int64 keys and float32 unit vectors, until a count of 0.
# Out: the graph's vector count and size (u64 each), then its bytes.
_SIZE = struct.Struct("<Q")
_BATCH = struct.Struct("<II")
_DONE = struct.Struct("<QQ")


async def build(conn: _Conn, ns_id: int, embedder: str, covered: int) -> Graph | None:
    """The graph of the namespace's ``embedder`` vectors up to chunk ``covered``, read
    ``_ROWS`` at a time by id (``conn`` in autocommit: no transaction is held open for the
    minutes a large graph takes) and built in a child; None if there are none or they are
    of several dimensions (searched in the database then). Chunks deleted meanwhile may
    be in it: searches drop those the index no longer has."""
    pages = _pages(conn, {"ns_id": ns_id, "embedder": embedder, "covered": covered})
    try:
        first = await anext(pages, None)
        if first is None:
            return None
        dim = first[1].shape[1]
        async with _Child(None) as child:
            await child.send(*first)
            async for keys, unit in pages:
                if unit.shape[1] != dim:
                    return None
                await child.send(keys, unit)
            count, buffer = await child.result()
    except _Mixed:
        return None
    finally:
        await pages.aclose()
    return await asyncio.to_thread(from_stream, _head(embedder, dim, covered, count), buffer)


async def extend(graph: Graph, keys: _I64, unit: _F32, covered: int) -> Graph:
    """``graph`` with the unit vectors ``unit`` added, keyed ``keys``, standing for every
    chunk up to ``covered``: a new graph, built in a child (searches go on reading
    ``graph`` meanwhile)."""
    async with _Child(graph.buffer) as child:
        for start in range(0, len(keys), _ROWS):
            batch = slice(start, start + _ROWS)
            await child.send(keys[batch], unit[batch])
        count, buffer = await child.result()
    head = _head(graph.embedder, graph.dim, covered, count)
    return await asyncio.to_thread(from_stream, head, buffer)


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


class _Child:
    """One run of the graph builder (``main``) in a child process, killed if left early."""

    def __init__(self, base: Buffer | None) -> None:
        self._base = base
        self._process: subprocess.Popen[bytes] | None = None

    async def __aenter__(self) -> _Child:
        command = [sys.executable, "-m", "ragtide.builtin._pg_ann"]
        self._process = await asyncio.to_thread(
            subprocess.Popen,
            command,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        base = self._base if self._base is not None else np.zeros(0, np.uint8)
        await self._write(_SIZE.pack(len(base)), base)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        process = self._process
        assert process is not None
        if process.poll() is None:
            process.kill()
        await asyncio.to_thread(process.wait)
        for stream in (process.stdin, process.stdout, process.stderr):
            if stream is not None:
                stream.close()

    async def send(self, keys: _I64, unit: _F32) -> None:
        """Add ``keys``' unit vectors ``unit`` to the graph."""
        if len(keys):
            header = _BATCH.pack(len(keys), unit.shape[1])
            rows = np.ascontiguousarray(unit, np.float32)
            await self._write(header, np.ascontiguousarray(keys, np.int64), rows)

    async def result(self) -> tuple[int, Buffer]:
        """The graph's vector count and bytes, once every batch is sent."""
        process = self._process
        assert process is not None and process.stdin is not None
        await self._write(_BATCH.pack(0, 0))
        await asyncio.to_thread(process.stdin.close)
        try:
            head = await asyncio.to_thread(_read_exactly, process.stdout, _DONE.size)
            count, size = _DONE.unpack(head)
            buffer = np.empty(size, np.uint8)
            await asyncio.to_thread(_read_into, process.stdout, buffer.data)
        except EOFError:
            raise RuntimeError(await self._failure()) from None
        return count, buffer

    async def _write(self, *pieces: bytes | np.ndarray[Any, Any]) -> None:
        process = self._process
        assert process is not None and process.stdin is not None
        try:
            await asyncio.to_thread(_write_all, process.stdin, pieces)
        except BrokenPipeError:
            raise RuntimeError(await self._failure()) from None

    async def _failure(self) -> str:
        """Why the child stopped (the last line it wrote to stderr)."""
        process = self._process
        assert process is not None and process.stderr is not None
        code = await asyncio.to_thread(process.wait)
        said = await asyncio.to_thread(process.stderr.read)
        last = said.decode(errors="replace").strip().splitlines()[-1:] or ["nothing"]
        return f"the graph builder exited with {code}: {last[0]}"


def _write_all(stream: IO[bytes], pieces: tuple[bytes | np.ndarray[Any, Any], ...]) -> None:
    for piece in pieces:
        stream.write(piece.data.cast("B") if isinstance(piece, np.ndarray) else piece)
    stream.flush()


def _read_exactly(stream: IO[bytes] | None, size: int) -> bytes:
    buffer = bytearray(size)
    _read_into(stream, memoryview(buffer))
    return bytes(buffer)


def _read_into(stream: IO[bytes] | None, view: memoryview) -> None:
    """Fill ``view`` from ``stream``; ``EOFError`` if it ends first."""
    assert stream is not None
    while len(view):
        got = stream.readinto(view)  # type: ignore[attr-defined]
        if not got:
            raise EOFError
        view = view[got:]


def main() -> int:
    """The child: read a base graph and batches of vectors from stdin (``_Child``), add
    them on one core, and write the graph to stdout."""
    with contextlib.suppress(OSError):
        os.nice(_NICE)
    source, sink = sys.stdin.buffer, sys.stdout.buffer
    try:
        index = _grown(source)
    except EOFError:
        print("the input ended early", file=sys.stderr)
        return 2
    except ValueError as exc:
        print(str(exc), file=sys.stderr)
        return 2
    data = index.save()
    sink.write(_DONE.pack(len(index), len(data)))
    sink.write(data)
    sink.flush()
    return 0


def _grown(source: IO[bytes]) -> Any:
    from usearch.index import Index

    (size,) = _SIZE.unpack(_read_exactly(source, _SIZE.size))
    index = None
    if size:
        base = np.empty(size, np.uint8)
        _read_into(source, base.data)
        index = Index.restore(base.data)  # a copy in usearch's memory, which can grow
        if index is None:
            raise ValueError("the base is not a graph")
        del base
    while True:
        rows, dim = _BATCH.unpack(_read_exactly(source, _BATCH.size))
        if not rows:
            break
        keys = np.frombuffer(_read_exactly(source, 8 * rows), np.int64)
        unit = np.frombuffer(_read_exactly(source, 4 * rows * dim), np.float32)
        if index is None:
            index = new_index(dim)  # the embedded store's settings: i8, M 32, ef_add 128
        elif dim != index.ndim:
            raise ValueError(f"vectors of {dim} dimensions for a graph of {index.ndim}")
        index.add(keys.astype(np.uint64), unit.reshape(rows, dim), threads=1)
    if index is None:
        raise ValueError("no vectors")
    return index


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


if __name__ == "__main__":
    sys.exit(main())
