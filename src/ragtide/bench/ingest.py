"""Ingestion throughput of ``ragtide ingest`` with the default configuration.

SciFact and the Kubernetes docs through the CLI (a fresh data directory each, then the
same files again: all unchanged), and one large local JSONL file (``large_chunks`` chunks
of the scale bench's corpus, SciFact and SQuAD texts) through ``Ingestor.ingest_paths``,
the CLI's own path, in this process: its rate is taken every ``segment_chunks`` chunks,
to see whether it holds as the namespace grows, with the CPU per chunk of this process
(by stage: the embedder, the store's write, the index's advance, the event loop) and of
the parse workers.
"""

from __future__ import annotations

import asyncio
import json
import os
import resource
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["measure_ingest", "measure_large_jsonl"]

CORPORA = {
    "scifact": ("scifact/corpus.jsonl", 5183),
    "k8s-docs": ("k8s-docs/files", 898),
}


def _run(data_dir: Path, namespace: str, path: Path) -> dict[str, Any]:
    env = {**os.environ, "RAGTIDE_DATA_DIR": str(data_dir), "RAGTIDE_LOGGING__LEVEL": "WARNING"}
    began = time.perf_counter()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "ragtide.cli",
            "ingest",
            str(path),
            "-n",
            namespace,
            "--quiet",
            "--json",
        ],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    wall = time.perf_counter() - began
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"wall_seconds": round(wall, 2), "exit_code": proc.returncode, **summary}


def measure_ingest(data: Path, work_dir: Path, *, large_chunks: int = 0) -> dict[str, Any]:
    """Ingest each corpus into a fresh data directory, then again (all unchanged); and,
    if ``large_chunks``, one large JSONL file (``measure_large_jsonl``)."""
    results: dict[str, Any] = {"floor_seconds": 60, "loadavg_1m_start": _load1()}
    for name, (rel, expected) in CORPORA.items():
        data_dir = work_dir / name
        first = _run(data_dir, name, data / rel)
        again = _run(data_dir, name, data / rel)
        results[name] = {"expected_documents": expected, "first": first, "reingest": again}
    if large_chunks:
        results["large-jsonl"] = measure_large_jsonl(data, work_dir, large_chunks)
    results["loadavg_1m_end"] = _load1()
    return results


def _load1() -> float:
    return round(os.getloadavg()[0], 2)


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


class _StageClock:
    """CPU time of the calling thread spent in some methods of some objects (wrapped on
    the instances, for this bench only): what each stage of ingestion costs."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self.on_loop = 0.0  # of which in the event loop's thread (a short batch's embedding)
        self._lock = threading.Lock()

    def wrap(self, stage: str, owner: object, name: str) -> None:
        fn: Callable[..., Any] | None = getattr(owner, name, None)
        if fn is None:
            return
        self.seconds.setdefault(stage, 0.0)

        def timed(*args: Any, **kwargs: Any) -> Any:
            began = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.thread_time() - began
                with self._lock:
                    self.seconds[stage] += spent
                    if threading.current_thread() is threading.main_thread():
                        self.on_loop += spent

        setattr(owner, name, timed)


def _large_file(data: Path, out: Path, chunks: int) -> tuple[Path, int]:
    """One JSONL file of the scale corpus's documents, ~``chunks`` chunks (reused)."""
    from ragtide.bench.corpus import corpus_documents

    path = out / f"large-{chunks}.jsonl"
    if not path.exists():
        out.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".part")
        with partial.open("w", encoding="utf-8") as f:
            for doc in corpus_documents(data, chunks):
                f.write(json.dumps(doc, ensure_ascii=False) + "\n")
        partial.rename(path)
    return path, path.stat().st_size


def measure_large_jsonl(
    data: Path, work_dir: Path, chunks: int, *, segment_chunks: int = 10_000
) -> dict[str, Any]:
    path, size = _large_file(data, work_dir / "large-corpus", chunks)
    return asyncio.run(_ingest_large(path, size, work_dir / "large-data", segment_chunks))


async def _ingest_large(path: Path, size: int, data_dir: Path, segment: int) -> dict[str, Any]:
    from ragtide.ingest.pipeline import Ingestor, IngestOutcome
    from ragtide.runtime import build_runtime
    from ragtide.settings import Settings

    settings = Settings(data_dir=data_dir, logging={"level": "WARNING"}, answer_cache_enabled=False)
    rt = build_runtime(settings)
    await rt.start()
    clock = _StageClock()
    clock.wrap("embed", rt.embedder, "_embed")
    clock.wrap("store_write", rt.store, "_put_documents")  # in the transaction, not its commit
    clock.wrap("index_advance", rt.store, "_follow")
    load_start = _load1()
    counts = {"chunks": 0, "documents": 0, "rejected": 0}
    marks: list[tuple[int, float]] = []
    began = time.perf_counter()
    cpu, workers, loop_cpu = time.process_time(), _children_cpu(), time.thread_time()

    def count(outcome: IngestOutcome) -> None:
        if outcome.status == "rejected":
            counts["rejected"] += 1
            return
        before = counts["chunks"]
        counts["documents"] += 1
        counts["chunks"] += outcome.chunks
        if counts["chunks"] // segment > before // segment:
            marks.append((counts["chunks"], time.perf_counter() - began))

    try:
        async with Ingestor(rt) as ingestor:
            await ingestor.ingest_paths("default/large", [path], count, keep=False)
    finally:
        loop_cpu = time.thread_time() - loop_cpu  # the event loop's (embedding a short batch too)
        await rt.aclose()  # the parse workers end (and are waited for) here
    elapsed = time.perf_counter() - began
    process = time.process_time() - cpu
    n = max(1, counts["chunks"])
    stages = {name: round(s * 1000 / n, 3) for name, s in clock.seconds.items()}
    stages["event_loop_rest"] = round((loop_cpu - clock.on_loop) * 1000 / n, 3)
    stages["other_threads"] = round(
        (process - loop_cpu - sum(clock.seconds.values()) + clock.on_loop) * 1000 / n, 3
    )
    rates, last = [], (0, 0.0)
    for mark in marks:
        rates.append(round((mark[0] - last[0]) / (mark[1] - last[1]), 1))
        last = mark
    return {
        "file_bytes": size,
        **counts,
        "seconds": round(elapsed, 1),
        "chunks_per_s": round(counts["chunks"] / elapsed, 1),
        "segment_chunks": segment,
        "chunks_per_s_by_segment": rates,
        "cpu_ms_per_chunk": {
            "process": round(process * 1000 / n, 3),
            "parse_workers": round((_children_cpu() - workers) * 1000 / n, 3),
        },
        # of "process": embed, store_write (``_put_documents``) and index_advance
        # (``_follow``) in whichever thread ran them; the event loop's other work; the
        # rest (the write's commit, reading the file, the runtime's own threads)
        "process_cpu_ms_per_chunk_by_stage": stages,
        "loadavg_1m": [load_start, _load1()],
    }


def main(argv: list[str] | None = None) -> int:
    """``python -m ragtide.bench.ingest --large CHUNKS --data DIR --work DIR``: the large
    JSONL alone, as JSON on stdout."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("--large", type=int, required=True)
    parser.add_argument("--data", type=Path, required=True)
    parser.add_argument("--work", type=Path, required=True)
    args = parser.parse_args(argv)
    print(json.dumps(measure_large_jsonl(args.data, args.work, args.large), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
