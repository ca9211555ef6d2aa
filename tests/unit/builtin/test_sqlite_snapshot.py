"""A big namespace loads by mapping its saved snapshot (``_snapshot``) and applying what
changed since, instead of reading every row: the index it gives searches as a full load's
does, writes after it never touch the snapshot's files, and any snapshot that must not be
used is ignored (with a warning), a full load made, and the snapshot replaced."""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import shutil
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import apsw
import numpy as np
import pytest

from ragtide.builtin import _snapshot, sqlite_store
from ragtide.builtin.retrievers import HybridRetriever
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Filter, Hit, RetrievalRequest

_NS = "t/ns"
_DIM = 8
_WORDS = (
    "heron coral reef tide lighthouse salt kelp gull storm harbour anchor drift "
    "shell current brine pier wave moon sand fog buoy keel mast rope"
).split()
_QUERIES = ("heron coral", "storm harbour anchor", "fog", "kelp brine moon wave")
_FILTERS = (Filter(), Filter.any_of("document_id", ["d1", "d4", "d7", "d30", "d61"]))
_MAPPED = "search index mapped from its snapshot"
_IGNORED = "ignoring the saved search index"


def _config(path: Path, **overrides: Any) -> SQLiteStore.Config:
    settings: dict[str, Any] = {
        "path": path,
        "ann_min_chunks": 0,  # exact vector search: no HNSW build racing the comparison
        "warm_min_chunks": 0,
        "snapshot_min_chunks": 20,
    }
    settings.update(overrides)
    return SQLiteStore.Config(**settings)


async def _put(store: SQLiteStore, doc: int, *, embedder: str = "e", chunks: int = 3) -> None:
    rng = np.random.default_rng(doc)
    texts = [
        " ".join(rng.choice(_WORDS, int(rng.integers(4, 12)))) + f" n{doc}x{i}"
        for i in range(chunks)
    ]
    vectors = rng.standard_normal((chunks, _DIM)).astype(np.float32)
    name = f"d{doc}"
    await store.put_document(_NS, make_document(name), make_chunks(name, texts), vectors, embedder)


class _Opened:
    """A store on ``path``, started, closed on exit."""

    def __init__(self, path: Path, **overrides: Any) -> None:
        self.store = SQLiteStore(_config(path, **overrides))

    async def __aenter__(self) -> SQLiteStore:
        await self.store.start()
        return self.store

    async def __aexit__(self, *exc: object) -> None:
        await self.store.aclose()


async def _saved_snapshot(path: Path, docs: int = 70) -> Path:
    """A namespace of ``docs`` documents (3 chunks each) and its snapshot saved by a load."""
    async with _Opened(path) as store:
        for d in range(docs):
            await _put(store, d)
    async with _Opened(path) as store:
        assert await store.keyword_search(_NS, "heron", 3, Filter())  # the full load
        await store.snapshots_saved()
    directory = store._snapshot_dir(_NS)
    assert _snapshot.read_header(directory) is not None
    return directory


def _keyword(hits: list[Hit]) -> list[tuple[float, str]]:
    # Chunks of equal score may come in another order: positions differ after deletes.
    return sorted((-h.score, h.chunk.id) for h in hits)


def _assert_vectors_equal(got: list[Hit], want: list[Hit]) -> None:
    """Same chunks; scores equal to float32 rounding (BLAS sums a row in another order
    when it sits elsewhere in the matrix, as after dead positions)."""
    assert sorted(h.chunk.id for h in got) == sorted(h.chunk.id for h in want)
    by_id = {h.chunk.id: h.score for h in want}
    for h in got:
        assert h.score == pytest.approx(by_id[h.chunk.id], rel=1e-5, abs=1e-6)


async def _assert_same_searches(store: SQLiteStore, full: SQLiteStore) -> None:
    """Keyword (exact scores), vector and hybrid searches through the public methods."""
    rng = np.random.default_rng(99)
    hybrid = HybridRetriever(HybridRetriever.Config(), store=store)
    hybrid_full = HybridRetriever(HybridRetriever.Config(), store=full)
    for text in _QUERIES:
        vector = rng.standard_normal(_DIM).astype(np.float32)
        for f in _FILTERS:
            for limit in (5, 1_000):
                got = await store.keyword_search(_NS, text, limit, f)
                want = await full.keyword_search(_NS, text, limit, f)
                assert _keyword(got) == _keyword(want), (text, f, limit)
                got = await store.vector_search(_NS, vector, limit, f)
                want = await full.vector_search(_NS, vector, limit, f)
                _assert_vectors_equal(got, want)
            request = RetrievalRequest(_NS, text, vector.tolist(), f, top_k=10)
            got = await hybrid.retrieve(request)
            want = await hybrid_full.retrieve(request)
            _assert_vectors_equal(got, want)


