"""The PostgreSQL store at scale: ingestion rate as the table grows, search cost per tier.

``python -m ragtide.bench.scale_postgres --sizes 10000,100000 --url postgresql://...``

For each size, the corpus of ``ragtide.bench.corpus`` (SciFact mixed into filler) is
parsed and chunked as ``ragtide ingest`` does (``ingest.prepare``), embedded once with the
default ``static`` embedder (cached under ``--work``), then written into a fresh schema
through ``PostgresStore.put_documents`` in batches of 512 chunks (the ingest pipeline's
batch) inside ``bulk_load`` (``--live``: without it), timing each tenth of the corpus to
show whether the rate holds as the table grows, with the 1-minute load average at the end
of each tenth (the machine is shared). ``index_build_seconds`` is the end of
``bulk_load``: the indexes it dropped built over the loaded rows.
Then the corpus's SciFact queries run one at a time against the store (keyword top-10 exact
and index-driven, vector top-10), timing each and reading the database backend's CPU time
from ``/proc/<pid>/stat`` before and after (the store runs on one pooled connection, so one
backend does all the database work). nDCG@10 on the SciFact judgments is computed for each
keyword mode: the index-driven top-k must stay within 0.005 of the exact one.

The numbers are from a shared 2-core machine; the JSON says so (``machine_busy``).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import pickle
import re
import resource
import statistics
import subprocess
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragtide.bench.cluster import child_pids, postmaster_pid
from ragtide.bench.server import CLK_TCK, cpu_seconds

__all__ = ["main", "measure"]

BATCH_CHUNKS = 512
# The default tenant's ``scale``: what ``ragtide serve`` without authentication searches
# as ``scale``, and where ``ragtide.bench.scale``'s uploader writes.
NAMESPACE = "default/scale"
URL = "postgresql://postgres@127.0.0.1:5433/ragtide"  # the embedded PostgreSQL (scripts/pg-start)
WORK = Path("/var/tmp/ragtide-scale-pg")  # the corpora and their prepared chunks, cached
SEGMENTS = 10


@dataclass(slots=True)
class _Loaded:
    documents: list[Any]  # DocumentInfo
    chunks: list[list[Any]]  # Chunk lists, one per document
    vectors: np.ndarray[Any, np.dtype[np.float32]]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    embedder_id: str


async def _load(data: Path, size: int, work: Path) -> _Loaded:
    """The corpus of ``size`` chunks, prepared and embedded (cached in ``work``)."""
    cache = work / f"prepared-{size}.pickle"
    if cache.exists():
        loaded: _Loaded = pickle.loads(cache.read_bytes())
        return loaded
    from ragtide.bench.corpus import build_corpus
    from ragtide.builtin.static_embedder import StaticEmbedder
    from ragtide.ingest.pipeline import _embedding_text
    from ragtide.ingest.prepare import Prepared, PrepareJob, prepare
    from ragtide.types import DocumentInfo

    corpus = build_corpus(data, size, work / f"corpus-{size}")
    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    version = f"{embedder.model_id}|200|40"
    documents: list[Any] = []
    chunk_lists: list[list[Any]] = []
    for shard in corpus.shards:
        lines = shard.read_bytes().splitlines(keepends=True)
        for start in range(0, len(lines), 5000):
            job = PrepareJob("corpus.jsonl", b"".join(lines[start : start + 5000]), version=version)
            for doc in prepare(job):
                if not isinstance(doc, Prepared) or not doc.chunks:
                    continue
                now = time.time()
                documents.append(
                    DocumentInfo(doc.id, doc.title, shard.name, doc.content_hash, 0, now, now, {})
                )
                chunk_lists.append(doc.chunks)
    texts = [_embedding_text(c) for chunks in chunk_lists for c in chunks]
    parts = [
        await embedder.embed_documents(texts[i : i + 4096]) for i in range(0, len(texts), 4096)
    ]
    vectors = np.concatenate(parts).astype(np.float32)
    loaded = _Loaded(
        documents, chunk_lists, vectors, corpus.queries, corpus.qrels, embedder.model_id
    )
    cache.write_bytes(pickle.dumps(loaded, protocol=pickle.HIGHEST_PROTOCOL))
    return loaded


def _self_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def _backend_pid(store: Any) -> int:
    rows = await store._fetch("SELECT pg_backend_pid()")
    return int(rows[0][0])


async def _ingest(store: Any, loaded: _Loaded, namespace: str) -> dict[str, Any]:
    pid = await _backend_pid(store)
    total = sum(len(c) for c in loaded.chunks)
    boundaries = [round(total * (i + 1) / SEGMENTS) for i in range(SEGMENTS)]
    segments: list[dict[str, Any]] = []
    written = offset = 0
    batch: list[tuple[Any, Any, Any]] = []
    seg_began, seg_chunks = time.perf_counter(), 0
    seg_db, seg_app = cpu_seconds(pid), _self_cpu()
    began = time.perf_counter()

    pending = 0  # chunks in batch

    async def flush() -> None:
        nonlocal written, pending
        if batch:
            if hasattr(store, "put_documents"):
                await store.put_documents(namespace, batch, loaded.embedder_id)
            else:  # the store before batched writes: one transaction per document
                for doc, chunks, vectors in batch:
                    await store.put_document(namespace, doc, chunks, vectors, loaded.embedder_id)
            written += pending
            batch.clear()
            pending = 0

    def segment() -> None:
        nonlocal seg_began, seg_chunks, seg_db, seg_app
        now, db, app = time.perf_counter(), cpu_seconds(pid), _self_cpu()
        n = written - seg_chunks
        segments.append(
            {
                "chunks_after": written,
                "chunks_per_s": round(n / (now - seg_began), 1),
                "db_cpu_ms_per_chunk": round((db - seg_db) * 1000 / n, 3),
                "app_cpu_ms_per_chunk": round((app - seg_app) * 1000 / n, 3),
                "load_1min": round(os.getloadavg()[0], 2),
            }
        )
        seg_began, seg_chunks, seg_db, seg_app = now, written, db, app

    load_before = os.getloadavg()[0]
    db0, app0 = seg_db, seg_app
    for doc, chunks in zip(loaded.documents, loaded.chunks, strict=True):
        batch.append((doc, chunks, loaded.vectors[offset : offset + len(chunks)]))
        offset += len(chunks)
        pending += len(chunks)
        if pending >= BATCH_CHUNKS:
            await flush()
        if boundaries and written >= boundaries[0]:
            boundaries.pop(0)
            segment()
    await flush()
    if written > seg_chunks:  # the last tenth ends with the last batch
        segment()
    elapsed = time.perf_counter() - began
    return {
        "documents": len(loaded.documents),
        "chunks": written,
        "seconds": round(elapsed, 2),
        "chunks_per_s": round(written / elapsed, 1),
        "db_cpu_ms_per_chunk": round((cpu_seconds(pid) - db0) * 1000 / written, 3),
        "app_cpu_ms_per_chunk": round((_self_cpu() - app0) * 1000 / written, 3),
        "load_1min_before": round(load_before, 2),
        "load_1min_after": round(os.getloadavg()[0], 2),
        "segments": segments,
    }


async def _search(
    store: Any, loaded: _Loaded, namespace: str, mode: str, repeat: int = 1
) -> dict[str, Any]:
    from ragtide.bench.metrics import ndcg_at
    from ragtide.builtin.static_embedder import StaticEmbedder
    from ragtide.types import Filter

    pid = await _backend_pid(store)
    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    vectors = {q: await embedder.embed_query(t) for q, t in loaded.queries.items()}
    times: list[float] = []
    ndcg: list[float] = []
    tops: list[list[str]] = []  # each query's top 10 chunks, to compare with the exact
    db0, app0 = cpu_seconds(pid), _self_cpu()
    for _ in range(repeat):
        for qid, text in loaded.queries.items():
            began = time.perf_counter()
            if mode == "vector":
                hits = await store.vector_search(namespace, vectors[qid], 30, Filter())
            else:
                hits = await store.keyword_search(namespace, text, 30, Filter())
            times.append(time.perf_counter() - began)
            if len(tops) < len(loaded.queries):
                tops.append([hit.chunk.id for hit in hits[:10]])
            ranked = _documents(hit.document_id for hit in hits)
            ndcg.append(ndcg_at(ranked, loaded.qrels[qid], 10))
    db, app = cpu_seconds(pid) - db0, _self_cpu() - app0
    times.sort()
    n = len(times)
    # Per query id parity: parameters are chosen on the even half, reported on the odd.
    first = dict(zip(loaded.queries, ndcg, strict=False))
    halves = {
        half: [v for q, v in first.items() if (int(q) % 2 == 0) == (half == "even")]
        for half in ("even", "odd")
    }
    return {
        "searches": n,
        "top_k": 30,
        "p50_ms": round(statistics.median(times) * 1000, 2),
        "p99_ms": round(times[min(n - 1, int(n * 0.99))] * 1000, 2),
        "db_cpu_ms_per_search": round(db * 1000 / n, 3),
        "app_cpu_ms_per_search": round(app * 1000 / n, 3),
        "ndcg@10": round(float(np.mean(ndcg[: len(loaded.queries)])), 4),
        **{f"ndcg@10_{h}_ids": round(float(np.mean(v)), 4) for h, v in halves.items() if v},
        "keyword_reads_by_score": getattr(store, "keyword_reads_by_score", 0),
        "load_1min": round(os.getloadavg()[0], 2),
        "tops": tops,  # replaced by the share of the exact top 10 found (see _searches)
    }


async def _table_sizes(store: Any) -> dict[str, int]:
    """Bytes of each table with its indexes; a partitioned table's are its partitions'."""
    rows = await store._fetch(
        "SELECT coalesce(p.relname, c.relname), sum(pg_total_relation_size(c.oid))"
        " FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace"
        " LEFT JOIN pg_inherits i ON i.inhrelid = c.oid"
        " LEFT JOIN pg_class p ON p.oid = i.inhparent"
        " WHERE n.nspname = current_schema() AND c.relkind = 'r'"
        " GROUP BY 1"
    )
    return {str(r[0]): int(r[1]) for r in rows}


# The keyword search as it was before the read by score (keyword_reach), for --one-read.
ONE_READ = {"keyword_reach": 0.0, "keyword_rescore": 60}


async def _searches(
    config: Any,
    loaded: _Loaded,
    candidates: Sequence[int],
    *,
    one_read: bool = False,
    only: Sequence[str] = (),
) -> dict[str, Any]:
    """Keyword exact and with each ``keyword_candidates`` (``one_read``: also without the
    read by score, as before it), ranked in the replica; then vector by the database's
    HNSW index and by the replica's graph, each against the exact top 10 (numpy over the
    corpus's vectors). One store each; ``only``: these modes alone."""
    from ragtide.builtin.postgres_store import PostgresStore

    searches: dict[str, Any] = {}
    in_sql = {"local_keyword_mb": 0}
    local = {"local_keyword_mb": 4096, "local_keyword_min_chunks": 0}
    variants: list[tuple[str, dict[str, Any]]] = [
        ("keyword_exact", {"keyword_candidates": 0} | in_sql)
    ]
    for n in candidates:
        variants.append((f"keyword_{n}", {"keyword_candidates": n} | in_sql))
        if one_read:
            variants.append(
                (f"keyword_{n}_one_read", {"keyword_candidates": n, **ONE_READ} | in_sql)
            )
    # Loaded from the postings and not saved: what the first replica of a cluster pays.
    variants.append(("keyword_local", local | {"local_snapshot_min_chunks": 10**12}))
    variants.append(("vector", in_sql))
    # Loaded (from the snapshot, if a run saved one), the vector graph built and saved.
    variants.append(("vector_graph", local | {"local_snapshot_min_chunks": 1}))
    for mode, update in variants:
        if only and mode not in only:
            continue
        kind = "vector" if mode.startswith("vector") else "keyword"
        store = PostgresStore(config.model_copy(update=update))
        await store.start()
        try:
            if store.local_keywords is not None:
                # The load, then the queries twice: the first pass compiles the keyword
                # loop (numba, once per process) where a namespace has 100k positions.
                load = await _local_load(store, loaded, NAMESPACE)
                first = await _search(store, loaded, NAMESPACE, kind)
                searches[f"{mode}_first_pass"] = first
                searches[mode] = await _search(store, loaded, NAMESPACE, kind) | load
                searches[mode]["ranked_in_replica"] = (
                    store.local_vector_searches
                    if kind == "vector"
                    else store.local_keyword_searches
                )
                if mode == "vector_graph":
                    searches["hybrid"] = await _hybrid(store, loaded, NAMESPACE)
            else:
                searches[mode] = await _search(store, loaded, NAMESPACE, kind)
        finally:
            await store.aclose()
    oracle = {"vector": await _exact_vectors(loaded)}
    if "keyword_exact" in searches:
        oracle["keyword"] = {"tops": searches["keyword_exact"]["tops"]}
    for mode, result in searches.items():
        tops = result.pop("tops", None)  # none: hybrid, measured against exact on its own
        exact = oracle.get("vector" if mode.startswith("vector") else "keyword")
        if tops is not None and exact is not None:
            result["exact_top10_found"] = _found(tops, exact["tops"])
    searches["vector_exact"] = {"ndcg@10": oracle["vector"]["ndcg@10"], "by": "numpy"}
    return searches


