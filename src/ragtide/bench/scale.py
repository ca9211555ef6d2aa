"""``ragtide bench scale``: the embedded store's costs as one namespace grows.

``ragtide bench scale --sizes 10000,30000,100000 [--rate 20] [--seconds 15]``

For each size, the corpus of ``ragtide.bench.corpus`` (SciFact's corpus and 200 judged
queries mixed into filler from SciFact and SQuAD texts) is

1. ingested with ``ragtide ingest`` (the CLI, as an operator would): chunks/s;
2. searched in this process through the store itself, once exactly (no vector index) and
   once through the HNSW index (built first, timed): nDCG@10 of the SciFact queries for
   keyword, vector and hybrid (the serving default) retrieval, and the CPU per search;
3. served by ``ragtide serve``: spawn -> ``/ready`` (which waits for the namespace's
   indexes: the saved HNSW base is memory-mapped), the first search after ready, RSS,
   CPU per search (sequential), ``/search`` p50/p99 at an open-loop rate, and the same
   with a small upload every 100 ms (an upload's effect on search p99).

``--keep DIR`` keeps each size's store (and what was measured of it) in ``DIR`` and
reuses it: its ingestion and its quality numbers (with the HNSW base they built, ~12 min
at 1M chunks) are then the earlier run's, marked ``from_earlier_run``, and only the
serving is measured again (``--requality`` measures quality again too).

Growth exponents are fitted (log-log least squares) across sizes. The JSON goes to
``bench/results/scale.json`` and a PNG of cost against size beside it. Timings are
measured on whatever machine runs it, never asserted; ``machine`` says how busy it was.

``ragtide bench scale --small-namespaces 2000x50 [--budget-shares 0.1,0.5]`` measures the
other shape: many small namespaces searched in a random order under an index
memory budget (``ragtide.bench.scale_namespaces``). Each mode replaces only its own part
of ``scale.json`` (``--previous``: the file the other part is kept from).
"""

from __future__ import annotations

import asyncio
import json
import math
import os
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["measure_scale", "report_lines"]

NAMESPACE = "scale"  # the default tenant's: stored as default/scale
_SELF = (sys.executable, "-m", "ragtide.bench.scale")


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def _env(data_dir: Path, extra: dict[str, str] | None = None) -> dict[str, str]:
    return {
        **os.environ,
        "RAGTIDE_DATA_DIR": str(data_dir),
        "RAGTIDE_LOGGING__LEVEL": "WARNING",
        "RAGTIDE_ANSWER_CACHE_ENABLED": "false",
        **(extra or {}),
    }


def _ingest(shards: Sequence[Path], data_dir: Path) -> dict[str, Any]:
    import apsw

    began = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "ragtide.cli", "ingest", *map(str, shards), "-n", NAMESPACE, "-q"],
        env=_env(data_dir),
        check=True,
        stdout=subprocess.DEVNULL,
    )
    seconds = time.perf_counter() - began
    conn = apsw.Connection(str(data_dir / "ragtide.db"))
    row = conn.execute("SELECT count(*) FROM chunks").fetchone()
    conn.close()
    chunks = int(row[0]) if row else 0
    return {"chunks": chunks, "seconds": round(seconds, 1), "chunks_per_s": round(chunks / seconds)}


def _ndcg10(ranked: list[str], judged: dict[str, int]) -> float:
    from ragtide.bench.metrics import ndcg_at

    return float(ndcg_at(ranked, judged, 10))


