"""Keyword indexes saved in PostgreSQL for other replicas (``_pg_snapshot``, ``_pg_local``)
against a real server: the replica that loads a namespace from its postings saves the
index; the next one reads it, catches it up from the log and ranks exactly as SQL does."""

from __future__ import annotations

import asyncio
import random
from typing import Any

import numpy as np
import psycopg
import pytest

from ragtide.builtin import _pg_ann
from ragtide.builtin.postgres_store import PostgresStore
from ragtide.types import Filter
from tests.contract.test_postgres_local import (
    _assert_both,
    _assert_nearest,
    _assert_same,
    _delete_documents,
    _exact,
    _loaded,
    _sample,
    _write,
    _write_vectors,
    _writer,
)
from tests.contract.test_postgres_store import URL, MakeStore, make_store

__all__ = ["make_store"]  # the fixture, imported for its side effect on pytest

pytestmark = pytest.mark.integration

# Every namespace here is large enough to be saved, and keeps no vectors locally. The
# replicas catch up when a search finds their index behind, not when told of a write
# (``test_postgres_local``), so the tests can count the catch-ups.
SAVING = {
    "local_keyword_min_chunks": 0,
    "local_snapshot_min_chunks": 1,
    "local_vector_max_chunks": 0,
    "local_vector_graphs": False,
    "local_notifications": False,
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
            f" LEFT JOIN {schema}.index_snapshot_parts p USING (namespace_id, kind)"
            " WHERE s.kind = 'keywords' GROUP BY 1, 2 ORDER BY 1"
        )
        return [(int(a), int(b), int(c)) for a, b, c in await cur.fetchall()]


async def _generation(schema: str, ns: str = "ns") -> int:
    return await _namespace(schema, "generation", ns)


async def _ns_id(store: PostgresStore, ns: str = "ns") -> int:
    return await _namespace(store._config.db_schema, "id", ns)


async def _namespace(schema: str, column: str, ns: str = "ns") -> int:
    """A column of the namespace's row."""
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute(f"SELECT {column} FROM {schema}.namespaces WHERE name = %s", (ns,))
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
async def test_the_log_keeps_what_a_saved_snapshot_needs_to_catch_up(
    make_store: MakeStore,
) -> None:
    schema, sql = await _writer(make_store, change_log_generations=2)
    await _write(sql, random.Random(16), range(60))
    first = await _replica(make_store, schema)
    await _loaded(first)
    [(_, saved_at, _)] = await _saved(schema)
    await _write(sql, random.Random(17), range(60, 66))  # six writes: more than two
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute(
            f"SELECT (SELECT log_since FROM {schema}.namespaces),"
            f" (SELECT min(generation) FROM {schema}.chunk_changes)"
        )
        since, oldest = await cur.fetchone() or (None, None)
    assert since == saved_at and oldest == saved_at + 1  # pruned up to the snapshot only
    second = await _replica(make_store, schema)
    await _loaded(second)
    assert second.local_keywords is not None
    # read and caught up (its one load), not loaded whole and saved again
    assert (second.local_keywords.loads_saved, second.local_keywords.loads) == (1, 1)
    assert second.local_keywords.catch_ups == 1
    assert (await _saved(schema))[0][1] == saved_at
    await _assert_same(sql, second)


@pytest.mark.anyio
async def test_a_snapshot_older_than_the_log_is_replaced(make_store: MakeStore) -> None:
    # The log keeps the changes since a snapshot for change_log_max_generations writes.
    schema, sql = await _writer(make_store, change_log_generations=2, change_log_max_generations=2)
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
            r.local_keywords._write_saved(got[0], got[1])
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
    # and has searched it once, as the first search after ready would have
    assert (second.local_keyword_searches, second.local_vector_searches) == (1, 0)
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


# --- vector graphs of saved namespaces (``_pg_ann``) ---------------------------------------

GRAPHS = SAVING | {"local_vector_graphs": True}
Kept = dict[str, tuple[list[float], str]]


