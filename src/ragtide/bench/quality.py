"""Retrieval quality on BEIR SciFact (train queries), for every embedder and fusion variant."""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragtide.bench.data import read_jsonl, read_qrels
from ragtide.bench.metrics import mrr_at, ndcg_at, recall_at
from ragtide.builtin.retrievers import HybridRetriever
from ragtide.ingest.pipeline import Ingestor
from ragtide.runtime import Runtime, build_runtime
from ragtide.settings import ComponentSpec, Settings, StoreSpec
from ragtide.types import RetrievalRequest

Fusion = Literal["rrf", "convex", "keyword", "vector"]

__all__ = ["VARIANTS", "evaluate", "ingest_corpus"]

# (fusion, vector weight, candidates per list): keyword-only is BM25 alone, the baseline
# the floor compares to. 300 candidates let Recall@100 be measured; the last rows use the
# serving default (50 per list), which is what /search and /chat run with.
VARIANTS: list[tuple[Fusion, float, int]] = [
    ("keyword", 0.0, 300),
    ("vector", 1.0, 300),
    ("rrf", 1.0, 300),
    ("rrf", 0.5, 300),
    ("convex", 0.2, 300),
    ("convex", 0.35, 300),
    ("convex", 0.5, 300),
    ("convex", 0.7, 300),
    ("convex", 1.0, 300),
    ("convex", 0.5, 50),
    ("convex", 0.5, 20),
]


async def ingest_corpus(
    settings: Settings, corpus: Path, namespace: str
) -> tuple[Runtime, dict[str, Any]]:
    rt = build_runtime(settings)
    await rt.start()
    began = time.perf_counter()
    outcomes = await Ingestor(rt).ingest_paths(namespace, [corpus])
    elapsed = time.perf_counter() - began
    chunks = sum(o.chunks for o in outcomes)
    return rt, {
        "documents": len(outcomes),
        "chunks": chunks,
        "seconds": round(elapsed, 2),
        "chunks_per_s": round(chunks / elapsed, 1) if elapsed else None,
    }


def _spec(embedder: str) -> ComponentSpec:
    """``static`` or ``static@128`` (a truncated dimension)."""
    name, _, dim = embedder.partition("@")
    return ComponentSpec(use=name, config={"dim": int(dim)} if dim else {})


async def _rank(
    rt: Runtime, retriever: HybridRetriever, ns: str, text: str, depth: int
) -> list[str]:
    vector = await rt.embedder.embed_query(text)
    hits = await retriever.retrieve(
        RetrievalRequest(namespace=ns, text=text, vector=vector, top_k=depth * 3)
    )
    ranked: list[str] = []
    for hit in hits:  # a document ranks where its best chunk does
        if hit.document_id not in ranked:
            ranked.append(hit.document_id)
    return ranked[:depth]


async def evaluate(
    data: Path,
    embedders: list[str],
    work_dir: Path,
    variants: list[tuple[Fusion, float, int]] = VARIANTS,
    store: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """nDCG@10, Recall@100 and MRR@10 per variant; ``store`` overrides the store spec."""
    scifact = data / "scifact"
    queries = {q["_id"]: q["text"] for q in read_jsonl(scifact / "queries.train.jsonl")}
    qrels = read_qrels(scifact / "qrels.train.tsv")
    qids = [q for q in qrels if q in queries]
    rows: list[dict[str, Any]] = []
    ingest: dict[str, Any] = {}
    for embedder in embedders:
        settings = Settings(
            data_dir=work_dir / embedder,
            embedder=_spec(embedder),
            logging={"level": "WARNING"},
        )
        if store:
            settings = settings.model_copy(update={"store": StoreSpec.model_validate(store)})
        rt, ingest[embedder] = await ingest_corpus(settings, scifact / "corpus.jsonl", "scifact")
        try:
            for fusion, weight, candidates in variants:
                if fusion == "keyword" and embedder != embedders[0]:
                    continue  # identical for every embedder
                retriever = HybridRetriever(
                    HybridRetriever.Config(
                        fusion=fusion, vector_weight=weight, candidates=candidates
                    ),
                    store=rt.store,
                )
                # Serving rows rank as /chat does: only the documents of ~30 chunks.
                depth = 100 if candidates >= 100 else 10
                ndcg, recall, mrr, times = [], [], [], []
                for qid in qids:
                    began = time.perf_counter()
                    ranked = await _rank(rt, retriever, "scifact", queries[qid], depth)
                    times.append(time.perf_counter() - began)
                    ndcg.append(ndcg_at(ranked, qrels[qid], 10))
                    recall.append(recall_at(ranked, qrels[qid], 100))
                    mrr.append(mrr_at(ranked, qrels[qid], 10))
                rows.append(
                    {
                        "embedder": "-" if fusion == "keyword" else embedder,
                        "fusion": fusion,
                        "vector_weight": weight,
                        "candidates": candidates,
                        "ndcg@10": round(float(np.mean(ndcg)), 4),
                        "recall@100": round(float(np.mean(recall)), 4) if depth == 100 else None,
                        "mrr@10": round(float(np.mean(mrr)), 4),
                        "query_ms_p50": round(statistics.median(times) * 1000, 3),
                    }
                )
        finally:
            await rt.aclose()
    return {
        "dataset": "scifact train",
        "store": (store or {}).get("use", "sqlite"),
        "queries": len(qids),
        "ingest": ingest,
        "variants": rows,
    }
