"""Vector search through a PostgreSQL replica's graph (``_pg_local``) with more or fewer
candidates per hit (``GRAPH_OVERSAMPLE``; ``GRAPH_MARGIN`` is ``--margin`` meanwhile):
nDCG@10 and database CPU per search, on a schema ``python -m
ragtide.bench.scale_postgres --keep`` left (its saved graph is read).

    python bench/experiments/pg_graph_oversample.py --schema bench_scale_1000000_9fd42e \
        --size 1000000 [--url postgresql://postgres@127.0.0.1:5433/ragtide]

The 200 SciFact queries are split by id parity (even: where a setting would be chosen;
odd: where it is reported); each setting's queries run twice, the second pass reported.
Results go to ``bench/results/pg-graph-oversample.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

import __main__
from ragtide.bench import scale_postgres as bench
from ragtide.bench.data import data_dir
from ragtide.builtin import _pg_local
from ragtide.builtin.postgres_store import PostgresStore

_KEPT = ("db_cpu_ms_per_search", "app_cpu_ms_per_search", "p50_ms", "ndcg@10")


async def measure(url: str, schema: str, size: int, work: Path, settings: list[float]) -> Any:
    # The corpus cache is pickled by ``python -m ragtide.bench.scale_postgres``, whose
    # module was ``__main__`` then.
    __main__._Loaded = bench._Loaded  # type: ignore[attr-defined]
    loaded = await bench._load(data_dir(None), size, work)
    update = {"local_keyword_mb": 4096, "local_keyword_min_chunks": 0}
    store = PostgresStore(bench._config(url, schema).model_copy(update=update))
    await store.start()
    await store.warm()  # reads the saved keyword index and graph
    results: dict[str, Any] = {}
    try:
        for oversample in settings:
            _pg_local.GRAPH_OVERSAMPLE = oversample
            await bench._search(store, loaded, bench.NAMESPACE, "vector")
            result = await bench._search(store, loaded, bench.NAMESPACE, "vector")
            kept = {k: result[k] for k in _KEPT}
            kept |= {f"ndcg@10_{h}_ids": result[f"ndcg@10_{h}_ids"] for h in ("even", "odd")}
            results[str(oversample)] = kept
            print(oversample, kept, flush=True)
    finally:
        await store.aclose()
    ranked = store.local_vector_searches
    return {"chunks": size, "schema": schema, "ranked_in_replica": ranked, "by": results}


def main() -> int:
    parser = argparse.ArgumentParser()
    bench.kept_schema_arguments(parser)
    parser.add_argument("--settings", default="1,1.25,1.5,2,3")
    parser.add_argument("--margin", type=int, default=0, help="GRAPH_MARGIN meanwhile")
    parser.add_argument("--out", type=Path, default=Path("bench/results/pg-graph-oversample.json"))
    args = parser.parse_args()
    settings = [float(s) for s in args.settings.split(",")]
    _pg_local.GRAPH_MARGIN = args.margin
    result = asyncio.run(measure(args.url, args.schema, args.size, args.work, settings))
    result["margin"] = args.margin
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
