"""A replica's keyword index of a namespace, saved in PostgreSQL for the other replicas.

Loading a namespace's index from the postings table aggregates every posting on the
database (~37 us of its CPU a chunk: ~40 s at 1M chunks, paid by every replica that loads
it) and takes ~50 s at 1M. The replica that loaded it whole saves what it built instead:
the index's arrays as one byte stream, in parts of ``PART_BYTES`` (``index_snapshot_parts``,
stored uncompressed), described by a head (``index_snapshots``: the generation the index is
of, the arrays' places, a SHA-256 of the stream). The next replica reads the stream back
in one ``REPEATABLE READ`` snapshot and catches it up from the change log, as it would an
index of its own (``_pg_local``).

- **Whole or nothing.** The parts and their head are written in one transaction, and the
  head last: a reader sees the previous snapshot, the new one or none, never half of one.
  Writers take a transaction-level advisory lock per namespace (a second one skips) and
  never replace a snapshot with one of an older generation.
- **Checked, not trusted.** ``parse`` refuses (``Unusable``) a stream of another format,
  one whose digest or size is not the head's, and arrays that are inconsistent
  (offsets not rising, a chunk position out of range, chunk ids not rising). A refused
  snapshot is loaded whole instead, and the new snapshot replaces it.
- **Nothing copied twice.** The arrays are views of the one buffer the parts were read
  into, so a read holds the index and one part.

This module only turns an index into parts and parts back into arrays; ``_pg_local`` reads
and writes them.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt
import psycopg
from psycopg.types.json import Jsonb

__all__ = [
    "FORMAT",
    "PART_BYTES",
    "Pieces",
    "Saved",
    "Streamed",
    "Unusable",
    "check_head",
    "head_of",
    "parse",
    "parts",
    "read",
    "saved_generation",
    "saved_head",
    "stream_head",
    "write",
]

FORMAT = 1  # bump when what is saved changes: older snapshots are then loaded whole
PART_BYTES = 32 << 20
_ALIGN = 8
# name -> dtype, in the order they are laid out
_DTYPES = {
    "ids": "<i8",  # chunk id at each position, rising
    "lengths": "<f4",  # each chunk's length (its frequencies summed)
    "terms": "<u4",  # the segment's term ids, rising
    "start": "<i8",  # term i's entries are start[i]:start[i+1]
    "chunk": "<i4",  # each entry's chunk position
    "tf": "<u2",  # each entry's frequency
    "words": "|u1",  # the vocabulary, term id order, NUL-separated UTF-8
}


class Unusable(Exception):
    """A saved snapshot that must not be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Saved:
    """An index's arrays: what ``parts`` writes and ``parse`` gives back."""

    ids: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.float32]
    terms: npt.NDArray[np.uint32]
    start: npt.NDArray[np.int64]
    chunk: npt.NDArray[np.int32]
    tf: npt.NDArray[np.uint16]
    vocabulary: list[str]  # term id -> term


class Pieces(Protocol):
    """An array made a piece at a time as it is written (``bm25.Merged``'s entries)."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[np.ndarray[Any, Any]]: ...


@dataclass(frozen=True, slots=True)
class Streamed:
    """``Saved`` of an index that serves meanwhile: its entries are made as they are
    written, so writing it holds one piece of them, not a copy (``_pg_local``'s refresh)."""

    ids: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.float32]
    terms: npt.NDArray[np.uint32]
    start: npt.NDArray[np.int64]
    chunk: Pieces
    tf: Pieces
    vocabulary: list[str]


