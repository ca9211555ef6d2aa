"""How the HNSW graphs' vector quantisation (``ann.new_index``: i8 today) and search
breadth bound vector-only quality at scale, on the corpus ``python -m
ragtide.bench.scale_postgres`` prepares (its cached, embedded chunks): recall@10 of the
exact top 10 chunks and nDCG@10 on the SciFact queries mixed into it, against exact search,
with the same candidate rule as a PostgreSQL replica (``k + GRAPH_MARGIN`` graph hits
ordered by their exact similarity).

    python bench/experiments/ann_quantisation.py --size 1000000 \
        [--work /var/tmp/ragtide-scale-pg] [--quantisations i8,f16] [--expansions 256,512,1024]

The 200 SciFact queries are split by id order into halves (even: where a setting would be
chosen; odd: where it is reported). Graphs are built with the stores' settings (M 32,
ef_add 128) on every core; search CPU is this process's per query. Results go to
``bench/results/ann-quantisation.json``; no setting is changed here.
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
from ragtide.bench.data import data_dir
from ragtide.bench.metrics import ndcg_at
from ragtide.builtin import ann
from ragtide.builtin._pg_local import GRAPH_MARGIN

TOP_K = 30  # what the scale bench asks a store for


async def measure(size: int, work: Path, quantisations: list[str], expansions: list[int]) -> Any:
    # The corpus cache is pickled by ``python -m ragtide.bench.scale_postgres``.
    __main__._Loaded = bench._Loaded
    loaded = await bench._load(data_dir(None), size, work)
    from ragtide.builtin.static_embedder import StaticEmbedder

    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    qids = sorted(loaded.queries)
    queries = bench._unit_rows(
        np.stack(
            [np.asarray(await embedder.embed_query(loaded.queries[q]), np.float32) for q in qids]
        )
    ).astype(np.float32)
    matrix = bench._unit_rows(loaded.vectors.astype(np.float32, copy=False)).astype(np.float32)
    doc_of = [
        d.id for d, chunks in zip(loaded.documents, loaded.chunks, strict=True) for _ in chunks
    ]
    qrels = loaded.qrels
    del loaded

    def scored(candidates: np.ndarray[Any, Any], q: int) -> np.ndarray[Any, Any]:
        sims = matrix[candidates] @ queries[q]
        return candidates[np.lexsort((candidates, -sims))][:TOP_K]

    exact: list[np.ndarray[Any, Any]] = []
    for q in range(len(qids)):
        sims = matrix @ queries[q]
        top = np.argpartition(-sims, TOP_K)[:TOP_K]
        exact.append(scored(top, q))

    def summary(per: dict[str, float]) -> dict[str, float]:
        return {
            "all": round(statistics.fmean(per.values()), 4),
            "even_half": round(statistics.fmean(per[q] for q in qids[0::2]), 4),
            "odd_half": round(statistics.fmean(per[q] for q in qids[1::2]), 4),
        }

    def ndcg(ranked: list[np.ndarray[Any, Any]]) -> dict[str, float]:
        per = {
            qid: ndcg_at(bench._documents(doc_of[int(c)] for c in r), qrels[qid], 10)
            for qid, r in zip(qids, ranked, strict=True)
        }
        return summary(per)

    out: dict[str, Any] = {
        "chunks": len(matrix),
        "dim": int(matrix.shape[1]),
        "top_k": TOP_K,
        "candidates": f"k + {GRAPH_MARGIN}",
        "cpus": os.cpu_count(),
        "exact": {"ndcg@10": ndcg(exact)},
    }
    print("exact", out["exact"], flush=True)
    keys = np.arange(len(matrix), dtype=np.uint64)
    for quantisation in quantisations:
        began = time.perf_counter()
        index = ann.new_index(int(matrix.shape[1]), quantisation=quantisation)  # type: ignore[arg-type]
        for start in range(0, len(matrix), 65_536):
            index.add(keys[start : start + 65_536], matrix[start : start + 65_536], threads=0)
        built = {"build_s": round(time.perf_counter() - began, 1)}
        built["bytes_per_vector"] = round(index.memory_usage / len(matrix), 1)
        print(quantisation, built, flush=True)
        for expansion in expansions:
            ranked: list[np.ndarray[Any, Any]] = []
            cpu: list[float] = []
            for q in range(len(qids)):
                t = time.process_time()
                hits = ann.nearest_keys(index, queries[q], TOP_K + GRAPH_MARGIN, expansion)
                ranked.append(scored(hits, q))
                cpu.append(time.process_time() - t)
            recall = {
                qid: len(set(r[:10].tolist()) & set(e[:10].tolist())) / 10
                for qid, r, e in zip(qids, ranked, exact, strict=True)
            }
            result = {
                "ndcg@10": ndcg(ranked),
                "recall@10_of_exact": summary(recall),
                "cpu_ms_median": round(statistics.median(cpu) * 1000, 3),
            }
            out[f"{quantisation},ef={expansion}"] = built | result
            print(quantisation, expansion, result, flush=True)
        del index
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--work", type=Path, default=Path("/var/tmp/ragtide-scale-pg"))
    parser.add_argument("--quantisations", default="i8,f16")
    parser.add_argument("--expansions", default="256,512,1024")
    parser.add_argument("--out", type=Path, default=Path("bench/results/ann-quantisation.json"))
    args = parser.parse_args()
    quantisations = args.quantisations.split(",")
    expansions = [int(e) for e in args.expansions.split(",")]
    result = asyncio.run(measure(args.size, args.work, quantisations, expansions))
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
