"""Loading a big namespace: a full load (every chunk row read from SQLite) against a load that
maps the namespace's saved snapshot (``ragtide.builtin._snapshot``).

``python bench/snapshot_load.py --sizes 100000,300000 --work /tmp/snapbench`` builds the
corpora (``ragtide.bench.corpus.build_corpus`` from ``../shared/data``), writes each into a
store of its own through the store directly (chunked as ingestion chunks, terms counted
as the parse workers count them, vectors from the static embedder; faster than ``ragtide
ingest`` on a shared machine, the same rows), builds and saves its HNSW base once (a start
maps it, as a served namespace's), then measures fresh processes, alternately:

- ``full``: no snapshot (``snapshot_min_chunks=0``): every row read;
- ``first``: the first load of a store with snapshots on: a full load, and the snapshot
  written after it in the background (how long that takes, and its size on disk);
- ``snapshot``: the next start: the snapshot mapped;
- ``since`` (last): 1 % of the chunks added and 0.2 % of the documents deleted first
  (not timed), then a snapshot load that applies them.

Each child measures the load's wall time and CPU (every thread of the process), RSS after
it (``VmRSS``, ``RssAnon``: process memory, ``RssFile``: mapped pages), what the budget
accounts, and the first search's wall time (keyword, then vector, 30 results) after the
load. The page cache is warm for both (the bench just wrote or read the files): a cold
disk makes both slower. Measured, not asserted; ``os.getloadavg()`` is recorded before and
after every child, since the machine is shared. Writes ``bench/results/snapshot-load.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragtide.bench.scale_memory import memory_status

_NAMESPACE = "default/scale"


async def _ingest(corpus: Any, path: Path) -> int:
    """Write ``corpus`` into a new store at ``path``; the chunks written."""
    from ragtide.builtin.sqlite_store import SQLiteStore
    from ragtide.builtin.static_embedder import StaticEmbedder
    from ragtide.ingest.prepare import Prepared, PrepareJob, prepare
    from ragtide.types import DocumentInfo

    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    store = SQLiteStore(SQLiteStore.Config(path=path, warm_min_chunks=0, snapshot_min_chunks=0))
    await store.start()
    written = 0
    began = time.perf_counter()
    try:
        for shard in corpus.shards:
            lines = shard.read_bytes().splitlines(keepends=True)
            for start in range(0, len(lines), 2_000):
                job = PrepareJob(
                    "corpus.jsonl",
                    b"".join(lines[start : start + 2_000]),
                    first_line=start + 1,
                    count_terms=True,
                )
                docs = [d for d in prepare(job) if isinstance(d, Prepared)]
                texts = [c.text for d in docs for c in d.chunks]
                vectors = np.asarray(await embedder.embed_documents(texts), np.float32)
                writes, at = [], 0
                for d in docs:
                    info = DocumentInfo(
                        id=d.id,
                        title=d.title,
                        source="bench",
                        content_hash=d.content_hash,
                        chunks=len(d.chunks),
                        created_at=0.0,
                        updated_at=0.0,
                        metadata=dict(d.metadata),
                    )
                    writes.append((info, d.chunks, vectors[at : at + len(d.chunks)]))
                    at += len(d.chunks)
                await store.put_documents(_NAMESPACE, writes, embedder.model_id)
                written += at
            print(f"ingested {written} chunks in {time.perf_counter() - began:.0f} s", flush=True)
    finally:
        await store.aclose()
        await embedder.aclose()
    return written


async def _build_base(path: Path) -> None:
    """Load once and build the HNSW base (saved beside the file, mapped by every child)."""
    from ragtide.builtin.sqlite_store import SQLiteStore
    from ragtide.types import Filter

    store = SQLiteStore(SQLiteStore.Config(path=path, warm_min_chunks=0, snapshot_min_chunks=0))
    await store.start()
    try:
        dim = 256
        await store.vector_search(_NAMESPACE, np.ones(dim, np.float32), 10, Filter())
        await asyncio.gather(*store._building.values())
    finally:
        await store.aclose()


def prepare(data: Path, size: int, work: Path) -> Path:
    from ragtide.bench.corpus import build_corpus

    corpus = build_corpus(data, size, work / f"corpus-{size}")
    directory = work / f"data-{size}"
    path = directory / "ragtide.db"
    if not (directory / "ingested").exists():
        shutil.rmtree(directory, ignore_errors=True)
        directory.mkdir(parents=True)
        chunks = asyncio.run(_ingest(corpus, path))
        (directory / "ingested").write_text(str(chunks))
    if not any((directory / "ragtide.db.ann").glob("*.usearch")):
        asyncio.run(_build_base(path))
    return path


async def _write_since(path: Path) -> dict[str, int]:
    """Chunks written and deleted after the snapshot, as a serving day would: 1 % of the
    chunks added (their texts again as new one-chunk documents, random unit vectors of the
    namespace's model) and 0.2 % of the documents deleted."""
    import apsw

    from ragtide.builtin.sqlite_store import SQLiteStore
    from ragtide.testing.fakes import make_chunks, make_document

    conn = apsw.Connection(str(path))
    try:
        chunks = int(conn.execute("SELECT count(*) FROM chunks").fetchone()[0])  # type: ignore[index]
        model = str(conn.execute("SELECT embedder FROM chunks LIMIT 1").fetchone()[0])  # type: ignore[index]
        texts = [
            str(r[0]) for r in conn.execute("SELECT text FROM chunks LIMIT ?", (chunks // 100,))
        ]
        doomed = [
            str(r[0])
            for r in conn.execute(
                "SELECT id FROM documents WHERE id LIKE 'mix-%' ORDER BY id LIMIT ?",
                (chunks // 500,),
            )
        ]
    finally:
        conn.close()
    rng = np.random.default_rng(0)
    store = SQLiteStore(SQLiteStore.Config(path=path, warm_min_chunks=0, snapshot_min_chunks=0))
    await store.start()
    try:
        for at in range(0, len(texts), 500):
            writes = []
            for i, text in enumerate(texts[at : at + 500], start=at):
                vector = rng.standard_normal((1, 256)).astype(np.float32)
                vector /= np.linalg.norm(vector)
                name = f"since-{i}"
                writes.append((make_document(name), make_chunks(name, [text]), vector))
            await store.put_documents(_NAMESPACE, writes, model)
        for name in doomed:
            await store.delete_document(_NAMESPACE, name)
    finally:
        await store.aclose()
    return {"added_chunks": len(texts), "deleted_documents": len(doomed)}


async def _child(path: Path, mode: str, query: str) -> dict[str, Any]:
    """One fresh process's load (``mode`` as in the module docstring) and first search."""
    from ragtide.builtin.sqlite_store import SQLiteStore
    from ragtide.builtin.static_embedder import StaticEmbedder
    from ragtide.types import Filter

    since = await _write_since(path) if mode == "since" else None
    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    vector = np.asarray(await embedder.embed_query(query), np.float32)
    minimum = 0 if mode == "full" else SQLiteStore.Config().snapshot_min_chunks
    store = SQLiteStore(
        SQLiteStore.Config(path=path, warm_min_chunks=1, snapshot_min_chunks=minimum)
    )
    await store.start()
    try:
        before = memory_status()
        began, cpu = time.perf_counter(), time.process_time()
        await store.warm()  # as a serving process starts: /ready waits for this
        for _ in range(100_000):
            try:
                await store.ping()
                break
            except Exception:
                await asyncio.sleep(0.005)
        load_s, load_cpu_s = time.perf_counter() - began, time.process_time() - cpu
        loaded = memory_status()
        first = time.perf_counter()
        keyword = await store.keyword_search(_NAMESPACE, query, 30, Filter())
        keyword_ms = (time.perf_counter() - first) * 1000
        vectors = await store.vector_search(_NAMESPACE, vector, 30, Filter())
        first_search_ms = (time.perf_counter() - first) * 1000
        second = time.perf_counter()
        await store.keyword_search(_NAMESPACE, query, 30, Filter())
        await store.vector_search(_NAMESPACE, vector, 30, Filter())
        second_search_ms = (time.perf_counter() - second) * 1000
        index = store._indexes.get(_NAMESPACE)
        accounted = 0 if index is None else index.nbytes()
        size = 0 if index is None else index.postings.live
        saved_s = None
        if mode == "first":
            began = time.perf_counter()
            await store.snapshots_saved()
            saved_s = round(time.perf_counter() - began, 2)
    finally:
        await store.aclose()
        await embedder.aclose()
    return {
        "mode": mode,
        "chunks": size,
        "load_s": round(load_s, 3),
        "load_cpu_s": round(load_cpu_s, 3),
        "rss_after_load_mb": {
            k: round((loaded[k] - before[k]) / 2**20, 1) for k in ("VmRSS", "RssAnon", "RssFile")
        },
        "process_before_load_mb": round(before["VmRSS"] / 2**20, 1),
        "accounted_mb": round(accounted / 2**20, 1),
        "first_search_ms": round(first_search_ms, 1),
        "first_keyword_ms": round(keyword_ms, 1),
        "second_search_ms": round(second_search_ms, 1),
        "hits": [len(keyword), len(vectors)],
        "top": [h.chunk.id for h in keyword[:3]] + [h.chunk.id for h in vectors[:3]],
        "snapshot_written_after_s": saved_s,
        "written_since_snapshot": since,
    }


def _run_child(path: Path, mode: str, query: str) -> dict[str, Any]:
    load_before = os.getloadavg()
    out = subprocess.run(
        [sys.executable, __file__, "--child", str(path), mode, query],
        check=True,
        capture_output=True,
        text=True,
    )
    result: dict[str, Any] = json.loads(out.stdout.strip().splitlines()[-1])
    result["loadavg_before"] = [round(x, 2) for x in load_before]
    result["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return result


def _disk(directory: Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _median(runs: list[dict[str, Any]], mode: str, key: str) -> float:
    values = sorted(r[key] for r in runs if r["mode"] == mode)
    return float(values[len(values) // 2])


def measure(path: Path, rounds: int, query: str) -> dict[str, Any]:
    snap = path.with_name(path.name + ".snap")
    shutil.rmtree(snap, ignore_errors=True)
    runs = [_run_child(path, "first", query)]
    snapshot_bytes = _disk(snap) if snap.exists() else 0
    for _ in range(rounds):
        runs.append(_run_child(path, "snapshot", query))
        runs.append(_run_child(path, "full", query))
    same = len({tuple(r["top"]) for r in runs}) == 1
    # Last: it changes the namespace (the next run's full loads include the change).
    runs.append(_run_child(path, "since", query))
    summary = {
        mode: {key: _median(runs, mode, key) for key in ("load_s", "load_cpu_s", "first_search_ms")}
        for mode in ("full", "snapshot")
    }
    for mode in ("full", "snapshot"):
        rss = [r["rss_after_load_mb"] for r in runs if r["mode"] == mode]
        summary[mode]["rss_after_load_mb"] = rss[len(rss) // 2]
    return {
        "database_bytes": path.stat().st_size,
        "snapshot_bytes": snapshot_bytes,
        "same_top_hits": same,
        "median": summary,
        "runs": runs,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python bench/snapshot_load.py")
    parser.add_argument("--sizes", default="100000,300000")
    parser.add_argument("--work", type=Path, default=Path("/tmp/snapbench"))
    parser.add_argument("--data", default=None)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--prepare-only", action="store_true")
    parser.add_argument("--out", type=Path, default=Path("bench/results/snapshot-load.json"))
    parser.add_argument("--child", nargs=3, metavar=("DB", "MODE", "QUERY"))
    args = parser.parse_args(argv)
    if args.child:
        db, mode, query = args.child
        print(json.dumps(asyncio.run(_child(Path(db), mode, query))))
        return 0
    from ragtide.bench.data import data_dir

    data = data_dir(args.data)
    sizes = [int(s) for s in args.sizes.split(",")]
    paths = {size: prepare(data, size, args.work) for size in sizes}
    if args.prepare_only:
        return 0
    queries = (args.work / f"corpus-{sizes[0]}" / "queries.jsonl").read_text().splitlines()
    query = str(json.loads(queries[0])["text"])  # a SciFact query judged in the corpus
    results: dict[str, Any] = {
        "command": "python bench/snapshot_load.py " + " ".join(sys.argv[1:]),
        "query": query,
        "page_cache": "warm (files just written or read); the other benchmark's ingest ran",
        "machine": {"cores": os.cpu_count(), "loadavg_start": list(os.getloadavg())},
        "sizes": {str(size): measure(paths[size], args.rounds, query) for size in sizes},
    }
    results["machine"]["loadavg_end"] = list(os.getloadavg())
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
