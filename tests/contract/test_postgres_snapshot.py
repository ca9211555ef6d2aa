"""Keyword indexes saved in PostgreSQL for other replicas (``_pg_snapshot``, ``_pg_local``)
against a real server: the replica that loads a namespace from its postings saves the
index; the next one reads it, catches it up from the log and ranks exactly as SQL does."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import psycopg
import pytest

from ragtide.builtin.postgres_store import PostgresStore
from tests.contract.test_postgres_local import (
    _assert_same,
    _loaded,
    _sample,
    _write,
    _writer,
)
from tests.contract.test_postgres_store import URL, MakeStore, make_store

__all__ = ["make_store"]  # the fixture, imported for its side effect on pytest

pytestmark = pytest.mark.integration

# Every namespace here is large enough to be saved, and keeps no vectors locally.
SAVING = {
    "local_keyword_min_chunks": 0,
    "local_snapshot_min_chunks": 1,
    "local_vector_max_chunks": 0,
}


async def _replica(make_store: MakeStore, schema: str, **overrides: Any) -> PostgresStore:
    store = await make_store(db_schema=schema, **(SAVING | overrides))
    assert store.local_keywords is not None
    return store


async def _saved(schema: str) -> list[tuple[int, int, int]]:
    """Each snapshot's (namespace id, generation, parts written)."""
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute(
            f"SELECT s.namespace_id, s.generation, count(p.part) FROM {schema}.index_snapshots s"
            f" LEFT JOIN {schema}.index_snapshot_parts p USING (namespace_id)"
            " GROUP BY 1, 2 ORDER BY 1"
        )
        return [(int(a), int(b), int(c)) for a, b, c in await cur.fetchall()]


async def _generation(schema: str, ns: str = "ns") -> int:
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute(
            f"SELECT generation FROM {schema}.namespaces WHERE name = %s", (ns,)
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])


async def _first_replica(make_store: MakeStore, seed: int) -> tuple[str, PostgresStore]:
    """A writer with a namespace, and a replica that loaded it whole and saved it."""
    schema, sql = await _writer(make_store)
    await _write(sql, random.Random(seed), range(40))
    first = await _replica(make_store, schema)
    await _loaded(first)
    assert first.local_keywords is not None
    assert (first.local_keywords.loads_saved, first.local_keywords.saves) == (0, 1)
    return schema, sql


@pytest.mark.anyio
async def test_a_replica_reads_the_index_another_saved(make_store: MakeStore) -> None:
    schema, sql = await _first_replica(make_store, seed=1)
    [(_, generation, parts)] = await _saved(schema)
    assert generation == await _generation(schema) and parts >= 1
    read = _sample("ragtide_local_keyword_index_updates_total", kind="load_saved")
    second = await _replica(make_store, schema)
    await _loaded(second)
    assert second.local_keywords is not None
    assert (second.local_keywords.loads_saved, second.local_keywords.saves) == (1, 0)
    assert _sample("ragtide_local_keyword_index_updates_total", kind="load_saved") == read + 1
    await _assert_same(sql, second)
    assert second.local_keyword_searches > 0
    # It keeps up with writes like an index of its own.
    await _write(sql, random.Random(2), range(40, 45))
    await sql.delete_document("ns", "doc3")
    await _assert_same(sql, second)
    assert second.local_keywords.catch_ups == 1


@pytest.mark.anyio
async def test_a_saved_index_is_caught_up_when_it_is_read(make_store: MakeStore) -> None:
    schema, sql = await _first_replica(make_store, seed=3)
    [(_, saved_at, _)] = await _saved(schema)
    await _write(sql, random.Random(4), range(40, 50))  # new documents, and replacements
    await _write(sql, random.Random(5), range(0, 5))
    await sql.delete_document("ns", "doc20")
    second = await _replica(make_store, schema)
    await _loaded(second)
    assert second.local_keywords is not None
    assert (second.local_keywords.loads_saved, second.local_keywords.catch_ups) == (1, 1)
    assert second.local_keywords.get(second._ns_ids["ns"]) is not None
    await _assert_same(sql, second)
    assert (await _saved(schema))[0][1] == saved_at  # caught up in memory, not saved again


