"""The PostgreSQL store's tables partitioned by namespace (migration 6): the partitions and
their keys, pruning to one partition (EXPLAIN ANALYZE of the statements the store runs),
two tenants' namespaces in their partitions, migrating a version-5 database with its
rows, and bulk loads building the partitioned indexes partition by partition."""

from __future__ import annotations

import hashlib
import re
import uuid
from typing import Any

import numpy as np
import psycopg
import pytest

from ragtide.builtin._pg_sql import (
    DELETE_CHUNKS,
    PARTITIONED,
    PARTITIONS,
    POSTINGS_INDEX,
    SCHEMA_VERSION,
)
from ragtide.builtin.postgres_store import PostgresStore
from ragtide.testing.fakes import make_chunks, make_document
from ragtide.types import Condition, Filter
from tests.contract.pg_versions import write_schema_at
from tests.contract.test_postgres_store import URL, MakeStore, _unit, make_store

pytestmark = [pytest.mark.integration, pytest.mark.anyio]
__all__ = ["make_store"]  # the fixture, imported for its side effect on pytest

WORDS = [f"w{i}" for i in range(40)]


def _writes(seed: int, docs: int, *, prefix: str = "d") -> list[Any]:
    """Documents of one or two chunks over a skewed vocabulary, with a metadata field."""
    rng = np.random.default_rng(seed)
    weights = np.array([1 / (i + 1) for i in range(len(WORDS))])
    weights /= weights.sum()
    writes = []
    for i in range(docs):
        texts = [
            " ".join(rng.choice(WORDS, size=int(rng.integers(3, 20)), p=weights))
            for _ in range(int(rng.integers(1, 3)))
        ]
        doc_id = f"{prefix}{i}"
        chunks = make_chunks(doc_id, texts, metadata={"parity": str(i % 2)})
        vectors = _unit(rng.normal(size=(len(texts), 4)))
        writes.append((make_document(doc_id, content_hash=f"h{seed}"), chunks, vectors))
    return writes


async def _sql(sql: str, params: Any = None) -> list[tuple[Any, ...]]:
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        cur = await conn.execute(sql, params)
        return await cur.fetchall()


async def _namespace_id(schema: str, namespace: str) -> int:
    rows = await _sql(f"SELECT id FROM {schema}.namespaces WHERE name = %s", (namespace,))
    return int(rows[0][0])


async def _partitions_of(schema: str, ns_id: int) -> dict[str, set[str]]:
    """For each partitioned table, the partitions holding rows of namespace ``ns_id``."""
    found: dict[str, set[str]] = {}
    for table in PARTITIONED:
        rows = await _sql(
            f"SELECT DISTINCT tableoid::regclass::text FROM {schema}.{table}"
            " WHERE namespace_id = %s",
            (ns_id,),
        )
        found[table] = {r[0].rsplit(".", 1)[-1] for r in rows}
    return found


def _partition_number(partitions: dict[str, set[str]]) -> int:
    """The one partition number of a namespace's rows in every table (co-located)."""
    numbers = {int(name.rsplit("_p", 1)[1]) for names in partitions.values() for name in names}
    assert len(numbers) == 1, partitions
    return numbers.pop()


async def _namespaces_by_partition(store: PostgresStore, names: list[str]) -> dict[str, int]:
    """Create ``names`` in order; the partition each one's rows go to (hash of its id)."""
    schema = store._config.db_schema
    for name in names:
        assert await store.create_namespace(name)
    rows = await _sql(
        f"SELECT n.name, (SELECT r FROM generate_series(0, {PARTITIONS - 1}) r"
        f"  WHERE satisfies_hash_partition('{schema}.terms'::regclass, {PARTITIONS}, r, n.id))"
        f" FROM {schema}.namespaces n WHERE n.name = ANY(%s)",
        (names,),
    )
    return {r[0]: int(r[1]) for r in rows}


# --- the schema -----------------------------------------------------------------------