async def _graphed(make_store: MakeStore, seed: int) -> tuple[str, PostgresStore, Kept]:
    """A writer with a namespace of vectors, and a replica that loaded it whole, saved
    it and built, saved and attached its vector graph."""
    schema, sql = await _writer(make_store)
    kept: Kept = {}
    await _write_vectors(sql, random.Random(seed), range(120), kept)
    first = await _replica(make_store, schema, **GRAPHS)
    await _loaded(first)
    assert first.local_keywords is not None
    assert first.local_keywords.graphs_built == 1
    index = first.local_keywords.get(await _ns_id(first))
    assert index is not None and index.graph is not None and index.graph.count == len(kept)
    await _assert_nearest(first, kept)
    assert first.local_vector_searches == 5
    return schema, sql, kept


@pytest.mark.anyio
async def test_a_vector_graph_ranks_like_the_exact_search(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_pg_ann, "_ROWS", 7)  # the vectors are read a page at a time
    schema, sql, kept = await _graphed(make_store, seed=20)
    [saved] = [k for k in await _kinds(schema) if k[1] == "vectors"]
    assert saved[0] == await _generation(schema)
    # Another replica reads the graph with the keyword index and searches with it.
    second = await _replica(make_store, schema, **GRAPHS)
    await _loaded(second)
    assert second.local_keywords is not None
    assert (second.local_keywords.loads_saved, second.local_keywords.graphs_built) == (1, 0)
    await _assert_nearest(second, kept)
    assert second.local_vector_searches == 5
    # Written since (the graph's tail, searched exactly), replaced and deleted chunks.
    rng = random.Random(21)
    await _write_vectors(sql, rng, [*range(120, 135), *range(0, 20, 4)], kept)
    await _delete_documents(sql, range(1, 60, 7), kept)
    await _assert_nearest(second, kept)
    index = second.local_keywords.get(await _ns_id(second))
    assert index is not None and index.graph is not None and index.vectors is not None
    assert len(index.vectors.positions) > 0  # the tail
    await _assert_both(sql, second, kept)  # both lists in one statement: graph and tail
    assert second.local_keywords.loads == 1
    # Filters are checked by the database on the candidates, deeper when too few pass.
    where = Filter.any_of("document_id", ["doc2", "doc125"])
    query = np.asarray([rng.gauss(0, 1) for _ in range(8)], np.float32)
    hits = await second.vector_search("ns", query, 3, where)
    want = [
        k for _, k in _exact(kept, query.tolist(), "e") if k.split("#")[0] in {"doc2", "doc125"}
    ]
    assert [h.chunk.id for h in hits] == want[:3]


@pytest.mark.anyio
async def test_readiness_rehearses_a_search_through_the_saved_graph(
    make_store: MakeStore,
) -> None:
    schema, _, kept = await _graphed(make_store, seed=25)
    second = await _replica(make_store, schema, **GRAPHS, local_warm_wait_s=60)
    await second.warm()
    # a keyword search, a vector search, and both at once (counted by each)
    assert (second.local_keyword_searches, second.local_vector_searches) == (2, 2)
    await _assert_nearest(second, kept)  # the rehearsal changed nothing


@pytest.mark.anyio
async def test_a_new_embedder_leaves_the_graph_for_the_database(make_store: MakeStore) -> None:
    schema, sql, kept = await _graphed(make_store, seed=22)
    second = await _replica(make_store, schema, **GRAPHS)
    await _loaded(second)
    await _write_vectors(sql, random.Random(23), range(200, 210), kept, embedder="e2")
    await _assert_nearest(second, kept, "e2")  # the index went stale: SQL, exactly
    assert second.local_keywords is not None
    await second.local_keywords.settle()
    third = await _replica(make_store, schema, **GRAPHS)
    await _loaded(third)  # the saved graph is of "e": not used
    assert third.local_keywords is not None
    index = third.local_keywords.get(await _ns_id(third))
    assert index is not None and index.graph is None
    await _assert_nearest(third, kept, "e2")


@pytest.mark.anyio
async def test_without_graphs_large_namespaces_search_vectors_in_the_database(
    make_store: MakeStore,
) -> None:
    schema, sql = await _writer(make_store)
    kept: Kept = {}
    await _write_vectors(sql, random.Random(24), range(60), kept)
    local = await _replica(make_store, schema, local_vector_graphs=False)
    await _loaded(local)
    assert local.local_keywords is not None
    assert (local.local_keywords.saves, local.local_keywords.graphs_built) == (1, 0)
    await _assert_nearest(local, kept)
    assert local.local_vector_searches == 0
    assert [k for k in await _kinds(schema) if k[1] == "vectors"] == []


