"""PostgresStore against a real PostgreSQL with pgvector (``scripts/pg-start``).

Every test works in a fresh PostgreSQL schema (``Config.db_schema``), dropped afterwards.
The server is ``$RAGTIDE_TEST_PG_URL``, by default the one ``scripts/pg-start`` runs.
"""

from __future__ import annotations

import asyncio
import os
import socket
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from ragtide.builtin.postgres_store import SCHEMA_VERSION, PostgresStore
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.components import DocumentStore
from ragtide.errors import BackendUnavailable, InvalidRequest
from ragtide.testing import DocumentStoreContract
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Chunk, Condition, Filter

pytestmark = pytest.mark.integration

URL = os.environ.get("RAGTIDE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5433/ragtide")
HANG_GUARD_S = 30  # fails a hung call; the expected failures take a few seconds at most

MakeStore = Callable[..., Awaitable[PostgresStore]]


def _unit(rows: Any) -> np.ndarray[Any, np.dtype[np.float32]]:
    m = np.asarray(rows, dtype=np.float32)
    unit: np.ndarray[Any, np.dtype[np.float32]] = m / np.linalg.norm(m, axis=1, keepdims=True)
    return unit


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def make_store() -> AsyncIterator[MakeStore]:
    """Started stores, each in a fresh schema unless ``db_schema`` is given; all dropped."""
    stores: list[PostgresStore] = []
    schemas: set[str] = set()

    async def make(**overrides: Any) -> PostgresStore:
        overrides.setdefault("db_schema", f"test_{uuid.uuid4().hex[:16]}")
        overrides.setdefault("url", URL)
        overrides.setdefault("max_pool_size", 4)
        schemas.add(overrides["db_schema"])
        store = PostgresStore(PostgresStore.Config(**overrides))
        stores.append(store)
        await store.start()
        return store

    yield make
    for store in stores:
        await store.aclose()
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        for schema in schemas:
            await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


class TestPostgresStore(DocumentStoreContract):
    @pytest.fixture
    async def store(self, make_store: MakeStore) -> PostgresStore:
        return await make_store()


async def _put(
    store: DocumentStore,
    doc_id: str,
    texts: list[str],
    vectors: Any = None,
    *,
    ns: str = "ns",
    metadata: dict[str, object] | None = None,
    embedder: str = "e",
    title: str = "",
    headings: tuple[str, ...] = (),
) -> None:
    chunks = [
        Chunk(c.id, c.document_id, c.ordinal, c.text, title or c.title, headings, c.metadata)
        for c in make_chunks(doc_id, texts, metadata=metadata)
    ]
    matrix = _unit(vectors if vectors is not None else [[1.0, 0.5]] * len(texts))
    await store.put_document(ns, make_document(doc_id), chunks, matrix, embedder)


async def _ranking(store: DocumentStore, query: str) -> list[tuple[str, float]]:
    return [(h.chunk.id, h.score) for h in await store.keyword_search("ns", query, 50, Filter())]


CORPUS = {
    "d1": ["Alzheimer's disease and the amyloid cascade", "Amyloid plaques in mice"],
    "d2": ["Cancer cells divide; the cells of tumours divide faster", "p53 and cancer"],
    "d3": ["Mice lacking p53 develop tumours early", "Diet, exercise and disease risk"],
    "d4": ["Exercise improves insulin sensitivity in mice and men"],
}
QUERIES = [
    "alzheimer's amyloid",
    "cancer cells dividing",
    "mice p53 tumours",
    "exercise disease risk in mice",
]


def _assert_same_ranking(
    got: list[tuple[str, float]], want: list[tuple[str, float]], rel: float
) -> None:
    """Same chunks with the same scores, best first (tied chunks may come in any order)."""
    assert dict(got) == pytest.approx(dict(want), rel=rel)
    assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)


@pytest.mark.anyio
async def test_keyword_scores_equal_the_sqlite_store(make_store: MakeStore, tmp_path: Path) -> None:
    pg = await make_store()
    lite = SQLiteStore(SQLiteStore.Config(path=tmp_path / "db.sqlite"))
    await lite.start()
    try:
        for store in (pg, lite):
            for doc_id, texts in CORPUS.items():
                await _put(store, doc_id, texts, title=f"Study {doc_id}", headings=("Results",))
        for query in QUERIES:
            # SQLite scores in float32, PostgreSQL in float64.
            got = await _ranking(pg, query)
            assert len(got) >= 2
            _assert_same_ranking(got, await _ranking(lite, query), 1e-5)
    finally:
        await lite.aclose()


