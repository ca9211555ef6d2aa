"""A namespace's search snapshot saved beside the database, and mapped back at the next start.

Loading a big namespace from SQLite reads every chunk row and rebuilds the matrix and
the postings (~0.03-0.04 ms a chunk: ~40 s at 1M chunks), so a start's readiness grew
with the corpus. The embedded store saves what a load builds instead: one directory per
namespace (``<db>.snap/<sha1 of the namespace>/``) of ``.npy`` arrays and a JSON header,
and the next load maps the arrays read-only (page cache, read as searches touch them)
and applies only what changed since from SQLite (``sqlite_store``).

- **Whole or nothing.** A snapshot is written to a temporary directory beside it, every
  file and the directory fsynced, then renamed into place (the old one renamed away
  first and removed after): a reader finds a whole snapshot or none, never half of one.
  It opens the directory once and every file through that descriptor, so it never mixes
  the files of two snapshots; one replaced (and its files removed) while it is read is
  read again, the new one.
- **Checked, not trusted.** ``open_snapshot`` refuses (``Unusable``) a snapshot of
  another format version, one whose header the caller's ``check`` refuses (the store:
  another namespace, incarnation, model or BM25 parameters, a generation newer than
  the file's, or writes since by a version that may give rowids again), and any array
  whose header, dtype, shape or length is not what the header says (a truncated file)
  or whose structure is inconsistent (postings offsets, rowids not rising). The arrays'
  contents are not checksummed: that would read every page, which is what mapping
  saves; a page the disk returns damaged is served as SQLite's own would be.
- **Read-only.** Mapped arrays cannot be written (``flags.writeable`` is false); the store
  starts new buffers when it appends to a snapshot that maps them.
"""

from __future__ import annotations

import json
import mmap
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from ragtide.builtin._vectors import FileRows
from ragtide.builtin.bm25 import Segment

__all__ = [
    "FORMAT",
    "Header",
    "Saved",
    "Unusable",
    "open_snapshot",
    "read_header",
    "remove",
    "save",
]

FORMAT = 2  # bump when what is saved changes: older snapshots are then ignored and replaced
_HEADER = "header.json"
_STALE_S = 3_600  # a temporary directory this old is a crashed writer's: removed


class Unusable(Exception):
    """A snapshot that is there but must not be used; the message says why."""


@dataclass(frozen=True, slots=True)
class Header:
    """What a snapshot is of, and the sizes its arrays must have."""

    namespace: str
    incarnation: int
    generation: int
    embedder: str
    dim: int
    chunks: int  # positions, live or not
    live: int
    max_rowid: int
    total: float  # the live chunks' lengths summed (BM25's average length)
    k1: float
    b: float
    segments: int
    sources: int
    vector_ok: bool  # whether a vector mask is saved (chunks of another model)
    alive: bool  # whether a live mask is saved (dead positions)
    # The file's write counters when it was read: all writes, and those of writers that
    # never give a rowid twice (``SQLiteStore``'s ``_write_counts``).
    file_writes: int
    aware_writes: int
    format: int = FORMAT


@dataclass(frozen=True, slots=True)
class Saved:
    """A snapshot's contents: in memory when saved, mapped read-only when opened."""

    header: Header
    matrix: npt.NDArray[np.float32]  # (chunks, dim)
    vector_ok: npt.NDArray[np.bool_] | None
    rowids: npt.NDArray[np.int64]
    source: npt.NDArray[np.int32]
    sources: Sequence[tuple[str, str]]  # (document id, metadata as the file's JSON text)
    lengths: npt.NDArray[np.float32]
    alive: npt.NDArray[np.bool_] | None
    segments: Sequence[Segment]
    origin: FileRows | None = None  # the file ``matrix`` maps, when opened


def _arrays(saved: Saved) -> dict[str, np.ndarray[Any, Any]]:
    h = saved.header
    arrays: dict[str, np.ndarray[Any, Any]] = {
        "matrix": saved.matrix[: h.chunks],
        "rowids": saved.rowids[: h.chunks],
        "source": saved.source[: h.chunks],
        "lengths": saved.lengths[: h.chunks],
    }
    if saved.vector_ok is not None:
        arrays["vector_ok"] = saved.vector_ok[: h.chunks]
    if saved.alive is not None:
        arrays["alive"] = saved.alive[: h.chunks]
    for i, s in enumerate(saved.segments):
        arrays.update({f"s{i}.terms": s.terms, f"s{i}.start": s.start})
        arrays.update({f"s{i}.chunk": s.chunk, f"s{i}.tf": s.tf})
    return arrays


