"""A big namespace's vectors in a memory-mapped file (``_vectors``) instead of the heap:
every snapshot step (load, append, growth, branch, compaction) holds exactly the rows an
in-memory snapshot holds, so every search of the same snapshot history is bit-identical
(a fresh load, whose positions differ, to float32 rounding), and the budget no longer
counts them."""

from __future__ import annotations

import gc
import os
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from ragtide.builtin import sqlite_store
from ragtide.builtin._vectors import VectorFile, release
from ragtide.builtin.bm25 import pack
from ragtide.builtin.sqlite_store import (
    SQLiteStore,
    _advance,
    _Delta,
    _exact_vector_top,
    _Index,
    _index_of,
    _Mapped,
    _Row,
)
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Filter

_DIM = 8
_TERMS = {f"t{i}": i for i in range(30)}


def _row(rowid: int, rng: np.random.Generator) -> _Row:
    counts = Counter(f"t{int(t)}" for t in rng.integers(0, 30, 4))
    ids, tfs = pack(counts, _TERMS)
    vector = rng.standard_normal(_DIM).astype(np.float32)
    return _Row(rowid, f"d{rowid // 3}", "{}", "e", vector, ids, tfs)


def _same(memory: _Index, mapped: _Index, queries: np.ndarray) -> None:
    n = memory.size
    assert mapped.size == n
    assert np.array_equal(memory.rowids[:n], mapped.rowids[:n])
    assert np.array_equal(memory.matrix[:n], mapped.matrix[:n])  # the same bits
    for q in queries:
        a, b = _exact_vector_top(memory, q, 10, None), _exact_vector_top(mapped, q, 10, None)
        assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1])


def test_vector_file_grows_in_place_and_copies_a_block_at_a_time(tmp_path: Path) -> None:
    file = VectorFile(tmp_path, 4, 3)
    file.write(0, np.arange(12, dtype=np.float32).reshape(3, 4))
    first = file.matrix
    longer = file.grow(10_000)
    file.write(9_999, np.full((1, 4), 7, np.float32))
    assert np.array_equal(first, longer[:3])  # an older mapping still reads its rows
    assert not longer.flags.writeable  # rows change through ``write`` only
    release(longer)  # unmapped pages are read again from the file
    assert float(longer[9_999, 0]) == 7 and float(longer[2, 3]) == 11
    rows = np.array([9_999, 1, 0])
    copy = VectorFile.copy_of(tmp_path, longer, rows, 5)
    assert np.array_equal(copy.matrix[:3], longer[rows]) and len(copy.matrix) == 5
    assert os.listdir(tmp_path) == []  # no names: the files go with their mappings


