from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Filter


@pytest.mark.anyio
async def test_two_processes_share_one_file(tmp_path: Path) -> None:
    """A second connection (as another worker process would have) sees the writes.

    ``poll_seconds=0`` makes the reader check for other writers on every search, so the
    test needs no waiting; the default lets that view lag by up to 50 ms.
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
    hits = await reader.vector_search("ns", one[0], 5, Filter())
    assert sorted(h.document_id for h in hits) == ["a", "b"]  # cache was refreshed
    await writer.delete_document("ns", "a")
    assert [h.document_id for h in await reader.vector_search("ns", one[0], 5, Filter())] == ["b"]
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