@pytest.mark.anyio
async def test_a_snapshot_older_than_the_log_is_replaced(make_store: MakeStore) -> None:
    schema, sql = await _writer(make_store, change_log_generations=2)
    await _write(sql, random.Random(6), range(30))
    first = await _replica(make_store, schema)
    await _loaded(first)
    [(_, old, _)] = await _saved(schema)
    await _write(sql, random.Random(7), range(30, 40))  # ten writes: the log keeps two
    second = await _replica(make_store, schema)
    await _loaded(second)
    assert second.local_keywords is not None
    assert (second.local_keywords.loads_saved, second.local_keywords.loads) == (0, 1)
    assert second.local_keywords.saves == 1
    [(_, new, _)] = await _saved(schema)
    assert new == await _generation(schema) > old
    await _assert_same(sql, second)


@pytest.mark.anyio
async def test_a_damaged_snapshot_is_refused_and_replaced(make_store: MakeStore) -> None:
    schema, sql = await _first_replica(make_store, seed=8)
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        await conn.execute(
            f"UPDATE {schema}.index_snapshot_parts"
            " SET data = overlay(data PLACING '\\xdeadbeef'::bytea FROM 9) WHERE part = 0"
        )
    second = await _replica(make_store, schema)
    await _loaded(second)
    assert second.local_keywords is not None
    assert (second.local_keywords.loads_saved, second.local_keywords.loads) == (0, 1)
    assert second.local_keywords.saves == 1  # the same generation, written again whole
    await _assert_same(sql, second)
    third = await _replica(make_store, schema)
    await _loaded(third)
    assert third.local_keywords is not None
    assert third.local_keywords.loads_saved == 1
    await _assert_same(sql, third)


@pytest.mark.anyio
async def test_one_snapshot_is_written_however_many_replicas_save(make_store: MakeStore) -> None:
    schema, sql = await _writer(make_store)
    await _write(sql, random.Random(9), range(30))
    replicas = [await _replica(make_store, schema) for _ in range(3)]
    loaded = []
    for replica in replicas:  # each loads whole (no snapshot yet): none saves
        assert replica.local_keywords is not None
        loaded.append(await replica.local_keywords._load_whole(await _ns_id(replica)))
    await asyncio.gather(
        *(
            r.local_keywords._write_saved(*got)
            for r, got in zip(replicas, loaded, strict=True)
            if r.local_keywords and got
        )
    )
    assert sum(r.local_keywords.saves for r in replicas if r.local_keywords) == 1
    assert len(await _saved(schema)) == 1


@pytest.mark.anyio
async def test_readiness_waits_for_saved_namespaces(make_store: MakeStore) -> None:
    schema, sql = await _first_replica(make_store, seed=10)
    second = await _replica(make_store, schema, local_warm_wait_s=60)
    assert second.local_keywords is not None
    await second.warm()  # returns once the saved namespace is loaded, not in the background
    assert second.local_keywords.get(await _ns_id(second)) is not None
    assert second.local_keywords.loads_saved == 1
    await _assert_same(sql, second)


@pytest.mark.anyio
async def test_a_deleted_namespace_takes_its_snapshot(make_store: MakeStore) -> None:
    schema, sql = await _first_replica(make_store, seed=11)
    assert len(await _saved(schema)) == 1
    await sql.delete_namespace("ns")
    assert await _saved(schema) == []


@pytest.mark.anyio
async def test_small_namespaces_are_not_saved(make_store: MakeStore) -> None:
    schema, sql = await _writer(make_store)
    await _write(sql, random.Random(12), range(30))
    local = await _replica(make_store, schema, local_snapshot_min_chunks=10_000)
    await _loaded(local)
    assert local.local_keywords is not None
    assert (local.local_keywords.loads, local.local_keywords.saves) == (1, 0)
    # and namespaces with local vectors (a snapshot holds none)
    vectors = await _replica(make_store, schema, local_vector_max_chunks=10_000)
    await _loaded(vectors)
    assert vectors.local_keywords is not None
    assert (vectors.local_keywords.loads, vectors.local_keywords.saves) == (1, 0)
    assert await _saved(schema) == []


async def _ns_id(store: PostgresStore, ns: str = "ns") -> int:
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute(
            f"SELECT id FROM {store._config.db_schema}.namespaces WHERE name = %s", (ns,)
        )
        row = await cur.fetchone()
        assert row is not None
        return int(row[0])
