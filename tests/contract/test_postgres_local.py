"""Replica-local keyword indexes (``ragtide.builtin._pg_local``) against a real PostgreSQL.

One store writes and ranks every search in SQL, exactly (``keyword_candidates=0``); a
second, a replica of its own, ranks in memory and must return the same chunks with the
same scores after every kind of write the first makes.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import uuid
from collections.abc import Iterable
from typing import Any

import numpy as np
import psycopg
import pytest
from prometheus_client import REGISTRY

from ragtide.builtin import _pg_local, postgres_store
from ragtide.builtin.postgres_store import _FILTERED_FIRST, PostgresStore
from ragtide.types import Filter
from tests.contract.test_postgres_store import URL, MakeStore, _put, make_store

__all__ = ["make_store"]  # the fixture, imported for its side effect on pytest

pytestmark = pytest.mark.integration


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


WORDS = [f"{stem}{suffix}" for stem in ("amyloid", "tumour", "insulin", "kinase", "neuron",
         "plasma", "vector", "cohort", "enzyme", "retina", "lipid", "spleen") for suffix in
         ("", "ic", "ase", "osis", "ology")]  # fmt: skip
QUERIES = ["amyloid tumour", "insulin kinaseic neuron", "plasma", "cohortosis enzyme lipid",
           "retina spleenology vectorase amyloidic"]  # fmt: skip


def _texts(rng: random.Random, n: int) -> list[str]:
    weights = [1 / (i + 1) for i in range(len(WORDS))]  # a few common words, many rare
    return [" ".join(rng.choices(WORDS, weights, k=rng.randint(3, 25))) for _ in range(n)]


async def _writer(make_store: MakeStore, **overrides: Any) -> tuple[str, PostgresStore]:
    """A store in a fresh schema that searches in SQL, exactly; and the schema."""
    schema = f"test_{uuid.uuid4().hex[:16]}"
    config = {"local_keyword_mb": 0, "keyword_candidates": 0} | overrides
    return schema, await make_store(db_schema=schema, **config)


async def _pair(
    make_store: MakeStore, *, notified: bool = False
) -> tuple[PostgresStore, PostgresStore]:
    """A writer that searches in SQL, exactly, and a replica of the same schema that
    searches locally; unless ``notified``, the replica does not LISTEN for writes, so it
    catches up when a search finds its index behind, as many times as the tests count."""
    schema, sql = await _writer(make_store)
    local = await make_store(
        db_schema=schema, local_keyword_min_chunks=0, local_notifications=notified
    )
    return sql, local


async def _top(store: PostgresStore, query: str, ns: str = "ns") -> dict[str, float]:
    hits = await store.keyword_search(ns, query, 500, Filter())
    scores = [h.score for h in hits]
    assert scores == sorted(scores, reverse=True)
    return {h.chunk.id: h.score for h in hits}


async def _assert_same(sql: PostgresStore, local: PostgresStore, ns: str = "ns") -> None:
    for query in QUERIES:
        want = await _top(sql, query, ns)
        assert want, query
        assert await _top(local, query, ns) == pytest.approx(want, rel=1e-5)
    assert sql.local_keyword_searches == 0


async def _loaded(local: PostgresStore, ns: str = "ns") -> None:
    """Search once (answered in SQL, starting the load) and wait for the load."""
    assert local.local_keywords is not None
    await local.keyword_search(ns, "amyloid", 1, Filter())
    await local.local_keywords.settle()


def _count_connections(store: PostgresStore) -> list[int]:
    """A list that grows by one each time ``store``'s local indexes open a connection of
    their own (not a pooled one)."""
    assert store.local_keywords is not None
    opened: list[int] = []
    connect = store.local_keywords._connect

    async def counted() -> Any:
        opened.append(1)
        return await connect()

    store.local_keywords._connect = counted
    return opened


async def _write(
    store: PostgresStore, rng: random.Random, docs: Iterable[int], ns: str = "ns"
) -> None:
    for d in docs:
        await _put(store, f"doc{d}", _texts(rng, rng.randint(1, 3)), ns=ns)


@pytest.mark.anyio
async def test_local_ranking_equals_sql_and_follows_every_write(make_store: MakeStore) -> None:
    sql, local = await _pair(make_store)
    assert local.local_keywords is not None
    rng = random.Random(7)
    await _write(sql, rng, range(60))
    loads = _sample("ragtide_local_keyword_index_updates_total", kind="load")
    await _loaded(local)
    assert local.local_keywords.loads == 1
    assert _sample("ragtide_local_keyword_index_updates_total", kind="load") == loads + 1
    ranked = _sample("ragtide_postgres_searches_total", kind="keyword", ranked="replica")
    await _assert_same(sql, local)
    assert local.local_keyword_searches == len(QUERIES)
    assert _sample(
        "ragtide_postgres_searches_total", kind="keyword", ranked="replica"
    ) == ranked + len(QUERIES)
    # The index is accounted in the budget gauge (with any other live store's).
    assert local.local_keywords.nbytes > 0
    assert _sample("ragtide_budget_bytes", store="keyword_indexes") >= local.local_keywords.nbytes

    await _write(sql, rng, range(60, 80))  # new documents
    await _write(sql, rng, range(0, 20, 2))  # replaced ones
    for d in range(1, 20, 4):
        assert await sql.delete_document("ns", f"doc{d}")
    await _assert_same(sql, local)
    # Brought up to date from the change log, not loaded again.
    assert (local.local_keywords.loads, local.local_keywords.catch_ups) == (1, 1)

    # Searches that find the index behind at once wait for one catch-up.
    await _write(sql, rng, range(80, 90))
    searches = (local.keyword_search("ns", q, 500, Filter()) for q in QUERIES * 4)
    await asyncio.gather(*searches)
    assert local.local_keywords.catch_ups == 2
    await _assert_same(sql, local)

    # Deleted down to a few: the index is compacted on the way, still exact.
    for d in range(20, 78):
        await sql.delete_document("ns", f"doc{d}")
    await _assert_same(sql, local)
    assert local.local_keywords.loads == 1


@pytest.mark.anyio
async def test_a_hit_deleted_after_ranking_is_never_returned(make_store: MakeStore) -> None:
    sql, local = await _pair(make_store)
    rng = random.Random(11)
    await _write(sql, rng, range(30))
    await _loaded(local)
    best = (await local.keyword_search("ns", "amyloid", 1, Filter()))[0].chunk
    await sql.delete_document("ns", best.document_id)
    got = await _top(local, "amyloid")
    assert best.id not in got
    assert got == pytest.approx(await _top(sql, "amyloid"), rel=1e-5)


@pytest.mark.anyio
async def test_namespaces_stay_apart_and_a_namespace_made_again_is_loaded_again(
    make_store: MakeStore,
) -> None:
    sql, local = await _pair(make_store)
    assert local.local_keywords is not None
    rng = random.Random(3)
    await _write(sql, rng, range(40), ns="a")
    await _write(sql, rng, range(40), ns="b")  # the same document ids, other texts
    await _loaded(local, "a")
    await _loaded(local, "b")
    await _assert_same(sql, local, "a")
    await _assert_same(sql, local, "b")
    assert await _top(local, "amyloid", "a") != await _top(local, "amyloid", "b")

    assert await sql.delete_namespace("b")
    assert await local.keyword_search("b", "amyloid", 10, Filter()) == []
    await _write(sql, rng, range(10), ns="b")
    await _loaded(local, "b")
    await _assert_same(sql, local, "b")
    assert local.local_keywords.loads == 3


@pytest.mark.anyio
async def test_writes_the_log_does_not_cover_reload_the_index(make_store: MakeStore) -> None:
    """A writer that logs nothing (an older version during a rolling update): the counts
    disagree, the search is answered in SQL, and the namespace is loaded again."""
    sql, local = await _pair(make_store)
    assert local.local_keywords is not None
    rng = random.Random(5)
    await _write(sql, rng, range(30))
    await _loaded(local)
    await _write(sql, rng, range(30, 40))
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        schema = sql._config.db_schema
        await conn.execute(f"DELETE FROM {schema}.chunk_changes")
    await _assert_same(sql, local)  # in SQL: the catch-up found the index stale
    await local.local_keywords.settle()
    await _loaded(local)
    assert local.local_keywords.loads == 2
    await _assert_same(sql, local)

    # A replacement by as many chunks, unlogged: the token count gives it away.
    chunks = len(await sql.document_chunks("ns", "doc3"))
    await _put(sql, "doc3", ["amyloid plasma tumour insulin neuron kinase"] * chunks)
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        await conn.execute(f"DELETE FROM {sql._config.db_schema}.chunk_changes")
    await _assert_same(sql, local)
    await local.local_keywords.settle()
    await _loaded(local)
    assert local.local_keywords.loads == 3
    await _assert_same(sql, local)


@pytest.mark.anyio
async def test_namespaces_under_min_chunks_are_searched_in_sql(make_store: MakeStore) -> None:
    schema, sql = await _writer(make_store)
    rng = random.Random(9)
    await _write(sql, rng, range(20))
    small = await make_store(db_schema=schema, local_keyword_min_chunks=100)
    assert small.local_keywords is not None
    opened = _count_connections(small)
    await _loaded(small)
    assert small.local_keywords.loads == 0  # too few chunks: searched in SQL
    assert not opened  # asked on a pooled connection: no backend of its own
    await _assert_same(sql, small)
    assert small.local_keyword_searches == 0


@pytest.mark.anyio
async def test_weighted_columns_search_in_sql(make_store: MakeStore) -> None:
    store = await make_store(title_weight=2.0, local_keyword_min_chunks=0)
    assert store.local_keywords is None


@pytest.mark.anyio
async def test_the_log_keeps_its_last_generations_and_older_indexes_reload(
    make_store: MakeStore,
) -> None:
    schema, sql = await _writer(make_store, change_log_generations=3)
    local = await make_store(
        db_schema=schema, local_keyword_min_chunks=0, local_notifications=False
    )
    assert local.local_keywords is not None
    rng = random.Random(13)
    await _write(sql, rng, range(20))
    await _loaded(local)
    await _write(sql, rng, range(20, 22))  # within the log: caught up
    await _assert_same(sql, local)
    assert local.local_keywords.catch_ups == 1
    await _write(sql, rng, range(22, 30))
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute(
            f"SELECT min(generation), max(generation) FROM {schema}.chunk_changes"
        )
        oldest, newest = await cur.fetchone() or (None, None)
    assert newest is not None and oldest is not None and newest - oldest < 3
    await _assert_same(sql, local)  # in SQL: what the index lacks is pruned
    await _loaded(local)
    assert (local.local_keywords.loads, local.local_keywords.catch_ups) == (2, 1)
    await _assert_same(sql, local)


@pytest.mark.anyio
async def test_warm_loads_the_largest_namespaces_the_budget_holds(make_store: MakeStore) -> None:
    schema, sql = await _writer(make_store)
    rng = random.Random(17)
    await _write(sql, rng, range(30), ns="big")
    await _write(sql, rng, range(12), ns="small")
    await _write(sql, rng, range(2), ns="tiny")
    local = await make_store(
        db_schema=schema, local_keyword_min_chunks=10, local_notifications=False
    )
    assert local.local_keywords is not None
    await local.warm()
    await local.local_keywords.settle()
    assert local.local_keywords.loads == 2  # "tiny" has fewer than 10 chunks
    for ns in ("big", "small"):
        await _assert_same(sql, local, ns)
    assert local.local_keyword_searches == 2 * len(QUERIES)  # the first searches included


@pytest.mark.anyio
async def test_filtered_searches_are_ranked_locally_and_checked_by_the_database(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql, local = await _pair(make_store)
    rng = random.Random(19)
    for d in range(200):
        texts = _texts(rng, rng.randint(1, 3))
        await _put(sql, f"doc{d}", texts, metadata={"group": f"g{d % 50}", "all": "yes"})
    await _loaded(local)
    filters = [
        Filter.any_of("all", ["yes"]),  # admits every chunk: the first ranking suffices
        Filter.any_of("group", ["g3"]),  # 4 documents of 200: ranked 8x deeper
        Filter.any_of("group", ["g3", "g7"]) & Filter.any_of("document_id", ["doc7", "doc3"]),
        Filter.any_of("group", ["none"]),  # admits nothing
    ]
    for i, where in enumerate(filters):
        for query in QUERIES:
            want = await sql.keyword_search("ns", query, 10, where)
            got = await local.keyword_search("ns", query, 10, where)
            assert [h.chunk.id for h in got] == [h.chunk.id for h in want], (i, query)
            assert [h.score for h in got] == pytest.approx([h.score for h in want], rel=1e-5)
            assert all(where.matches(h.document_id, h.chunk.metadata) for h in got)
    assert local.local_keyword_searches == len(filters) * len(QUERIES)

    # No deeper ranking allowed: the narrow filter's searches that needed it go to SQL.
    monkeypatch.setattr(postgres_store, "_FILTERED_DEPTH", _FILTERED_FIRST)
    before = local.local_keyword_searches
    for query in QUERIES:
        want = await sql.keyword_search("ns", query, 10, filters[1])
        got = await local.keyword_search("ns", query, 10, filters[1])
        assert [h.chunk for h in got] == [h.chunk for h in want]
    assert local.local_keyword_searches < before + len(QUERIES)


async def _write_vectors(
    store: PostgresStore,
    rng: random.Random,
    docs: Iterable[int],
    kept: dict[str, tuple[list[float], str]],
    embedder: str = "e",
) -> None:
    """Documents of 1-3 chunks with random 8-dimensional vectors, remembered in ``kept``
    (chunk id -> (vector, embedder)) as the oracle's copy."""
    for d in docs:
        texts = _texts(rng, rng.randint(1, 3))
        vectors = [[rng.gauss(0, 1) for _ in range(8)] for _ in texts]
        for key in [k for k in kept if k.startswith(f"doc{d}#")]:
            del kept[key]
        await _put(store, f"doc{d}", texts, vectors, embedder=embedder)
        for i, v in enumerate(vectors):
            kept[f"doc{d}#{i}"] = (v, embedder)