async def test_the_namespace_tables_are_hash_partitioned_with_keys_that_include_it(
    make_store: MakeStore,
) -> None:
    store = await make_store()
    schema = store._config.db_schema
    rows = await _sql(
        "SELECT c.relname, p.partstrat, p.partnatts,"
        " (SELECT attname FROM pg_attribute WHERE attrelid = p.partrelid"
        "  AND attnum = p.partattrs[0])"
        " FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid"
        " WHERE c.relnamespace = %s::regnamespace ORDER BY c.relname",
        (schema,),
    )
    assert rows == [(t, "h", 1, "namespace_id") for t in sorted(PARTITIONED)]
    for table in PARTITIONED:
        parts = await _sql(
            "SELECT c.relname, pg_get_expr(c.relpartbound, c.oid) FROM pg_inherits i"
            " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = %s::regclass"
            " ORDER BY c.relname",
            (f"{schema}.{table}",),
        )
        assert sorted(parts) == sorted(
            (f"{table}_p{r}", f"FOR VALUES WITH (modulus {PARTITIONS}, remainder {r})")
            for r in range(PARTITIONS)
        )
    # Every primary, unique and foreign key of a partitioned table includes the partition
    # key (Citus's rule for co-located tables); foreign keys between them join on it.
    keys = await _sql(
        "SELECT t.relname, k.contype, k.conname,"
        " 'namespace_id' = ANY(ARRAY(SELECT attname FROM pg_attribute"
        "  WHERE attrelid = k.conrelid AND attnum = ANY(k.conkey))),"
        " k.confrelid::regclass::text"
        " FROM pg_constraint k JOIN pg_class t ON t.oid = k.conrelid"
        " WHERE t.relnamespace = %s::regnamespace AND t.relname = ANY(%s)"
        " AND k.contype IN ('p', 'u', 'f') AND k.conparentid = 0",
        (schema, list(PARTITIONED)),
    )
    assert {(r[0], r[1]) for r in keys} == {
        ("documents", "p"),
        ("documents", "f"),
        ("chunks", "p"),
        ("chunks", "u"),
        ("chunks", "f"),
        ("postings", "p"),
        ("terms", "p"),
        ("chunk_changes", "p"),
    }
    assert all(r[3] for r in keys), keys
    # The small tables stay whole (a saved index is one row and a few parts a namespace).
    whole = await _sql(
        "SELECT relname FROM pg_class WHERE relnamespace = %s::regnamespace"
        " AND relkind = 'r' AND NOT relispartition ORDER BY relname",
        (schema,),
    )
    assert [r[0] for r in whole] == [
        "api_keys",
        "index_snapshot_parts",
        "index_snapshots",
        "namespaces",
        "schema_version",
        "tenants",
    ]


async def test_two_tenants_namespaces_land_in_their_partitions_in_isolation(
    make_store: MakeStore,
) -> None:
    store = await make_store(keyword_candidates=4, keyword_rescore=10)
    schema = store._config.db_schema
    # Namespaces of two tenants, created in turn: a t1 and a t2 namespace whose rows go to
    # different partitions, and another two that share one (ids are assigned in order in
    # a fresh schema, so which ones is the same in every run).
    names = [f"t{i % 2 + 1}/kb{i}" for i in range(2 * PARTITIONS + 2)]
    partition = await _namespaces_by_partition(store, names)
    candidates = [(a, b) for a in names for b in names if a[:2] == "t1" and b[:2] == "t2"]
    apart = next(p for p in candidates if partition[p[0]] != partition[p[1]])
    shared = next(
        p for p in candidates if partition[p[0]] == partition[p[1]] and not set(p) & set(apart)
    )
    for first, second in (apart, shared):
        one, two = _writes(1, 12), _writes(2, 12)  # the same document ids, other texts
        await store.put_documents(first, one, "e")
        await store.put_documents(second, two, "e")
        for name, writes in ((first, one), (second, two)):
            where = await _partitions_of(schema, await _namespace_id(schema, name))
            assert _partition_number(where) == partition[name]
            assert await store.counts(name) == (12, sum(len(c) for _, c, _ in writes))
            texts = {c.text for _, chunks, _ in writes for c in chunks}
            hits = await store.keyword_search(name, "w0 w1 w5", 50, Filter())
            assert hits and {h.chunk.text for h in hits} <= texts
            hits = await store.vector_search(name, _unit([[1, 0, 0, 0]])[0], 50, Filter())
            assert {h.chunk.text for h in hits} == texts
        # Deleting in one namespace leaves the other (same partition or not) as it was.
        kept = await store.keyword_search(second, "w0 w1 w5", 50, Filter())
        before = [(h.chunk.id, h.score) for h in kept]
        assert await store.delete_document(first, "d0") is True
        assert await store.get_document(first, "d0") is None
        assert await store.get_document(second, "d0") is not None
        assert await store.delete_namespace(first) is True
        assert await store.counts(first) == (0, 0)
        after = await store.keyword_search(second, "w0 w1 w5", 50, Filter())
        assert [(h.chunk.id, h.score) for h in after] == before
        assert await store.counts(second) == (12, sum(len(c) for _, c, _ in two))
    usage = await store.tenant_usage("t2")
    assert (usage.namespaces, usage.documents) == (PARTITIONS + 1, 24)
    assert (await store.tenant_usage("t1")).documents == 0


