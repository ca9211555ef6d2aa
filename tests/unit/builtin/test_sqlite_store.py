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


def _writes(texts: dict[str, list[str]], content_hash: str = "h") -> list[Any]:
    rng = np.random.default_rng(len(texts))
    out = []
    for doc_id, chunk_texts in texts.items():
        rows = rng.normal(size=(len(chunk_texts), 4)).astype(np.float32)
        rows /= np.linalg.norm(rows, axis=1, keepdims=True)
        doc = make_document(doc_id, content_hash=content_hash)
        out.append((doc, make_chunks(doc_id, chunk_texts), rows))
    return out


async def _everything(store: SQLiteStore, ns: str) -> tuple[Any, ...]:
    """What searches and reads see of ``ns``: hits of a few queries, documents, counts."""
    query = np.array([0.5, -0.5, 0.5, 0.5], np.float32)
    vector = [
        (h.chunk.id, round(h.score, 6)) for h in await store.vector_search(ns, query, 50, Filter())
    ]
    keyword = [
        [(h.chunk.id, round(h.score, 6)) for h in await store.keyword_search(ns, q, 50, Filter())]
        for q in ("alpha beta", "gamma", "delta omega")
    ]
    docs = [(d.id, d.content_hash, d.chunks) for d in await store.list_documents(ns)]
    return vector, keyword, docs, await store.counts(ns)


@pytest.mark.anyio
async def test_a_batch_equals_the_same_writes_one_by_one(tmp_path: Path) -> None:
    """``put_documents`` (one transaction) returns the previous hashes and leaves what
    ``put_document`` calls in a row leave, the searched snapshot (advanced in place) as a
    fresh load reads it; an id twice in one batch is written twice, in order."""
    texts = {f"d{i}": [f"alpha w{i} beta", f"gamma w{i % 3}"] for i in range(6)}
    again = {"d2": ["delta omega"], "new": ["alpha alpha"]}
    batched = SQLiteStore(SQLiteStore.Config(path=tmp_path / "batched.db"))
    single = SQLiteStore(SQLiteStore.Config(path=tmp_path / "single.db"))
    for store in (batched, single):
        await store.start()
    assert await batched.put_documents("ns", _writes(texts), "e") == [None] * 6
    await _everything(batched, "ns")  # loaded: the next batch advances this snapshot
    second = [*_writes(again, "h2"), *_writes({"d2": ["gamma gamma", "beta"]}, "h3")]
    assert await batched.put_documents("ns", second, "e") == ["h", None, "h2"]
    for write in [*_writes(texts), *second]:
        await single.put_document("ns", *write, "e")
    got = await _everything(batched, "ns")
    assert got == await _everything(single, "ns")
    assert got[3] == (7, 6 * 2 - 2 + 2 + 1)
    fresh = SQLiteStore(SQLiteStore.Config(path=tmp_path / "batched.db"))
    await fresh.start()
    assert await _everything(fresh, "ns") == got
    for store in (batched, single, fresh):
        await store.aclose()


@pytest.mark.anyio
async def test_a_failed_batch_writes_nothing(tmp_path: Path) -> None:
    """A batch is one transaction: a document that cannot be written (here, vectors of
    an unsupported type) leaves the namespace as it was, term ids included."""
    store = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db"))
    await store.start()
    await store.put_documents("ns", _writes({"a": ["alpha beta"]}), "e")
    before = await _everything(store, "ns")
    good = _writes({"b": ["gamma"], "a": ["delta"]}, "h2")
    bad = (make_document("c"), make_chunks("c", ["omega"]), np.array([["x", "y", "z", "w"]]))
    with pytest.raises(ValueError):
        await store.put_documents("ns", [*good, bad], "e")
    assert await _everything(store, "ns") == before
    # The ids the failed batch gave its new terms were rolled back: the next new terms
    # take them, and the failed batch's terms get others.
    await store.put_documents("ns", _writes({"z": ["zeta eta"]}), "e")
    await store.put_documents("ns", good, "e")
    for query, want in (("gamma", ["b#0"]), ("delta", ["a#0"]), ("zeta eta", ["z#0"])):
        hits = await store.keyword_search("ns", query, 5, Filter())
        assert [h.chunk.id for h in hits] == want, query
    await store.aclose()


