"""The HNSW base (``builtin/ann.py``) and the embedded store's vector search through it."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from ragtide.builtin.ann import BuildCancelled, build_base, open_base, save_base
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.errors import BackendUnavailable
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Filter

DIM = 32


def _clustered(n: int, seed: int = 0) -> npt.NDArray[np.float32]:
    """Unit vectors around 20 centres: the structure real embeddings have."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((20, DIM))
    x = centres[rng.integers(0, 20, n)] + 0.3 * rng.standard_normal((n, DIM))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x.astype(np.float32)


def test_base_finds_the_nearest_and_survives_a_save(tmp_path: Path) -> None:
    x = _clustered(3_000)
    rowids = np.arange(10, 3_010, dtype=np.int64)
    base = build_base(rowids, x, covered=3_009, embedder="e", incarnation=4)
    assert (base.count, base.covered) == (3_000, 3_009)
    hits = 0
    for i in range(0, 3_000, 60):
        keys = base.search(x[i], 10, 64)
        hits += int(rowids[i] in keys.tolist())
    assert hits >= 48  # of 50: each vector finds itself

    path = tmp_path / "ns.usearch"
    saved = save_base(base, path, "t/ns")
    assert saved.path == path
    mapped = open_base(path, embedder="e", dim=DIM, incarnation=4)
    assert mapped is not None and mapped.covered == 3_009 and mapped.count == 3_000
    assert mapped.search(x[5], 5, 64).tolist() == base.search(x[5], 5, 64).tolist()
    # Another model, dimension or namespace incarnation: not this base.
    assert open_base(path, embedder="other", dim=DIM, incarnation=4) is None
    assert open_base(path, embedder="e", dim=DIM + 1, incarnation=4) is None
    assert open_base(path, embedder="e", dim=DIM, incarnation=5) is None
    assert open_base(tmp_path / "missing.usearch", embedder="e", dim=DIM, incarnation=4) is None


def test_a_torn_file_is_not_opened(tmp_path: Path) -> None:
    x = _clustered(500)
    path = tmp_path / "ns.usearch"
    save_base(build_base(np.arange(500), x, covered=499, embedder="e", incarnation=1), path, "n")
    path.write_bytes(path.read_bytes()[:100])
    assert open_base(path, embedder="e", dim=DIM, incarnation=1) is None


def test_a_build_stops_when_cancelled() -> None:
    x = _clustered(20_000)
    with pytest.raises(BuildCancelled):
        build_base(
            np.arange(20_000),
            x,
            covered=19_999,
            embedder="e",
            incarnation=1,
            cancelled=lambda: True,
        )


def _files(path: Path) -> list[Path]:
    return sorted(path.with_name(path.name + ".ann").glob("*.usearch"))


async def _until_built(path: Path, timeout: float = 120.0) -> list[Path]:
    """The saved bases, once one is saved whole (its description is written after it)."""
    deadline = time.monotonic() + timeout
    while not (found := _files(path)) or not all(f.with_suffix(".json").exists() for f in found):
        assert time.monotonic() < deadline, "the vector index was never built"
        await asyncio.sleep(0.05)
    return found