# --- pruning ----------------------------------------------------------------------------

_PARTITION = re.compile(r"^(documents|chunks|postings|terms)_p(\d+)$")


def _relations(plan: dict[str, Any], out: list[tuple[str, float]]) -> list[tuple[str, float]]:
    """Every relation a plan node reads, with the node's actual loops (a DELETE's
    ModifyTable node names the table it was given, the partitioned one: not a read)."""
    if "Relation Name" in plan and plan["Node Type"] != "ModifyTable":
        out.append((plan["Relation Name"], float(plan.get("Actual Loops", 0))))
    for child in plan.get("Plans", []):
        _relations(child, out)
    return out


async def _explain(schema: str, sql: str, params: Any) -> list[tuple[str, float]]:
    """The relations ``sql`` reads, by EXPLAIN ANALYZE (rolled back: deletes delete)."""
    options = f"-c search_path={schema},public"
    async with await psycopg.AsyncConnection.connect(URL, options=options) as conn:
        cur = await conn.execute(f"EXPLAIN (ANALYZE, FORMAT JSON) {sql}", params)
        row = await cur.fetchone()
        await conn.rollback()
    assert row is not None
    return _relations(row[0][0]["Plan"], [])


def _assert_one_partition(relations: list[tuple[str, float]], number: int, what: str) -> None:
    partitions = {name for name, _ in relations if _PARTITION.match(name)}
    parents = {name for name, _ in relations if name in PARTITIONED}
    assert not parents, (what, parents)  # never the partitioned table as a whole
    assert partitions, (what, relations)  # it reads some partition ...
    numbers = {int(_PARTITION.match(name)[2]) for name in partitions}  # type: ignore[index]
    assert numbers == {number}, (what, sorted(partitions))  # ... only the namespace's


