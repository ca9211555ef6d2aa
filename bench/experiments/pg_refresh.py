"""What writes accumulating in a large namespace cost PostgreSQL replicas, before and after
one replica refreshes what is saved of it (``_pg_local.LocalKeywords._refresh``): on a
schema ``python -m ragtide.bench.scale_postgres --keep`` left, with its saved keyword index
and vector graph (``--only vector_graph`` saves the graph).

    python bench/experiments/pg_refresh.py --schema bench_scale_1000000_b54130 \
        --size 1000000 [--add 60000] [--url postgresql://postgres@127.0.0.1:5433/ragtide]

1. A replica loads the namespace from its snapshot; a writer adds ``--add`` chunks (new
   documents: the corpus's first ones again, under new ids) and the replica catches up.
   Refreshing is off meanwhile.
2. Searches (SciFact queries, vector and hybrid's keyword half) on that replica: CPU each,
   with the exact search of the graph's tail. A new replica's load: snapshot + catch-up.
3. The replica refreshes: the keyword index saved again from memory, the graph extended by
   its tail and saved. Its duration, CPU, peak memory over its start, and the latency of
   searches run meanwhile on the same event loop.
4. The searches again, and a new replica's load from what was refreshed.

Results go to ``bench/results/pg-refresh-1m.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import gc
import json
import os
import resource
import statistics
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

import __main__
from ragtide.bench import scale_postgres as bench
from ragtide.bench.data import data_dir
from ragtide.bench.scale import sequential_percentiles
from ragtide.bench.server import children_peak_mb
from ragtide.builtin import _pg_local
from ragtide.builtin.postgres_store import PostgresStore
from ragtide.types import Filter

# Refreshing is off but where the experiment starts it (``local_refresh_share`` 1.0).
_LOCAL = {"local_keyword_mb": 4096, "local_keyword_min_chunks": 0, "local_refresh_share": 1.0}


def _percentiles(ms: list[float]) -> dict[str, float]:
    return {"n": len(ms), **sequential_percentiles(ms), "max_ms": round(max(ms), 2)}


async def _searches(store: PostgresStore, queries: list[tuple[str, np.ndarray[Any, Any]]]) -> Any:
    """CPU and wall time per search of each kind, the second pass over ``queries``."""
    out: dict[str, Any] = {}
    for kind in ("vector", "keyword"):
        for _ in range(2):
            cpu, wall = [], []
            for text, vector in queries:
                t, w = time.process_time(), time.perf_counter()
                if kind == "vector":
                    await store.vector_search(bench.NAMESPACE, vector, 30, Filter())
                else:
                    await store.keyword_search(bench.NAMESPACE, text, 30, Filter())
                cpu.append((time.process_time() - t) * 1000)
                wall.append((time.perf_counter() - w) * 1000)
        out[kind] = {
            "app_cpu_ms_per_search": round(statistics.fmean(cpu), 3),
            **_percentiles(wall),
        }
    return out


async def _new_replica(url: str, schema: str) -> dict[str, Any]:
    """A new replica's load (``warm``: readiness) and what it did."""
    store = PostgresStore(bench._config(url, schema).model_copy(update=_LOCAL))
    await store.start()
    began = time.perf_counter()
    cpu = time.process_time()
    try:
        await store.warm()
        local = store.local_keywords
        assert local is not None
        await local.settle()
        index = next(iter(local._indexes.values()), None)
        tail = index.vectors if index is not None and index.graph is not None else None
        return {
            "load_s": round(time.perf_counter() - began, 2),
            "cpu_s": round(time.process_time() - cpu, 2),
            "from_snapshot": local.loads_saved,
            "caught_up": local.catch_ups,
            "graph_tail": len(tail.positions) if tail is not None else None,
        }
    finally:
        await store.aclose()