async def _kinds(schema: str) -> list[tuple[int, str]]:
    """Each snapshot's (generation, kind)."""
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute(f"SELECT generation, kind FROM {schema}.index_snapshots")
        return [(int(g), str(k)) for g, k in await cur.fetchall()]


@pytest.mark.anyio
async def test_a_graph_beyond_the_memory_budget_is_not_held(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    schema, sql = await _writer(make_store)
    kept: Kept = {}
    await _write_vectors(sql, random.Random(25), range(60), kept)
    # The keyword index of these few chunks fits 1 MB; their graph is taken to be larger.
    monkeypatch.setattr(_pg_ann.Graph, "nbytes", property(lambda self: 2 << 20))
    local = await _replica(make_store, schema, **GRAPHS | {"local_keyword_mb": 1})
    await _loaded(local)
    assert local.local_keywords is not None
    assert local.local_keywords.graphs_built == 1  # built and saved for replicas with room
    index = local.local_keywords.get(await _ns_id(local))
    assert index is not None and index.graph is None  # the keyword index stays
    await _assert_nearest(local, kept)
    assert local.local_vector_searches == 0


@pytest.mark.anyio
async def test_replicas_loading_at_once_build_one_graph(make_store: MakeStore) -> None:
    """Three replicas load the namespace whole at the same time (no snapshot yet): one
    builds the graph; the others skip it while it is being built, or read it after."""
    schema, sql = await _writer(make_store)
    kept: Kept = {}
    await _write_vectors(sql, random.Random(26), range(60), kept)
    replicas = [await _replica(make_store, schema, **GRAPHS) for _ in range(3)]
    locals_ = [r.local_keywords for r in replicas if r.local_keywords is not None]
    ns_id = await _ns_id(replicas[0])
    for local in locals_:
        loaded = await local._load_whole(ns_id)
        assert loaded is not None
        local._keep(loaded[0])
        local._save_later(*loaded)
    await asyncio.gather(*(local.settle() for local in locals_))
    assert sum(local.graphs_built for local in locals_) == 1
    assert [k for k in await _kinds(schema) if k[1] == "vectors"] != []
    held = [local.get(ns_id) for local in locals_]
    assert sum(1 for index in held if index is not None and index.graph is not None) >= 1
    for replica in replicas:
        await _assert_nearest(replica, kept)


# A namespace is refreshed when a tenth of it changed (and at least one chunk).
REFRESHING = {"local_refresh_share": 0.1, "local_refresh_min_chunks": 1}


@pytest.mark.anyio
async def test_a_replica_saves_the_index_again_as_writes_accumulate(
    make_store: MakeStore,
) -> None:
    schema, sql = await _writer(make_store)
    await _write(sql, random.Random(40), range(60))
    first = await _replica(make_store, schema, **REFRESHING)
    await _loaded(first)
    local = first.local_keywords
    assert local is not None and (local.saves, local.refreshes) == (1, 0)
    [(_, saved_at, _)] = await _saved(schema)
    # A few changes: less than a tenth of the namespace, nothing is saved again.
    await _write(sql, random.Random(41), range(60, 62))
    await _assert_same(sql, first)
    await local.settle()
    assert local.refreshes == 0 and (await _saved(schema))[0][1] == saved_at
    # More: new documents, replaced ones (their old chunks deleted) and deleted ones.
    await _write(sql, random.Random(42), range(62, 70))
    await _write(sql, random.Random(43), range(0, 6))
    await _delete_documents(sql, range(10, 20, 3), {})
    refreshed = _sample("ragtide_local_keyword_index_updates_total", kind="refresh")
    await _assert_same(sql, first)
    await local.settle()
    assert local.refreshes == 1
    assert _sample("ragtide_local_keyword_index_updates_total", kind="refresh") == refreshed + 1
    [(_, saved_at, _)] = await _saved(schema)
    assert saved_at == await _generation(schema)
    # A new replica reads it and has nothing to catch up; it ranks as SQL does.
    second = await _replica(make_store, schema, **REFRESHING)
    await _loaded(second)
    assert second.local_keywords is not None
    assert (second.local_keywords.loads_saved, second.local_keywords.catch_ups) == (1, 0)
    await _assert_same(sql, second)
    await second.local_keywords.settle()
    assert second.local_keywords.refreshes == 0  # nothing had drifted


@pytest.mark.anyio
async def test_a_graph_is_extended_by_its_tail_and_the_others_search_with_it(
    make_store: MakeStore,
) -> None:
    schema, sql = await _writer(make_store)
    kept: Kept = {}
    await _write_vectors(sql, random.Random(44), range(120), kept)
    first = await _replica(make_store, schema, **GRAPHS | REFRESHING)
    await _loaded(first)
    second = await _replica(make_store, schema, **GRAPHS | REFRESHING)
    await _loaded(second)
    a, b = first.local_keywords, second.local_keywords
    assert a is not None and b is not None
    assert (a.graphs_built, b.loads_saved) == (1, 1)
    ns_id = await _ns_id(first)
    built = a.get(ns_id)
    assert built is not None and built.graph is not None
    # Written since the graph (its tail), replaced and deleted.
    await _write_vectors(sql, random.Random(45), [*range(120, 140), *range(0, 10, 3)], kept)
    await _delete_documents(sql, range(1, 40, 9), kept)
    await _assert_nearest(first, kept)  # catches up; the tail is due
    await a.settle()
    assert (a.refreshes, a.graphs_extended) == (1, 1)
    grown = a.get(ns_id)
    assert grown is not None and grown.graph is not None and grown.vectors is not None
    assert grown.graph.covered > built.graph.covered and len(grown.vectors.positions) == 0
    await _assert_nearest(first, kept)  # through the extended graph alone
    saved = [g for g, kind in await _kinds(schema) if kind == "vectors"]
    assert saved == [await _generation(schema)]
    # The other replica, due too, finds the extended graph saved and searches with it.
    await _assert_nearest(second, kept)
    await b.settle()
    assert (b.graphs_adopted, b.graphs_extended, b.refreshes) == (1, 0, 0)
    adopted = b.get(ns_id)
    assert adopted is not None and adopted.graph is not None and adopted.vectors is not None
    assert adopted.graph.covered == grown.graph.covered and len(adopted.vectors.positions) == 0
    await _assert_nearest(second, kept)
    # A new replica reads both and has nothing to catch up.
    third = await _replica(make_store, schema, **GRAPHS | REFRESHING)
    await _loaded(third)
    c = third.local_keywords
    assert c is not None and (c.loads_saved, c.catch_ups, c.graphs_built) == (1, 0, 0)
    await _assert_nearest(third, kept)
    await _assert_same(sql, third)


@pytest.mark.anyio
async def test_replicas_without_a_usable_graph_get_one_again(make_store: MakeStore) -> None:
    """A bulk write leaves the saved graph too far behind for a new replica, and makes an
    older replica's tail too long for an exact search: the one builds a graph anew, the
    other reads it."""
    schema, sql = await _writer(make_store)
    kept: Kept = {}
    await _write_vectors(sql, random.Random(46), range(120), kept)
    first = await _replica(make_store, schema, **GRAPHS | REFRESHING)
    await _loaded(first)
    a = first.local_keywords
    assert a is not None
    await a.settle()
    ns_id = await _ns_id(first)
    # 60 more: past a quarter of the namespace, too many to search exactly beside a graph.
    await _write_vectors(sql, random.Random(47), range(120, 180), kept)
    second = await _replica(make_store, schema, **GRAPHS | REFRESHING)
    await _loaded(second)
    b = second.local_keywords
    assert b is not None
    await b.settle()
    assert (b.loads_saved, b.graphs_built) == (1, 1)
    regained = b.get(ns_id)
    assert regained is not None and regained.graph is not None
    assert regained.graph.count == len(kept) and regained.vectors is not None
    before = second.local_vector_searches
    await _assert_nearest(second, kept)
    assert second.local_vector_searches == before + 5
    # The first replica's catch-up drops its graph; it reads the one just built.
    await _assert_nearest(first, kept)
    await a.settle()
    assert (a.graphs_built, a.graphs_extended) == (1, 0)
    read = a.get(ns_id)
    assert read is not None and read.graph is not None
    assert read.graph.covered == regained.graph.covered
    before = first.local_vector_searches
    await _assert_nearest(first, kept)
    assert first.local_vector_searches == before + 5