async def _delete_documents(
    store: PostgresStore, docs: Iterable[int], kept: dict[str, tuple[list[float], str]]
) -> None:
    """Delete documents ``docs`` and their chunks from the oracle's copy."""
    for d in docs:
        assert await store.delete_document("ns", f"doc{d}")
        for key in [k for k in kept if k.startswith(f"doc{d}#")]:
            del kept[key]


def _exact(
    kept: dict[str, tuple[list[float], str]], query: list[float], embedder: str
) -> list[tuple[float, str]]:
    """The ids and cosine similarities of every chunk of ``embedder``, best first."""
    q = np.asarray(query) / np.linalg.norm(query)
    scored = [
        (float(np.asarray(v) @ q / np.linalg.norm(v)), key)
        for key, (v, e) in kept.items()
        if e == embedder
    ]
    return sorted(scored, key=lambda p: -p[0])


async def _assert_nearest(
    local: PostgresStore, kept: dict[str, tuple[list[float], str]], embedder: str = "e"
) -> None:
    rng = random.Random(len(kept))
    for _ in range(5):
        query = [rng.gauss(0, 1) for _ in range(8)]
        hits = await local.vector_search("ns", np.asarray(query, np.float32), 10, Filter())
        want = _exact(kept, query, embedder)[:10]
        assert [h.chunk.id for h in hits] == [key for _, key in want]
        assert [h.score for h in hits] == pytest.approx([s for s, _ in want], abs=1e-5)


