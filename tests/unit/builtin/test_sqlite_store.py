from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Filter


async def _eventually(store: SQLiteStore, ns: str, vector: np.ndarray, want: list[str]) -> int:
    """Search until the hits are ``want``; the number of searches it took."""
    for polls in range(1, 201):
        hits = await store.vector_search(ns, vector, 5, Filter())
        if sorted(h.document_id for h in hits) == want:
            return polls
        await asyncio.sleep(0.01)
    raise AssertionError(f"{ns} never showed {want}")


@pytest.mark.anyio
async def test_two_connections_share_one_file(tmp_path: Path) -> None:
    """A second connection of this process sees the writes (real processes:
    tests/integration/test_two_processes.py).

    The reader's first search of the namespace loads it (and waits for that); after
    that, another process's writes are seen once the reader's background reload is
    done, while searches meanwhile get the snapshot before them, never a wait.
    """
    path = tmp_path / "shared.db"
    writer = SQLiteStore(SQLiteStore.Config(path=path))
    reader = SQLiteStore(SQLiteStore.Config(path=path, poll_seconds=0))
    await writer.start()
    await reader.start()
    one = np.array([[1.0, 0.0]], dtype=np.float32)
    await writer.put_document("ns", make_document("a"), make_chunks("a", ["alpha"]), one, "e")
    assert [h.document_id for h in await reader.vector_search("ns", one[0], 5, Filter())] == ["a"]
    await writer.put_document("ns", make_document("b"), make_chunks("b", ["beta"]), one, "e")
    assert await _eventually(reader, "ns", one[0], ["a", "b"]) <= 50
    await writer.delete_document("ns", "a")
    assert await _eventually(reader, "ns", one[0], ["b"]) <= 50
    await writer.aclose()
    await reader.aclose()


@pytest.mark.anyio
async def test_vector_of_another_dimension_finds_nothing(tmp_path: Path) -> None:
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db"))
    await store.start()
    await store.put_document(
        "ns", make_document("a"), make_chunks("a", ["x"]), np.ones((1, 4), np.float32) / 2, "e"
    )
    assert await store.vector_search("ns", np.ones(3, np.float32), 5, Filter()) == []
    await store.aclose()


@pytest.mark.anyio
async def test_mismatched_vectors_are_refused_and_nothing_written(tmp_path: Path) -> None:
    from ragtide.errors import InvalidRequest

    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db"))
    await store.start()
    with pytest.raises(InvalidRequest):
        await store.put_document(
            "ns", make_document("a"), make_chunks("a", ["x", "y"]), np.ones((1, 2), np.float32), "e"
        )
    assert await store.get_document("ns", "a") is None
    await store.aclose()


@pytest.mark.anyio
async def test_not_started_is_backend_unavailable(tmp_path: Path) -> None:
    from ragtide.errors import BackendUnavailable

    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db"))
    with pytest.raises(BackendUnavailable):
        await store.ping()


@pytest.mark.anyio
async def test_unopenable_path_is_backend_unavailable(tmp_path: Path) -> None:
    from ragtide.errors import BackendUnavailable

    (tmp_path / "dir.db").mkdir()
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "dir.db"))
    with pytest.raises(BackendUnavailable):
        await store.start()


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


async def _results(store: SQLiteStore, ns: str, queries: np.ndarray) -> list[Any]:
    out: list[Any] = []
    for text in ("alpha beta", "gamma", "delta alpha omega", "zeta"):
        hits = await store.keyword_search(ns, text, 50, Filter())
        out.append(sorted((h.chunk.id, round(h.score, 4)) for h in hits))
        some = Filter.any_of("document_id", ["d1", "d3", "d5"])
        hits = await store.keyword_search(ns, text, 50, some)
        out.append(sorted((h.chunk.id, round(h.score, 4)) for h in hits))
    for q in queries:
        hits = await store.vector_search(ns, q, 50, Filter())
        out.append(sorted((h.chunk.id, round(h.score, 4)) for h in hits))
        hits = await store.vector_search(ns, q, 3, Filter.any_of("document_id", ["d2", "d4"]))
        out.append([h.chunk.id for h in hits])
    return out


