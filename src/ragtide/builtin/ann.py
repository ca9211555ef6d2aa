"""Approximate nearest neighbours for the embedded store: an immutable HNSW base per namespace.

A namespace's vectors up to some rowid (``covered``) are in an HNSW graph (``usearch``,
vectors quantised to i8 or f16, inner product), keyed by the chunks' rowids. The base is
built once, in a child process (``_ann_child``: no GIL held while it is serialised), from
a snapshot's rows, saved beside the SQLite file and opened memory-mapped (``view``) by the
next process, so a start does not rebuild it. It is never changed after it is built: a
search holds a base as it holds a snapshot.

What the base does not know is handled by the store's snapshot around it:

- chunks written after it (rowid > ``covered``: SQLite gives new rows larger rowids) are
  the snapshot's *tail*, searched exactly;
- deleted chunks are tombstones: a base hit whose rowid is not live in the snapshot is
  dropped (a rowid SQLite reused is rescored from the snapshot's own vector);
- every candidate is rescored exactly from the snapshot's float32 vectors, so returned
  scores are exact and only recall is approximate;
- a filter is applied to the candidates; when it leaves fewer than asked, the store
  searches the admitted chunks exactly instead (a narrow filter admits few).

When the tail or the tombstones grow past a share of the base, the store builds the next
base in the background and swaps it in.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import numpy.typing as npt

from ragtide.builtin._ann_child import Buffer, GraphBuild

__all__ = [
    "BuildCancelled",
    "VectorBase",
    "build_base",
    "nearest_keys",
    "new_index",
    "open_base",
    "save_base",
]

Quantisation = Literal["f16", "i8", "f32"]

_I64 = npt.NDArray[np.int64]
_F32 = npt.NDArray[np.float32]
_BATCH = 1_024  # rows copied and sent at a time (bounds the extra memory and a cancel)


@dataclass(frozen=True, slots=True)
class VectorBase:
    """An immutable HNSW graph of ``count`` vectors with rowids ``<= covered``."""

    index: Any  # usearch.index.Index
    covered: int
    count: int
    dim: int
    embedder: str
    incarnation: int
    path: Path | None  # where it is saved (None: only in memory)
    data: Buffer | None = None  # the bytes it is a view of, unless it maps ``path``

    def search(self, query: _F32, k: int, expansion: int) -> _I64:
        """The rowids of (about) the ``k`` nearest vectors by inner product."""
        return nearest_keys(self.index, query, min(k, self.count), expansion)


def new_index(
    dim: int,
    *,
    quantisation: Quantisation = "i8",
    connectivity: int = 32,
    expansion_add: int = 128,
) -> Any:
    """An empty HNSW index (``usearch``) of ``dim``-dimensional vectors compared by inner
    product: what the embedded store's bases and the PostgreSQL replicas' graphs
    (``_pg_ann``) are built in."""
    from usearch.index import Index

    return Index(
        ndim=dim,
        metric="ip",
        dtype=quantisation,
        connectivity=connectivity,
        expansion_add=expansion_add,
    )


def nearest_keys(index: Any, query: _F32, k: int, expansion: int) -> _I64:
    """The keys of (about) the ``k`` nearest vectors of ``index`` to ``query``, searched
    ``expansion`` wide (0: as the index is set)."""
    if expansion and index.expansion_search != expansion:
        index.expansion_search = expansion
    return np.asarray(index.search(query, k).keys, np.int64)


class BuildCancelled(Exception):
    """The store closed while a base was being built."""


def build_base(
    rowids: _I64,
    vectors: _F32,
    *,
    covered: int,
    embedder: str,
    incarnation: int,
    quantisation: Quantisation = "i8",
    connectivity: int = 32,
    expansion_add: int = 128,
    threads: int = 1,
    cancelled: Callable[[], bool] = lambda: False,
) -> VectorBase:
    """A base of ``vectors[i]`` keyed ``rowids[i]``, standing for every rowid up to
    ``covered``, built in a child process (``_ann_child``: this process holds only the
    graph's bytes, searched as a view of them). ``vectors`` may be a view: it is copied
    ``_BATCH`` rows at a time."""
    from usearch.index import Index

    dim = int(vectors.shape[1])
    build = GraphBuild(
        dim=dim,
        quantisation=quantisation,
        connectivity=connectivity,
        expansion_add=expansion_add,
        threads=threads,
    )
    with build:
        for start in range(0, len(rowids), _BATCH):
            if cancelled():
                raise BuildCancelled
            build.add(rowids[start : start + _BATCH], vectors[start : start + _BATCH])
        count, data = build.result()
    index = Index.restore(data.data, view=True)
    return VectorBase(index, covered, count, dim, embedder, incarnation, None, data)


def _meta_path(path: Path) -> Path:
    return path.with_suffix(".json")


def save_base(base: VectorBase, path: Path, namespace: str) -> VectorBase:
    """Write ``base`` to ``path`` (and its description beside it), atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    if base.data is not None:  # its bytes as built: written, not serialised again
        with open(tmp, "wb") as file:
            file.write(base.data.data)
    else:
        base.index.save(str(tmp))
    os.replace(tmp, path)
    meta = {
        "namespace": namespace,
        "covered": base.covered,
        "count": base.count,
        "dim": base.dim,
        "embedder": base.embedder,
        "incarnation": base.incarnation,
    }
    meta_tmp = _meta_path(path).with_suffix(".json.tmp")
    meta_tmp.write_text(json.dumps(meta))
    os.replace(meta_tmp, _meta_path(path))
    return dataclasses.replace(base, path=path)


def open_base(path: Path, *, embedder: str, dim: int, incarnation: int) -> VectorBase | None:
    """The base saved at ``path``, memory-mapped; None if absent or of another namespace
    incarnation, model or dimension (or unreadable: it is rebuilt)."""
    from usearch.index import Index

    try:
        meta = json.loads(_meta_path(path).read_text())
    except (OSError, ValueError):
        return None
    if (
        meta.get("embedder") != embedder
        or meta.get("dim") != dim
        or meta.get("incarnation") != incarnation
    ):
        return None
    try:
        index = Index.restore(str(path), view=True)
    except Exception:  # a torn or foreign file: rebuilt by the caller
        return None
    if index is None or len(index) != meta["count"]:
        return None
    return VectorBase(
        index, int(meta["covered"]), int(meta["count"]), dim, embedder, incarnation, path
    )
