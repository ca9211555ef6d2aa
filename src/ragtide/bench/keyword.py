"""Keyword top-k as one namespace grows: CPU per search in-process, exhaustive and MaxScore.

``python -m ragtide.bench.keyword --sizes 100000,300000,1000000 [--data DIR] [--work DIR]``

For each size, the corpus of ``ragtide.bench.corpus`` (SciFact's judged documents mixed
into filler, every text unique) is chunked as ingestion chunks it (``ingest.prepare``, the
default chunking) and each chunk's terms counted as the embedded store counts them (title,
headings and text through ``bm25.Analyzer``); the counts are cached in ``--work``. The
chunks become one ``bm25.Postings`` built in batches of 4,096 (segments merge as the store's
do), and the corpus's SciFact queries are ranked (top 30 chunks, as hybrid retrieval asks
for) by:

- **exhaustive**: every posting of every query term scored (``wand.top_k`` with
  ``exhaustive_below`` above the size);
- **MaxScore**: ``wand.top_k``'s MaxScore path in numpy (``compiled=False``: what the
  store runs for a filtered search, and where numba is missing);
- **compiled**: ``wand.top_k``'s MaxScore as one compiled loop (``_maxscore``: what the
  store runs for an unfiltered search from ``EXHAUSTIVE_BELOW`` positions up; compiled
  before the clock starts).

CPU time per query (``time.process_time``, the median of five interleaved rounds over all
queries) and nDCG@10 of the documents in rank order are reported, and whether both return
the same chunks. The growth exponent of each is fitted over the sizes (cost ∝ N^b). This is
the keyword side alone, without HTTP, the vector side or the store's locking: what the
``/search`` tables measure end to end. Numbers are measured, never asserted; the JSON
records the machine's 1-minute load before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import pickle
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["main", "measure"]

BATCH = 4096
ROUNDS = 5
TOP = 30


def _postings(data: Path, size: int, work: Path) -> tuple[Any, list[str], dict[str, int], Any]:
    """(postings, document id per position, term ids, corpus) for ``size`` chunks (cached)."""
    from ragtide.bench.corpus import build_corpus
    from ragtide.builtin.bm25 import Analyzer, Postings
    from ragtide.ingest.prepare import Prepared, PrepareJob, prepare

    corpus = build_corpus(data, size, work / f"corpus-{size}")
    cache = work / f"keyword-postings-{size}.pickle"
    if cache.exists():
        cached = pickle.loads(cache.read_bytes())
        for segment in cached[0].segments:  # derived tables are computed afresh, as a load does
            object.__setattr__(segment, "bounds", [])
        return cached[0].prepare(), cached[1], cached[2], corpus
    analyzer = Analyzer()
    vocabulary: dict[str, int] = {}
    ids: list[np.ndarray[Any, Any]] = []
    tfs: list[np.ndarray[Any, Any]] = []
    owners: list[str] = []
    for shard in corpus.shards:
        lines = shard.read_bytes().splitlines(keepends=True)
        for start in range(0, len(lines), 5000):
            job = PrepareJob("corpus.jsonl", b"".join(lines[start : start + 5000]))
            for doc in prepare(job):
                if not isinstance(doc, Prepared):
                    continue
                for chunk in doc.chunks:
                    counts = analyzer.term_counts(
                        f"{chunk.title}\n{' '.join(chunk.headings)}\n{chunk.text}"
                    )
                    pairs = sorted(
                        (vocabulary.setdefault(t, len(vocabulary)), min(c, 65535))
                        for t, c in counts.items()
                    )
                    ids.append(np.array([p[0] for p in pairs], np.uint32))
                    tfs.append(np.array([p[1] for p in pairs], np.uint16))
                    owners.append(chunk.document_id)
    postings = Postings.empty()
    for at in range(0, len(ids), BATCH):
        postings = postings.add(ids[at : at + BATCH], tfs[at : at + BATCH])
    cache.write_bytes(pickle.dumps((postings, owners, vocabulary)))
    return postings, owners, vocabulary, corpus


def _documents(positions: Sequence[int], owners: Sequence[str]) -> list[str]:
    """Documents in rank order, each where its best chunk ranks."""
    out: list[str] = []
    for p in positions:
        if owners[p] not in out:
            out.append(owners[p])
    return out


def measure(data: Path, sizes: Sequence[int], work: Path) -> dict[str, Any]:
    from ragtide.bench.metrics import ndcg_at
    from ragtide.builtin import wand
    from ragtide.builtin.bm25 import Analyzer

    load_before = round(os.getloadavg()[0], 2)
    analyzer = Analyzer()
    rows = []
    for size in sizes:
        began = time.perf_counter()
        postings, owners, vocabulary, corpus = _postings(data, size, work)
        built = time.perf_counter() - began
        qids = [q for q in corpus.qrels if q in corpus.queries]
        queries = [
            [vocabulary[t] for t in analyzer.query_terms(corpus.queries[q]) if t in vocabulary]
            for q in qids
        ]
        variants: dict[str, dict[str, Any]] = {
            "exhaustive": {"exhaustive_below": 1 << 62},
            "maxscore": {"exhaustive_below": 0, "compiled": False},
            "compiled": {"exhaustive_below": 0},
        }
        wand.top_k(postings, queries[0], TOP, exhaustive_below=0)  # compiled here
        cpu: dict[str, list[float]] = {name: [] for name in variants}
        ranked: dict[str, list[Any]] = {}
        for _ in range(ROUNDS):
            for name, options in variants.items():
                start = time.process_time()
                got = [wand.top_k(postings, q, TOP, **options) for q in queries]
                cpu[name].append((time.process_time() - start) / len(queries) * 1000)
                ranked[name] = [positions.tolist() for positions, _ in got]
        row: dict[str, Any] = {
            "chunks": len(postings),
            "documents": len(set(owners)),
            "postings": sum(len(s) for s in postings.segments),
            "segments": len(postings.segments),
            "queries": len(queries),
            "setup_seconds": round(built, 1),
            "same_chunks": ranked["exhaustive"] == ranked["maxscore"] == ranked["compiled"],
        }
        for name in variants:
            row[f"{name}_cpu_ms"] = round(statistics.median(cpu[name]), 3)
            row[f"{name}_ndcg@10"] = round(
                statistics.fmean(
                    ndcg_at(_documents(r, owners), corpus.qrels[q], 10)
                    for r, q in zip(ranked[name], qids, strict=True)
                ),
                4,
            )
        rows.append(row)
        print(json.dumps(row), flush=True)
    exponents = {
        name: _exponent([r["chunks"] for r in rows], [r[f"{name}_cpu_ms"] for r in rows])
        for name in ("exhaustive", "maxscore", "compiled")
    }
    return {
        "bench": "keyword top-k in-process (ragtide.bench.keyword)",
        "top": TOP,
        "rounds": ROUNDS,
        "exhaustive_below": wand.EXHAUSTIVE_BELOW,
        "load_1min": [load_before, round(os.getloadavg()[0], 2)],
        "cores": os.cpu_count(),
        "sizes": rows,
        "exponents": exponents,
    }


def _exponent(sizes: Sequence[int], values: Sequence[float]) -> float | None:
    if len(sizes) < 2:
        return None
    slope = np.polyfit(np.log(sizes), np.log(values), 1)[0]
    return round(float(slope), 2)


def main(argv: Sequence[str] | None = None) -> int:
    from ragtide.bench.data import data_dir

    parser = argparse.ArgumentParser(prog="python -m ragtide.bench.keyword")
    parser.add_argument("--sizes", default="100000,300000,1000000")
    parser.add_argument("--data", help="evaluation data directory")
    parser.add_argument("--work", default=".bench-work/keyword", help="cache directory")
    parser.add_argument("--out", default="bench/results/keyword-scale.json")
    args = parser.parse_args(argv)
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [int(s) for s in args.sizes.split(",")]
    result = measure(data_dir(args.data), sizes, work)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