def save(directory: Path, saved: Saved, *, cancelled: Callable[[], bool] = lambda: False) -> bool:
    """Write ``saved`` as ``directory``, replacing what is there, atomically; False if
    ``cancelled`` said stop between two files (nothing is left of it then). Raises
    ``OSError`` (a full or read-only disk) with nothing left behind either."""
    parent = directory.parent
    parent.mkdir(parents=True, exist_ok=True)
    _remove_stale(parent, directory.name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=parent))
    old: Path | None = None
    try:
        for name, array in _arrays(saved).items():
            if cancelled():
                return False
            with open(tmp / f"{name}.npy", "wb") as f:
                np.lib.format.write_array(f, np.ascontiguousarray(array), allow_pickle=False)
                f.flush()
                os.fsync(f.fileno())
        _write(tmp / "sources.json", json.dumps(list(saved.sources)).encode())
        _write(tmp / _HEADER, json.dumps(asdict(saved.header)).encode())
        _fsync_dir(tmp)
        if cancelled():
            return False
        if directory.exists() or directory.is_symlink():
            old = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=parent))
            os.replace(directory, old / "old")  # a reader then finds none, never half of one
        os.rename(tmp, directory)
        _fsync_dir(parent)
        return True
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def remove(directory: Path) -> None:
    """Remove a snapshot whole (renamed away first: a reader never finds half of one)."""
    if not directory.exists():
        return
    gone = Path(tempfile.mkdtemp(prefix=f".{directory.name}.", dir=directory.parent))
    try:
        os.replace(directory, gone / "old")
    finally:
        shutil.rmtree(gone, ignore_errors=True)


def read_header(directory: Path) -> Header | None:
    """The header of the snapshot at ``directory``; None if there is none (or it is
    unreadable: ``open_snapshot`` says why)."""
    try:
        return _header(json.loads((directory / _HEADER).read_bytes()))
    except (OSError, ValueError, TypeError, Unusable):
        return None


def open_snapshot(directory: Path, check: Callable[[Header], str | None]) -> Saved | None:
    """The snapshot at ``directory`` with its arrays mapped read-only; None if there is
    none. ``check`` refuses a header by returning why. Raises ``Unusable`` for a snapshot
    that must not be used, ``OSError`` for one that cannot be read."""
    for _ in range(3):
        try:
            fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY)
        except FileNotFoundError:
            return None
        try:
            return _opened(fd, check)
        except Unusable:
            try:  # replaced while read (its files removed): read the new one
                replaced = os.fstat(fd).st_ino != os.stat(directory).st_ino
            except FileNotFoundError:
                return None
            if not replaced:
                raise
        finally:
            os.close(fd)
    raise Unusable("replaced while read, again and again")


def _opened(fd: int, check: Callable[[Header], str | None]) -> Saved:
    """``open_snapshot`` of the directory open as ``fd``."""
    try:
        raw = _read(fd, _HEADER)
    except FileNotFoundError:
        raise Unusable("no header") from None
    try:
        header = _header(json.loads(raw))
    except (ValueError, TypeError) as exc:
        raise Unusable(f"unreadable header: {exc}") from exc
    refused = check(header)
    if refused:
        raise Unusable(refused)
    n = header.chunks
    origins: list[FileRows] = []
    matrix = _map(fd, "matrix", np.float32, (n, header.dim), random=True, origins=origins)
    vector_ok = _map(fd, "vector_ok", np.bool_, (n,)) if header.vector_ok else None
    rowids = _map(fd, "rowids", np.int64, (n,))
    source = _map(fd, "source", np.int32, (n,))
    lengths = _map(fd, "lengths", np.float32, (n,))
    alive = _map(fd, "alive", np.bool_, (n,)) if header.alive else None
    segments = [_segment(fd, i, n) for i in range(header.segments)]
    try:
        pairs = json.loads(_read(fd, "sources.json"))
        sources = [(str(d), str(m)) for d, m in pairs]
    except FileNotFoundError:
        raise Unusable("sources: missing") from None
    except (ValueError, TypeError) as exc:
        raise Unusable(f"unreadable sources: {exc}") from exc
    if len(sources) != header.sources:
        raise Unusable("sources of another length than the header's")
    if n and (int(rowids[-1]) != header.max_rowid or (n > 1 and np.any(np.diff(rowids) <= 0))):
        raise Unusable("rowids not rising to the header's largest")
    if n and int(source.max(initial=0)) >= len(sources):
        raise Unusable("a source out of range")
    live = n if alive is None else int(np.count_nonzero(alive))
    if live != header.live:
        raise Unusable("a live mask of another count than the header's")
    origin = origins[0] if origins else None
    return Saved(
        header, matrix, vector_ok, rowids, source, sources, lengths, alive, segments, origin
    )