async def _hybrid(store: Any, loaded: _Loaded, namespace: str) -> dict[str, Any]:
    """nDCG@10 of hybrid search as ``/search`` runs it (``HybridRetriever``'s defaults:
    each side's top candidates, convex fusion, top 10) with the vector side through the
    store (the replica's graph), against the same with the exact vector candidates
    (numpy over the corpus's vectors); the keyword side is exact in both."""
    from ragtide.bench.metrics import ndcg_at
    from ragtide.builtin.retrievers import HybridRetriever, convex_fusion
    from ragtide.builtin.static_embedder import StaticEmbedder
    from ragtide.types import Filter, Hit

    config = HybridRetriever.Config()
    limit, weights = config.candidates, (1.0, config.vector_weight)
    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    chunks = [c for doc in loaded.chunks for c in doc]
    matrix = _unit_rows(loaded.vectors)
    ndcg: dict[str, dict[str, float]] = {"store": {}, "exact": {}}
    for qid, text in loaded.queries.items():
        query = np.asarray(await embedder.embed_query(text), np.float32).ravel()
        keyword = await store.keyword_search(namespace, text, limit, Filter())
        dense = await store.vector_search(namespace, query, limit, Filter())
        best, similarity = _nearest(matrix, query, limit)
        exact = [Hit(chunks[i], float(s)) for i, s in zip(best, similarity, strict=True)]
        for name, vectors in (("store", dense), ("exact", exact)):
            fused = convex_fusion((keyword, vectors), weights, 10)
            ranked = _documents(hit.document_id for hit in fused)
            ndcg[name][qid] = ndcg_at(ranked, loaded.qrels[qid], 10)
    out: dict[str, Any] = {"fusion": config.fusion, "candidates": limit}
    for name, values in ndcg.items():
        out[f"ndcg@10_{name}"] = round(float(np.mean(list(values.values()))), 4)
        for half in ("even", "odd"):
            kept = [v for q, v in values.items() if (int(q) % 2 == 0) == (half == "even")]
            out[f"ndcg@10_{name}_{half}_ids"] = round(float(np.mean(kept)), 4)
    out["store_minus_exact"] = round(out["ndcg@10_store"] - out["ndcg@10_exact"], 4)
    return out