async def _quality(data_dir: Path, corpus: Any, chunks: int) -> dict[str, Any]:
    """nDCG@10 and CPU per search, exact and through the HNSW index, in this process."""
    from ragtide.builtin.retrievers import HybridRetriever
    from ragtide.builtin.sqlite_store import SQLiteStore
    from ragtide.builtin.static_embedder import StaticEmbedder
    from ragtide.types import Filter, RetrievalRequest

    embedder = StaticEmbedder(StaticEmbedder.Config())
    await embedder.start()
    namespace = f"default/{NAMESPACE}"
    queries = corpus.queries
    vectors = {q: np.asarray(await embedder.embed_query(t), np.float32) for q, t in queries.items()}
    path = data_dir / "ragtide.db"
    out: dict[str, Any] = {}
    for mode, ann_min in (("exact", 0), ("hnsw", 1_000)):
        if ann_min:  # build it afresh, with this code's parameters
            shutil.rmtree(path.with_name(path.name + ".ann"), ignore_errors=True)
        store = SQLiteStore(
            SQLiteStore.Config(path=path, ann_min_chunks=ann_min, warm_min_chunks=0)
        )
        await store.start()
        try:
            some = next(iter(vectors.values()))
            began = time.perf_counter()
            await store.vector_search(namespace, some, 10, Filter())  # loads; starts a build
            load_s = time.perf_counter() - began
            build_s = None
            if ann_min:
                files = path.with_name(path.name + ".ann")
                while not list(files.glob("*.usearch")):
                    await asyncio.sleep(0.1)
                build_s = round(time.perf_counter() - began - load_s, 1)
            retriever = HybridRetriever(HybridRetriever.Config(), store=store)
            scores: dict[str, list[float]] = {"keyword": [], "vector": [], "hybrid": []}
            cpu: dict[str, list[float]] = {"keyword": [], "vector": []}
            for qid, text in queries.items():
                judged = corpus.qrels[qid]
                t = time.process_time()
                kw = await store.keyword_search(namespace, text, 30, Filter())
                cpu["keyword"].append(time.process_time() - t)
                t = time.process_time()
                vs = await store.vector_search(namespace, vectors[qid], 30, Filter())
                cpu["vector"].append(time.process_time() - t)
                hy = await retriever.retrieve(
                    RetrievalRequest(namespace=namespace, text=text, vector=vectors[qid], top_k=30)
                )
                for name, hits in (("keyword", kw), ("vector", vs), ("hybrid", hy)):
                    ranked: list[str] = []
                    for hit in hits:
                        if hit.document_id not in ranked:
                            ranked.append(hit.document_id)
                    scores[name].append(_ndcg10(ranked, judged))
            out[mode] = {
                "load_s": round(load_s, 2),
                "hnsw_build_s": build_s,
                "ndcg@10": {k: round(statistics.fmean(v), 4) for k, v in scores.items()},
                "cpu_ms_per_search": {
                    k: round(statistics.fmean(v) * 1000, 2) for k, v in cpu.items()
                },
            }
        finally:
            await store.aclose()
    out["hnsw_minus_exact_ndcg@10"] = {
        k: round(out["hnsw"]["ndcg@10"][k] - out["exact"]["ndcg@10"][k], 4)
        for k in ("vector", "hybrid")
    }
    return out


def _upload_loop(argv: Sequence[str]) -> None:
    """Child process: a small Markdown upload every 100 ms for ``seconds``, each a new
    document (names and texts of this run's own: an upload identical to one an earlier
    run of a kept store made is unchanged, and writes nothing). Prints how many were
    stored (201) and how many answered otherwise."""
    import httpx

    port, seconds = int(argv[0]), float(argv[1])
    url = f"http://127.0.0.1:{port}/v1/namespaces/{NAMESPACE}/documents"
    run = f"{os.getpid()}-{time.time_ns()}"
    statuses: dict[int, int] = {}
    start = time.monotonic()
    with httpx.Client(timeout=30) as client:
        i = 0
        while time.monotonic() - start < seconds:
            time.sleep(max(0.0, start + i * 0.1 - time.monotonic()))
            body = f"# Scale note {run} {i}\n\nUpload {i} of {run}: coral reef heron lighthouse.\n"
            response = client.post(url, files={"file": (f"scale-note-{run}-{i}.md", body.encode())})
            statuses[response.status_code] = statuses.get(response.status_code, 0) + 1
            i += 1
    print(json.dumps({"uploads": statuses}), flush=True)