def _mapped_loads(caplog: pytest.LogCaptureFixture) -> int:
    return sum(r.getMessage() == _MAPPED for r in caplog.records)


def _ignored(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.levelno == logging.WARNING and _IGNORED in r.getMessage()
    ]


async def _writes_none(store: SQLiteStore) -> None:
    return None


async def _writes_added(store: SQLiteStore) -> None:
    for d in range(70, 75):
        await _put(store, d)


async def _writes_deleted(store: SQLiteStore) -> None:
    for d in (3, 4, 30, 68):
        assert await store.delete_document(_NS, f"d{d}")


async def _writes_last_replaced(store: SQLiteStore) -> None:
    """The newest chunks deleted, then others written: SQLite would give the new chunks
    the deleted ones' rowids, which the snapshot holds as the old chunks."""
    assert await store.delete_document(_NS, "d69")
    await _put(store, 69, chunks=2)  # the same document again, other chunks
    await _put(store, 80)


async def _writes_compacted(store: SQLiteStore) -> None:
    """Over a quarter deleted (and past ``_COMPACT_MIN``, lowered here): applying it
    compacts; chunks are added after."""
    for d in range(0, 70, 2):
        assert await store.delete_document(_NS, f"d{d}")
    await _put(store, 90)


@pytest.mark.anyio
@pytest.mark.parametrize(
    "writes",
    [_writes_none, _writes_added, _writes_deleted, _writes_last_replaced, _writes_compacted],
    ids=["unchanged", "added", "deleted", "last-replaced", "compacted"],
)
async def test_a_snapshot_load_searches_as_a_full_load(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    writes: Callable[[SQLiteStore], Awaitable[None]],
) -> None:
    monkeypatch.setattr(sqlite_store, "_COMPACT_MIN", 8)
    caplog.set_level(logging.INFO, logger="ragtide.builtin.sqlite_store")
    path = tmp_path / "db"
    await _saved_snapshot(path)
    async with _Opened(path, snapshot_min_chunks=0) as store:
        await writes(store)
    async with _Opened(path, snapshot_min_chunks=0) as full, _Opened(path) as store:
        await _assert_same_searches(store, full)
        assert _mapped_loads(caplog) == 1 and not _ignored(caplog)
        if writes is _writes_none:  # every array mapped: none of them counted
            assert store.index_bytes < full.index_bytes
        await store.snapshots_saved()  # a large change since is saved again
    async with _Opened(path, snapshot_min_chunks=0) as full, _Opened(path) as store:
        await _assert_same_searches(store, full)  # and that one maps as well
        assert _mapped_loads(caplog) == 2 and not _ignored(caplog)


def _hashes(directory: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(directory.iterdir())
        if p.is_file()
    }


@pytest.mark.anyio
@pytest.mark.parametrize("ann_min_chunks", [0, 100])  # vectors in memory / in a vector file
async def test_writes_after_a_snapshot_load_never_touch_its_files(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    ann_min_chunks: int,
) -> None:
    monkeypatch.setattr(sqlite_store, "_COMPACT_MIN", 8)
    caplog.set_level(logging.INFO, logger="ragtide.builtin.sqlite_store")
    path = tmp_path / "db"
    directory = await _saved_snapshot(path)
    before = _hashes(directory)
    async with _Opened(path, ann_min_chunks=ann_min_chunks) as store:
        assert await store.keyword_search(_NS, "heron", 3, Filter())
        assert _mapped_loads(caplog) == 1
        await _put(store, 100)  # appended: new buffers, the mapped ones left as they are
        hits = await store.keyword_search(_NS, "n100x1", 3, Filter())
        assert [h.chunk.id for h in hits] == ["d100#1"]
        await _put(store, 5)  # replaced: deleted and appended
        await _writes_compacted(store)  # compacted: a lineage of its own
        await _put(store, 101)
        assert _hashes(directory) == before
        async with _Opened(path, snapshot_min_chunks=0) as full:
            await _assert_same_searches(store, full)
    assert _hashes(directory) == before


def _drop_file(directory: Path, db: Path) -> None:
    (directory / "rowids.npy").unlink()


def _truncate(directory: Path, db: Path) -> None:
    path = directory / "s0.chunk.npy"
    path.write_bytes(path.read_bytes()[:-10])


def _garble(directory: Path, db: Path) -> None:
    path = directory / "matrix.npy"
    path.write_bytes(b"not an array" + path.read_bytes()[12:])