async def _exact_vectors(loaded: _Loaded) -> dict[str, Any]:
    """The exact vector top 30 of each query over the corpus's vectors (numpy): its
    nDCG@10 and top 10 chunks, what an approximate search is measured against."""
    from ragtide.bench.metrics import ndcg_at
    from ragtide.builtin.static_embedder import StaticEmbedder

    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    chunks = [c for doc in loaded.chunks for c in doc]
    matrix = _unit_rows(loaded.vectors)
    ndcg, tops = [], []
    for qid, text in loaded.queries.items():
        query = np.asarray(await embedder.embed_query(text), np.float32).ravel()
        best, _ = _nearest(matrix, query, 30)
        ranked = _documents(chunks[i].document_id for i in best)
        ndcg.append(ndcg_at(ranked, loaded.qrels[qid], 10))
        tops.append([chunks[i].id for i in best[:10]])
    return {"ndcg@10": round(float(np.mean(ndcg)), 4), "tops": tops}


def _unit_rows(vectors: np.ndarray[Any, Any]) -> np.ndarray[Any, Any]:
    """``vectors``' rows scaled to unit length (zero rows stay zero)."""
    unit: np.ndarray[Any, Any] = vectors / np.maximum(
        np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12
    )
    return unit


def _nearest(
    matrix: np.ndarray[Any, Any], query: np.ndarray[Any, Any], n: int
) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """The rows of unit ``matrix`` of the ``n`` highest cosine similarities to ``query``,
    best first (ties in row order), and those similarities: the exact search."""
    similarity = matrix @ (query / max(float(np.linalg.norm(query)), 1e-12))
    best = np.argpartition(-similarity, n)[:n]
    best = best[np.argsort(-similarity[best], kind="stable")]
    return best, similarity[best]