async def _assert_both(
    sql: PostgresStore, local: PostgresStore, kept: dict[str, tuple[list[float], str]]
) -> None:
    """``hybrid_search`` gives what ``keyword_search`` (ranked by SQL) and the exact
    nearest chunks give, in one statement."""
    rng = random.Random(len(kept) + 1)
    searches = local.local_vector_searches
    for text in QUERIES:
        query = [rng.gauss(0, 1) for _ in range(8)]
        both = await local.hybrid_search("ns", text, np.asarray(query, np.float32), 10, Filter())
        assert both is not None
        keyword, dense = both
        want = await sql.keyword_search("ns", text, 10, Filter())
        assert [h.chunk for h in keyword] == [h.chunk for h in want]
        assert [h.score for h in keyword] == pytest.approx([h.score for h in want], rel=1e-5)
        nearest = _exact(kept, query, "e")[:10]
        assert [h.chunk.id for h in dense] == [key for _, key in nearest]
        assert [h.score for h in dense] == pytest.approx([s for s, _ in nearest], abs=1e-5)
        assert all(h.chunk.text for h in dense)
    assert local.local_vector_searches == searches + len(QUERIES)
    # With a filter: declined (each list is asked on its own, the filter checked deeper).
    where = Filter.any_of("document_id", ["doc2"])
    assert await local.hybrid_search("ns", "plasma", np.ones(8, np.float32), 10, where) is None