def _edit_header(**fields: Any) -> Callable[[Path, Path], None]:
    def edit(directory: Path, db: Path) -> None:
        path = directory / "header.json"
        header = json.loads(path.read_text())
        header.update(fields)
        path.write_text(json.dumps(header))

    return edit


def _not_a_directory(directory: Path, db: Path) -> None:
    shutil.rmtree(directory)
    directory.write_text("a file where the snapshot's directory was")


@pytest.mark.anyio
@pytest.mark.parametrize(
    "spoil",
    [
        _drop_file,
        _truncate,
        _garble,
        _edit_header(format=_snapshot.FORMAT + 1),
        _edit_header(namespace="t/other"),  # a digest shared with another namespace
        _not_a_directory,
    ],
    ids=["missing-file", "truncated", "garbled", "format", "namespace", "unreadable"],
)
async def test_a_snapshot_that_cannot_be_used_is_ignored_and_replaced(
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    spoil: Callable[[Path, Path], None],
) -> None:
    caplog.set_level(logging.INFO, logger="ragtide.builtin.sqlite_store")
    path = tmp_path / "db"
    directory = await _saved_snapshot(path)
    spoil(directory, path)
    await _assert_full_load_then_replaced(path, directory, caplog)


async def _assert_full_load_then_replaced(
    path: Path, directory: Path, caplog: pytest.LogCaptureFixture, **overrides: Any
) -> None:
    """The next load ignores the snapshot with a warning and searches as a full load; it
    saves a new one, which the load after it maps."""
    async with _Opened(path, snapshot_min_chunks=0, **overrides) as full:
        async with _Opened(path, **overrides) as store:
            await _assert_same_searches(store, full)
            assert len(_ignored(caplog)) == 1 and _mapped_loads(caplog) == 0
            await store.snapshots_saved()
        async with _Opened(path, **overrides) as store:
            await _assert_same_searches(store, full)
            assert len(_ignored(caplog)) == 1 and _mapped_loads(caplog) == 1
    assert directory.is_dir()


@pytest.mark.anyio
async def test_a_snapshot_written_past_by_an_older_version_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """An older Ragtide could give a deleted chunk's rowid to a new one, so after its
    writes a snapshot's rowids may name other chunks: the load reads the namespace whole.
    Here an "older writer" deletes the newest document and writes a new chunk under the
    rowid it freed, moving the generations without this version's write count."""
    caplog.set_level(logging.INFO, logger="ragtide.builtin.sqlite_store")
    path = tmp_path / "db"
    directory = await _saved_snapshot(path)
    conn = apsw.Connection(str(path))
    with conn:
        newest = conn.execute("SELECT max(rowid) FROM chunks").fetchone()[0]
        row = conn.execute(
            "SELECT namespace, document_id, chunk_id, ordinal, text, title, headings, metadata,"
            " embedder, vector, term_ids, term_tfs FROM chunks WHERE rowid = ?",
            (newest,),
        ).fetchone()
        conn.execute("DELETE FROM chunks WHERE rowid = ?", (newest,))
        vector = np.ones(_DIM, np.float32).tobytes()  # another chunk, the same rowid
        conn.execute(
            "INSERT INTO chunks(rowid, namespace, document_id, chunk_id, ordinal, text, title,"
            " headings, metadata, embedder, vector, term_ids, term_tfs)"
            " VALUES(?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (newest, *row[:9], vector, *row[10:]),
        )
        generation = int(
            conn.execute("SELECT value FROM meta WHERE key = 'generation'").fetchone()[0]
        )
        conn.execute("UPDATE meta SET value = ? WHERE key = 'generation'", (str(generation + 1),))
        conn.execute("UPDATE namespaces SET generation = ? WHERE name = ?", (generation + 1, _NS))
    conn.close()
    await _assert_full_load_then_replaced(path, directory, caplog)
    assert "older version" in _ignored(caplog)[0]


@pytest.mark.anyio
async def test_a_snapshot_of_other_bm25_parameters_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ragtide.builtin.sqlite_store")
    path = tmp_path / "db"
    directory = await _saved_snapshot(path)
    await _assert_full_load_then_replaced(path, directory, caplog, bm25_k1=1.6)
    assert "BM25" in _ignored(caplog)[0]


@pytest.mark.anyio
async def test_a_snapshot_of_another_model_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ragtide.builtin.sqlite_store")
    path = tmp_path / "db"
    directory = await _saved_snapshot(path)
    async with _Opened(path) as store:
        await _put(store, 200, embedder="e2")  # the newest model's vectors are searched
    await _assert_full_load_then_replaced(path, directory, caplog)
    assert "model" in _ignored(caplog)[0]