def _documents(document_ids: Iterable[str]) -> list[str]:
    """Documents in rank order, each where its best chunk ranks."""
    return list(dict.fromkeys(document_ids))


async def _local_load(store: Any, loaded: _Loaded, namespace: str) -> dict[str, Any]:
    """Load the namespace's local keyword index (the first search starts it) and time it,
    with the replica's memory before and after."""
    from ragtide.types import Filter

    local = store.local_keywords
    server = await asyncio.to_thread(postmaster_pid, store._config.url)
    _reset_peak()
    rss0, db0, app0 = _rss_mb(), _server_cpu(server), _self_cpu()
    began = time.perf_counter()
    await store.keyword_search(namespace, next(iter(loaded.queries.values())), 30, Filter())
    await local.settle()
    seconds = time.perf_counter() - began
    index = next(iter(local._indexes.values()), None)
    return {
        "local_load_seconds": round(seconds, 2),
        # The whole server's CPU meanwhile (its backends, the load's included once it has
        # ended, and its background processes): what each replica's load costs it.
        "local_load_db_cpu_s": round(_server_cpu(server) - db0, 2),
        "local_load_app_cpu_s": round(_self_cpu() - app0, 2),
        "local_index_mb": round(index.nbytes / 2**20, 1) if index is not None else None,
        "local_rss_growth_mb": round(_rss_mb() - rss0, 1),
        # The process's peak over its RSS before the load: the load's (the peak is reset
        # before it; it was the corpus's unpickling, ~1 GB more, before).
        "local_peak_over_start_mb": round(_rss_mb("VmHWM") - rss0, 1),
    }