@pytest.mark.anyio
async def test_writes_advance_the_index_as_a_fresh_load_would_have_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Uploads, replacements and deletions update the searched snapshot in place of a
    reload, and every step searches exactly as a store that loads the file anew;
    compaction (made frequent here) renumbers without changing a result."""
    from ragtide.builtin import sqlite_store

    monkeypatch.setattr(sqlite_store, "_COMPACT_MIN", 2)
    rng = np.random.default_rng(7)
    words = ["alpha", "beta", "gamma", "delta", "omega", "zeta", "eta"]
    path = tmp_path / "db"
    store = SQLiteStore(SQLiteStore.Config(path=path))
    await store.start()
    loads: list[str] = []
    real = store._read_index

    def counted(namespace: str) -> Any:
        loads.append(threading.current_thread().name)
        return real(namespace)

    monkeypatch.setattr(store, "_read_index", counted)
    queries = _unit(rng.standard_normal((3, 4)))
    await store.create_namespace("t/ns")
    assert await _results(store, "t/ns", queries) == [[]] * 14  # empty, and loaded
    assert len(loads) == 1 and loads[0] != threading.current_thread().name
    for step in range(40):
        doc = f"d{rng.integers(0, 6)}"
        if rng.random() < 0.25:
            await store.delete_document("t/ns", doc)
        else:
            n = int(rng.integers(1, 4))
            texts = [" ".join(rng.choice(words, int(rng.integers(1, 6)))) for _ in range(n)]
            vectors = _unit(rng.standard_normal((n, 4)))
            await store.put_document(
                "t/ns", make_document(doc), make_chunks(doc, texts), vectors, "e"
            )
        fresh = SQLiteStore(SQLiteStore.Config(path=path))
        await fresh.start()
        try:
            assert await _results(store, "t/ns", queries) == await _results(
                fresh, "t/ns", queries
            ), step
        finally:
            await fresh.aclose()
    assert len(loads) == 1  # never reloaded: every write advanced the snapshot
    await store.aclose()


@pytest.mark.anyio
async def test_a_new_model_is_searched_alone_right_after_its_write(tmp_path: Path) -> None:
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db"))
    await store.start()
    two = np.array([[1.0, 0.0]], np.float32)
    await store.put_document("ns", make_document("a"), make_chunks("a", ["old words"]), two, "m1")
    assert len(await store.vector_search("ns", two[0], 5, Filter())) == 1
    three = np.array([[0.0, 0.0, 1.0]], np.float32)
    await store.put_document("ns", make_document("b"), make_chunks("b", ["new words"]), three, "m2")
    assert [h.document_id for h in await store.vector_search("ns", three[0], 5, Filter())] == ["b"]
    assert await store.vector_search("ns", two[0], 5, Filter()) == []
    hits = await store.keyword_search("ns", "words", 5, Filter())
    assert sorted(h.document_id for h in hits) == ["a", "b"]  # keywords search every chunk
    await store.aclose()


@pytest.mark.anyio
async def test_own_write_after_another_process_write_is_read(tmp_path: Path) -> None:
    """When another process wrote in between, the writer cannot advance its snapshot; the
    next search of this process waits for a load rather than miss its own write."""
    path = tmp_path / "db"
    a = SQLiteStore(SQLiteStore.Config(path=path))
    b = SQLiteStore(SQLiteStore.Config(path=path))
    await a.start()
    await b.start()
    one = np.array([[1.0, 0.0]], np.float32)
    await a.put_document("ns", make_document("a1"), make_chunks("a1", ["x"]), one, "e")
    assert len(await a.vector_search("ns", one[0], 5, Filter())) == 1
    await b.put_document("ns", make_document("b1"), make_chunks("b1", ["x"]), one, "e")
    await a.put_document("ns", make_document("a2"), make_chunks("a2", ["x"]), one, "e")
    hits = await a.vector_search("ns", one[0], 5, Filter())
    assert sorted(h.document_id for h in hits) == ["a1", "a2", "b1"]
    await a.aclose()
    await b.aclose()


@pytest.mark.anyio
async def test_empty_namespaces_are_ordinary(tmp_path: Path) -> None:
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db"))
    await store.start()
    q = np.array([1.0, 0.0], np.float32)
    for ns in ("t/new", "t/emptied", "t/deleted", "t/never"):
        if ns != "t/never":
            await store.create_namespace(ns)
        if ns in ("t/emptied", "t/deleted"):
            await store.put_document(
                ns, make_document("d"), make_chunks("d", ["words"]), q[None], "e"
            )
            assert len(await store.keyword_search(ns, "words", 5, Filter())) == 1
            await store.delete_document(ns, "d")
        if ns == "t/deleted":
            await store.delete_namespace(ns)
        for f in (Filter(), Filter.any_of("document_id", ["d"])):
            assert await store.keyword_search(ns, "words", 5, f) == [], ns
            assert await store.vector_search(ns, q, 5, f) == [], ns
        assert await store.counts(ns) == (0, 0)
        assert await store.list_documents(ns) == []
    assert await store.list_namespaces("t/") == ["t/emptied", "t/new"]
    # Written to again, an emptied namespace takes any model and dimension.
    three = np.array([[0.0, 1.0, 0.0]], np.float32)
    await store.put_document(
        "t/emptied", make_document("n"), make_chunks("n", ["words"]), three, "e2"
    )
    assert [
        h.document_id for h in await store.vector_search("t/emptied", three[0], 5, Filter())
    ] == ["n"]
    assert len(await store.keyword_search("t/emptied", "words", 5, Filter())) == 1
    await store.aclose()