@pytest.mark.anyio
async def test_replace_and_delete_keep_bm25_statistics_exact(make_store: MakeStore) -> None:
    churned = await make_store()
    for doc_id, texts in CORPUS.items():
        await _put(churned, doc_id, texts)
    await _put(churned, "d3", ["Tumours in old mice", "Insulin and exercise"])  # replace
    assert await churned.delete_document("ns", "d2") is True
    await _put(churned, "d5", ["Cancer cells everywhere"])
    assert await churned.delete_document("ns", "d5") is True

    fresh = await make_store()
    await _put(fresh, "d1", CORPUS["d1"])
    await _put(fresh, "d3", ["Tumours in old mice", "Insulin and exercise"])
    await _put(fresh, "d4", CORPUS["d4"])
    for query in [*QUERIES, "cancer cells everywhere"]:
        _assert_same_ranking(await _ranking(churned, query), await _ranking(fresh, query), 1e-12)
    assert await churned.keyword_search("ns", "cancer everywhere", 10, Filter()) == []


@pytest.mark.anyio
async def test_concurrent_writes_to_one_namespace_keep_statistics(make_store: MakeStore) -> None:
    texts = {f"doc{i}": [f"common words here {i}", f"rare{i % 4} term {i}"] for i in range(24)}
    concurrent, sequential = await make_store(), await make_store()
    await asyncio.gather(*(_put(concurrent, d, t) for d, t in texts.items()))
    await asyncio.gather(*(concurrent.delete_document("ns", f"doc{i}") for i in range(0, 24, 3)))
    for doc_id, doc_texts in texts.items():
        if int(doc_id[3:]) % 3:
            await _put(sequential, doc_id, doc_texts)
    assert await concurrent.counts("ns") == await sequential.counts("ns") == (16, 32)
    for query in ["common words", "rare1 term", "rare3 words 7"]:
        got, want = await _ranking(concurrent, query), await _ranking(sequential, query)
        _assert_same_ranking(got, want, 1e-12)


@pytest.mark.anyio
async def test_ten_replicas_starting_at_once_migrate_once(make_store: MakeStore) -> None:
    schema = f"test_{uuid.uuid4().hex[:16]}"
    stores = await asyncio.wait_for(
        asyncio.gather(*(make_store(db_schema=schema, max_pool_size=1) for _ in range(10))),
        HANG_GUARD_S,
    )
    for store in stores:
        await store.ping()
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute(f"SELECT version FROM {schema}.schema_version ORDER BY 1")
        assert [r[0] for r in await cur.fetchall()] == list(range(1, SCHEMA_VERSION + 1))
    # Their first writes race to build the vector index: one builds it, none fails.
    writes = (
        _put(store, f"d{i}", [f"written by replica {i}"], ns=f"ns{i % 3}")
        for i, store in enumerate(stores)
    )
    await asyncio.wait_for(asyncio.gather(*writes), HANG_GUARD_S)
    hits = await stores[9].keyword_search("ns0", "replica 3", 5, Filter())
    assert [h.document_id for h in hits][:1] == ["d3"]


@pytest.mark.anyio
async def test_closed_port_raises_backend_unavailable() -> None:
    url = f"postgresql://postgres@127.0.0.1:{_free_port()}/ragtide"
    store = PostgresStore(PostgresStore.Config(url=url, connect_timeout_s=2))
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(store.start(), HANG_GUARD_S)
    with pytest.raises(BackendUnavailable):  # not started: no pool, no raw error
        await store.ping()