async def test_searches_reads_and_deletes_touch_only_the_namespace_partition(
    make_store: MakeStore,
) -> None:
    store = await make_store(keyword_candidates=4, keyword_rescore=10)
    schema = store._config.db_schema
    names = [f"t{i}/kb" for i in range(PARTITIONS + 1)]
    partition = await _namespaces_by_partition(store, names)
    # A namespace sharing its partition with another (one does, of PARTITIONS + 1), whose
    # rows are there too, and two in other partitions.
    target = next(n for n in names if sum(partition[m] == partition[n] for m in names) > 1)
    others = [n for n in names if n != target]
    neighbours = [n for n in others if partition[n] == partition[target]][:1]
    neighbours += [n for n in others if partition[n] != partition[target]][:2]
    for i, name in enumerate([target, *neighbours]):
        await store.put_documents(name, _writes(10 + i, 40), "e")
    recorded: list[tuple[str, dict[str, Any]]] = []
    fetch = store._fetch

    async def record(sql: str, params: Any = None, *, search: bool = False) -> Any:
        if isinstance(params, dict) and "ns_id" in params:
            recorded.append((sql, dict(params)))
        return await fetch(sql, params, search=search)

    store._fetch = record  # type: ignore[method-assign]
    query = _unit([[0.2, 1, -0.3, 0.5]])[0]
    parity = Filter((Condition("parity", frozenset({"1"})),))
    await store.keyword_search(target, "w0 w1 w2 w7", 10, Filter())  # heads and probes
    await store.keyword_search(target, "w30 w31", 10, Filter())  # short lists: whole
    await store.keyword_search(target, "w0 w3", 10, parity)  # filtered: the exact scan
    await store.vector_search(target, query, 10, Filter())  # HNSW
    await store.vector_search(target, query, 10, parity)
    await store.vector_search(target, query, 500, Filter())  # too few: the exact scan
    await store.get_document(target, "d3")
    await store.document_chunks(target, "d3")
    await store.list_documents(target, limit=5)
    await store.counts(target)
    store._fetch = fetch  # type: ignore[method-assign]
    assert len(recorded) >= 10
    ns_id = await _namespace_id(schema, target)
    for sql, params in recorded:
        assert params["ns_id"] == ns_id
        _assert_one_partition(await _explain(schema, sql, params), partition[target], sql)
    # The deletes of a write that replaces documents, and of delete_document.
    docs = {"ns_id": ns_id, "docs": ["d1", "d2"]}
    for sql in DELETE_CHUNKS:
        _assert_one_partition(await _explain(schema, sql, docs), partition[target], sql)
    delete = "DELETE FROM documents WHERE namespace_id = %(ns_id)s::integer AND id = %(doc)s"
    relations = await _explain(schema, delete, {"ns_id": ns_id, "doc": "d1"})
    _assert_one_partition(relations, partition[target], delete)
    assert store.exact_scans >= 1  # the exact vector scan was among them


async def test_a_namespace_deleted_and_created_again_is_searched_under_its_new_id(
    make_store: MakeStore,
) -> None:
    # Two stores on one schema: one caches the namespace's id, the other replaces the
    # namespace (a new id); the first searches the new one, not nothing.
    store = await make_store()
    other = await make_store(db_schema=store._config.db_schema)
    await store.put_documents("t/kb", _writes(1, 5), "e")
    assert await store.keyword_search("t/kb", "w0 w1", 10, Filter())
    old = store._ns_ids["t/kb"]
    assert await other.delete_namespace("t/kb") is True
    assert await store.keyword_search("t/kb", "w0 w1", 10, Filter()) == []
    assert await store.counts("t/kb") == (0, 0)
    await other.put_documents("t/kb", _writes(2, 3, prefix="n"), "e")
    hits = await store.keyword_search("t/kb", "w0 w1 w2 w3", 10, Filter())
    assert hits and {h.document_id for h in hits} <= {"n0", "n1", "n2"}
    assert store._ns_ids["t/kb"] != old
    vector = await store.vector_search("t/kb", _unit([[1, 0, 0, 0]])[0], 10, Filter())
    assert {h.document_id for h in vector} == {"n0", "n1", "n2"}
    assert [d.id for d in await store.list_documents("t/kb")] == ["n0", "n1", "n2"]


# --- migration 5 -> 6 -------------------------------------------------------------------

NAMESPACES = ("t1/kb", "t2/kb", "t2/docs")
QUERIES = ("w0 w1 w2", "w3 w10 w20", "w5 w33", "w39")
PARITY = Filter((Condition("parity", frozenset({"0"})),))


async def _fill(store: PostgresStore) -> None:
    await store.put_documents("t1/kb", _writes(1, 60), "e")
    await store.put_documents("t2/kb", _writes(2, 40), "e")
    await store.put_documents("t2/docs", _writes(3, 25, prefix="x"), "e")
    await store.create_namespace("t1/empty")