def _layout(counts: dict[str, int]) -> tuple[list[tuple[str, str, int, int]], int]:
    """Each array's (name, dtype, offset, count), aligned, and the stream's size."""
    arrays, offset = [], 0
    for name, dtype in _DTYPES.items():
        arrays.append((name, dtype, offset, counts[name]))
        offset += counts[name] * np.dtype(dtype).itemsize
        offset = -(-offset // _ALIGN) * _ALIGN
    return arrays, offset


def head_of(saved: Saved | Streamed, generation: int) -> tuple[dict[str, Any], list[Any]]:
    """The head of ``saved``'s stream (its digest still to fill in) and the arrays in order
    (``Pieces`` as they are), as ``parts`` takes them. The head says which chunk ids it
    covers (``covered``: the largest).
    Raises ``Unusable`` for a vocabulary that cannot be NUL-separated (PostgreSQL's text
    holds no NUL, so only a caller's mistake)."""
    words = "\x00".join(saved.vocabulary)
    if words.count("\x00") != max(len(saved.vocabulary) - 1, 0):
        raise Unusable("a term holds a NUL")
    blob = np.frombuffer(words.encode(), np.uint8)
    values: dict[str, Any] = {
        "ids": saved.ids,
        "lengths": saved.lengths,
        "terms": saved.terms,
        "start": saved.start,
        "chunk": saved.chunk,
        "tf": saved.tf,
        "words": blob,
    }
    ordered = [values[n] for n in _DTYPES]  # ``parts`` lays each out in its dtype
    arrays, size = _layout({n: len(values[n]) for n in _DTYPES})
    covered = int(saved.ids[-1]) if len(saved.ids) else 0
    head = stream_head(
        size,
        generation,
        chunks=len(saved.ids),
        vocabulary=len(saved.vocabulary),
        covered=covered,
        arrays=arrays,
    )
    return head, ordered


def stream_head(size: int, generation: int, **fields: Any) -> dict[str, Any]:
    """The head of a stream of ``size`` bytes (its digest filled in by ``parts``)."""
    return {
        "format": FORMAT,
        "generation": generation,
        "size": size,
        "part_bytes": PART_BYTES,
        "parts": -(-size // PART_BYTES),
        **fields,
    }


def parts(
    head: dict[str, Any], arrays: Sequence[np.ndarray[Any, Any] | Iterable[np.ndarray[Any, Any]]]
) -> Iterator[bytes]:
    """The stream ``head`` describes, ``PART_BYTES`` at a time, and its SHA-256 into
    ``head["sha256"]`` once the last part is made: one part in memory at a time. An
    array may be given as its pieces, in order (``Pieces``)."""
    digest = hashlib.sha256()
    pending: list[bytes | memoryview] = []
    filled = 0
    position = 0
    for (name, dtype, offset, count), array in zip(head["arrays"], arrays, strict=True):
        if offset > position:  # alignment
            pending.append(bytes(offset - position))
            filled += offset - position
            position = offset
        end = offset + count * np.dtype(dtype).itemsize
        for piece in (array,) if isinstance(array, np.ndarray) else array:
            view = np.ascontiguousarray(piece, np.dtype(dtype)).data.cast("B")
            if position + len(view) > end:
                raise ValueError(f"{name} is longer than its head says")
            while len(view):
                take = min(len(view), PART_BYTES - filled)
                pending.append(view[:take])
                view = view[take:]
                filled += take
                position += take
                if filled == PART_BYTES:
                    part = b"".join(pending)
                    digest.update(part)
                    yield part
                    pending, filled = [], 0
        if position != end:
            raise ValueError(f"{name} is shorter than its head says")
    if position < head["size"]:
        pending.append(bytes(head["size"] - position))
        filled += head["size"] - position
    if filled:
        part = b"".join(pending)
        digest.update(part)
        yield part
    head["sha256"] = digest.hexdigest()


def check_head(head: dict[str, Any]) -> None:
    """Refuse a keyword index's head this version cannot read (before any part is read)."""
    _check_stream(head)
    names = [a[0] for a in head.get("arrays", ())]
    if names != list(_DTYPES):
        raise Unusable("the snapshot's head is incomplete")
    counts = {a[0]: int(a[3]) for a in head["arrays"]}
    arrays, size = _layout(counts)
    if [list(a) for a in arrays] != [list(a) for a in head["arrays"]] or size != head["size"]:
        raise Unusable("the snapshot's arrays are not where its head says")


def _check_stream(head: dict[str, Any]) -> None:
    if head.get("format") != FORMAT:
        raise Unusable(f"snapshot format {head.get('format')!r}, this version reads {FORMAT}")
    if not head.get("sha256") or not isinstance(head.get("size"), int):
        raise Unusable("the snapshot's head is incomplete")
    if head.get("parts") != -(-head["size"] // int(head.get("part_bytes") or 1)):
        raise Unusable("the snapshot's parts are not what its head says")


def parse(head: dict[str, Any], buffer: npt.NDArray[np.uint8], digest: str) -> Saved:
    """The arrays of a keyword index's stream read whole into ``buffer`` (views of it,
    not copies); ``digest`` is the SHA-256 of what was read."""
    check_head(head)
    if len(buffer) != head["size"] or digest != head["sha256"]:
        raise Unusable("the snapshot's contents are not what its head says")
    views = {
        name: np.frombuffer(buffer, np.dtype(dtype), count, offset)
        for name, dtype, offset, count in head["arrays"]
    }
    n, entries = len(views["ids"]), len(views["chunk"])
    start, terms = views["start"], views["terms"]
    if (
        n != head["chunks"]
        or len(views["lengths"]) != n
        or len(start) != len(terms) + 1
        or len(views["tf"]) != entries
        or (len(start) and (start[0] != 0 or start[-1] != entries))
        or np.any(np.diff(start) < 0)
        or np.any(np.diff(terms.astype(np.int64)) <= 0)
        or np.any(np.diff(views["ids"]) <= 0)
        or (entries and (int(views["chunk"].min()) < 0 or int(views["chunk"].max()) >= n))
    ):
        raise Unusable("the snapshot's arrays are inconsistent")
    words = views["words"].tobytes().decode()
    vocabulary = words.split("\x00") if head["vocabulary"] else []
    if len(vocabulary) != head["vocabulary"] or (len(terms) and terms[-1] >= len(vocabulary)):
        raise Unusable("the snapshot's vocabulary is not what its head says")
    return Saved(
        views["ids"],
        views["lengths"],
        terms,
        start,
        views["chunk"],
        views["tf"],
        vocabulary,
    )


# --- reading and writing them ------------------------------------------------------------

_HEAD = (
    "SELECT head FROM index_snapshots"
    " WHERE namespace_id = %(ns_id)s::integer AND kind = %(kind)s"
)
_PART = (
    "SELECT data FROM index_snapshot_parts"
    " WHERE namespace_id = %(ns_id)s::integer AND kind = %(kind)s AND part = %(part)s::integer"
)
# One writer of a namespace's snapshot of a kind at a time; the others skip (they hold
# the same thing).
_LOCK = (
    "SELECT pg_try_advisory_xact_lock("
    "hashtext(current_schema() || '.index_snapshots.' || %(kind)s), %(ns_id)s::integer)"
)
_KEPT = (
    "SELECT generation FROM index_snapshots"
    " WHERE namespace_id = %(ns_id)s::integer AND kind = %(kind)s FOR UPDATE"
)
_REPLACE = (
    "DELETE FROM index_snapshots WHERE namespace_id = %(ns_id)s::integer AND kind = %(kind)s",
    "INSERT INTO index_snapshots(namespace_id, kind, generation, head)"
    " VALUES (%(ns_id)s::integer, %(kind)s, %(generation)s, '{}')",
)
_WRITE_PART = (
    "INSERT INTO index_snapshot_parts(namespace_id, kind, part, data)"
    " VALUES (%(ns_id)s::integer, %(kind)s, %(part)s, %(data)b)"
)
_WRITE_HEAD = (
    "UPDATE index_snapshots SET head = %(head)s"
    " WHERE namespace_id = %(ns_id)s::integer AND kind = %(kind)s"
)
_Conn = psycopg.AsyncConnection[Any]


async def saved_generation(conn: _Conn, ns_id: int, kind: str) -> int | None:
    """The generation of the namespace's saved ``kind``, None if there is none."""
    head = await saved_head(conn, ns_id, kind)
    return int(head["generation"]) if head is not None else None


async def saved_head(conn: _Conn, ns_id: int, kind: str) -> dict[str, Any] | None:
    """The head of the namespace's saved ``kind`` (its generation, and the chunk ids it
    covers: ``covered``), None if there is none."""
    row = await (await conn.execute(_HEAD, {"ns_id": ns_id, "kind": kind})).fetchone()
    return dict(row[0]) if row is not None and row[0] is not None else None


async def read(
    conn: _Conn, ns_id: int, kind: str
) -> tuple[dict[str, Any], npt.NDArray[np.uint8]] | None:
    """The head and the whole stream of the namespace's saved ``kind``, its digest checked
    (``conn`` in a transaction: one snapshot); None if there is none. Raises ``Unusable``."""
    params: dict[str, Any] = {"ns_id": ns_id, "kind": kind}
    head = await saved_head(conn, ns_id, kind)
    if head is None:
        return None
    _check_stream(head)
    # Not zeroed (a bytearray of 560 MB is ~1 s of the GIL): every byte is read into it.
    buffer = np.empty(int(head["size"]), np.uint8)
    digest = hashlib.sha256()
    filled = 0
    for part in range(int(head["parts"])):
        data = await (await conn.execute(_PART, params | {"part": part}, binary=True)).fetchone()
        if data is None:
            raise Unusable(f"part {part} of the snapshot is missing")
        filled = await asyncio.to_thread(_fill, buffer, filled, data[0], digest)
    if filled != len(buffer) or digest.hexdigest() != head["sha256"]:
        raise Unusable("the snapshot's contents are not what its head says")
    return head, buffer


async def write(
    conn: _Conn,
    ns_id: int,
    kind: str,
    head: dict[str, Any],
    stream: Iterator[bytes],
    *,
    replace: bool = False,
) -> bool:
    """Save ``stream`` (``parts``' of ``head``) as the namespace's ``kind``, in one
    transaction, unless another process is writing it or what is saved is newer (or as
    new, unless ``replace``); whether it was written."""
    generation = int(head["generation"])
    params: dict[str, Any] = {"ns_id": ns_id, "kind": kind, "generation": generation}
    async with conn.transaction():
        locked = await (await conn.execute(_LOCK, params)).fetchone()
        if locked is None or not locked[0]:
            return False
        row = await (await conn.execute(_KEPT, params)).fetchone()
        if row is not None:
            kept = int(row[0])
            if kept > generation or (kept == generation and not replace):
                return False
        for statement in _REPLACE:
            await conn.execute(statement, params)
        number = 0
        while (data := await asyncio.to_thread(next, stream, None)) is not None:
            await conn.execute(_WRITE_PART, params | {"part": number, "data": data})
            number += 1
        await conn.execute(_WRITE_HEAD, params | {"head": Jsonb(head)})
    return True


def _fill(buffer: npt.NDArray[np.uint8], offset: int, data: bytes, digest: Any) -> int:
    """Copy a part read into ``buffer`` at ``offset`` and hash it; in a thread."""
    end = offset + len(data)
    if end > len(buffer):
        raise Unusable("the snapshot is longer than its head says")
    buffer[offset:end] = np.frombuffer(data, np.uint8)
    digest.update(data)
    return end