def _reset_peak() -> None:
    """Start this process's peak RSS (``VmHWM``) again from its RSS now (Linux)."""
    with contextlib.suppress(OSError):
        Path("/proc/self/clear_refs").write_text("5")


def _server_cpu(postmaster: int) -> float:
    """CPU seconds of the server: the postmaster with the children it has reaped (cutime,
    cstime: ended backends) and its live children."""
    fields = Path(f"/proc/{postmaster}/stat").read_text().rsplit(")", 1)[1].split()
    total = sum(int(f) for f in fields[11:15]) / CLK_TCK
    for child in child_pids(postmaster):
        with contextlib.suppress(OSError):
            total += cpu_seconds(child)
    return total


async def _serve(
    url: str,
    schema: str,
    loaded: _Loaded,
    rate: float,
    seconds: float,
    work: Path,
    *,
    cold: bool = True,
) -> dict[str, Any]:
    """``ragtide serve`` on the schema, as one replica of a cluster that has no saved index
    yet (``cold``; else with what an earlier step saved): spawn -> ready, the wait until
    its warm-up has loaded the namespace's local index from the postings and saved it with
    its vector graph, then ``/search`` (the serving default: hybrid, top 10)
    one at a time (server and database CPU per search) and at an open-loop ``rate``, alone
    and with a small upload every 100 ms (``ragtide.bench.scale``'s). Then a second replica
    started after it (a scale-out): spawn -> ready with the saved index read (readiness
    waits for it), the database and replica CPU that took, and its first searches."""
    import httpx
    import psycopg

    from ragtide.bench.scale import open_loops, sequential_percentiles
    from ragtide.bench.server import rss_mb, stop, wait_ready
    from ragtide.builtin.postgres_store import PostgresStore

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        table = await (
            await conn.execute("SELECT to_regclass(%s)", (f"{schema}.index_snapshots",))
        ).fetchone()
        if cold and table is not None and table[0] is not None:  # nothing saved yet
            await conn.execute(f"DELETE FROM {schema}.index_snapshots")
    name = NAMESPACE.split("/", 1)[1]
    path = f"/v1/namespaces/{name}/search"
    bodies = [{"query": t, "top_k": 10} for t in loaded.queries.values()]
    server = await asyncio.to_thread(postmaster_pid, url)
    # Namespaces that keep their vectors in the replica are not saved (``_pg_local``).
    vector_max = PostgresStore.Config.model_fields["local_vector_max_chunks"].default
    saving = sum(len(c) for c in loaded.chunks) > vector_max
    began = time.perf_counter()
    proc, port = _spawn(url, schema, work)
    try:
        ready_s = await asyncio.to_thread(wait_ready, proc, port, began, timeout=900)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            t = time.perf_counter()
            (await client.post(path, json=bodies[0])).raise_for_status()
            first_ms = (time.perf_counter() - t) * 1000
            loaded_s = await _until(client, "load" if cold else "load_saved", began)
            saving = saving and cold
            saved_s = await _until(client, "save", began) if saving else None
            graph_s = await _until(client, "graph_build", began) if saving else None
            for body in bodies[:20]:  # the first compiled searches
                (await client.post(path, json=body)).raise_for_status()
            latencies, answers = [], []
            cpu0, db0 = cpu_seconds(proc.pid), _server_cpu(server)
            for body in bodies:
                t = time.perf_counter()
                response = await client.post(path, json=body)
                latencies.append((time.perf_counter() - t) * 1000)
                answers.append(response.raise_for_status().json()["results"])
            cpu, db = cpu_seconds(proc.pid) - cpu0, _server_cpu(server) - db0
        quiet, mixed = await open_loops(port, path, bodies, rate, seconds)
        rss_end = rss_mb(proc.pid)
    finally:
        stop(proc)
    return {
        "spawn_to_ready_s": round(ready_s, 2),
        "first_search_after_ready_ms": round(first_ms, 1),
        "local_index_loaded_after_spawn_s": round(loaded_s, 1),
        "local_index_saved_after_spawn_s": round(saved_s, 1) if saved_s else None,
        "vector_graph_built_after_spawn_s": round(graph_s, 1) if graph_s else None,
        "rss_mb_end": round(rss_end, 1),
        "sequential": {
            "searches": len(latencies),
            **sequential_percentiles(latencies),
            "server_cpu_ms_per_search": round(cpu * 1000 / len(latencies), 3),
            "database_cpu_ms_per_search": round(db * 1000 / len(latencies), 3),
            "ndcg@10": _served_ndcg(loaded, answers),
        },
        "open_loop": quiet,
        "open_loop_with_uploads": mixed,
        "second_replica": (
            await _scale_out(url, schema, work, path, bodies, server)
            if saving or not cold
            else None
        ),
    }