async def _everything(store: PostgresStore, exact: PostgresStore) -> dict[str, Any]:
    """What the stores answer, for each namespace: searches of every kind and reads."""
    out: dict[str, Any] = {}
    query = _unit([[0.3, -1, 0.2, 0.1]])[0]
    for ns in (*NAMESPACES, "t1/empty"):
        hits: dict[str, Any] = {}
        for q in QUERIES:
            for name, s, f in (("top", store, Filter()), ("exact", exact, Filter())):
                found = await s.keyword_search(ns, q, 20, f)
                hits[f"{name} {q}"] = [(h.chunk.id, h.chunk.text, h.score) for h in found]
            found = await store.keyword_search(ns, q, 20, PARITY)
            hits[f"filtered {q}"] = [(h.chunk.id, h.score) for h in found]
        for name, f in (("vector", Filter()), ("vector filtered", PARITY)):
            found = await store.vector_search(ns, query, 15, f)
            hits[name] = [(h.chunk.id, round(h.score, 6)) for h in found]
        hits["documents"] = await store.list_documents(ns)
        hits["counts"] = await store.counts(ns)
        hits["chunks"] = await store.document_chunks(ns, "d3")
        hits["document"] = await store.get_document(ns, "x4")
        out[ns] = hits
    out["usage"] = [await store.tenant_usage(t) for t in ("t1", "t2")]
    return out


def _assert_same(got: dict[str, Any], want: dict[str, Any]) -> None:
    assert got.keys() == want.keys()
    for ns, hits in want.items():
        if ns == "usage":
            assert got[ns] == hits
            continue
        for key, value in hits.items():
            if key.startswith(("top", "exact", "filtered")):
                # Scores summed in the same order from the same rows; ties in any order.
                g = {h[0]: h for h in got[ns][key]}
                w = {h[0]: h for h in value}
                assert {k: h[1:-1] for k, h in g.items()} == {k: h[1:-1] for k, h in w.items()}
                assert {k: h[-1] for k, h in g.items()} == pytest.approx(
                    {k: h[-1] for k, h in w.items()}, rel=1e-12
                ), (ns, key)
            else:
                assert got[ns][key] == value, (ns, key)
        assert any(hits[f"top {q}"] for q in QUERIES) or ns == "t1/empty"


async def _rows(schema: str) -> dict[str, tuple[int, str]]:
    """Each table's row count and a digest of its rows (in a fixed order)."""
    out = {}
    for table in (*PARTITIONED, "namespaces"):
        rows = await _sql(
            f"SELECT count(*), md5(coalesce(string_agg(t::text, E'\\n' ORDER BY t::text), ''))"
            f" FROM {schema}.{table} t"
        )
        out[table] = (int(rows[0][0]), str(rows[0][1]))
    return out