class _Proxy:
    """A TCP relay to the server that the test can cut, as a lost network would."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._server: asyncio.Server | None = None
        self._relays: set[asyncio.Task[None]] = set()
        info = psycopg.conninfo.conninfo_to_dict(URL)
        self._upstream = (str(info.get("host") or "127.0.0.1"), int(info.get("port") or 5432))

    @property
    def url(self) -> str:
        return psycopg.conninfo.make_conninfo(URL, host="127.0.0.1", port=self.port)

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._relay, "127.0.0.1", self.port)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._relays.add(task)
        up: asyncio.StreamWriter | None = None
        try:
            up_reader, up = await asyncio.open_connection(*self._upstream)
            pipes = [
                asyncio.create_task(_pipe(reader, up)),
                asyncio.create_task(_pipe(up_reader, writer)),
            ]
            try:
                await asyncio.wait(pipes, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for pipe in pipes:
                    pipe.cancel()
                await asyncio.gather(*pipes, return_exceptions=True)
        except (OSError, asyncio.CancelledError):
            pass  # cut, or the server went away: the client sees its socket drop
        finally:
            for w in (writer, up):
                if w is not None:
                    w.transport.abort()
            self._relays.discard(task)

    async def cut(self) -> None:
        """Stop accepting and drop every open connection."""
        assert self._server is not None
        self._server.close()
        for task in list(self._relays):
            task.cancel()
        await asyncio.gather(*self._relays, return_exceptions=True)
        await self._server.wait_closed()


async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
    while data := await src.read(65536):
        dst.write(data)
        await dst.drain()


@pytest.mark.anyio
async def test_lost_server_raises_backend_unavailable_then_recovers(
    make_store: MakeStore,
) -> None:
    proxy = _Proxy(_free_port())
    await proxy.start()
    store = await make_store(url=proxy.url, pool_timeout_s=1, connect_timeout_s=2)
    await _put(store, "d", ["still here"])
    await proxy.cut()
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(store.keyword_search("ns", "still", 5, Filter()), HANG_GUARD_S)
    with pytest.raises(BackendUnavailable):
        await asyncio.wait_for(store.ping(), HANG_GUARD_S)
    await proxy.start()  # the network is back: the pool reconnects (with backoff)
    for _ in range(30):  # each failed try waits pool_timeout_s for a connection
        try:
            hits = await asyncio.wait_for(
                store.keyword_search("ns", "still", 5, Filter()), HANG_GUARD_S
            )
            break
        except BackendUnavailable:
            continue
    assert [h.document_id for h in hits] == ["d"]
    await proxy.cut()


async def _terminate(pid: int) -> None:
    """End the server side of connection ``pid`` (as a restarted server or a failover
    would)."""
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute("SELECT pg_terminate_backend(%s)", (pid,))
        assert await cur.fetchone() == (True,)


@pytest.mark.anyio
@pytest.mark.parametrize("idle_s", [0.0, 3600.0])
async def test_a_pooled_connection_is_checked_once_idle_not_when_just_back(
    make_store: MakeStore, idle_s: float
) -> None:
    # One pooled connection; its server side ends between two searches. Checked before
    # it is lent (idle_s 0), it is replaced unseen; just back from a search and not
    # checked (idle_s 3600: what saves a round trip per statement), the next search fails
    # as a 503 and the pool replaces it for the one after.
    store = await make_store(min_pool_size=1, max_pool_size=1, pool_check_idle_s=idle_s)
    await _put(store, "d", ["still here"])
    assert await _ranking(store, "still")
    ((pid,),) = await store._fetch("SELECT pg_backend_pid()")  # the one pooled connection
    await _terminate(pid)
    if idle_s == 0:
        assert [c for c, _ in await _ranking(store, "still")] == ["d#0"]
    else:
        with pytest.raises(BackendUnavailable):
            await _ranking(store, "still")
        assert [c for c, _ in await _ranking(store, "still")] == ["d#0"]


@pytest.mark.anyio
@pytest.mark.parametrize("cache_s", [0.0, 3600.0])
async def test_another_replicas_deletion_shows_within_namespace_cache_s(
    make_store: MakeStore, cache_s: float
) -> None:
    a = await make_store()
    b = await make_store(db_schema=a._config.db_schema, namespace_cache_s=cache_s)
    await _put(a, "d", ["still here"])
    assert await b.namespace_exists("ns")
    assert await a.delete_namespace("ns")
    assert not await a.namespace_exists("ns")  # the replica that deleted it knows at once
    # The other replica takes it to exist for up to cache_s, finding nothing in it...
    assert await b.namespace_exists("ns") is (cache_s > 0)
    assert await b.keyword_search("ns", "still", 5, Filter()) == []
    # ... and once a search found it gone, it knows.
    assert not await b.namespace_exists("ns")


@pytest.mark.anyio
async def test_filtered_vector_search_fills_top_k_from_the_index(make_store: MakeStore) -> None:
    # ef_search=10 alone would find about one "rare" chunk among the ten nearest;
    # the iterative scan keeps going until the filter yields all ten.
    store = await make_store(hnsw_ef_search=10)
    rng = np.random.default_rng(7)
    vectors = _unit(rng.normal(size=(20 * 20, 8)))
    for d in range(20):
        acl = "rare" if d == 3 else "common"
        texts = [f"chunk {i}" for i in range(20)]
        await _put(store, f"doc{d}", texts, vectors[d * 20 : d * 20 + 20], metadata={"acl": acl})
    query = _unit(rng.normal(size=(1, 8)))[0]
    hits = await store.vector_search("ns", query, 10, Filter.any_of("acl", ["rare"]))
    exact = np.argsort(-(vectors[60:80] @ query))[:10]
    assert {h.document_id for h in hits} == {"doc3"}
    assert [h.chunk.ordinal for h in hits] == [int(i) for i in exact]
    assert [h.score for h in hits] == pytest.approx((vectors[60:80] @ query)[exact], abs=1e-5)
    assert store.exact_scans == 0  # answered by the HNSW index, not the exact fallback


@pytest.mark.anyio
async def test_short_results_fall_back_to_an_exact_scan(make_store: MakeStore) -> None:
    store = await make_store()
    await _put(store, "a", ["x", "y"], [[1, 0], [0, 1]])
    hits = await store.vector_search("ns", _unit([[1, 0.2]])[0], 10, Filter())
    assert [h.chunk.text for h in hits] == ["x", "y"]
    assert store.exact_scans == 1


@pytest.mark.anyio
async def test_vectors_of_several_dimensions_coexist(make_store: MakeStore) -> None:
    store = await make_store()
    await _put(store, "three", ["three dims"], [[1, 0, 0]], ns="a", embedder="e3")
    await _put(store, "five", ["five dims"], [[1, 0, 0, 0, 0]], ns="b", embedder="e5")
    hits = await store.vector_search("a", _unit([[1, 0, 0]])[0], 5, Filter())
    assert [h.document_id for h in hits] == ["three"]
    hits = await store.vector_search("b", _unit([[1, 0, 0, 0, 0]])[0], 5, Filter())
    assert [h.document_id for h in hits] == ["five"]
    assert await store.vector_search("b", _unit([[1, 0, 0]])[0], 5, Filter()) == []
    # A new embedder in a namespace: only its vectors are searched, like SQLiteStore.
    await _put(store, "newer", ["new model"], [[0, 1, 0, 0]], ns="a", embedder="e4")
    assert await store.vector_search("a", _unit([[1, 0, 0]])[0], 5, Filter()) == []
    hits = await store.vector_search("a", _unit([[0, 1, 0, 0]])[0], 5, Filter())
    assert [h.document_id for h in hits] == ["newer"]


@pytest.mark.anyio
async def test_metadata_filters_follow_condition_matches(make_store: MakeStore) -> None:
    store = await make_store()
    values: dict[str, object] = {
        "s": "hr",
        "lst": ["hr", "all"],
        "num": 5,
        "flag": True,
        "none": None,
        "mixed": [1, "x", None],
        "empty": [],
    }
    for name, value in values.items():
        await _put(store, name, ["report"], metadata={"acl": value})
    await _put(store, "missing", ["report"], metadata={"other": "hr"})
    all_docs = [*values, "missing"]
    for wanted in (["hr"], ["all"], ["5"], ["True"], ["1", "None"], ["x"], []):
        cond = Condition("acl", frozenset(wanted))
        expected = {
            d for d in all_docs if cond.matches(d, {"acl": values[d]} if d in values else {})
        }
        filt = Filter((cond,))
        kw = await store.keyword_search("ns", "report", 50, filt)
        vec = await store.vector_search("ns", _unit([[1, 0.5]])[0], 50, filt)
        assert {h.document_id for h in kw} == expected, wanted
        assert {h.document_id for h in vec} == expected, wanted


@pytest.mark.anyio
async def test_rejected_data_raises_invalid_request_and_writes_nothing(
    make_store: MakeStore,
) -> None:
    store = await make_store()
    await _put(store, "d", ["first version"])
    with pytest.raises(InvalidRequest):
        await _put(store, "d", ["nul \x00 byte"])
    with pytest.raises(InvalidRequest):
        await store.put_document(
            "ns", make_document("d"), make_chunks("d", ["x"]), np.full((1, 2), np.nan), "e"
        )
    hits = await store.keyword_search("ns", "first version", 5, Filter())
    assert [h.chunk.text for h in hits] == ["first version"]
    assert await store.counts("ns") == (1, 1)