async def measure(url: str, schema: str, size: int, work: Path, add: int) -> Any:
    __main__._Loaded = bench._Loaded
    loaded = await bench._load(data_dir(None), size, work)
    from ragtide.builtin.static_embedder import StaticEmbedder

    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    queries = [
        (text, np.asarray(await embedder.embed_query(text), np.float32))
        for text in list(loaded.queries.values())[:100]
    ]
    out: dict[str, Any] = {"chunks": size, "schema": schema, "added": add, "cpus": os.cpu_count()}
    writer = PostgresStore(bench._config(url, schema).model_copy(update={"local_keyword_mb": 0}))
    replica = PostgresStore(bench._config(url, schema).model_copy(update=_LOCAL))
    await writer.start()
    await replica.start()
    local = replica.local_keywords
    assert local is not None
    try:
        await replica.warm()
        await local.settle()
        [ns_id] = list(local._indexes)  # the namespace, loaded from its snapshot
        # 1. The writes, and the replica's catch-up.
        began, written, offset, batch = time.perf_counter(), 0, 0, []
        tag = os.urandom(4).hex()  # new documents each run, none replaced
        for doc, chunks in zip(loaded.documents, loaded.chunks, strict=True):
            if written >= add:
                break
            renamed = dataclasses.replace(doc, id=f"refresh-{tag}-{written}-{doc.id}")
            vectors = loaded.vectors[offset : offset + len(chunks)]
            batch.append((renamed, chunks, vectors))
            offset += len(chunks)
            written += len(chunks)
            if sum(len(c) for _, c, _ in batch) >= bench.BATCH_CHUNKS:
                await writer.put_documents(bench.NAMESPACE, batch, loaded.embedder_id)
                batch.clear()
        if batch:
            await writer.put_documents(bench.NAMESPACE, batch, loaded.embedder_id)
        out["write_s"] = round(time.perf_counter() - began, 1)
        began = time.perf_counter()
        await replica.keyword_search(bench.NAMESPACE, "amyloid", 1, Filter())
        out["catch_up_s"] = round(time.perf_counter() - began, 2)
        index = local.get(ns_id)
        assert index is not None and index.graph is not None and index.vectors is not None
        out["tail_before"] = len(index.vectors.positions)
        print("written", out, flush=True)
        # 2. Searches, and a new replica, before the refresh.
        out["searches_before"] = await _searches(replica, queries)
        out["new_replica_before"] = await _new_replica(url, schema)
        print("before", out["searches_before"], out["new_replica_before"], flush=True)
        # 3. The refresh, with searches meanwhile.
        local._refresh_share = 0.05  # the default
        local._look_at.clear()
        # The new replica's index, freed, is returned to the system first: the peak is
        # measured over what the serving replica holds.
        gc.collect()
        _pg_local._give_back()
        bench._reset_peak()
        rss0 = bench._rss_mb()
        cpu0 = time.process_time()
        children0 = resource.getrusage(resource.RUSAGE_CHILDREN)
        child_peak = _ChildPeak()
        child_peak.start()
        began = time.perf_counter()
        local._refresh_later(index)
        assert local._saving is not None, "not due"
        del index  # the replica's own references only: the graph it replaces is let go
        during: list[float] = []
        while local._saving is not None:
            for text, vector in queries[:10]:
                w = time.perf_counter()
                await replica.vector_search(bench.NAMESPACE, vector, 30, Filter())
                await replica.keyword_search(bench.NAMESPACE, text, 30, Filter())
                during.append((time.perf_counter() - w) * 1000 / 2)
        out["refresh"] = {
            "seconds": round(time.perf_counter() - began, 1),
            "process_cpu_s": round(time.process_time() - cpu0, 1),
            "peak_over_start_mb": round(bench._rss_mb("VmHWM") - rss0, 1),
            "rss_growth_mb": round(bench._rss_mb() - rss0, 1),
            # The graph is extended in a child process (``_ann_child``): its own CPU and peak.
            **_children_since(children0, child_peak.stop()),
            "refreshes": local.refreshes,
            "graphs_extended": local.graphs_extended,
            "searches_meanwhile": _percentiles(during),
        }
        index = local.get(ns_id)
        assert index is not None and index.vectors is not None
        out["tail_after"] = len(index.vectors.positions)
        print("refresh", out["refresh"], flush=True)
        # 4. After.
        out["searches_after"] = await _searches(replica, queries)
        out["new_replica_after"] = await _new_replica(url, schema)
        print("after", out["searches_after"], out["new_replica_after"], flush=True)
    finally:
        await replica.aclose()
        await writer.aclose()
    return out


def _children_since(before: resource.struct_rusage, peak_mb: float) -> dict[str, float]:
    now = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = now.ru_utime + now.ru_stime - before.ru_utime - before.ru_stime
    return {"child_cpu_s": round(cpu, 1), "child_peak_rss_mb": round(peak_mb, 1)}


class _ChildPeak(threading.Thread):
    """The largest peak RSS of this process's children, looked at every 0.2 s."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.mb = 0.0
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.2):
            self.mb = max(self.mb, children_peak_mb())

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.mb


def main() -> int:
    parser = argparse.ArgumentParser()
    bench.kept_schema_arguments(parser)
    parser.add_argument("--add", type=int, default=60_000)  # 5.7% of 1.055M: due
    parser.add_argument("--out", type=Path, default=Path("bench/results/pg-refresh-1m.json"))
    args = parser.parse_args()
    result = asyncio.run(measure(args.url, args.schema, args.size, args.work, args.add))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
