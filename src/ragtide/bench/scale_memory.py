"""What one namespace of the embedded store holds in memory, per chunk, in this process.

``python -m ragtide.bench.scale_memory DATA_DIR [--queries 300]`` opens the store of a
data directory that ``ragtide bench scale --keep`` ingested (namespace ``default/scale``;
its saved HNSW base is mapped as at a start), loads the namespace with a first search,
then runs ``--queries`` vector and keyword searches (30 results; queries are the first
words of chunks spread over the namespace) and prints JSON: RSS per chunk (``VmRSS``, and
apart: ``RssAnon``, process memory, and ``RssFile``, mapped file pages the kernel can
drop) above the process before the load, after the first search and after the searches;
the peak (``VmHWM``) above the same, at the end and right after the load; the load's
wall time and CPU (every thread of the process); what ``_Index.nbytes`` accounts for; CPU
per search (the vector searches twice: the first pass maps what it touches). Measured, not asserted:
run it with each version to compare (``PYTHONPATH`` to another checkout's ``src``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["measure", "memory_status"]

_KEYS = ("VmRSS", "RssAnon", "RssFile", "VmHWM")


def memory_status() -> dict[str, int]:
    """This process's resident memory (``/proc/self/status``: RSS, anonymous, file, peak)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in _KEYS:
            out[key] = int(value.split()[0]) * 1024
    return out


def _per_chunk(now: dict[str, int], before: dict[str, int], chunks: int) -> dict[str, int]:
    return {k: round((now[k] - before[k]) / chunks) for k in ("VmRSS", "RssAnon", "RssFile")}


async def measure(data_dir: Path, queries: int, namespace: str = "default/scale") -> dict[str, Any]:
    import apsw

    from ragtide.builtin.sqlite_store import SQLiteStore
    from ragtide.builtin.static_embedder import StaticEmbedder
    from ragtide.types import Filter

    path = data_dir / "ragtide.db"
    conn = apsw.Connection(str(path))
    try:
        chunks = int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])  # type: ignore[index]
        step = max(1, chunks // queries)
        texts = [
            " ".join(str(r[0]).split()[:12])
            for r in conn.execute(
                "SELECT text FROM chunks WHERE rowid % ? = 0 LIMIT ?", (step, queries)
            )
        ]
    finally:
        conn.close()
    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    vectors = [np.asarray(await embedder.embed_query(t), np.float32) for t in texts]
    store = SQLiteStore(SQLiteStore.Config(path=path, warm_min_chunks=0))
    await store.start()
    try:
        before = memory_status()
        began, began_cpu = time.perf_counter(), time.process_time()
        await store.vector_search(namespace, vectors[0], 10, Filter())
        load_s, load_cpu_s = time.perf_counter() - began, time.process_time() - began_cpu
        first = memory_status()
        cpu: dict[str, float] = {}
        for name in ("vector", "vector_second_pass", "keyword"):
            t = time.process_time()
            for vector, text in zip(vectors, texts, strict=True):
                if name == "keyword":
                    await store.keyword_search(namespace, text, 30, Filter())
                else:
                    await store.vector_search(namespace, vector, 30, Filter())
            cpu[name] = round((time.process_time() - t) * 1000 / len(texts), 2)
        searched = memory_status()
        index = store._indexes.get(namespace)
        accounted = 0 if index is None else index.nbytes()
        hnsw = namespace in store._bases
    finally:
        await store.aclose()
    return {
        "chunks": chunks,
        "searches": len(texts),
        "hnsw": hnsw,
        "load_s": round(load_s, 2),
        "load_cpu_s": round(load_cpu_s, 2),
        "bytes_per_chunk_after_first_search": _per_chunk(first, before, chunks),
        "bytes_per_chunk_after_searches": _per_chunk(searched, before, chunks),
        "peak_bytes_per_chunk": round((searched["VmHWM"] - before["VmRSS"]) / chunks),
        "load_peak_bytes_per_chunk": round((first["VmHWM"] - before["VmRSS"]) / chunks),
        "accounted_bytes_per_chunk": round(accounted / chunks),
        "cpu_ms_per_search": cpu,
        "process_before_load_mb": round(before["VmRSS"] / 2**20, 1),
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ragtide.bench.scale_memory")
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--queries", type=int, default=300)
    args = parser.parse_args(argv)
    print(json.dumps(asyncio.run(measure(args.data_dir, args.queries))))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