async def test_a_version_5_database_is_partitioned_with_every_row_and_result(
    make_store: MakeStore,
) -> None:
    source = await make_store(keyword_candidates=8, keyword_rescore=20)
    source_exact = await make_store(db_schema=source._config.db_schema, keyword_candidates=0)
    await _fill(source)
    # Chunk ids reserved but never written (a write that failed): the sequence moves on.
    await source._fetch("SELECT nextval(pg_get_serial_sequence('chunks', 'id'))")
    want = await _everything(source, source_exact)
    rows = await _rows(source._config.db_schema)
    assert rows["postings"][0] > 1000
    sequence = await _sql(f"SELECT last_value FROM {source._config.db_schema}.chunks_id_seq")

    schema = f"test_{uuid.uuid4().hex[:16]}"
    index = (  # the vector index a version-5 store built, with its own graph options
        "CREATE INDEX chunks_halfvec_4 ON chunks USING hnsw"
        " ((embedding::halfvec(4)) halfvec_cosine_ops) WITH (m = 8, ef_construction = 32)"
        " WHERE vector_dims(embedding) = 4"
    )
    await write_schema_at(5, source._config.db_schema, schema, [index])
    migrated = await make_store(db_schema=schema, keyword_candidates=8, keyword_rescore=20)
    exact = await make_store(db_schema=schema, keyword_candidates=0)

    versions = await _sql(f"SELECT version FROM {schema}.schema_version ORDER BY 1")
    assert [r[0] for r in versions] == list(range(1, SCHEMA_VERSION + 1))
    partitioned = await _sql(
        "SELECT c.relname FROM pg_partitioned_table p JOIN pg_class c ON c.oid = p.partrelid"
        " WHERE c.relnamespace = %s::regnamespace ORDER BY 1",
        (schema,),
    )
    assert [r[0] for r in partitioned] == sorted(PARTITIONED)
    # Every row, as it was; the change log begins with the first write after migration 7.
    rows.pop("chunk_changes")
    assert await _rows(schema) == rows | {"chunk_changes": (0, hashlib.md5(b"").hexdigest())}
    # Vacuumed after the migration: every page all-visible (index-only scans read no heap).
    pages = await _sql(
        "SELECT c.relname, c.relpages, c.relallvisible FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = ANY(%s::regclass[])"
        " AND c.relpages > 0",
        ([f"{schema}.{t}" for t in PARTITIONED],),
    )
    assert pages and all(r[1] == r[2] for r in pages), pages
    assert await _sql(f"SELECT last_value FROM {schema}.chunks_id_seq") == sequence
    _assert_same(await _everything(migrated, exact), want)
    assert migrated.exact_scans == source.exact_scans  # the vector index answers
    # The vector index with its options, on each partition; the keyword index valid.
    options = await _sql(
        "SELECT DISTINCT c.reloptions FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid"
        " WHERE i.inhparent = %s::regclass",
        (f"{schema}.chunks_halfvec_4",),
    )
    assert options == [(["m=8", "ef_construction=32"],)]
    for name in ("chunks_halfvec_4", "postings_by_impact"):
        assert await _index_state(schema, name) == (True, PARTITIONS, [])
    # Writes go on, with chunk ids after every id the old sequence gave.
    await migrated.put_documents("t1/kb", _writes(9, 2, prefix="new"), "e")
    new = await _sql(f"SELECT min(id) FROM {schema}.chunks WHERE document_id LIKE 'new%%'")
    assert new[0][0] > sequence[0][0]
    assert (await migrated.counts("t1/kb"))[0] == 62


# --- bulk loads -------------------------------------------------------------------------


async def _index_state(schema: str, name: str) -> tuple[bool | None, int, list[str]]:
    """Whether the partitioned index ``name`` is valid (None: absent), how many partitions'
    valid indexes are attached to it, and the partitions' indexes of that name that are
    not (left by a build that was interrupted)."""
    table = name.split("_", 1)[0]
    suffix = name.removeprefix(table)
    parent = await _sql(
        "SELECT indisvalid FROM pg_index WHERE indexrelid = to_regclass(%s)",
        (f"{schema}.{name}",),
    )
    attached = await _sql(
        "SELECT count(*) FROM pg_inherits i JOIN pg_index x ON x.indexrelid = i.inhrelid"
        " WHERE i.inhparent = to_regclass(%s) AND x.indisvalid",
        (f"{schema}.{name}",),
    )
    loose = await _sql(
        "SELECT c.relname FROM pg_class c WHERE c.relnamespace = %s::regnamespace"
        " AND c.relkind = 'i' AND c.relname ~ %s AND NOT c.relispartition ORDER BY 1",
        (schema, f"^{table}_p[0-9]+{suffix}$"),
    )
    return (
        None if not parent else bool(parent[0][0]),
        int(attached[0][0]),
        [r[0] for r in loose],
    )


async def _attached_oids(schema: str, name: str) -> dict[str, int]:
    rows = await _sql(
        "SELECT c.relname, c.oid::bigint FROM pg_inherits i JOIN pg_class c"
        " ON c.oid = i.inhrelid WHERE i.inhparent = to_regclass(%s)",
        (f"{schema}.{name}",),
    )
    return {r[0]: int(r[1]) for r in rows}