@pytest.mark.anyio
async def test_a_snapshot_newer_than_a_restored_database_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ragtide.builtin.sqlite_store")
    path = tmp_path / "db"
    async with _Opened(path) as store:
        for d in range(40):
            await _put(store, d)
    shutil.copy(path, tmp_path / "backup")
    async with _Opened(path) as store:
        for d in range(40, 70):  # the same rowids as the backup's next ones would be
            await _put(store, d)
        assert await store.keyword_search(_NS, "heron", 3, Filter())
        await store.snapshots_saved()
    shutil.copy(tmp_path / "backup", path)  # restored: older than the snapshot
    directory = SQLiteStore(_config(path))._snapshot_dir(_NS)
    await _assert_full_load_then_replaced(path, directory, caplog)
    assert "newer than the database" in _ignored(caplog)[0]


@pytest.mark.anyio
async def test_a_deleted_namespace_takes_its_snapshot_with_it(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ragtide.builtin.sqlite_store")
    path = tmp_path / "db"
    directory = await _saved_snapshot(path)
    kept = tmp_path / "kept"
    shutil.copytree(directory, kept)
    async with _Opened(path) as store:
        assert await store.delete_namespace(_NS)
        assert not directory.exists()
        for d in range(30):  # made again: another incarnation
            await _put(store, d + 500)
    shutil.copytree(kept, directory)  # e.g. another process saved it as it was deleted
    await _assert_full_load_then_replaced(path, directory, caplog)
    assert "incarnation" in _ignored(caplog)[0]


@pytest.mark.anyio
async def test_a_disk_that_refuses_the_snapshot_does_not_fail_a_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ragtide.builtin.sqlite_store")
    path = tmp_path / "db"
    async with _Opened(path) as store:
        for d in range(30):
            await _put(store, d)
    snap = path.with_name("db.snap")
    snap.write_text("not a directory: nothing can be made under it")
    async with _Opened(path) as store, _Opened(path, snapshot_min_chunks=0) as full:
        await _assert_same_searches(store, full)
        await store.snapshots_saved()
    snap.unlink()

    def full_disk(path: Path, data: bytes) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(_snapshot, "_write", full_disk)
    async with _Opened(path) as store, _Opened(path, snapshot_min_chunks=0) as full:
        await _assert_same_searches(store, full)
        await store.snapshots_saved()
    refused = [r for r in caplog.records if "could not save the search index" in r.getMessage()]
    assert len(refused) == 2
    assert list(snap.iterdir()) == []  # nothing half written is left


def test_appending_to_read_only_buffers_starts_buffers_of_its_own() -> None:
    """Mapped arrays are read-only whatever room they have: ``_advance`` and
    ``Postings.add_flat`` copy instead of writing into them."""
    from collections import Counter

    from ragtide.builtin.bm25 import pack

    terms = {w: i for i, w in enumerate(_WORDS)}
    rng = np.random.default_rng(3)

    def row(rowid: int) -> sqlite_store._Row:
        ids, tfs = pack(Counter(rng.choice(_WORDS, 5).tolist()), terms)
        vector = rng.standard_normal(_DIM).astype(np.float32)
        return sqlite_store._Row(rowid, f"d{rowid}", "{}", "e", vector, ids, tfs)

    index = sqlite_store._index_of([row(i + 1) for i in range(30)], 30, "e", _DIM, 1, 1, 1.2, 0.75)
    assert len(index.rowids) > 30  # room to append in place
    frozen: list[np.ndarray[Any, Any]] = [
        index.matrix,
        index.rowids,
        index.source,
        index.postings.lengths,
    ]
    for array in frozen:
        array.flags.writeable = False
    kept = [np.array(a) for a in frozen]
    delta = sqlite_store._Delta(1, 1, 2, rows=[row(31), row(32)])
    following = sqlite_store._advance(index, delta, 1.2, 0.75)
    assert following is not None and following.size == 32
    assert all(np.array_equal(a, k) for a, k in zip(frozen, kept, strict=True))
    assert following.rowids[:32].tolist() == list(range(1, 33))


def _tiny(generation: int) -> _snapshot.Saved:
    from ragtide.builtin.bm25 import Postings

    ids = [np.array([1, 4], np.uint32), np.array([2], np.uint32)]
    tfs = [np.array([1, 2], np.uint16), np.array([3], np.uint16)]
    postings = Postings.build(ids, tfs)
    header = _snapshot.Header(
        "ns", 1, generation, "e", 2, 2, 2, 7, postings.total, 1.2, 0.75, 1, 1, False, False, 0, 0
    )
    matrix = np.full((2, 2), generation, np.float32)
    rowids = np.array([3, 7], np.int64)
    return _snapshot.Saved(
        header,
        matrix,
        None,
        rowids,
        np.zeros(2, np.int32),
        [("d", "{}")],
        postings.lengths,
        None,
        postings.segments,
    )


def test_a_snapshot_replaced_while_opened_is_read_again_and_mapped_read_only(
    tmp_path: Path,
) -> None:
    directory = tmp_path / "snap" / "x"
    assert _snapshot.save(directory, _tiny(1))
    headers: list[int] = []

    def check(header: _snapshot.Header) -> None:
        headers.append(header.generation)
        if len(headers) == 1:  # replaced between the header and the arrays
            assert _snapshot.save(directory, _tiny(2))
        return None

    opened = _snapshot.open_snapshot(directory, check)
    assert headers == [1, 2]  # the old one's files went with it: the new one is read
    assert opened is not None and opened.header.generation == 2
    assert float(opened.matrix[1, 1]) == 2 and not opened.matrix.flags.writeable
    assert sorted(p.name for p in directory.parent.iterdir()) == ["x"]  # no leftovers
    assert _snapshot.save(directory, _tiny(3))  # replaced under a mapping: it reads on
    assert float(opened.matrix[0, 0]) == 2
    with pytest.raises(_snapshot.Unusable, match="refused"):
        _snapshot.open_snapshot(directory, lambda h: "refused")
    assert _snapshot.open_snapshot(tmp_path / "none", lambda h: None) is None


def test_a_cancelled_save_leaves_nothing(tmp_path: Path) -> None:
    directory = tmp_path / "snap" / "x"
    calls = iter(range(100))
    assert not _snapshot.save(directory, _tiny(1), cancelled=lambda: next(calls) == 3)
    assert list(directory.parent.iterdir()) == []


def test_a_copy_of_a_saved_snapshots_vectors_is_the_kernels_and_exact(tmp_path: Path) -> None:
    from ragtide.builtin._vectors import VectorFile

    saved = _tiny(5)
    saved = _snapshot.Saved(
        saved.header,
        np.arange(4, dtype=np.float32).reshape(2, 2),
        *(getattr(saved, f) for f in ("vector_ok", "rowids", "source", "sources")),
        *(getattr(saved, f) for f in ("lengths", "alive", "segments")),
    )
    assert _snapshot.save(tmp_path / "x", saved)
    opened = _snapshot.open_snapshot(tmp_path / "x", lambda h: None)
    assert opened is not None and opened.origin is not None
    copy = VectorFile.copy_of(tmp_path, opened.matrix, 2, 4, origin=opened.origin)
    assert np.array_equal(copy.matrix[:2], saved.matrix)
    longer = np.arange(8, dtype=np.float32).reshape(4, 2)  # more rows than the origin has
    copy = VectorFile.copy_of(tmp_path, longer, 4, 4, origin=opened.origin)
    assert np.array_equal(copy.matrix[:4], longer)  # copied row by row instead


@pytest.mark.anyio
async def test_a_warm_start_maps_the_snapshot_before_ready(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ragtide.builtin.sqlite_store")
    path = tmp_path / "db"
    await _saved_snapshot(path)
    async with _Opened(path, warm_min_chunks=20) as store:
        await store.warm()
        assert store._warming is not None  # the loads /ready waits for
        await store._warming
        await store.ping()  # ready: the namespace is loaded, from its snapshot
        assert store.index_loaded(_NS) and _mapped_loads(caplog) == 1


@pytest.mark.anyio
async def test_a_snapshot_too_far_behind_is_read_whole_and_saved_again(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="ragtide.builtin.sqlite_store")
    path = tmp_path / "db"
    directory = await _saved_snapshot(path, docs=40)
    async with _Opened(path) as store:
        for d in range(40, 70):  # 90 chunks on a snapshot of 120: over a quarter
            await _put(store, d)
    async with _Opened(path, snapshot_min_chunks=0) as full, _Opened(path) as store:
        await _assert_same_searches(store, full)
        assert _mapped_loads(caplog) == 0 and not _ignored(caplog)
        await store.snapshots_saved()
    header = _snapshot.read_header(directory)
    assert header is not None and header.live == 210
    async with _Opened(path, snapshot_min_chunks=0) as full, _Opened(path) as store:
        await _assert_same_searches(store, full)
        assert _mapped_loads(caplog) == 1
