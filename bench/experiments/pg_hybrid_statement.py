"""What reading both lists of a hybrid search in one statement saves
(``PostgresStore.hybrid_search``) against asking the store for each list on its own (two
statements, as before 2026-12-07): on a schema ``python -m ragtide.bench.scale_postgres
--keep`` left, with its saved keyword index and vector graph.

    python bench/experiments/pg_hybrid_statement.py --schema bench_scale_1000000_c22bb8 \
        --size 1000000 [--url postgresql://postgres@127.0.0.1:5433/ragtide]

One replica (this process) reads the namespace from its snapshot, then ``HybridRetriever``
(the serving defaults: convex fusion, 20 candidates a side, top 10) answers the 200
SciFact queries, in four alternating passes (two statements, one, two, one), each after
20 searches to warm: CPU per retrieval of this process and of the whole PostgreSQL server.
Both ways must give the same hits for every query. No HTTP: the store and the retriever
alone. Results go to ``bench/results/pg-hybrid-statement-1m.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np

import __main__
from ragtide.bench import scale_postgres as bench
from ragtide.bench.cluster import postmaster_pid
from ragtide.bench.data import data_dir
from ragtide.bench.scale import sequential_percentiles
from ragtide.builtin.postgres_store import PostgresStore
from ragtide.builtin.retrievers import HybridRetriever
from ragtide.types import Filter, Hit, RetrievalRequest

_LOCAL = {"local_keyword_mb": 4096, "local_keyword_min_chunks": 0, "local_refresh_share": 1.0}


class _OneListAtATime:
    """The store without ``hybrid_search``: the retriever asks for each list."""

    def __init__(self, store: PostgresStore) -> None:
        self._store = store

    async def keyword_search(self, *args: Any) -> list[Hit]:
        return await self._store.keyword_search(*args)

    async def vector_search(self, *args: Any) -> list[Hit]:
        return await self._store.vector_search(*args)


async def _pass(
    retriever: HybridRetriever, requests: list[RetrievalRequest], postmaster: int
) -> tuple[dict[str, Any], list[list[str]]]:
    for request in requests[:20]:
        await retriever.retrieve(request)
    cpu, db = time.process_time(), bench._server_cpu(postmaster)
    wall, found = [], []
    for request in requests:
        began = time.perf_counter()
        hits = await retriever.retrieve(request)
        wall.append((time.perf_counter() - began) * 1000)
        found.append([h.chunk.id for h in hits])
    n = len(requests)
    return {
        "replica_cpu_ms_per_search": round((time.process_time() - cpu) * 1000 / n, 3),
        "database_cpu_ms_per_search": round((bench._server_cpu(postmaster) - db) * 1000 / n, 3),
        **sequential_percentiles(wall),
    }, found


async def measure(url: str, schema: str, size: int, work: Path) -> Any:
    __main__._Loaded = bench._Loaded
    loaded = await bench._load(data_dir(None), size, work)
    from ragtide.builtin.static_embedder import StaticEmbedder

    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    requests = [
        RetrievalRequest(
            namespace=bench.NAMESPACE,
            text=text,
            vector=np.asarray(await embedder.embed_query(text), np.float32).tolist(),
            filter=Filter(),
            top_k=10,
        )
        for text in loaded.queries.values()
    ]
    del loaded
    replica = PostgresStore(bench._config(url, schema).model_copy(update=_LOCAL))
    await replica.start()
    postmaster = await asyncio.to_thread(postmaster_pid, url)
    try:
        await replica.warm()
        assert replica.local_keywords is not None
        await replica.local_keywords.settle()
        config = HybridRetriever.Config()
        ways = {
            "two_statements": HybridRetriever(config, store=_OneListAtATime(replica)),  # type: ignore[arg-type]
            "one_statement": HybridRetriever(config, store=replica),
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in ways}
        answers: dict[str, list[list[str]]] = {}
        for name in [*ways, *ways]:
            result, answers[name] = await _pass(ways[name], requests, postmaster)
            runs[name].append(result)
            print(name, result, flush=True)
        same = sum(a == b for a, b in zip(*answers.values(), strict=True))
    finally:
        await replica.aclose()
    return {
        "bench": __doc__.split("\n\n")[0].replace("\n", " "),
        "schema": schema,
        "chunks": size,
        "searches_per_pass": len(requests),
        "order": "two_statements, one_statement, two_statements, one_statement",
        "runs": runs,
        "replica_cpu_ms_per_search_mean": {
            name: round(statistics.fmean(r["replica_cpu_ms_per_search"] for r in rs), 3)
            for name, rs in runs.items()
        },
        "database_cpu_ms_per_search_mean": {
            name: round(statistics.fmean(r["database_cpu_ms_per_search"] for r in rs), 3)
            for name, rs in runs.items()
        },
        "same_hits_for_queries": f"{same} of {len(requests)}",
        "cpus": os.cpu_count(),
        "date": time.strftime("%Y-%m-%d"),
    }


def main() -> int:
    parser = argparse.ArgumentParser()
    bench.kept_schema_arguments(parser)
    parser.add_argument(
        "--out", type=Path, default=Path("bench/results/pg-hybrid-statement-1m.json")
    )
    args = parser.parse_args()
    result = asyncio.run(measure(args.url, args.schema, args.size, args.work))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