async def _keyword(store: PostgresStore, ns: str, limit: int) -> dict[str, float]:
    found = {}
    for q in QUERIES:
        for h in await store.keyword_search(ns, q, limit, Filter()):
            found[f"{q}|{h.chunk.id}"] = h.score
    return found


async def test_bulk_load_builds_each_partition_index_and_attaches_it(
    make_store: MakeStore,
) -> None:
    store = await make_store(keyword_candidates=8, keyword_rescore=20)
    schema = store._config.db_schema
    exact = await make_store(db_schema=schema, keyword_candidates=0)
    one, two = _writes(1, 60), _writes(2, 40)
    await store.put_documents("t1/kb", one[:10], "e")
    await store.put_documents("t2/kb", two[:10], "e")
    for name in ("chunks_halfvec_4", "postings_by_impact"):
        assert await _index_state(schema, name) == (True, PARTITIONS, [])
    async with store.bulk_load():
        for name in ("chunks_halfvec_4", "postings_by_impact"):
            assert await _index_state(schema, name) == (None, 0, [])
        await store.put_documents("t1/kb", one[10:], "e")
        await store.put_documents("t2/kb", two[10:], "e")
        for ns in ("t1/kb", "t2/kb"):  # no keyword index: every list read whole, exact
            assert await _keyword(store, ns, 200) == pytest.approx(
                await _keyword(exact, ns, 200), rel=1e-12
            )
    for name in ("chunks_halfvec_4", "postings_by_impact"):
        assert await _index_state(schema, name) == (True, PARTITIONS, [])
    children = await _attached_oids(schema, "postings_by_impact")
    assert sorted(children) == sorted(f"postings_p{r}_by_impact" for r in range(PARTITIONS))
    scans = store.exact_scans
    query = _unit([[1, 0.2, -0.3, 0.5]])[0]
    for ns, writes in (("t1/kb", one), ("t2/kb", two)):
        matrix = np.concatenate([v for _, _, v in writes])
        ids = [c.id for _, chunks, _ in writes for c in chunks]
        best = np.argsort(-(matrix @ query))[:5]
        hits = await store.vector_search(ns, query, 5, Filter())
        assert [h.chunk.id for h in hits] == [ids[i] for i in best]
        top = await _keyword(store, ns, 10)  # index-driven again: hits scored exactly
        want = await _keyword(exact, ns, 200)
        assert top and {k: want[k] for k in top} == pytest.approx(top, rel=1e-12)
    assert store.exact_scans == scans

    # A build interrupted after three partitions, with one partition's index built but not
    # attached: searches read whole lists (the index is not valid yet), and the next
    # store to start finishes it, keeping the three.
    async with await psycopg.AsyncConnection.connect(URL, autocommit=True) as conn:
        await conn.execute(f"SET search_path = {schema}, public")
        await conn.execute("DROP INDEX postings_by_impact")
        definition = POSTINGS_INDEX[2]
        await conn.execute(f"CREATE INDEX postings_by_impact ON ONLY postings {definition}")
        for r in range(3):
            await conn.execute(
                f"CREATE INDEX postings_p{r}_by_impact ON postings_p{r} {definition}"
            )
            await conn.execute(
                f"ALTER INDEX postings_by_impact ATTACH PARTITION postings_p{r}_by_impact"
            )
        await conn.execute(f"CREATE INDEX postings_p5_by_impact ON postings_p5 {definition}")
    assert await _index_state(schema, "postings_by_impact") == (False, 3, ["postings_p5_by_impact"])
    kept = await _attached_oids(schema, "postings_by_impact")
    for ns in ("t1/kb", "t2/kb"):
        assert await _keyword(store, ns, 200) == pytest.approx(
            await _keyword(exact, ns, 200), rel=1e-12
        )
    await make_store(db_schema=schema)
    assert await _index_state(schema, "postings_by_impact") == (True, PARTITIONS, [])
    after = await _attached_oids(schema, "postings_by_impact")
    assert {k: after[k] for k in kept} == kept