def _served_ndcg(loaded: _Loaded, answers: list[list[dict[str, Any]]]) -> float:
    """nDCG@10 of ``/search``'s answers (documents in the order of their best chunk), one
    per query of ``loaded`` in order."""
    from ragtide.bench.metrics import ndcg_at

    scores = []
    for qid, results in zip(loaded.queries, answers, strict=True):
        ranked = _documents(hit["document_id"] for hit in results)
        scores.append(ndcg_at(ranked, loaded.qrels[qid], 10))
    return round(float(np.mean(scores)), 4)


async def _scale_out(
    url: str, schema: str, work: Path, path: str, bodies: list[dict[str, Any]], server: int
) -> dict[str, Any]:
    """A replica started once another has saved the namespace's index."""
    import httpx
    import psycopg

    from ragtide.bench.scale import sequential_percentiles
    from ragtide.bench.server import rss_mb, stop, wait_ready

    async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
        row = await (
            await conn.execute(f"SELECT (head->>'size')::int8 FROM {schema}.index_snapshots")
        ).fetchone()
    db0 = _server_cpu(server)
    began = time.perf_counter()
    proc, port = _spawn(url, schema, work)
    try:
        ready_s = await asyncio.to_thread(wait_ready, proc, port, began, timeout=900)
        db_ready, cpu_ready = _server_cpu(server) - db0, cpu_seconds(proc.pid)
        rss_ready = rss_mb(proc.pid)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            metrics = (await client.get("/metrics")).text
            latencies = []
            for body in bodies[:100]:
                t = time.perf_counter()
                (await client.post(path, json=body)).raise_for_status()
                latencies.append((time.perf_counter() - t) * 1000)
            after = (await client.get("/metrics")).text
    finally:
        stop(proc)
    searches = "ragtide_postgres_searches_total"
    return {
        "saved_index_bytes": int(row[0]) if row else None,
        "spawn_to_ready_s": round(ready_s, 2),
        "loaded_from_snapshot_before_ready": _updates(metrics, "load_saved") >= 1,
        "loaded_from_postings_before_ready": _updates(metrics, "load") >= 1,
        "vector_searches_in_replica": _count(after, searches, kind="vector", ranked="replica"),
        "vector_searches_in_database": _count(after, searches, kind="vector", ranked="database"),
        "database_cpu_s_spawn_to_ready": round(db_ready, 2),
        "replica_cpu_s_spawn_to_ready": round(cpu_ready, 2),
        "rss_mb_ready": round(rss_ready, 1),
        "first_search_after_ready_ms": round(latencies[0], 1),
        "next_99_searches": sequential_percentiles(latencies[1:]),
    }


