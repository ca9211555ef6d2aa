"""The SQLite store's search snapshots within ``index_budget_mb``: many small namespaces,
the least recently searched evicted first, and nothing a search returns changed by it."""

from __future__ import annotations

import asyncio
import logging
import random
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from prometheus_client import REGISTRY

from ragtide.builtin import sqlite_store
from ragtide.builtin.embedders import HashingEmbedder
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.builtin.wand import top_k
from ragtide.errors import BackendUnavailable
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Filter, Hit

pytestmark = pytest.mark.anyio

MB = 2**20
_WORDS = [f"w{a}{b}{c}" for a in "bcdfgh" for b in "aeiou" for c in "klmnprst"]  # 240


def _texts(seed: int, n: int) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choice(_WORDS) for _ in range(12)) for _ in range(n)]


async def _embed(texts: list[str]) -> np.ndarray:
    embedder = HashingEmbedder(HashingEmbedder.Config(dim=64))
    await embedder.start()
    return np.asarray(await embedder.embed_documents(texts), np.float32)


async def _query(text: str) -> np.ndarray:
    vectors = await _embed([text])
    return vectors.reshape(-1)


async def _put(store: SQLiteStore, ns: str, doc: str, texts: list[str], group: int = 0) -> None:
    chunks = make_chunks(doc, texts, metadata={"group": str(group)})
    await store.put_document(ns, make_document(doc), chunks, await _embed(texts), "hashing-64")


async def _fill(store: SQLiteStore, count: int, chunks: int = 6) -> list[str]:
    """``count`` namespaces of two documents (``chunks`` chunks in all) each."""
    names = [f"t/ns{i:03d}" for i in range(count)]
    for i, ns in enumerate(names):
        texts = _texts(i, chunks)
        half = chunks // 2
        await _put(store, ns, f"a{i}", texts[:half], group=0)
        await _put(store, ns, f"b{i}", texts[half:], group=1)
    return names


def _ranked(hits: list[Hit]) -> list[tuple[str, float]]:
    return [(h.chunk.id, round(h.score, 5)) for h in hits]


async def _search(store: SQLiteStore, ns: str) -> list[list[tuple[str, float]]]:
    """A keyword and a vector search of words ``ns``'s first chunk has."""
    seed = int(ns[-3:]) if ns[-3:].isdigit() else 0  # _fill's seed of the namespace
    text = " ".join(_texts(seed, 1)[0].split()[:4])
    keyword = await store.keyword_search(ns, text, 3, Filter())
    vector = await store.vector_search(ns, await _query(text), 3, Filter())
    return [_ranked(keyword), _ranked(vector)]


def _evictions() -> float:
    labels = {"store": "search_indexes", "reason": "bytes"}
    return REGISTRY.get_sample_value("ragtide_budget_evictions_total", labels) or 0.0


@pytest.fixture
def path(tmp_path: Path) -> Path:
    return tmp_path / "db.sqlite"


@pytest.fixture
async def names(path: Path) -> list[str]:
    """30 small namespaces in the file (written through an unlimited store)."""
    store = SQLiteStore(SQLiteStore.Config(path=path, index_budget_mb=0))
    await store.start()
    try:
        return await _fill(store, 30)
    finally:
        await store.aclose()


async def _snapshot_bytes(path: Path, ns: str) -> int:
    """What one namespace's snapshot is accounted for (an unlimited store, searched once)."""
    store = SQLiteStore(SQLiteStore.Config(path=path, index_budget_mb=0))
    await store.start()
    try:
        await _search(store, ns)
        return store.index_bytes
    finally:
        await store.aclose()


async def _opened(path: Path, budget_bytes: float, **config: object) -> SQLiteStore:
    settings = {"path": path, "index_budget_mb": budget_bytes / MB, **config}
    store = SQLiteStore(SQLiteStore.Config.model_validate(settings))
    await store.start()
    return store


@pytest.fixture
async def one(path: Path, names: list[str]) -> int:
    return await _snapshot_bytes(path, names[0])


@pytest.fixture
async def budgeted(path: Path, one: int) -> AsyncIterator[SQLiteStore]:
    """A store whose budget holds three of the namespaces' snapshots (3.5 of them)."""
    store = await _opened(path, 3.5 * one)
    yield store
    await store.aclose()


async def test_resident_bytes_stay_within_the_budget_plus_one_snapshot(
    budgeted: SQLiteStore, names: list[str], one: int
) -> None:
    budget = 3.5 * one
    before = _evictions()
    for ns in names:
        await _search(budgeted, ns)
        # One snapshot's worth of slack: the namespaces' sizes differ by a few entries.
        assert budgeted.index_bytes <= budget + 1.1 * one
    assert sum(budgeted.index_loaded(ns) for ns in names) == 3
    assert _evictions() - before == len(names) - 3
    gauge = REGISTRY.get_sample_value("ragtide_budget_bytes", {"store": "search_indexes"})
    assert gauge is not None and gauge >= budgeted.index_bytes > 0


