"""Readiness with the default settings: a replica says ready only once every namespace whose
load would hold up its first search is loaded (``SQLiteStore.Config.warm_min_chunks``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

from ragtide.builtin import sqlite_store
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.errors import BackendUnavailable
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Filter


async def _fill(store: SQLiteStore, namespace: str, chunks: int) -> None:
    rng = np.random.default_rng(len(namespace))
    for d in range(0, chunks, 50):
        doc = f"{namespace}-{d // 50}"
        texts = [f"{namespace} chunk {d + i} about herons" for i in range(min(50, chunks - d))]
        vectors = rng.standard_normal((len(texts), 8)).astype(np.float32)
        chunks_ = make_chunks(doc, texts)
        await store.put_document(namespace, make_document(doc), chunks_, vectors, "e")


async def _large_and_medium(path: Path) -> Path:
    """A file with namespaces "large" (700 chunks) and "medium" (600), both warmed."""
    first = SQLiteStore(SQLiteStore.Config(path=path))
    await first.start()
    await _fill(first, "large", 700)
    await _fill(first, "medium", 600)
    await first.aclose()
    return path


async def _ready(store: SQLiteStore) -> None:
    """Until ``ping`` stops saying the indexes are loading (the warm-up runs in threads)."""
    for _ in range(3_000):
        try:
            await store.ping()
            return
        except BackendUnavailable:
            await asyncio.sleep(0.01)
    raise AssertionError("never ready")


@pytest.mark.anyio
async def test_default_start_loads_every_namespace_a_first_search_would_wait_for(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    first = SQLiteStore(SQLiteStore.Config(path=path))
    await first.start()
    await _fill(first, "medium", 600)  # SciFact-sized namespaces are the common case
    await _fill(first, "tiny", 100)
    await first.aclose()

    store = SQLiteStore(SQLiteStore.Config(path=path))
    await store.start()
    try:
        assert not store.index_loaded("medium")  # starting loads nothing: ingest, worker
        await store.warm()  # a serving process asks for it
        await _ready(store)
        assert store.index_loaded("medium")  # its first search reads nothing
        assert not store.index_loaded("tiny")  # a few milliseconds on its first search
        hits = await store.keyword_search("tiny", "herons", 3, Filter())
        assert len(hits) == 3 and store.index_loaded("tiny")
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_warmed_namespace_has_been_searched_once_before_ready(tmp_path: Path) -> None:
    """The warm-up rehearses a keyword and a vector search of each namespace it loads (the
    first real search then finds the search threads started and the pages faulted in);
    the rehearsal changes nothing a search returns."""
    path = tmp_path / "db"
    first = SQLiteStore(SQLiteStore.Config(path=path))
    await first.start()
    await _fill(first, "medium", 600)
    await _fill(first, "tiny", 100)
    query = np.ones(8, np.float32)
    want = await first.vector_search("medium", query, 5, Filter())
    want_kw = await first.keyword_search("medium", "herons chunk", 5, Filter())
    await first.aclose()

    # offload_chunks 500: "medium" computes in the search pool, whose threads start lazily.
    store = SQLiteStore(SQLiteStore.Config(path=path, offload_chunks=500))
    await store.start()
    try:
        pool = store._search_pool
        assert pool is not None and not pool._threads  # nothing searched yet
        await store.warm()
        await _ready(store)
        assert store.rehearsals == 1  # "medium" only: "tiny" is left to its first search
        assert pool._threads  # the rehearsal ran in the pool
        got = await store.vector_search("medium", query, 5, Filter())
        assert [(h.chunk.id, h.score) for h in got] == [(h.chunk.id, h.score) for h in want]
        got_kw = await store.keyword_search("medium", "herons chunk", 5, Filter())
        assert [(h.chunk.id, h.score) for h in got_kw] == [(h.chunk.id, h.score) for h in want_kw]
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_rehearsal_that_fails_does_not_stop_the_warm_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The rehearsal is an optimisation: a search that raises there is logged, and the
    namespaces after it are loaded all the same before ready."""
    path = await _large_and_medium(tmp_path / "db")

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a rehearsal that fails")

    monkeypatch.setattr(sqlite_store, "top_k", broken)
    store = SQLiteStore(SQLiteStore.Config(path=path))
    await store.start()
    try:
        await store.warm()
        await _ready(store)
        assert store.rehearsals == 2
        assert store.index_loaded("large") and store.index_loaded("medium")
    finally:
        await store.aclose()


@pytest.mark.anyio
async def test_a_load_that_fails_at_start_leaves_the_others_warmed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Any error loading one namespace (not only a database error: a damaged array, say)
    is logged and warming goes on; that namespace loads at its first search."""
    path = await _large_and_medium(tmp_path / "db")

    read = SQLiteStore._read_index
    failures = []

    def damaged(self: SQLiteStore, namespace: str) -> object:
        if namespace == "large" and not failures:
            failures.append(namespace)
            raise ValueError("a damaged array")
        return read(self, namespace)

    monkeypatch.setattr(SQLiteStore, "_read_index", damaged)
    store = SQLiteStore(SQLiteStore.Config(path=path))
    await store.start()
    try:
        await store.warm()
        await _ready(store)
        assert failures == ["large"]  # the largest, loaded first, failed
        assert store.index_loaded("medium") and not store.index_loaded("large")
        hits = await store.keyword_search("large", "herons", 3, Filter())
        assert len(hits) == 3 and store.index_loaded("large")
    finally:
        await store.aclose()
