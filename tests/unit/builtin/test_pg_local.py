"""The in-memory parts of ``ragtide.builtin._pg_local``: exact nearest vectors over a local
index, their renumbering after compaction, and the parsing of pgvector's binary form.
(The loads and catch-ups run against a real PostgreSQL: tests/contract/test_postgres_local.py.)
"""

from __future__ import annotations

import asyncio
import dataclasses
import struct
from typing import Any

import numpy as np
import pytest

from ragtide.builtin import _pg_local
from ragtide.builtin._pg_local import LocalIndex, LocalKeywords, Stale, Vectors, _parse_vectors
from ragtide.builtin.bm25 import Postings


def _index(matrix: np.ndarray, ids: list[int]) -> LocalIndex:
    """An index of ``len(ids)`` chunks without terms, every one with a vector."""
    n = len(ids)
    postings = Postings.build([np.zeros(0, np.uint32)] * n, [np.zeros(0, np.uint16)] * n)
    unit = matrix / np.linalg.norm(matrix, axis=1, keepdims=True)
    vectors = Vectors("e", np.arange(n, dtype=np.int64), unit.astype(np.float32))
    return LocalIndex(1, 1, postings, np.asarray(ids, np.int64), {}, vectors)


def test_nearest_is_the_exact_cosine_order_with_ties_by_id() -> None:
    rng = np.random.default_rng(0)
    matrix = rng.normal(size=(50, 6))
    matrix[10] = matrix[3] * 2  # the same direction: a tie, broken by id
    ids = list(range(100, 150))
    index = _index(matrix, ids)
    query = rng.normal(size=6).astype(np.float32)
    query[:] = matrix[3]
    got = index.nearest(query, 5)
    assert got is not None
    got_ids, got_scores = got
    cosine = matrix @ query / (np.linalg.norm(matrix, axis=1) * np.linalg.norm(query))
    want = sorted(range(50), key=lambda i: (-round(cosine[i], 5), ids[i]))[:5]
    assert got_ids == [ids[i] for i in want]
    assert got_ids[:2] == [103, 110]
    assert got_scores == pytest.approx([cosine[i] for i in want], abs=1e-5)


def test_nearest_skips_deleted_chunks_and_asks_for_no_more_than_live() -> None:
    rng = np.random.default_rng(1)
    index = _index(rng.normal(size=(4, 3)), [1, 2, 3, 4])
    removed = LocalIndex(
        1, 2, index.postings.remove(np.array([0, 2])), index.ids, {}, index.vectors
    )
    got = removed.nearest(np.ones(3, np.float32), 10)
    assert got is not None and sorted(got[0]) == [2, 4]


def test_nearest_declines_another_dimension_and_a_zero_query() -> None:
    index = _index(np.eye(3), [7, 8, 9])
    assert index.nearest(np.ones(4, np.float32), 3) is None  # SQL searches that one
    assert index.nearest(np.zeros(3, np.float32), 3) == ([], [])


def test_renumbered_follows_compaction_and_drops_the_dead() -> None:
    vectors = Vectors("e", np.array([0, 2, 3], np.int64), np.eye(3, dtype=np.float32))
    kept = vectors.renumbered(np.array([1, 3], np.int64), 4)  # positions 1 and 3 live on
    assert kept.positions.tolist() == [1]  # old 3 is new 1; old 0 and 2 are gone
    assert kept.matrix.tolist() == [[0.0, 0.0, 1.0]]


def test_vectors_of_another_dimension_cannot_be_appended() -> None:
    vectors = Vectors("e", np.array([0], np.int64), np.ones((1, 3), np.float32))
    with pytest.raises(Stale):
        vectors.added(np.array([1], np.int64), np.ones((1, 4), np.float32))
    empty = Vectors("e", np.zeros(0, np.int64), np.zeros((0, 0), np.float32))
    assert empty.added(np.array([5], np.int64), np.ones((1, 4), np.float32)).matrix.shape == (1, 4)


def test_pgvector_binary_rows_parse_to_unit_vectors_at_their_positions() -> None:
    def send(values: list[float]) -> bytes:  # pgvector's vector_send
        return struct.pack(f">hh{len(values)}f", len(values), 0, *values)

    ids = np.array([10, 20, 30, 40], np.int64)
    chunk_ids = struct.pack(">qq", 20, 40)
    parsed = _parse_vectors("e", chunk_ids, send([3.0, 4.0]) + send([0.0, 2.0]), ids)
    assert parsed.positions.tolist() == [1, 3]
    np.testing.assert_allclose(parsed.matrix, [[0.6, 0.8], [0.0, 1.0]], rtol=1e-6)
    assert _parse_vectors("e", b"", b"", ids).matrix.shape == (0, 0)


def test_indexes_past_the_budget_go_least_recently_used_first() -> None:
    async def never(*_: object) -> Any:
        raise AssertionError("no database in this test")

    rng = np.random.default_rng(2)
    built = [_index(rng.normal(size=(100, 8)), list(range(100))) for _ in range(3)]
    indexes = [
        LocalIndex(i, 1, b.postings, b.ids, {}, b.vectors) for i, b in enumerate(built, start=1)
    ]
    size = indexes[0].nbytes

    def lent() -> Any:
        raise AssertionError("no database in this test")

    local = LocalKeywords(never, never, lent, k1=1.2, b=0.75, budget_bytes=2 * size, min_chunks=0)
    local._keep(indexes[0])
    local._keep(indexes[1])
    assert local.get(1) is indexes[0]  # used: namespace 2 is now the least recent
    local._keep(indexes[2])
    assert list(local._indexes) == [1, 3]
    assert local.nbytes == 2 * size
    local._make_room(size)  # room for one more: the least recent goes
    assert list(local._indexes) == [3]