def test_a_load_maps_big_namespaces_and_keeps_small_ones_in_memory(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rows = [_row(i + 1, rng) for i in range(3_000)]  # spans several fill blocks
    rows[5] = rows[5]._replace(embedder="old")  # another model's: masked, not searched
    queries = rng.standard_normal((5, _DIM)).astype(np.float32)
    memory = _index_of(rows, len(rows), "e", _DIM, 1, 1, 1.2, 0.75)
    mapped = _index_of(rows, len(rows), "e", _DIM, 1, 1, 1.2, 0.75, _Mapped(tmp_path, 3_000))
    small = _index_of(rows, len(rows), "e", _DIM, 1, 1, 1.2, 0.75, _Mapped(tmp_path, 3_001))
    assert memory.vectors is None and small.vectors is None and mapped.vectors is not None
    assert mapped.vector_ok is not None and not mapped.vector_ok[5]
    _same(memory, mapped, queries)
    # The budget counts what the heap holds: the same but for the matrix.
    assert mapped.nbytes() == memory.nbytes() - memory.matrix.nbytes
    assert small.nbytes() == memory.nbytes()


def test_writes_to_a_mapped_snapshot_hold_what_memory_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Appends (past the room: the file grows, nothing copied), deletions, compactions
    (frequent here) and a namespace crossing the threshold: after every step the mapped
    lineage holds the in-memory one's rows and searches to the bit."""
    monkeypatch.setattr(sqlite_store, "_COMPACT_MIN", 8)
    rng = np.random.default_rng(3)
    queries = rng.standard_normal((4, _DIM)).astype(np.float32)
    rows = [_row(i + 1, rng) for i in range(30)]
    where = _Mapped(tmp_path, 60)
    memory = _index_of(rows, 30, "e", _DIM, 1, 1, 1.2, 0.75)
    mapped = _index_of(rows, 30, "e", _DIM, 1, 1, 1.2, 0.75, where)
    assert mapped.vectors is None  # below the threshold: memory, as before
    live, next_rowid, generation = [r.rowid for r in rows], 31, 1
    grew_in_place = moved = compacted = 0
    for _ in range(120):
        gone = [int(x) for x in rng.choice(live, int(rng.integers(0, 4)), replace=False)]
        new = [_row(next_rowid + i, rng) for i in range(int(rng.integers(0, 6)))]
        next_rowid += len(new)
        live = [r for r in live if r not in gone] + [r.rowid for r in new]
        delta = _Delta(generation, 1, generation + 1, deleted=gone, rows=new)
        generation += 1
        a = _advance(memory, delta, 1.2, 0.75)
        b = _advance(mapped, delta, 1.2, 0.75, where)
        assert a is not None and b is not None
        if (
            b.vectors is not None
            and b.vectors is mapped.vectors
            and len(b.matrix) > len(mapped.matrix)
        ):
            grew_in_place += 1
        moved += mapped.vectors is None and b.vectors is not None
        compacted += b.size < mapped.size
        _same(a, b, queries)
        if b.size < 60 and mapped.vectors is None:
            assert b.vectors is None  # a small namespace's stay in memory
        memory, mapped = a, b
    assert grew_in_place and moved and compacted  # every path was taken


def test_a_branch_of_a_mapped_lineage_never_writes_over_its_head(tmp_path: Path) -> None:
    rng = np.random.default_rng(5)
    rows = [_row(i + 1, rng) for i in range(20)]
    where = _Mapped(tmp_path, 1)
    base = _index_of(rows, 20, "e", _DIM, 1, 1, 1.2, 0.75, where)
    head = _advance(base, _Delta(1, 1, 2, rows=[_row(21, rng)]), 1.2, 0.75, where)
    assert head is not None
    kept = np.array(head.matrix[:21])
    # Advancing the older snapshot again (a write it must not mix into the head's rows).
    branch = _advance(base, _Delta(1, 1, 3, rows=[_row(22, rng)]), 1.2, 0.75, where)
    assert branch is not None and branch.vectors is not head.vectors
    assert np.array_equal(head.matrix[:21], kept)
    assert np.array_equal(branch.matrix[:20], kept[:20])
    assert not np.array_equal(branch.matrix[20], kept[20])


@pytest.mark.anyio
async def test_a_store_with_mapped_vectors_answers_as_one_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Through the store: loads, writes and a reload, mapped from the first chunk (the
    HNSW index off, so both search exactly), against a store of the same file with its
    vectors in memory, loaded afresh at every step."""
    monkeypatch.setattr(sqlite_store, "_COMPACT_MIN", 4)
    rng = np.random.default_rng(11)
    path = tmp_path / "data" / "db"
    mapped = SQLiteStore(SQLiteStore.Config(path=path, ann_min_chunks=0))
    monkeypatch.setattr(mapped, "_mapped", lambda: _Mapped(path.parent, 1))
    await mapped.start()
    queries = rng.standard_normal((3, _DIM)).astype(np.float32)
    some = Filter.any_of("document_id", ["d1", "d2"])
    try:
        for step in range(30):
            doc = f"d{rng.integers(0, 5)}"
            if step % 4 == 3:
                await mapped.delete_document("ns", doc)
            else:
                n = int(rng.integers(1, 5))
                vectors = rng.standard_normal((n, _DIM)).astype(np.float32)
                chunks = make_chunks(doc, [f"chunk {step} {i}" for i in range(n)])
                await mapped.put_document("ns", make_document(doc), chunks, vectors, "e")
            memory = SQLiteStore(SQLiteStore.Config(path=path, ann_min_chunks=0))
            await memory.start()
            try:
                for q in queries:
                    for f in (Filter(), some):
                        got = await mapped.vector_search("ns", q, 20, f)
                        want = await memory.vector_search("ns", q, 20, f)
                        # The same chunks in the same order; the scores to float32
                        # rounding: the two hold the rows at different positions (the
                        # fresh load has no dead ones), and BLAS may sum a row's
                        # products in another order at another position.
                        assert [h.chunk.id for h in got] == [h.chunk.id for h in want], step
                        assert [h.score for h in got] == pytest.approx(
                            [h.score for h in want], rel=1e-6, abs=1e-6
                        ), step
            finally:
                await memory.aclose()
            index = mapped._indexes.get("ns")
            assert index is not None and (index.vectors is not None or not index.size)
            del index  # the test holds no snapshot: only the store does
        # The resident snapshot's file, and no other: those of lineages compacted or
        # branched away went with their snapshots.
        assert len(set(_open_vector_files(path.parent))) == 1
    finally:
        await mapped.aclose()
    assert sorted(os.listdir(path.parent)) == sorted(
        p for p in os.listdir(path.parent) if p.startswith("db")
    )  # the vector files have no names ...
    gc.collect()
    assert _open_vector_files(path.parent) == []  # ... and go with the snapshots


def _open_vector_files(directory: Path) -> list[str]:
    """This process's descriptors of files in ``directory`` that have no name."""
    found = []
    for fd in os.listdir("/proc/self/fd"):
        try:
            target = os.readlink(f"/proc/self/fd/{fd}")
        except OSError:
            continue
        if target.startswith(str(directory)) and target.endswith("(deleted)"):
            found.append(target)
    return found


def test_a_load_gathers_term_entries_whatever_its_first_guess(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A load copies each row's term ids into buffers sized by a guess of terms per chunk,
    grown when short: the postings are the same either way."""
    rng = np.random.default_rng(2)
    rows = [_row(i + 1, rng) for i in range(500)]
    roomy = _index_of(rows, 500, "e", _DIM, 1, 1, 1.2, 0.75)
    monkeypatch.setattr(sqlite_store, "_TERMS_GUESS", 1)  # grown many times
    tight = _index_of(rows, 500, "e", _DIM, 1, 1, 1.2, 0.75)
    for a, b in zip(roomy.postings.segments, tight.postings.segments, strict=True):
        for x, y in ((a.terms, b.terms), (a.start, b.start), (a.chunk, b.chunk), (a.tf, b.tf)):
            assert np.array_equal(x, y)
    assert np.array_equal(roomy.postings.lengths[:500], tight.postings.lengths[:500])
    assert sum(len(s) for s in tight.postings.segments) == sum(len(r.term_ids) // 4 for r in rows)


@pytest.mark.anyio
async def test_a_vector_file_that_cannot_be_written_leaves_the_vectors_in_memory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A full disk (writing the file fails): the load keeps the vectors in memory and
    answers as ever."""
    path = tmp_path / "db"
    rng = np.random.default_rng(4)
    vectors = rng.standard_normal((30, _DIM)).astype(np.float32)
    writer = SQLiteStore(SQLiteStore.Config(path=path, ann_min_chunks=0))
    await writer.start()
    chunks = make_chunks("d", [f"chunk {i}" for i in range(30)])
    await writer.put_document("ns", make_document("d"), chunks, vectors, "e")
    want = await writer.vector_search("ns", vectors[3], 5, Filter())
    await writer.aclose()

    def full(self: VectorFile, start: int, rows: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(VectorFile, "write", full)
    store = SQLiteStore(SQLiteStore.Config(path=path, ann_min_chunks=0))
    monkeypatch.setattr(store, "_mapped", lambda: _Mapped(tmp_path, 1))
    await store.start()
    try:
        got = await store.vector_search("ns", vectors[3], 5, Filter())
        assert [(h.chunk.id, h.score) for h in got] == [(h.chunk.id, h.score) for h in want]
        index = store._indexes.get("ns")
        assert index is not None and index.vectors is None and index.size == 30
    finally:
        await store.aclose()
