"""Float32 vectors in a memory-mapped file: the rows of the embedded store's big namespaces.

A namespace of ``ann_min_chunks`` chunks or more is searched through an HNSW base and
needs its exact vectors only to rescore ~100-150 candidates a search (and for the rare
brute force: a narrow filter, or while a base is built). Held in process memory they
were 1 KB per chunk at 256 dimensions, the largest part of a snapshot. Here they are in
a file without a name (``O_TMPFILE``; else unlinked as soon as made) beside the
database, mapped read-only: its pages are the kernel's page cache, written back and
dropped under memory pressure and read again on the next touch, and the process's RSS
counts only the pages it has touched (file-backed, not anonymous memory).

- Rows are written with ``pwrite`` (a load a block at a time, a write past the rows any
  snapshot reads), never through the mapping, so writing them maps nothing.
- Outgrowing the file extends it and maps it again: the rows it holds are not copied
  (a snapshot keeps its own, shorter, mapping; the file only grows).
- A copy (a compaction's live rows, a branch) goes to a new file a block at a time.

So no load, write or compaction holds a second copy of the vectors in memory. The file
is the process's own and goes with the last mapping and descriptor of it.
"""

from __future__ import annotations

import errno
import mmap
import os
import tempfile
import weakref
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["FileRows", "VectorFile", "mapped", "release"]

_F32 = npt.NDArray[np.float32]
_BLOCK = 4_096  # rows copied at a time (4 MiB at 256 dimensions)


def _unnamed(directory: Path) -> int:
    """A read-write descriptor of a new file in ``directory`` that has no name."""
    flag = getattr(os, "O_TMPFILE", 0)
    if flag:
        try:
            return os.open(directory, flag | os.O_RDWR, 0o600)
        except OSError as exc:  # a file system without it: a name, unlinked at once
            if exc.errno not in (errno.EOPNOTSUPP, errno.EISDIR, errno.EINVAL):
                raise
    fd, name = tempfile.mkstemp(prefix=".ragtide-vectors-", dir=directory)
    os.unlink(name)
    return fd


class FileRows:
    """Where float32 rows of ``dim`` lie in a file (``offset`` on), held open: a saved
    snapshot's vectors (``_snapshot``), which a copy hands to the kernel."""

    def __init__(self, fd: int, offset: int, dim: int) -> None:
        self.fd, self.offset, self.dim = fd, offset, dim
        self._close = weakref.finalize(self, os.close, fd)


class VectorFile:
    """``rows`` x ``dim`` float32 rows in an unnamed file; ``matrix`` maps the newest extent.

    Not locked: one thread writes (a load's, or the store's writer), past the rows any
    reader of a mapping reads.
    """

    def __init__(self, directory: Path, dim: int, rows: int) -> None:
        if dim <= 0 or rows <= 0:
            raise ValueError("a vector file holds at least one row of one dimension")
        self.dim = dim
        self._fd = _unnamed(directory)
        self._close = weakref.finalize(self, os.close, self._fd)
        self.matrix: _F32 = self.grow(rows)

    def grow(self, rows: int) -> _F32:
        """A read-only ``(rows, dim)`` mapping of the file, extended to ``rows`` first."""
        size = rows * self.dim * 4
        if os.fstat(self._fd).st_size < size:
            os.ftruncate(self._fd, size)  # sparse: no disk, no memory until written
        mapped = mmap.mmap(self._fd, size, access=mmap.ACCESS_READ)
        mapped.madvise(mmap.MADV_RANDOM)  # a rescoring reads ~100 scattered rows
        self.matrix = np.frombuffer(mapped, np.float32).reshape(rows, self.dim)
        return self.matrix

    def write(self, start: int, rows: Any) -> None:
        """Rows ``start..`` from ``rows`` (float32 values, ``len(rows) x dim``)."""
        data = memoryview(np.ascontiguousarray(rows, np.float32).tobytes())
        offset = start * self.dim * 4
        while data:
            done = os.pwrite(self._fd, data, offset)
            data, offset = data[done:], offset + done

    @classmethod
    def copy_of(
        cls,
        directory: Path,
        source: _F32,
        rows: npt.NDArray[np.int64] | int,
        capacity: int,
        *,
        origin: FileRows | None = None,
    ) -> VectorFile:
        """A new file of ``source[rows]`` (or its first ``rows``), room for ``capacity``,
        copied a block at a time (``source`` may be a mapping or an array). The first
        ``rows`` of a ``source`` that maps ``origin`` are copied by the kernel instead
        (``copy_file_range``: 0.2 against 1.5 s for 300 MB here), when it can."""
        count = rows if isinstance(rows, int) else len(rows)
        made = cls(directory, int(source.shape[1]), max(capacity, count, 1))
        if isinstance(rows, int) and origin is not None and made._copied_from(origin, count):
            return made
        for start in range(0, count, _BLOCK):
            stop = min(start + _BLOCK, count)
            part = source[start:stop] if isinstance(rows, int) else source[rows[start:stop]]
            made.write(start, part)
        return made

    def _copied_from(self, origin: FileRows, rows: int) -> bool:
        """Rows ``0..rows`` from ``origin`` by ``copy_file_range``; False if the kernel
        or the file system cannot (the caller copies them itself)."""
        if origin.dim != self.dim or not hasattr(os, "copy_file_range"):
            return False
        size, done = rows * self.dim * 4, 0
        try:
            while done < size:
                step = os.copy_file_range(
                    origin.fd, self._fd, size - done, origin.offset + done, done
                )
                if not step:  # the origin is shorter than it says
                    return False
                done += step
        except OSError:
            return False
        return True


def _mapping(array: Any) -> mmap.mmap | None:
    """The file mapping ``array`` is a view of, if it is one."""
    base = array
    while base is not None and not isinstance(base, mmap.mmap):
        base = base.obj if isinstance(base, memoryview) else getattr(base, "base", None)
    return base if isinstance(base, mmap.mmap) else None


def mapped(array: Any) -> bool:
    """Whether ``array`` is a view of a memory-mapped file (a vector file, a saved
    snapshot's arrays): page cache, not process memory."""
    return _mapping(array) is not None


def release(matrix: Any) -> None:
    """Unmap from this process the pages of the file ``matrix`` maps (they stay in the page
    cache): after a pass over every row, such as an HNSW build, RSS then counts again only
    what searches touch. Nothing for an array in memory."""
    mapping = _mapping(matrix)
    if mapping is not None:
        mapping.madvise(mmap.MADV_DONTNEED)