async def test_the_least_recently_searched_are_evicted_first(
    budgeted: SQLiteStore, names: list[str]
) -> None:
    a, b, c, d, e = names[:5]
    for ns in (a, b, c, a):  # a searched again: b is now the least recently searched
        await _search(budgeted, ns)
    await _search(budgeted, d)
    assert [budgeted.index_loaded(ns) for ns in (a, b, c, d)] == [True, False, True, True]
    await _search(budgeted, e)
    assert [budgeted.index_loaded(ns) for ns in (a, c, d, e)] == [True, False, True, True]


async def test_a_write_does_not_count_as_a_search(budgeted: SQLiteStore, names: list[str]) -> None:
    a, b, c, d = names[:4]
    for ns in (a, b, c):
        await _search(budgeted, ns)
    await _put(budgeted, a, "late", _texts(99, 2))  # advances a's snapshot in place
    assert budgeted.index_loaded(a)
    await _search(budgeted, d)
    assert not budgeted.index_loaded(a)  # still the least recently searched
    assert budgeted.index_loaded(b)


async def test_an_evicted_namespace_answers_as_before_its_eviction(
    budgeted: SQLiteStore, names: list[str]
) -> None:
    first = await _search(budgeted, names[0])
    assert first[0] and first[1]
    for ns in names[1:6]:
        await _search(budgeted, ns)
    assert not budgeted.index_loaded(names[0])
    assert await _search(budgeted, names[0]) == first
    assert budgeted.index_loaded(names[0])


async def test_results_never_differ_from_an_unlimited_store(
    path: Path, names: list[str], one: int
) -> None:
    unlimited = await _opened(path, 0)
    budgeted = await _opened(path, 2.5 * one)
    rng = random.Random(7)
    groups = [Filter(), Filter.any_of("group", ["1"]), Filter.any_of("document_id", ["a3"])]
    try:
        for _ in range(80):
            ns = rng.choice(names[:12])
            text = " ".join(rng.sample(_WORDS, 5))
            where = rng.choice(groups)
            vector = await _query(text)
            for store_results in (
                [await s.keyword_search(ns, text, 4, where) for s in (unlimited, budgeted)],
                [await s.vector_search(ns, vector, 4, where) for s in (unlimited, budgeted)],
            ):
                assert _ranked(store_results[0]) == _ranked(store_results[1])
        assert all(unlimited.index_loaded(ns) for ns in names[:12])
        assert sum(budgeted.index_loaded(ns) for ns in names[:12]) == 2
    finally:
        await unlimited.aclose()
        await budgeted.aclose()


async def test_concurrent_searches_under_a_one_snapshot_budget_answer_in_full(
    path: Path, names: list[str], one: int
) -> None:
    """Loads evict each other while the searches that awaited them have yet to run: each
    search still gets the snapshot it waited for, never an empty answer."""
    unlimited = await _opened(path, 0)
    # offload_chunks=0: every search computes in the pool, so others install meanwhile.
    budgeted = await _opened(path, 1.2 * one, offload_chunks=0)
    try:
        chosen = names[:16]
        want = [await _search(unlimited, ns) for ns in chosen]
        for _ in range(3):
            got = await asyncio.gather(*(_search(budgeted, ns) for ns in chosen))
            assert got == want
        await _search(budgeted, names[20])  # nothing held now: back within the budget
        assert budgeted.index_bytes <= 1.2 * one
    finally:
        await unlimited.aclose()
        await budgeted.aclose()