@pytest.mark.anyio
async def test_small_namespaces_vectors_are_searched_exactly_in_the_replica(
    make_store: MakeStore,
) -> None:
    sql, local = await _pair(make_store)
    assert local.local_keywords is not None
    rng = random.Random(23)
    kept: dict[str, tuple[list[float], str]] = {}
    await _write_vectors(sql, rng, range(40), kept)
    await _loaded(local)
    await _assert_nearest(local, kept)
    assert local.local_vector_searches == 5

    # Writes are caught up from the log: new, replaced and deleted documents.
    await _write_vectors(sql, rng, [*range(40, 50), *range(0, 10, 3)], kept)
    await _delete_documents(sql, range(1, 40, 5), kept)
    await _assert_nearest(local, kept)
    assert local.local_keywords.loads == 1
    assert local.local_vector_searches == 10
    await _assert_both(sql, local, kept)
    # Without a replica index of the namespace: declined.
    assert await sql.hybrid_search("ns", "plasma", np.ones(8, np.float32), 10, Filter()) is None

    # Filters are checked by the database on the ranked chunks.
    where = Filter.any_of("document_id", ["doc2", "doc44"])
    query = np.asarray([rng.gauss(0, 1) for _ in range(8)], np.float32)
    hits = await local.vector_search("ns", query, 3, where)
    want = [k for _, k in _exact(kept, query.tolist(), "e") if k.split("#")[0] in {"doc2", "doc44"}]
    assert [h.chunk.id for h in hits] == want[:3]

    # A new embedder: searches cover its chunks only, and the index is loaded again.
    await _write_vectors(sql, rng, range(50, 60), kept, embedder="e2")
    await _assert_nearest(local, kept, "e2")
    await local.local_keywords.settle()
    await _loaded(local)
    assert local.local_keywords.loads == 2
    await _assert_nearest(local, kept, "e2")


