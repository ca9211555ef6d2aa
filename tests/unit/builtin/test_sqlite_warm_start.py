"""Readiness with the default settings: a replica says ready only once every namespace whose
load would hold up its first search is loaded (``SQLiteStore.Config.warm_min_chunks``)."""

from __future__ import annotations

import asyncio
from pathlib import Path

import numpy as np
import pytest

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
