"""Vector-only and hybrid nDCG@10 through the HNSW index against exact search, for a few
search settings, on a store ``ragtide bench scale --keep DIR`` ingested (its saved HNSW
base).

    python bench/experiments/ann_expansion.py --store /tmp/scale-keep/data-1000000 \
        --size 1000000 --corpora /tmp/scale-corpora [--data ../shared/data] \
        [--settings 4:128,4:256,4:512]

Hybrid is the serving default (``HybridRetriever`` over the same store and settings).

The 200 SciFact queries are split by id order into halves (even: where a setting would be
chosen; odd: where it is reported). CPU is this process's per search (top 30). Results
go to ``bench/results/ann-expansion.json``; the settings are never changed here.
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

from ragtide.bench.corpus import build_corpus
from ragtide.bench.metrics import ndcg_at
from ragtide.builtin.sqlite_store import SQLiteStore
from ragtide.builtin.static_embedder import StaticEmbedder
from ragtide.types import Filter

SETTINGS = ((4, 512), (4, 1024), (8, 512), (8, 1024), (16, 1024), (4, 2048))


async def measure(
    store_dir: Path,
    size: int,
    corpora: Path,
    data: Path,
    settings: tuple[tuple[int, int], ...] = SETTINGS,
) -> dict[str, Any]:
    from ragtide.builtin.retrievers import HybridRetriever
    from ragtide.types import RetrievalRequest

    corpus = build_corpus(data, size, corpora / f"corpus-{size}")
    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    vectors = {
        q: np.asarray(await embedder.embed_query(t), np.float32) for q, t in corpus.queries.items()
    }
    store = SQLiteStore(SQLiteStore.Config(path=store_dir / "ragtide.db", warm_min_chunks=0))
    await store.start()
    namespace = "default/scale"
    out: dict[str, Any] = {"chunks_target": size, "loadavg_start": os.getloadavg()}
    try:
        began = time.perf_counter()
        await store.vector_search(namespace, next(iter(vectors.values())), 10, Filter())
        out["load_s"] = round(time.perf_counter() - began, 2)
        base = store._config
        retriever = HybridRetriever(HybridRetriever.Config(), store=store)
        for oversample, expansion in ((0, 0), *settings):
            exact = oversample == 0
            store._config = base.model_copy(
                update={"ann_min_chunks": 0}
                if exact
                else {"ann_oversample": oversample, "ann_expansion": expansion}
            )
            per: dict[str, float] = {}
            hybrid: dict[str, float] = {}
            cpu: list[float] = []
            for qid in sorted(corpus.queries):
                t = time.process_time()
                hits = await store.vector_search(namespace, vectors[qid], 30, Filter())
                cpu.append(time.process_time() - t)
                ranked = list(dict.fromkeys(h.document_id for h in hits))
                per[qid] = float(ndcg_at(ranked, corpus.qrels[qid], 10))
                request = RetrievalRequest(
                    namespace=namespace, text=corpus.queries[qid], vector=vectors[qid], top_k=30
                )
                fused = await retriever.retrieve(request)
                ranked = list(dict.fromkeys(h.document_id for h in fused))
                hybrid[qid] = float(ndcg_at(ranked, corpus.qrels[qid], 10))
            ids = sorted(per)
            key = "exact" if exact else f"oversample={oversample},ef={expansion}"
            out[key] = {
                "ndcg@10_all": round(statistics.fmean(per.values()), 4),
                "ndcg@10_even_half": round(statistics.fmean(per[q] for q in ids[0::2]), 4),
                "ndcg@10_odd_half": round(statistics.fmean(per[q] for q in ids[1::2]), 4),
                **{
                    f"hybrid_ndcg@10_{half}": round(statistics.fmean(hybrid[q] for q in part), 4)
                    for half, part in (
                        ("all", ids),
                        ("even_half", ids[0::2]),
                        ("odd_half", ids[1::2]),
                    )
                },
                "cpu_ms_mean": round(statistics.fmean(cpu) * 1000, 2),
                "cpu_ms_median": round(statistics.median(cpu) * 1000, 2),
            }
            print(key, out[key], flush=True)
    finally:
        await store.aclose()
    out["loadavg_end"] = os.getloadavg()
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--store", type=Path, required=True)
    parser.add_argument("--size", type=int, required=True)
    parser.add_argument("--corpora", type=Path, required=True)
    parser.add_argument("--data", type=Path, default=Path("../shared/data"))
    parser.add_argument("--out", type=Path, default=Path("bench/results/ann-expansion.json"))
    parser.add_argument("--settings", help="oversample:ef,... (default: the six above)")
    args = parser.parse_args()
    settings: tuple[tuple[int, int], ...] = SETTINGS
    if args.settings:
        pairs = (part.split(":") for part in args.settings.split(","))
        settings = tuple((int(o), int(e)) for o, e in pairs)
    result = asyncio.run(measure(args.store, args.size, args.corpora, args.data, settings))
    args.out.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