@pytest.mark.anyio
async def test_a_replica_loads_one_namespace_at_a_time(make_store: MakeStore) -> None:
    sql, local = await _pair(make_store)
    assert local.local_keywords is not None
    rng = random.Random(29)
    for ns in ("a", "b", "c"):
        await _write(sql, rng, range(15), ns=ns)
    running, most = 0, 0
    load_now = local.local_keywords._load_now

    async def counted(ns_id: int) -> None:
        nonlocal running, most
        running += 1
        most = max(most, running)
        try:
            await load_now(ns_id)
        finally:
            running -= 1

    local.local_keywords._load_now = counted  # type: ignore[method-assign]
    await asyncio.gather(*(local.keyword_search(ns, "amyloid", 5, Filter()) for ns in "abc"))
    await local.local_keywords.settle()
    assert (local.local_keywords.loads, most) == (3, 1)
    for ns in ("a", "b", "c"):
        await _assert_same(sql, local, ns)


@pytest.mark.anyio
async def test_catch_ups_use_pooled_connections_unless_the_change_is_bulk(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql, local = await _pair(make_store)
    assert local.local_keywords is not None
    rng = random.Random(31)
    await _write(sql, rng, range(20))
    await _loaded(local)
    opened = _count_connections(local)
    await _write(sql, rng, range(20, 25))
    await _assert_same(sql, local)
    assert (local.local_keywords.catch_ups, len(opened)) == (1, 0)  # a pooled connection

    monkeypatch.setattr(_pg_local, "_POOLED_CHANGES", 2)  # a "bulk" change from here on
    await _write(sql, rng, range(25, 30))
    await _assert_same(sql, local)
    assert (local.local_keywords.catch_ups, len(opened)) == (2, 1)
    assert local.local_keywords.loads == 1


def _hearing(store: PostgresStore) -> tuple[list[int], asyncio.Event, list[int]]:
    """(the generations the replica's listener hears of, an event set at each and at each
    connection it makes, the backend pids of its connections)."""
    local = store.local_keywords
    assert local is not None
    heard: list[int] = []
    event = asyncio.Event()
    pids: list[int] = []
    hear, listen = local._heard, local._listen
    assert listen is not None

    def recorded(payload: str) -> None:
        hear(payload)
        heard.append(int(payload.rsplit(" ", 1)[1]))
        event.set()

    async def connected() -> Any:
        conn = await listen()
        pids.append(conn.info.backend_pid)
        event.set()
        return conn

    local._heard, local._listen = recorded, connected  # type: ignore[method-assign]
    return heard, event, pids


async def _generation(store: PostgresStore, ns: str = "ns") -> int:
    rows = await store._fetch("SELECT generation FROM namespaces WHERE name = %s", (ns,))
    return int(rows[0][0])


async def _until_heard(
    write: Any, sql: PostgresStore, heard: list[int], event: asyncio.Event
) -> int:
    """Write (``write()``) until the listener hears of a write's generation (one made
    while it is still connecting, or reconnecting, is missed), then that generation."""
    for _ in range(20):
        await write()
        generation = await _generation(sql)
        with contextlib.suppress(TimeoutError):
            while generation not in heard:
                event.clear()
                await asyncio.wait_for(event.wait(), 2)
            return generation
    raise AssertionError("no write was heard of")


async def _listening_pair(
    make_store: MakeStore, seed: int, docs: int
) -> tuple[PostgresStore, PostgresStore, random.Random, int]:
    """``_pair`` with notifications, ``docs`` documents written and the replica's index of
    them loaded: (writer, replica, the documents' random source, the namespace's id)."""
    sql, local = await _pair(make_store, notified=True)
    rng = random.Random(seed)
    await _write(sql, rng, range(docs))
    await _loaded(local)
    ns_id = await sql._searched_ns_id("ns")
    assert ns_id is not None
    return sql, local, rng, ns_id


def _counted_rankings(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """A list that grows by one each time a hybrid search ranks locally."""
    ranked: list[int] = []
    both = postgres_store._both_ranked

    def counted(*args: Any) -> Any:
        ranked.append(1)
        return both(*args)

    monkeypatch.setattr(postgres_store, "_both_ranked", counted)
    return ranked


_QUERY = np.array([1.0, 0.5], np.float32) / np.float32(np.sqrt(1.25))


@pytest.mark.anyio
async def test_a_replica_told_of_a_write_catches_up_before_a_search_asks(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    sql, local, rng, ns_id = await _listening_pair(make_store, 41, 30)
    replica = local.local_keywords
    assert replica is not None
    heard, event, _ = _hearing(local)
    ranked = _counted_rankings(monkeypatch)
    docs = iter(range(30, 100))

    async def write() -> None:
        await _write(sql, rng, range(next(docs), next(docs)))

    generation = await _until_heard(write, sql, heard, event)
    await replica.settle()  # the catch-up the notification started
    assert replica._indexes[ns_id].generation == generation
    catch_ups = replica.catch_ups
    assert catch_ups >= 1
    # The search finds the index current: ranked once, no catch-up of its own.
    assert await local.hybrid_search("ns", "amyloid tumour", _QUERY, 10, Filter()) is not None
    assert (replica.catch_ups, len(ranked)) == (catch_ups, 1)
    await _assert_same(sql, local)

    # A delete is heard of too. A search right after waits for the catch-up under way
    # (or starts it) and ranks once, at the new generation, without the deleted chunk.
    best = (await local.keyword_search("ns", "amyloid", 1, Filter()))[0].chunk
    gone = iter([best.document_id])

    async def delete() -> None:
        assert await sql.delete_document("ns", next(gone))

    generation = await _until_heard(delete, sql, heard, event)
    ranked.clear()
    got = await local.hybrid_search("ns", "amyloid", _QUERY, 10, Filter())
    assert got is not None and best.id not in {h.chunk.id for h in got[0] + got[1]}
    assert len(ranked) == 1
    assert replica._indexes[ns_id].generation == generation
    await _assert_same(sql, local)


@pytest.mark.anyio
async def test_the_listener_comes_back_and_other_schemas_are_not_heard(
    make_store: MakeStore,
) -> None:
    sql, local = await _pair(make_store, notified=True)
    replica = local.local_keywords
    assert replica is not None
    heard, event, pids = _hearing(local)
    _, other = await _writer(make_store)  # another schema, same database and channel
    rng = random.Random(43)
    await _write(sql, rng, range(10))
    await _loaded(local)
    docs = iter(range(10, 200))
    written: list[int] = []

    async def write() -> None:
        written.append(next(docs))
        await _write(sql, rng, written[-1:])

    await _until_heard(write, sql, heard, event)
    assert _sample("ragtide_local_index_listeners") >= 1
    counted = _sample("ragtide_local_index_notifications_total")
    notifications, before = replica.notifications, len(written)
    await _write(other, rng, range(5))
    generation = await _until_heard(write, sql, heard, event)
    # One for each write of this schema, none of the other schema's five
    assert replica.notifications - notifications == len(written) - before
    assert _sample("ragtide_local_index_notifications_total") - counted == len(written) - before
    assert len(pids) == 1

    # Its backend terminated, the listener connects again and hears the writes after.
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        await admin.execute("SELECT pg_terminate_backend(%s)", (pids[0],))
    assert await _until_heard(write, sql, heard, event) > generation
    assert len(pids) == 2
    await _assert_same(sql, local)


@pytest.mark.anyio
async def test_a_notification_the_database_never_reached_is_not_waited_for(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NOTIFY no write sent (anyone with the database's credentials can send one), or
    one a lagging read replica lacks: one catch-up finds the database behind it and it is
    forgotten; the searches after do not each start a catch-up for it."""
    sql, local, rng, ns_id = await _listening_pair(make_store, 44, 20)
    replica = local.local_keywords
    assert replica is not None
    heard, event, _ = _hearing(local)
    docs = iter(range(20, 200))

    async def write() -> None:
        await _write(sql, rng, range(next(docs), next(docs)))

    await _until_heard(write, sql, heard, event)  # the listener is connected
    await replica.settle()
    real = await _generation(sql)
    ranked = _counted_rankings(monkeypatch)
    forged = real + 1_000_000
    ahead = _sample("ragtide_local_index_notifications_ahead_total")
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as admin:
        payload = f"{replica._schema} {ns_id} {forged}"
        await admin.execute("SELECT pg_notify(%s, %s)", (_pg_local.CHANNEL, payload))
    while forged not in heard:
        event.clear()
        await asyncio.wait_for(event.wait(), 10)
    catch_ups = replica.catch_ups
    for _ in range(5):
        assert await local.hybrid_search("ns", "amyloid", _QUERY, 10, Filter()) is not None
    await replica.settle()
    # One catch-up (the notification's, or the first search's) found the database at its
    # real generation; none of the other searches started another.
    assert replica.catch_ups - catch_ups == 1
    assert _sample("ragtide_local_index_notifications_ahead_total") - ahead == 1
    assert replica._notified[ns_id] == real == replica._indexes[ns_id].generation
    assert len(ranked) == 5  # each search ranked once, at the index's generation

    # Real writes are still heard of: a search waits for them again.
    generation = await _until_heard(write, sql, heard, event)
    assert replica._notified[ns_id] == generation
    index = await replica.current(ns_id)
    assert index is not None and index.generation == generation
    await _assert_same(sql, local)


@pytest.mark.anyio
async def test_a_search_catches_up_once_and_does_not_chase_writes_that_came_while_it_ran(
    make_store: MakeStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Under a stream of writes a search catches its index up once (to every write before
    it began) and serves what it ranked then, though another write has landed since; the
    next search catches up to that one."""
    sql, local = await _pair(make_store)  # no notifications: the statements find the writes
    replica = local.local_keywords
    assert replica is not None
    rng = random.Random(45)
    await _write(sql, rng, range(20))
    await _loaded(local)
    ns_id = await sql._searched_ns_id("ns")
    assert ns_id is not None
    ranked = _counted_rankings(monkeypatch)
    catch_up = replica.catch_up
    meanwhile = iter(range(100, 110))

    async def and_another_write(ns: int, generation: int, **told: Any) -> Any:
        caught = await catch_up(ns, generation, **told)
        await _write(sql, rng, [next(meanwhile)])  # lands while the search goes on
        return caught

    monkeypatch.setattr(replica, "catch_up", and_another_write)
    await _write(sql, rng, [20])  # before the search: it must find this one
    before = await _generation(sql)
    catch_ups, searches = replica.catch_ups, local.local_keyword_searches
    hits = await local.hybrid_search("ns", "amyloid tumour kinase", _QUERY, 50, Filter())
    assert hits is not None  # served by the replica, not left to SQL
    assert local.local_keyword_searches == searches + 1
    assert (replica.catch_ups - catch_ups, len(ranked)) == (1, 2)  # one catch-up, ranked twice
    assert replica._indexes[ns_id].generation == before < await _generation(sql)
    assert "doc20" in {h.chunk.document_id for h in hits[0] + hits[1]}

    monkeypatch.setattr(replica, "catch_up", catch_up)
    latest = await _generation(sql)
    assert await local.hybrid_search("ns", "amyloid", _QUERY, 10, Filter()) is not None
    assert replica._indexes[ns_id].generation == latest
    await _assert_same(sql, local)