async def _fill(store: SQLiteStore, x: npt.NDArray[np.float32], per_document: int = 50) -> None:
    for d in range(0, len(x), per_document):
        doc = f"d{d // per_document}"
        rows = x[d : d + per_document]
        chunks = make_chunks(doc, [f"chunk {d + i}" for i in range(len(rows))])
        for c in chunks:
            c.metadata["part"] = str((d // per_document) % 10)  # type: ignore[index]
        await store.put_document("ns", make_document(doc), chunks, rows, "e")


@pytest.mark.anyio
async def test_store_searches_through_the_base_with_exact_scores(tmp_path: Path) -> None:
    x = _clustered(2_000, seed=1)
    path = tmp_path / "db"
    config = SQLiteStore.Config(path=path, ann_min_chunks=1_000, offload_chunks=0)
    store = SQLiteStore(config)
    await store.start()
    try:
        await _fill(store, x)
        assert await store.vector_search("ns", x[0], 10, Filter())  # starts the build
        await store._building["ns"]
        # Once saved, the base is served from its file, memory-mapped (the graph built in
        # memory is let go), as the next start maps it.
        served = store._bases["ns"].index
        assert served.memory_usage * 10 < served.serialized_length
        agree = 0
        for i in range(0, 2_000, 40):
            hits = await store.vector_search("ns", x[i], 10, Filter())
            exact = np.sort(x @ x[i])[::-1][:10]
            got = np.array([h.score for h in hits], np.float32)
            assert len(hits) == 10
            assert np.all(np.diff(got) <= 1e-6)  # best first
            # Every score returned is a true inner product (rescored from the float32 rows).
            assert float(got[0]) == pytest.approx(float(exact[0]), abs=1e-5)
            agree += int(np.allclose(got, exact, atol=1e-5))
        assert agree >= 45  # of 50 queries: the same top 10 as brute force

        # A write after the build (the tail) and a deletion (a tombstone) are seen at once.
        fresh = _clustered(1, seed=9)
        await store.put_document("ns", make_document("new"), make_chunks("new", ["n"]), fresh, "e")
        hits = await store.vector_search("ns", fresh[0], 3, Filter())
        assert hits[0].document_id == "new"
        assert await store.delete_document("ns", "d0")
        hits = await store.vector_search("ns", x[0], 50, Filter())
        assert hits and all(h.document_id != "d0" for h in hits)

        # A filter: every hit admitted; a narrow one (a single document) falls back to exact.
        part = await store.vector_search("ns", x[100], 10, Filter.any_of("part", ["3"]))
        assert len(part) == 10 and all(h.chunk.metadata["part"] == "3" for h in part)
        one = await store.vector_search("ns", x[700], 60, Filter.any_of("document_id", ["d14"]))
        assert sorted(h.chunk.id for h in one) == sorted(f"d14#{i}" for i in range(50))
    finally:
        await store.aclose()

    # The next process maps the saved base instead of building one.
    built = _files(path)
    stamp = built[0].stat().st_mtime_ns
    again = SQLiteStore(config)
    await again.start()
    try:
        hits = await again.vector_search("ns", x[500], 5, Filter())
        assert hits[0].chunk.id == "d10#0"
        assert [p.stat().st_mtime_ns for p in _files(path)] == [stamp]
    finally:
        await again.aclose()


@pytest.mark.anyio
async def test_small_namespaces_have_no_base(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = SQLiteStore(SQLiteStore.Config(path=path, ann_min_chunks=1_000))
    await store.start()
    try:
        x = _clustered(200)
        await _fill(store, x)
        hits = await store.vector_search("ns", x[3], 1, Filter())
        assert hits[0].chunk.id == "d0#3"
    finally:
        await store.aclose()
    assert _files(path) == []


async def _pings(store: SQLiteStore) -> bool:
    try:
        await store.ping()
    except BackendUnavailable:
        return False
    return True


@pytest.mark.anyio
async def test_ready_only_once_big_namespaces_are_loaded(tmp_path: Path) -> None:
    path = tmp_path / "db"
    first = SQLiteStore(SQLiteStore.Config(path=path))
    await first.start()
    await _fill(first, _clustered(600))
    await first.aclose()

    warm = SQLiteStore(SQLiteStore.Config(path=path, warm_min_chunks=500, ann_min_chunks=0))
    await warm.start()
    await warm.warm()
    try:
        assert not await _pings(warm)  # the 600-chunk namespace is loading
        deadline = time.monotonic() + 60
        while not await _pings(warm):
            assert time.monotonic() < deadline, "never ready"
            await asyncio.sleep(0.02)
        hits = await warm.vector_search("ns", _clustered(600)[7], 1, Filter())
        assert hits[0].chunk.id == "d0#7"
    finally:
        await warm.aclose()

    # Nothing that big: ready at once.
    small = SQLiteStore(SQLiteStore.Config(path=path, warm_min_chunks=1_000))
    await small.start()
    await small.warm()
    try:
        assert await _pings(small)
    finally:
        await small.aclose()


@pytest.mark.anyio
async def test_deleting_the_namespace_deletes_its_vector_index(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = SQLiteStore(SQLiteStore.Config(path=path, ann_min_chunks=500))
    await store.start()
    try:
        x = _clustered(600)
        await _fill(store, x)
        await store.vector_search("ns", x[0], 5, Filter())
        built = await _until_built(path)
        assert built[0].with_suffix(".json").exists()
        assert await store.delete_namespace("ns")
        assert _files(path) == []
        assert not built[0].with_suffix(".json").exists()
        assert await store.vector_search("ns", x[0], 5, Filter()) == []
    finally:
        await store.aclose()