@pytest.mark.anyio
async def test_a_search_during_its_own_write_being_followed_starts_no_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Between a write's commit and the writer advancing the snapshot (``_follow``; at
    1M chunks the first write after a snapshot load copies the vectors for a second), a
    search sees the newer generation. It serves the snapshot it has and starts no load:
    a load per write, under steady uploads, had held a core and pushed search p50 to
    0.8 s. Once the write returns, its chunk is found without any load either."""
    from ragtide.builtin import sqlite_store

    path = tmp_path / "db"
    store = SQLiteStore(SQLiteStore.Config(path=path, poll_seconds=0.0))
    await store.start()
    one = np.array([[1.0, 0.0]], np.float32)
    await store.put_document("ns", make_document("a"), make_chunks("a", ["herons"]), one, "e")
    assert len(await store.keyword_search("ns", "herons", 5, Filter())) == 1
    loads: list[str] = []
    real = store._read_index

    def counted(namespace: str) -> Any:
        loads.append(namespace)
        return real(namespace)

    monkeypatch.setattr(store, "_read_index", counted)
    advance = sqlite_store._advance
    committed, go_on = threading.Event(), threading.Event()

    def slow_advance(*args: Any, **kwargs: Any) -> Any:
        committed.set()  # the write is committed: the file says the newer generation
        assert go_on.wait(10)
        return advance(*args, **kwargs)

    monkeypatch.setattr(sqlite_store, "_advance", slow_advance)
    write = asyncio.ensure_future(
        store.put_document("ns", make_document("b"), make_chunks("b", ["herons"]), one, "e")
    )
    assert await asyncio.to_thread(committed.wait, 10)
    hits = await store.keyword_search("ns", "herons", 5, Filter())
    assert [h.document_id for h in hits] == ["a"]  # the snapshot it has, served at once
    assert loads == [] and not store._loads  # and no load started for what is coming
    go_on.set()
    await write
    hits = await store.keyword_search("ns", "herons", 5, Filter())
    assert sorted(h.document_id for h in hits) == ["a", "b"]
    assert loads == []
    await store.aclose()


@pytest.mark.anyio
async def test_another_namespace_written_elsewhere_loads_during_a_write_here(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Only the namespaces this process's own write changes are held back from loading:
    another process's write to another namespace, during it, is loaded at once."""
    from ragtide.builtin import sqlite_store

    path = tmp_path / "db"
    here = SQLiteStore(SQLiteStore.Config(path=path, poll_seconds=0.0))
    elsewhere = SQLiteStore(SQLiteStore.Config(path=path))
    await here.start()
    await elsewhere.start()
    one = np.array([[1.0, 0.0]], np.float32)
    for ns in ("mine", "theirs"):
        await here.put_document(ns, make_document("a"), make_chunks("a", ["herons"]), one, "e")
        assert len(await here.keyword_search(ns, "herons", 5, Filter())) == 1
    advance = sqlite_store._advance
    committed, go_on = threading.Event(), threading.Event()

    def slow_advance(*args: Any, **kwargs: Any) -> Any:
        committed.set()
        assert go_on.wait(10)
        return advance(*args, **kwargs)

    monkeypatch.setattr(sqlite_store, "_advance", slow_advance)
    write = asyncio.ensure_future(
        here.put_document("mine", make_document("b"), make_chunks("b", ["herons"]), one, "e")
    )
    try:
        assert await asyncio.to_thread(committed.wait, 10)
        monkeypatch.setattr(sqlite_store, "_advance", advance)  # the other process's own
        theirs = make_chunks("b", ["herons"])
        await elsewhere.put_document("theirs", make_document("b"), theirs, one, "e")
        await here.keyword_search("theirs", "herons", 5, Filter())  # starts the load
        load = here._loads.get("theirs")
        assert load is not None  # not held back by the write to "mine"
        await load
        hits = await here.keyword_search("theirs", "herons", 5, Filter())
        assert sorted(h.document_id for h in hits) == ["a", "b"]
        assert "mine" not in here._loads
    finally:
        go_on.set()
        await write
    await here.aclose()
    await elsewhere.aclose()