def _spawn(
    url: str, schema: str, work: Path, *, log: Path | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    """``ragtide serve`` on the schema, on a free port (its warnings appended to ``log``)."""
    from ragtide.bench.server import free_port, spawn_ragtide

    port = free_port()
    env = {
        "RAGTIDE_LOGGING__LEVEL": "WARNING",
        "RAGTIDE_ANSWER_CACHE_ENABLED": "false",
        "RAGTIDE_STORE__URL": url,
        "RAGTIDE_STORE__CONFIG__DB_SCHEMA": schema,
        "RAGTIDE_STORE__CONFIG__LOCAL_KEYWORD_MB": "4096",
        "RAGTIDE_STORE__CONFIG__LOCAL_SNAPSHOT_MIN_CHUNKS": "1",
    }
    return spawn_ragtide(work / "serve", port, env, log=log), port


def _count(metrics: str, name: str, **labels: str) -> float:
    """A sample's value in a /metrics text, by its name and labels (0 if absent)."""
    inside = ",".join(f'{k}="{v}"' for k, v in labels.items())
    series = re.escape(f"{name}{{{inside}}}" if labels else name)  # no braces without labels
    found = re.search(rf"^{series} (\S+)$", metrics, re.M)
    return float(found.group(1)) if found else 0.0


def _updates(metrics: str, kind: str) -> float:
    """``ragtide_local_keyword_index_updates_total{kind}`` in a /metrics text."""
    return _count(metrics, "ragtide_local_keyword_index_updates_total", kind=kind)


async def _until(client: Any, kind: str, began: float) -> float:
    """Seconds from ``began`` until the replica's metrics count one update of ``kind``."""
    while _updates((await client.get("/metrics")).text, kind) < 1:
        if time.perf_counter() - began > 900:
            raise TimeoutError(f"the replica did not {kind} the namespace's index")
        await asyncio.sleep(0.5)
    return time.perf_counter() - began


def _rss_mb(field: str = "VmRSS") -> float:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(f"{field}:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _found(tops: list[list[str]], exact: list[list[str]]) -> float:
    """The share of the exact top 10 chunks a mode returned in its top 10 (nDCG moves with
    the few judged chunks; this sees every chunk the approximation misses)."""
    pairs = [(set(t), set(e)) for t, e in zip(tops, exact, strict=True) if e]
    return round(float(np.mean([len(t & e) / len(e) for t, e in pairs])), 4) if pairs else 1.0


def _config(url: str, schema: str) -> Any:
    from ragtide.builtin.postgres_store import PostgresStore

    return PostgresStore.Config(
        url=url,
        db_schema=schema,
        min_pool_size=1,
        max_pool_size=1,
        statement_timeout_ms=600_000,
        call_timeout_s=900,
        migration_timeout_ms=1_800_000,
    )


async def remeasure(
    data: Path,
    previous: dict[str, Any],
    url: str,
    work: Path,
    candidates: Sequence[int],
    *,
    one_read: bool = False,
    searches: bool = True,
    serve: tuple[float, float] | None = None,
    only: Sequence[str] = (),
    cold: bool = True,
) -> dict[str, Any]:
    """Searches again on the schemas a ``--keep`` run left (``previous``: its JSON); its
    ingest numbers are kept. The schemas are migrated to this code's version first."""
    for entry in previous["sizes"]:
        schema = entry["schema"]
        size = int(schema.split("_")[2])
        loaded = await _load(data, size, work)
        # The corpus lives as long as the run: keep this client's collector from walking
        # its millions of objects in the middle of a timed request.
        gc.collect()
        gc.freeze()
        config = _config(url, schema)
        found = entry.get("search") or {}
        if searches:
            found = await _searches(config, loaded, candidates, one_read=one_read, only=only)
        if serve is not None:
            found["serve"] = await _serve(url, schema, loaded, *serve, work, cold=cold)
        entry["search"] = found
        entry["search_note"] = "searches measured again after the run, with the code of then"
        print(json.dumps(entry["search"]), flush=True)
    return previous


async def measure(
    data: Path,
    sizes: Sequence[int],
    url: str,
    work: Path,
    *,
    keep: bool = False,
    bulk: bool = True,
    candidates: Sequence[int] = (1000,),
    one_read: bool = False,
    searches: bool = True,
    serve: tuple[float, float] | None = None,
    only: Sequence[str] = (),
    cold: bool = True,
) -> dict[str, Any]:
    import psycopg

    from ragtide.builtin.postgres_store import PostgresStore

    results: list[dict[str, Any]] = []
    for size in sizes:
        loaded = await _load(data, size, work)
        # The corpus lives as long as the run: keep this client's collector from walking
        # its millions of objects in the middle of a timed request.
        gc.collect()
        gc.freeze()
        schema = f"bench_scale_{size}_{uuid.uuid4().hex[:6]}"
        config = _config(url, schema)
        store = PostgresStore(config)
        await store.start()
        try:
            if bulk:
                began = time.perf_counter()
                async with store.bulk_load():
                    ingest = await _ingest(store, loaded, NAMESPACE)
                    built = time.perf_counter()
                total = time.perf_counter() - began
                ingest["index_build_seconds"] = round(total - (built - began), 2)
                ingest["chunks_per_s_with_index_build"] = round(ingest["chunks"] / total, 1)
            else:
                ingest = await _ingest(store, loaded, NAMESPACE)
            ingest["indexes"] = (
                "HNSW and postings_by_impact dropped by bulk_load, built after the load"
                if bulk
                else "kept current by writes"
            )
            async with store._connection() as conn:
                await conn.execute("VACUUM ANALYZE")  # what autovacuum does after a load
            found: dict[str, Any] = {}
            if searches:
                found = await _searches(config, loaded, candidates, one_read=one_read, only=only)
            if serve is not None:
                found["serve"] = await _serve(url, schema, loaded, *serve, work, cold=cold)
            sizes_bytes = await _table_sizes(store)
        finally:
            await store.aclose()
            if not keep:
                async with await psycopg.AsyncConnection.connect(url, autocommit=True) as conn:
                    await conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        results.append(
            {
                "chunks": ingest["chunks"],
                "ingest": ingest,
                "search": found,
                "table_bytes": sizes_bytes,
                "schema": schema if keep else None,
            }
        )
        print(json.dumps(results[-1]), flush=True)
    return {
        "store": "postgres",
        "machine": f"{os.cpu_count()} cores, PostgreSQL on the same machine",
        "machine_busy": True,
        "note": "shared machine: other sessions ran tests and benches at the same time",
        "batch_chunks": BATCH_CHUNKS,
        "queries": "SciFact train queries of the corpus (ragtide.bench.corpus), top-30 chunks",
        "sizes": results,
    }


def kept_schema_arguments(parser: argparse.ArgumentParser) -> None:
    """The arguments of a ``bench/experiments`` script run on a schema ``--keep`` left:
    ``--url``, ``--schema``, ``--size`` (the corpus it was built from) and ``--work``."""
    parser.add_argument("--url", default=URL)
    parser.add_argument("--schema", required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--work", type=Path, default=WORK)


def main(argv: Sequence[str] | None = None) -> int:
    from ragtide.bench.data import data_dir

    parser = argparse.ArgumentParser(prog="python -m ragtide.bench.scale_postgres")
    parser.add_argument("--sizes", default="10000,100000")
    parser.add_argument("--url", default=URL)
    parser.add_argument("--data")
    parser.add_argument("--work", type=Path, default=WORK)
    parser.add_argument("--out", type=Path, default=Path("bench/results/scale-postgres.json"))
    parser.add_argument("--keep", action="store_true", help="keep the schemas for EXPLAIN")
    parser.add_argument(
        "--live", action="store_true", help="keep the vector index current while loading"
    )
    parser.add_argument("--candidates", default="1000", help="keyword_candidates to compare")
    parser.add_argument(
        "--search-only", type=Path, help="a --keep run's JSON: measure its schemas' searches again"
    )
    parser.add_argument(
        "--one-read",
        action="store_true",
        help="also the keyword search without its read by score (keyword_reach 0, rescore 60)",
    )
    parser.add_argument(
        "--serve",
        action="store_true",
        help="also serve each size with `ragtide serve` (one replica): /search p50/p99 at"
        " --rate for --seconds, alone and with uploads",
    )
    parser.add_argument(
        "--no-searches",
        action="store_true",
        help="skip the searches one at a time (with --keep: ingest only; with --search-only"
        " and --serve: serve only)",
    )
    parser.add_argument(
        "--only", default="", help="the search modes to measure, comma-separated (all)"
    )
    parser.add_argument(
        "--serve-saved",
        action="store_true",
        help="serve with the indexes an earlier step saved (not a cold cluster)",
    )
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=20.0)
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    candidates = [int(n) for n in args.candidates.split(",") if n]
    data = data_dir(args.data)
    if args.search_only:
        previous = json.loads(args.search_only.read_text())
        result = asyncio.run(
            remeasure(
                data,
                previous,
                args.url,
                args.work,
                candidates,
                one_read=args.one_read,
                searches=not args.no_searches,
                serve=(args.rate, args.seconds) if args.serve else None,
                only=[m for m in args.only.split(",") if m],
                cold=not args.serve_saved,
            )
        )
    else:
        result = asyncio.run(
            measure(
                data,
                sizes,
                args.url,
                args.work,
                keep=args.keep,
                bulk=not args.live,
                candidates=candidates,
                one_read=args.one_read,
                searches=not args.no_searches,
                serve=(args.rate, args.seconds) if args.serve else None,
                only=[m for m in args.only.split(",") if m],
                cold=not args.serve_saved,
            )
        )
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