def sequential_percentiles(latencies_ms: Sequence[float]) -> dict[str, float]:
    """p50 and p99 of searches sent one at a time (ms, two decimals)."""
    ordered = sorted(latencies_ms)
    return {
        "p50_ms": round(ordered[len(ordered) // 2], 2),
        "p99_ms": round(ordered[min(len(ordered) - 1, int(0.99 * len(ordered)))], 2),
    }


async def open_loops(
    port: int, path: str, bodies: Sequence[dict[str, Any]], rate: float, seconds: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """``path`` at an open-loop ``rate`` for ``seconds``, alone and then with a small
    upload into ``NAMESPACE`` every 100 ms (``_upload_loop``, a child process)."""
    from ragtide.bench.server import _open_loop

    quiet = await _open_loop(port, path, bodies, rate, seconds, connections=16)
    uploader = subprocess.Popen(
        [*_SELF, "--upload", str(port), str(seconds)], stdout=subprocess.PIPE, text=True
    )
    mixed = await _open_loop(port, path, bodies, rate, seconds, connections=16)
    out, _ = await asyncio.to_thread(uploader.communicate, timeout=120)
    mixed["uploads"] = json.loads(out.strip().splitlines()[-1])["uploads"] if out else None
    return quiet, mixed


def _serve(data_dir: Path, corpus: Any, rate: float, seconds: float) -> dict[str, Any]:
    import httpx

    from ragtide.bench.server import cpu_seconds, free_port, rss_mb, stop, wait_ready

    port = free_port()
    began = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "ragtide.cli", "serve", "--port", str(port)],
        env=_env(data_dir),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    path = f"/v1/namespaces/{NAMESPACE}/search"
    bodies = [{"query": t, "top_k": 10} for t in corpus.queries.values()]
    try:
        ready_s = wait_ready(proc, port, began, timeout=900)
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
            t = time.perf_counter()
            client.post(path, json=bodies[0]).raise_for_status()
            first_ms = (time.perf_counter() - t) * 1000
            rss_after_first = rss_mb(proc.pid)
            latencies = []
            cpu0 = cpu_seconds(proc.pid)
            for body in bodies[:100]:
                t = time.perf_counter()
                client.post(path, json=body).raise_for_status()
                latencies.append((time.perf_counter() - t) * 1000)
            cpu = cpu_seconds(proc.pid) - cpu0
        quiet, mixed = asyncio.run(open_loops(port, path, bodies, rate, seconds))
        rss_end = rss_mb(proc.pid)
    finally:
        stop(proc)
    return {
        "spawn_to_ready_s": round(ready_s, 2),
        "first_search_after_ready_ms": round(first_ms, 1),
        "rss_mb_after_first_search": round(rss_after_first, 1),
        "rss_mb_end": round(rss_end, 1),
        "sequential": {
            **sequential_percentiles(latencies),
            "server_cpu_ms_per_search": round(cpu * 1000 / len(latencies), 2),
        },
        "open_loop": quiet,
        "open_loop_with_uploads": mixed,
    }


def _exponent(sizes: Sequence[int], values: Sequence[float | None]) -> float | None:
    """b in value ~ a * size^b (least squares on logs); None with under two points."""
    pairs = [(math.log(s), math.log(v)) for s, v in zip(sizes, values, strict=True) if v]
    if len(pairs) < 2:
        return None
    x, y = zip(*pairs, strict=True)
    return round(float(np.polyfit(x, y, 1)[0]), 2)


def _plot(rows: list[dict[str, Any]], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["chunks"] for r in rows]
    fig, ax = plt.subplots(1, 2, figsize=(11, 4))
    for mode in ("exact", "hnsw"):
        for kind in ("keyword", "vector"):
            ax[0].plot(
                sizes,
                [r["quality"][mode]["cpu_ms_per_search"][kind] for r in rows],
                marker="o",
                label=f"{kind} ({mode})",
            )
    ax[0].set(xscale="log", yscale="log", xlabel="chunks", ylabel="CPU ms per search")
    ax[0].legend()
    for key, label in (("p50_ms", "p50"), ("p99_ms", "p99")):
        ax[1].plot(sizes, [r["serve"]["open_loop"][key] for r in rows], marker="o", label=label)
        ax[1].plot(
            sizes,
            [r["serve"]["open_loop_with_uploads"][key] for r in rows],
            marker="x",
            linestyle="--",
            label=f"{label} with uploads",
        )
    ax[1].set(xscale="log", yscale="log", xlabel="chunks", ylabel="/search ms (open loop)")
    ax[1].legend()
    fig.suptitle("Embedded store: cost against namespace size")
    fig.tight_layout()
    fig.savefig(out, dpi=100)
    plt.close(fig)


def measure_scale(data: Path, work: Path, argv: Sequence[str] = ()) -> dict[str, Any]:
    import argparse

    from ragtide.bench.corpus import build_corpus

    parser = argparse.ArgumentParser(prog="ragtide bench scale")
    parser.add_argument("--sizes", default="10000,30000,100000")
    parser.add_argument("--rate", type=float, help="open-loop searches/s (20; small: 50)")
    parser.add_argument("--seconds", type=float, help="per open-loop run (15; small: 60)")
    parser.add_argument(
        "--small-namespaces", metavar="NxC", help="N namespaces of ~C chunks instead of sizes"
    )
    parser.add_argument(
        "--budget-shares", default="0.1,0.5", help="small: budgets / all snapshots' bytes"
    )
    parser.add_argument(
        "--ingest-seconds", type=float, default=600, help="small: stop ingesting after this"
    )
    parser.add_argument("--previous", type=Path, default=Path("bench/results/scale.json"))
    parser.add_argument("--corpora", type=Path, help="where corpora are kept between runs")
    parser.add_argument(
        "--keep", type=Path, help="keep the ingested stores here and reuse them next run"
    )
    parser.add_argument(
        "--requality",
        action="store_true",
        help="with --keep: measure quality again (else an earlier run's is reused)",
    )
    parser.add_argument("--png", type=Path, default=Path("bench/results/scale.png"))
    args = parser.parse_args(list(argv))
    previous = json.loads(args.previous.read_text()) if args.previous.exists() else {}
    if args.small_namespaces:
        from ragtide.bench.scale_namespaces import measure_small_namespaces

        count, _, per = args.small_namespaces.partition("x")
        small = measure_small_namespaces(
            data,
            work,
            count=int(count),
            per=int(per or 50),
            rate=args.rate or 50.0,
            seconds=args.seconds or 60.0,
            budget_shares=[float(x) for x in args.budget_shares.split(",")],
            ingest_seconds=args.ingest_seconds,
            keep=args.keep,
        )
        return {**previous, "small_namespaces": small}
    args.rate, args.seconds = args.rate or 20.0, args.seconds or 15.0
    sizes = [int(s) for s in args.sizes.split(",")]
    corpora = args.corpora or work / "corpora"
    load_start = _load()
    rows: list[dict[str, Any]] = []
    for size in sizes:
        corpus = build_corpus(data, size, corpora / f"corpus-{size}")
        data_dir = (args.keep or work) / f"data-{size}"
        data_dir.mkdir(parents=True, exist_ok=True)
        row: dict[str, Any] = {"target_chunks": size, "documents": corpus.documents}
        done = data_dir / "ingest.json"
        if args.keep and done.exists():  # ingested by an earlier run: its numbers
            row["ingest"] = {**json.loads(done.read_text()), "from_earlier_run": True}
        else:
            row["ingest"] = _ingest(corpus.shards, data_dir)
            done.write_text(json.dumps(row["ingest"]))
        row["chunks"] = row["ingest"]["chunks"]
        measured = data_dir / "quality.json"
        if args.keep and measured.exists() and not args.requality:
            # Measured (and its HNSW base built and saved) by an earlier run: at 1M chunks
            # the build alone takes minutes; the serving numbers are measured again.
            row["quality"] = {**json.loads(measured.read_text()), "from_earlier_run": True}
        else:
            row["quality"] = asyncio.run(_quality(data_dir, corpus, row["chunks"]))
            if args.keep:
                measured.write_text(json.dumps(row["quality"]))
        row["serve"] = _serve(data_dir, corpus, args.rate, args.seconds)
        row["loadavg_after"] = _load()
        rows.append(row)
        print(json.dumps(row), file=sys.stderr)
    chunks = [r["chunks"] for r in rows]
    exponents = {
        "ingest_seconds": _exponent(chunks, [r["ingest"]["seconds"] for r in rows]),
        "spawn_to_ready_s": _exponent(chunks, [r["serve"]["spawn_to_ready_s"] for r in rows]),
        "rss_mb": _exponent(chunks, [r["serve"]["rss_mb_after_first_search"] for r in rows]),
        "server_cpu_ms_per_search": _exponent(
            chunks, [r["serve"]["sequential"]["server_cpu_ms_per_search"] for r in rows]
        ),
        **{
            f"{kind}_cpu_ms_{mode}": _exponent(
                chunks, [r["quality"][mode]["cpu_ms_per_search"][kind] for r in rows]
            )
            for mode in ("exact", "hnsw")
            for kind in ("keyword", "vector")
        },
    }
    if args.png and rows:
        args.png.parent.mkdir(parents=True, exist_ok=True)
        _plot(rows, args.png)
    load_end = _load()
    kept = {k: previous[k] for k in ("small_namespaces",) if k in previous}
    return {
        **kept,
        "store": "sqlite (embedded)",
        "machine": {
            "cores": os.cpu_count(),
            "loadavg_at_start": load_start,
            "loadavg_at_end": load_end,
            "machine_busy": max(load_start[0], load_end[0]) > (os.cpu_count() or 1) / 2,
            "note": "2 shared cores; other sessions ran tests and benches at the same time",
        },
        "settings": {"rate": args.rate, "seconds": args.seconds, "embedder": "static (default)"},
        "sizes": rows,
        "growth_exponents": exponents,
        "png": str(args.png) if args.png else None,
    }


def report_lines(result: dict[str, Any], load_note: str) -> list[str]:
    """The README's section (``ragtide bench report``)."""

    def cell(*parts: object) -> str:
        return "| " + " | ".join(str(p) for p in parts) + " |"

    lines = [
        "Scale, the embedded store with one namespace growing (corpora of SciFact + SQuAD "
        "texts with SciFact's 200 judged queries inside; `ragtide bench scale`; "
        f"{load_note}; measured, not asserted):",
        "",
        cell(
            "chunks",
            "ingest chunks/s",
            "spawn → ready",
            "first search after ready",
            "RSS",
            "`/search` p50 / p99 (with uploads)",
            "server CPU per search",
            "CPU keyword / vector, exact → HNSW",
            "nDCG@10 hybrid exact / HNSW",
            "HNSW build",
        ),
        cell(*["---"] * 10),
    ]
    for r in result.get("sizes", ()):
        q, sv = r["quality"], r["serve"]
        ex, hn = q["exact"], q["hnsw"]
        quiet, mixed = sv["open_loop"], sv["open_loop_with_uploads"]
        lines.append(
            cell(
                f"{r['chunks']:,}",
                f"{r['ingest']['chunks_per_s']:,}",
                f"{sv['spawn_to_ready_s']} s",
                f"{sv['first_search_after_ready_ms']} ms",
                f"{sv['rss_mb_after_first_search']:.0f} MB",
                f"{quiet['p50_ms']} / {quiet['p99_ms']} ms ({mixed['p50_ms']} / "
                f"{mixed['p99_ms']} ms)",
                f"{sv['sequential']['server_cpu_ms_per_search']} ms",
                f"{ex['cpu_ms_per_search']['keyword']} / {ex['cpu_ms_per_search']['vector']} → "
                f"{hn['cpu_ms_per_search']['keyword']} / {hn['cpu_ms_per_search']['vector']} ms",
                f"{ex['ndcg@10']['hybrid']} / {hn['ndcg@10']['hybrid']}",
                f"{hn['hnsw_build_s']} s",
            )
        )
    growth = result.get("growth_exponents") or {}
    fitted = ", ".join(f"{k} N^{v}" for k, v in growth.items() if v is not None)
    if fitted:
        lines += ["", f"Growth exponents (cost ∝ N^b, log-log fit): {fitted}."]
    if "small_namespaces" in result:
        from ragtide.bench.scale_namespaces import report_lines as small_lines

        lines += ["", *small_lines(result["small_namespaces"])]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["--upload"]:
        _upload_loop(argv[1:])
        return 0
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
