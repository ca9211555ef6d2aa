"""``ragtide bench scale --small-namespaces 2000x50``: many small namespaces in one budget.

The embedded store holds each namespace's search snapshot in memory once searched, within
``SQLiteStore.Config.index_budget_mb`` (least recently searched evicted first). This
measures what that costs when a replica serves many tenants' small namespaces:

1. **Ingest** N namespaces of ~50 chunks each (texts of ``ragtide.bench.corpus``, one
   JSONL file per namespace) through the ingest pipeline in this process (``Ingestor``,
   the path ``ragtide ingest`` takes: batched embedding, the sandboxed parser), a few
   namespaces at a time, stopping at N or after ``--ingest-seconds``: the N measured is
   the number ingested.
2. **Unlimited** (a child process, budget 0): every namespace searched once (all
   resident), the RSS then, and the bytes the store accounts them for; then a seeded
   random sequence of searches at a fixed open-loop rate.
3. **Budgeted** (a fresh child process per budget, every namespace searched once first,
   so the budget is full and the run starts in its steady state): the same sequence
   under a budget of each of ``--budget-shares`` of the unlimited run's accounted
   bytes: the share of searches that found their namespace resident, p50/p99 (from the
   scheduled start) of searches that found it resident and of those that reloaded it,
   evictions, RSS, and whether every search returned exactly what the unlimited run
   returned.

Searches are the serving default (``HybridRetriever``: keyword + vector, static embedder,
query vectors computed before the clock starts). Timings are measured, never asserted.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import math
import os
import random
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["measure_small_namespaces", "report_lines"]

PREFIX = "default/small-"
_SELF = (sys.executable, "-m", "ragtide.bench.scale_namespaces")


def _load1() -> float:
    return round(os.getloadavg()[0], 2)


def _chunks_of(text: str) -> int:
    """Chunks a text of this many words makes at the default chunking (200, 40 overlap)."""
    words = len(text.split())
    return 1 if words <= 200 else 1 + math.ceil((words - 200) / 160)


def _files(data: Path, out: Path, count: int, per: int, seed: int) -> list[tuple[str, Path]]:
    """``count`` JSONL files of ~``per`` chunks each (reused when already written)."""
    from ragtide.bench.corpus import corpus_documents

    manifest = out / "manifest.json"
    params = {"count": count, "per": per, "seed": seed}
    names = [f"{PREFIX}{i:05d}" for i in range(count)]
    paths = [out / f"ns-{i:05d}.jsonl" for i in range(count)]
    if manifest.exists() and json.loads(manifest.read_text()) == params:
        return list(zip(names, paths, strict=True))
    out.mkdir(parents=True, exist_ok=True)
    documents = corpus_documents(data, count * per * 2, seed=seed)
    for path in paths:
        lines, chunks = [], 0
        for doc in documents:
            lines.append(json.dumps(doc, ensure_ascii=False))
            chunks += _chunks_of(str(doc["text"]))
            if chunks >= per:
                break
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    manifest.write_text(json.dumps(params))
    return list(zip(names, paths, strict=True))


async def _ingest(
    files: Sequence[tuple[str, Path]], data_dir: Path, seconds: float, parallel: int
) -> dict[str, Any]:
    from ragtide.ingest.pipeline import Ingestor
    from ragtide.runtime import build_runtime
    from ragtide.settings import Settings

    settings = Settings(data_dir=data_dir, logging={"level": "WARNING"}, answer_cache_enabled=False)
    rt = build_runtime(settings)
    await rt.start()
    load_start = _load1()
    began = time.perf_counter()
    cpu, workers = time.process_time(), _children_cpu()
    done: list[str] = []
    chunks = 0
    pending = iter(files)
    try:
        async with Ingestor(rt) as ingestor:

            async def worker() -> None:
                nonlocal chunks
                for namespace, path in pending:  # shared: each worker takes the next
                    if time.perf_counter() - began > seconds:
                        return
                    outcomes = await ingestor.ingest_paths(namespace, [path])
                    chunks += sum(o.chunks for o in outcomes)
                    done.append(namespace)

            await asyncio.gather(*(worker() for _ in range(parallel)))
    finally:
        await rt.aclose()  # the parse workers end (and are waited for) here
    elapsed = time.perf_counter() - began
    per_chunk = 1000 / max(1, chunks)
    return {
        "namespaces": len(done),
        "chunks": chunks,
        "chunks_per_namespace": round(chunks / max(1, len(done)), 1),
        "seconds": round(elapsed, 1),
        "chunks_per_s": round(chunks / elapsed, 1),
        "parallel": parallel,
        # CPU per chunk: this process (event loop, embedding, the store's writer) and the
        # parse sandbox's worker processes (parsing and chunking).
        "cpu_ms_per_chunk": {
            "process": round((time.process_time() - cpu) * per_chunk, 3),
            "parse_workers": round((_children_cpu() - workers) * per_chunk, 3),
        },
        "loadavg_1m": [load_start, _load1()],
        "names": sorted(done),
    }


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --- the child process: one store, one sequence of searches ----------------------------


def _pct(values: Sequence[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return round(ordered[min(len(ordered) - 1, int(q * len(ordered)))], 2)


def _summary(rows: Sequence[tuple[bool, float, float]]) -> dict[str, Any]:
    latency = [r[1] for r in rows]
    service = [r[2] for r in rows]
    return {
        "searches": len(rows),
        "p50_ms": _pct(latency, 0.5),
        "p99_ms": _pct(latency, 0.99),
        "service_p50_ms": _pct(service, 0.5),
        "service_p99_ms": _pct(service, 0.99),
    }


def _evictions() -> float:
    from prometheus_client import REGISTRY

    labels = {"store": "search_indexes", "reason": "bytes"}
    return REGISTRY.get_sample_value("ragtide_budget_evictions_total", labels) or 0.0


async def _search_run(job: dict[str, Any]) -> dict[str, Any]:
    """One store over the file, ``job["plan"]`` searched at ``job["rate"]`` (open loop)."""
    import numpy as np

    from ragtide.bench.server import rss_mb
    from ragtide.builtin.retrievers import HybridRetriever
    from ragtide.builtin.sqlite_store import SQLiteStore
    from ragtide.builtin.static_embedder import StaticEmbedder
    from ragtide.types import RetrievalRequest

    names: list[str] = job["names"]
    texts: list[str] = job["queries"]
    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    vectors = [np.asarray(await embedder.embed_query(t), np.float32) for t in texts]
    config = SQLiteStore.Config(
        path=Path(job["db"]), index_budget_mb=job["budget_bytes"] / 2**20, warm_min_chunks=0
    )
    store = SQLiteStore(config)
    await store.start()
    retriever = HybridRetriever(HybridRetriever.Config(), store=store)
    me = os.getpid()
    out: dict[str, Any] = {"rss_mb_start": round(rss_mb(me), 1)}

    async def search(namespace: str, q: int) -> str:
        request = RetrievalRequest(namespace=namespace, text=texts[q], vector=vectors[q], top_k=10)
        hits = await retriever.retrieve(request)
        key = ";".join(f"{h.chunk.id}:{h.score:.5f}" for h in hits)
        return hashlib.blake2b(key.encode(), digest_size=8).hexdigest()

    try:
        # Every namespace searched once before the clock starts (steady state: all resident
        # when unlimited, the budget full of the last ones otherwise).
        if job["load_all"]:
            began = time.perf_counter()
            for i, namespace in enumerate(names):
                await search(namespace, i % len(texts))
            out["load_all_s"] = round(time.perf_counter() - began, 1)
            out["rss_mb_all_loaded"] = round(rss_mb(me), 1)
            out["index_bytes_all_loaded"] = store.index_bytes
        plan: list[tuple[int, int]] = job["plan"]
        rate: float = job["rate"]
        rows: list[tuple[bool, float, float]] = [(False, 0.0, 0.0)] * len(plan)
        digests = [""] * len(plan)
        peaks = {"rss_mb": rss_mb(me), "index_bytes": store.index_bytes}
        evictions, cpu = _evictions(), time.process_time()

        async def one(i: int, namespace: str, q: int, at: float) -> None:
            resident = store.index_loaded(namespace)
            started = time.perf_counter()
            digests[i] = await search(namespace, q)
            end = time.perf_counter()
            rows[i] = (resident, (end - at) * 1000, (end - started) * 1000)
            peaks["index_bytes"] = max(peaks["index_bytes"], store.index_bytes)
            if i % 100 == 0:
                peaks["rss_mb"] = max(peaks["rss_mb"], rss_mb(me))
            if i % every == 0:  # RSS over time: does churn level off?
                timeline.append([round(end - t0, 1), round(rss_mb(me), 1)])

        tasks = []
        timeline: list[list[float]] = []
        every = max(1, int(rate * 10))
        t0 = time.perf_counter() + 0.05
        for i, (n, q) in enumerate(plan):
            at = t0 + i / rate
            delay = at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i, names[n], q, at)))
        await asyncio.gather(*tasks)
        elapsed = time.perf_counter() - t0
        hits = [r for r in rows if r[0]]
        misses = [r for r in rows if not r[0]]
        out.update(
            {
                "budget_bytes": job["budget_bytes"],
                "searches": len(rows),
                "achieved_rate": round(len(rows) / elapsed, 1),
                "cpu_ms_per_search": round((time.process_time() - cpu) * 1000 / len(rows), 2),
                "hit_rate": round(len(hits) / len(rows), 4),
                "resident": _summary(hits),
                "reloaded": _summary(misses),
                "evictions": int(_evictions() - evictions),
                "index_bytes_end": store.index_bytes,
                "index_bytes_max": peaks["index_bytes"],
                "resident_namespaces_end": sum(store.index_loaded(n) for n in names),
                "rss_mb_end": round(rss_mb(me), 1),
                "rss_mb_max": round(max(peaks["rss_mb"], rss_mb(me)), 1),
                "rss_mb_every_10s": timeline,
                "digests": digests,
            }
        )
    finally:
        await store.aclose()
        await embedder.aclose()
    return out


def _child(job: dict[str, Any], work: Path, name: str) -> dict[str, Any]:
    path = work / f"{name}-job.json"
    path.write_text(json.dumps(job))
    done = subprocess.run(
        [*_SELF, "--search", str(path)], check=True, stdout=subprocess.PIPE, text=True
    )
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def measure_small_namespaces(
    data: Path,
    work: Path,
    *,
    count: int,
    per: int,
    rate: float,
    seconds: float,
    budget_shares: Sequence[float],
    ingest_seconds: float,
    keep: Path | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    from ragtide.bench.data import read_jsonl

    loads = [_load1()]
    began = time.perf_counter()
    data_dir = (keep or work) / f"small-{count}x{per}"
    data_dir.mkdir(parents=True, exist_ok=True)
    done = data_dir / "ingest.json"
    if keep and done.exists():
        ingest = {**json.loads(done.read_text()), "from_earlier_run": True}
    else:
        files = _files(data, work / f"small-corpus-{count}x{per}", count, per, seed)
        ingest = asyncio.run(_ingest(files, data_dir, ingest_seconds, parallel=3))
        done.write_text(json.dumps(ingest))
    loads.append(_load1())
    names: list[str] = ingest["names"]
    queries = [str(q["text"]) for q in read_jsonl(data / "scifact" / "queries.train.jsonl")]
    queries = queries[:200]
    rng = random.Random(seed)
    total = int(rate * seconds)
    plan = [(rng.randrange(len(names)), rng.randrange(len(queries))) for _ in range(total)]
    job = {
        "db": str(data_dir / "ragtide.db"),
        "names": names,
        "queries": queries,
        "plan": plan,
        "rate": rate,
    }
    unlimited = _child({**job, "budget_bytes": 0, "load_all": True}, work, "unlimited")
    loads.append(_load1())
    all_bytes = unlimited["index_bytes_all_loaded"]
    want = unlimited.pop("digests")
    budgeted = []
    for share in budget_shares:
        run = {**job, "budget_bytes": round(share * all_bytes), "load_all": True}
        result = _child(run, work, f"budgeted-{share}")
        loads.append(_load1())
        got = result.pop("digests")
        same = sum(a == b for a, b in zip(want, got, strict=True))
        budgeted.append(
            {"budget_share": share, **result, "identical_results": same == total, "same": same}
        )
    rss_growth = unlimited["rss_mb_all_loaded"] - unlimited["rss_mb_start"]
    return {
        "target_namespaces": count,
        "chunks_per_namespace_target": per,
        "namespaces": len(names),
        "ingest": {k: v for k, v in ingest.items() if k != "names"},
        "settings": {
            "rate": rate,
            "seconds": seconds,
            "budget_shares": list(budget_shares),
            "seed": seed,
            "retrieval": "hybrid (keyword + vector), top 10, static embedder",
        },
        "estimate": {
            "index_bytes_per_namespace": round(all_bytes / len(names)),
            "rss_growth_bytes_per_namespace": round(rss_growth * 2**20 / len(names)),
        },
        "unlimited": unlimited,
        "budgeted": budgeted,
        "identical_results": all(b["identical_results"] for b in budgeted),
        "machine": {
            "cores": os.cpu_count(),
            "loadavg_1m": loads,
            "machine_busy": max(loads) > 1.5,
            "seconds": round(time.perf_counter() - began, 1),
        },
    }


def report_lines(small: dict[str, Any]) -> list[str]:
    """The README's rows for the many-small-namespaces run (under the scale table)."""

    def cell(*parts: object) -> str:
        return "| " + " | ".join(str(p) for p in parts) + " |"

    un = small["unlimited"]
    machine = small["machine"]
    busy = "machine busy, " if machine["machine_busy"] else ""
    ingest = small["ingest"]
    reached = f"{small['namespaces']:,} namespaces"
    if small["namespaces"] < small["target_namespaces"]:
        reached += f" (all that {ingest['seconds']:.0f} s of ingest reached)"
    how = f"{ingest['chunks']:,} chunks ingested in {ingest['seconds']:.0f} s, "
    how += f"{ingest['chunks_per_s']:,.0f} chunks/s"
    cpu = ingest.get("cpu_ms_per_chunk")
    if cpu:
        how += (
            f" ({ingest['parallel']} namespaces at a time; CPU per chunk {cpu['process']} ms "
            f"in the process + {cpu['parse_workers']} ms in the parse workers)"
        )
    lines = [
        f"Many small namespaces, one process (`ragtide bench scale --small-namespaces "
        f"{small['target_namespaces']}x{small['chunks_per_namespace_target']}`: "
        f"{reached} of ~{ingest['chunks_per_namespace']} chunks, {how}; "
        f"searched in a seeded random order at "
        f"{small['settings']['rate']:g}/s; {busy}1-minute load "
        f"{min(machine['loadavg_1m'])}-{max(machine['loadavg_1m'])}):",
        "",
        cell(
            "index budget",
            "resident at end",
            "hit rate",
            "RSS after the first pass → end",
            "p50 / p99 (service p50) resident",
            "p50 / p99 (service p50) reloaded",
            "evictions",
            "results as unlimited",
        ),
        cell(*["---"] * 8),
    ]
    mib = 2**20
    rows = [(f"unlimited, all loaded first ({un['index_bytes_all_loaded'] / mib:.0f} MiB)", un)]
    rows += [
        (f"{b['budget_share']:.0%} of that ({b['budget_bytes'] / mib:.1f} MiB)", b)
        for b in small["budgeted"]
    ]

    def latency(part: dict[str, Any]) -> str:
        if not part["searches"]:
            return "-"
        return f"{part['p50_ms']} / {part['p99_ms']} ({part['service_p50_ms']}) ms"

    for label, run in rows:
        lines.append(
            cell(
                label,
                f"{run['resident_namespaces_end']:,}",
                run["hit_rate"],
                f"{run['rss_mb_all_loaded']:.0f} → {run['rss_mb_end']:.0f} MB",
                latency(run["resident"]),
                latency(run["reloaded"]),
                run["evictions"],
                "yes" if run.get("identical_results", True) else "**no**",
            )
        )
    estimate = small["estimate"]
    extra = [
        b["reloaded"]["service_p50_ms"] - b["resident"]["service_p50_ms"]
        for b in small["budgeted"]
        if b["reloaded"]["searches"] and b["resident"]["searches"]
    ]
    reload = ""
    if extra:
        reload = f" A reload cost ~{statistics.fmean(extra):.1f} ms more than a resident search."
    lines += [
        "",
        f"Each run searched every namespace once before the clock (the budgeted ones start "
        f"full). The store accounts {estimate['index_bytes_per_namespace'] / 1000:.0f} KB "
        f"per namespace; RSS grew {estimate['rss_growth_bytes_per_namespace'] / 1000:.0f} "
        f"KB per namespace loaded (RSS at start {un['rss_mb_start']:.0f} MB).{reload} "
        "Latencies run from each search's scheduled start; the service time is the search "
        "alone.",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--search"]:
        job = json.loads(Path(argv[1]).read_text())
        print(json.dumps(asyncio.run(_search_run(job))))
        return 0
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