def _header(data: Any) -> Header:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        found = data.get("format") if isinstance(data, dict) else None
        raise Unusable(f"format {found!r}, not {FORMAT}")
    header = Header(**data)
    if min(header.chunks, header.live, header.dim, header.segments, header.sources) < 0:
        raise ValueError("negative sizes")
    return header


def _segment(fd: int, i: int, chunks: int) -> Segment:
    """Segment ``i``'s arrays, their offsets checked (cheap: one entry per term)."""
    terms = _map(fd, f"s{i}.terms", np.uint32, None)
    start = _map(fd, f"s{i}.start", np.int64, (len(terms) + 1,))
    entries = int(start[-1])
    chunk = _map(fd, f"s{i}.chunk", np.int32, (entries,))
    tf = _map(fd, f"s{i}.tf", np.uint16, (entries,))
    if int(start[0]) != 0 or (len(start) > 1 and np.any(np.diff(start) < 0)):
        raise Unusable(f"segment {i}: offsets not rising from 0")
    if len(terms) > 1 and np.any(np.diff(terms.astype(np.int64)) <= 0):
        raise Unusable(f"segment {i}: terms not sorted")
    if entries and chunks == 0:
        raise Unusable(f"segment {i}: entries of no chunk")
    return Segment(terms, start, chunk, tf)


def _map(
    fd: int,
    name: str,
    dtype: type[np.generic],
    shape: tuple[int, ...] | None,
    *,
    random: bool = False,
    origins: list[FileRows] | None = None,
) -> np.ndarray[Any, Any]:
    """``name``.npy mapped read-only, of ``dtype`` and ``shape`` (None: any length).

    ``origins`` gets the file held open with where the rows start: a copy of them (the
    first append after a snapshot load) is then the kernel's. Pages are read as searches
    touch them. Populating the postings' pages at the load
    (``MAP_POPULATE``) was measured at 300k chunks: no faster first search (32-88 against
    35-41 ms, warm page cache), 143 MB more RSS; so not done.
    """
    try:
        file = os.open(f"{name}.npy", os.O_RDONLY, dir_fd=fd)
    except FileNotFoundError:
        raise Unusable(f"{name}: missing") from None
    try:
        with os.fdopen(os.dup(file), "rb") as f:
            try:
                version = np.lib.format.read_magic(f)
                read = (
                    np.lib.format.read_array_header_1_0
                    if version == (1, 0)
                    else np.lib.format.read_array_header_2_0
                )
                found, fortran, kind = read(f)
            except ValueError as exc:
                raise Unusable(f"{name}: {exc}") from exc
            offset = f.tell()
        if kind != np.dtype(dtype) or fortran:
            raise Unusable(f"{name}: {kind} where {np.dtype(dtype)} was saved")
        if shape is None and len(found) == 1:
            shape = found
        if found != shape:
            raise Unusable(f"{name}: shape {found}, not {shape}")
        count = int(np.prod(shape, dtype=np.int64))
        size = os.fstat(file).st_size
        if size < offset + count * np.dtype(dtype).itemsize:
            raise Unusable(f"{name}: truncated")
        if not count:
            empty = np.zeros(shape, dtype)
            empty.flags.writeable = False
            return empty
        mapped = mmap.mmap(file, 0, access=mmap.ACCESS_READ)
        if origins is not None and shape:
            origins.append(FileRows(os.dup(file), offset, int(shape[-1])))
    finally:
        os.close(file)
    if random:
        mapped.madvise(mmap.MADV_RANDOM)  # a rescoring reads ~100 scattered rows
    array = np.frombuffer(mapped, dtype, count, offset)
    return array.reshape(shape)


def _read(fd: int, name: str) -> bytes:
    file = os.open(name, os.O_RDONLY, dir_fd=fd)
    with os.fdopen(file, "rb") as f:
        return f.read()


def _write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove_stale(parent: Path, name: str) -> None:
    """Temporary directories of ``name`` that a crashed writer left (an hour old)."""
    now = time.time()
    for left in parent.glob(f".{name}.*"):
        try:
            if now - left.stat().st_mtime > _STALE_S:
                shutil.rmtree(left, ignore_errors=True)
        except OSError:
            continue