@pytest.mark.anyio
@pytest.mark.parametrize("gap", [0.0, 3600.0])
async def test_notifications_of_its_schema_start_a_catch_up_once_at_a_time(
    gap: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pg_local, "_FOLLOW_GAP_S", gap)
    caught: list[int] = []

    async def never(*_: object) -> Any:
        raise AssertionError("no database in this test")

    local = LocalKeywords(
        never, never, never, k1=1.2, b=0.75, budget_bytes=1 << 30, min_chunks=0,
        schema="tenant a",
    )  # fmt: skip
    started, gate = asyncio.Event(), asyncio.Event()

    async def catch_up(index: LocalIndex) -> None:  # to what was heard of when it began
        caught.append(index.generation)
        upto = local._notified[index.ns_id]
        started.set()
        await gate.wait()
        local._keep(dataclasses.replace(index, generation=upto))

    local._catch_up = catch_up  # type: ignore[method-assign]
    local._keep(_index(np.eye(3), [1, 2, 3]))  # namespace 1 at generation 1
    for payload in ("tenant b 1 5", "tenant a 1 x", "tenant a", "1 5", "tenant a 2 9"):
        local._heard(payload)  # another schema's, malformed, or a namespace not held here
    assert not caught and not local._tasks and not local._notified
    assert local.notifications == 1  # namespace 2's
    local._heard("tenant a 1 4")
    await started.wait()
    local._heard("tenant a 1 6")  # while that catch-up runs: one more after it ends
    local._heard("tenant a 1 3")  # older than what was heard: nothing more
    gate.set()
    await local.settle()
    if gap:  # not yet, within the gap: a search catches up itself, at once
        assert caught == [1] and local._indexes[1].generation == 4
        assert not local._tasks
    assert (await local.current(1)) is local._indexes[1]
    assert caught == [1, 4]
    assert local._indexes[1].generation == 6


def test_appended_rows_are_written_in_place_and_an_earlier_snapshot_never_changes() -> None:
    ids, matrix = np.arange(3, dtype=np.int64), np.eye(3, dtype=np.float32)
    (a_ids, a_matrix), room = _pg_local.appended(
        (ids, matrix), (np.array([3]), np.ones((1, 3))), None
    )
    assert a_ids.tolist() == [0, 1, 2, 3] and a_matrix[3].tolist() == [1.0, 1.0, 1.0]
    assert len(room.buffers[0]) > 4  # room to grow: the next append copies nothing
    (b_ids, b_matrix), room_b = _pg_local.appended(
        (a_ids, a_matrix), (np.array([4, 5]), np.full((2, 3), 2.0)), room
    )
    assert room_b is room and np.shares_memory(a_ids, b_ids)  # in place, past ``a``
    assert b_ids.tolist() == [0, 1, 2, 3, 4, 5] and b_matrix[4:].tolist() == [[2.0] * 3] * 2
    # Appending to ``a`` again (``b`` has written past it): a copy, and ``b`` unchanged
    (c_ids, c_matrix), room_c = _pg_local.appended(
        (a_ids, a_matrix), (np.array([9]), np.full((1, 3), 9.0)), room
    )
    assert room_c is not room and not np.shares_memory(c_ids, b_ids)
    assert c_ids.tolist() == [0, 1, 2, 3, 9] and b_ids.tolist() == [0, 1, 2, 3, 4, 5]
    assert b_matrix[4].tolist() == [2.0] * 3 and c_matrix[4].tolist() == [9.0] * 3
    # Past the room: new, longer buffers
    while len(b_ids) < len(room.buffers[0]):
        (b_ids, b_matrix), room = _pg_local.appended(
            (b_ids, b_matrix), (np.array([len(b_ids)]), np.zeros((1, 3))), room
        )
    full = room
    (d_ids, _), room = _pg_local.appended(
        (b_ids, b_matrix), (np.array([-1]), np.zeros((1, 3))), room
    )
    assert room is not full and d_ids[-1] == -1 and d_ids[:-1].tolist() == b_ids.tolist()
    assert d_ids[:6].tolist() == [0, 1, 2, 3, 4, 5]


def test_a_catch_up_appends_the_chunk_ids_and_tail_vectors_in_place() -> None:
    """``Vectors.added`` grows into room (as ``LocalKeywords._apply``'s chunk ids do), and
    its memory (``nbytes``) counts the room."""
    vectors = Vectors("e", np.arange(2, dtype=np.int64), np.eye(2, dtype=np.float32))
    once = vectors.added(np.array([2], np.int64), np.ones((1, 2), np.float32))
    twice = once.added(np.array([3], np.int64), np.full((1, 2), 3.0, np.float32))
    assert np.shares_memory(once.matrix, twice.matrix)
    assert twice.positions.tolist() == [0, 1, 2, 3] and twice.matrix[3].tolist() == [3.0, 3.0]
    assert once.positions.tolist() == [0, 1, 2]
    assert twice.room is not None and twice.nbytes == twice.room.nbytes > (
        twice.positions.nbytes + twice.matrix.nbytes
    )