async def test_a_snapshot_a_search_holds_is_not_evicted(
    path: Path, names: list[str], one: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = await _opened(path, 1.5 * one, offload_chunks=0)  # computes in the search pool
    computing, release = threading.Event(), threading.Event()

    def held(*args: Any) -> Any:
        computing.set()
        release.wait(30)
        return top_k(*args)

    monkeypatch.setattr(sqlite_store, "top_k", held)
    a, b, c = names[:3]
    vector = await _query("anything")
    try:
        search = asyncio.create_task(store.keyword_search(a, _texts(0, 1)[0], 3, Filter()))
        assert await asyncio.to_thread(computing.wait, 30)  # a's keyword search is in the pool
        await store.vector_search(b, vector, 3, Filter())  # over the budget: a is held
        assert store.index_loaded(a) and store.index_loaded(b)
        release.set()
        assert await search
        await store.vector_search(c, vector, 3, Filter())  # a is free again, and the oldest
        assert [store.index_loaded(ns) for ns in (a, b, c)] == [False, False, True]
    finally:
        release.set()
        await store.aclose()


async def test_writes_to_an_evicted_namespace_are_seen(
    budgeted: SQLiteStore, names: list[str]
) -> None:
    target = names[0]
    await _search(budgeted, target)
    for ns in names[1:5]:
        await _search(budgeted, ns)
    assert not budgeted.index_loaded(target)
    await _put(budgeted, target, "fresh", ["zebra quokka narwhal"])
    assert not budgeted.index_loaded(target)  # a write loads nothing
    hits = await budgeted.keyword_search(target, "quokka", 3, Filter())
    assert [h.document_id for h in hits] == ["fresh"]
    for ns in names[1:5]:
        await _search(budgeted, ns)
    assert await budgeted.delete_document(target, "fresh")
    assert await budgeted.keyword_search(target, "quokka", 3, Filter()) == []


async def test_a_namespace_larger_than_the_budget_is_still_served(
    path: Path, names: list[str], one: int, caplog: pytest.LogCaptureFixture
) -> None:
    big = "t/big"
    writer = await _opened(path, 0)
    await _put(writer, big, "big", _texts(500, 200))
    await writer.aclose()
    store = await _opened(path, 2 * one)  # far below the big namespace's 200 chunks
    try:
        with caplog.at_level(logging.WARNING, logger="ragtide.builtin.sqlite_store"):
            await _search(store, names[0])
            hits = await store.keyword_search(big, _texts(500, 1)[0], 3, Filter())
            assert hits and hits[0].chunk.id == "big#0"
            assert store.index_loaded(big) and not store.index_loaded(names[0])
            assert store.index_bytes > 2 * one
            await _search(store, names[1])  # the big one is the least recently searched
            assert not store.index_loaded(big)
            again = await store.keyword_search(big, _texts(500, 1)[0], 3, Filter())
            assert _ranked(again) == _ranked(hits)
        warnings = [r for r in caplog.records if "larger than the whole index budget" in r.msg]
        assert len(warnings) == 1  # once, though it was loaded twice
    finally:
        await store.aclose()


async def test_a_vector_index_built_after_its_eviction_is_saved_for_the_next_load(
    path: Path, names: list[str], one: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    big = "t/big"
    writer = await _opened(path, 0)
    await _put(writer, big, "big", _texts(500, 200))
    await writer.aclose()
    building, evicted = threading.Event(), threading.Event()
    from ragtide.builtin.ann import build_base

    def held(*args: Any, **kwargs: Any) -> Any:
        building.set()
        evicted.wait(30)
        return build_base(*args, **kwargs)

    monkeypatch.setattr(sqlite_store, "build_base", held)
    store = await _opened(path, 2 * one, ann_min_chunks=100)
    files = path.with_name(path.name + ".ann")
    try:
        query = await _query(_texts(500, 1)[0])
        before = _ranked(await store.vector_search(big, query, 5, Filter()))  # starts a build
        assert await asyncio.to_thread(building.wait, 30)
        await _search(store, names[0])  # evicts the big namespace while its build runs
        assert not store.index_loaded(big)
        evicted.set()
        deadline = time.monotonic() + 60
        while not list(files.glob("*.usearch")):  # saved though its snapshot is gone
            assert time.monotonic() < deadline, "the vector index was never saved"
            await asyncio.sleep(0.02)
        after = _ranked(await store.vector_search(big, query, 5, Filter()))  # through it
        assert after[0] == before[0] == ("big#0", after[0][1])
        assert [score for _, score in after] == [score for _, score in before]  # ties aside
    finally:
        evicted.set()
        await store.aclose()


async def test_unlimited_keeps_every_snapshot(path: Path, names: list[str]) -> None:
    store = await _opened(path, 0)
    before = _evictions()
    try:
        for ns in names:
            await _search(store, ns)
        assert all(store.index_loaded(ns) for ns in names)
        assert _evictions() == before
    finally:
        await store.aclose()


async def _ready(store: SQLiteStore) -> None:
    deadline = time.monotonic() + 60
    while True:
        try:
            await store.ping()
            return
        except BackendUnavailable:
            assert time.monotonic() < deadline, "never ready"
            await asyncio.sleep(0.02)


async def test_warming_at_start_stays_within_the_budget(tmp_path: Path) -> None:
    path = tmp_path / "warm.sqlite"
    writer = await _opened(path, 0)
    for i, size in enumerate((30, 25, 20)):
        await _put(writer, f"t/warm{i}", f"w{i}", _texts(i, size))
    await writer.aclose()
    biggest = await _snapshot_bytes(path, "t/warm0")
    before = _evictions()
    store = await _opened(path, 1.5 * biggest, warm_min_chunks=10)
    await store.warm()
    try:
        await _ready(store)
        # The largest is loaded; the others would not fit beside it: left to their search.
        loaded = [store.index_loaded(f"t/warm{i}") for i in range(3)]
        assert loaded == [True, False, False]
        assert _evictions() == before
        assert await store.keyword_search("t/warm2", _texts(2, 1)[0], 1, Filter())
    finally:
        await store.aclose()
