"""How long extending a replica's vector graph stops its event loop: in a thread of the
serving process (usearch's ``copy``, ``add`` and ``save``, as ``_pg_ann`` did until
2026-12-07) against in a child process (``_ann_child.GraphBuild``, as it does now).

    python bench/experiments/graph_stalls.py [--size 200000] [--tail 10000] [--dim 256]

A graph of ``--size`` random unit vectors (a view of its saved bytes, as a replica holds
one) is extended by ``--tail`` more, each way, three times, while a ticker on the event
loop asks to wake every 5 ms: its lateness is what a request arriving then would wait.
Also the serving process's peak RSS over what it held before (sampled every 10 ms; each
way in a process of its own). Results go to
``bench/results/graph-stalls.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing
import os
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

from ragtide.bench.server import children_peak_mb
from ragtide.builtin import _pg_ann
from ragtide.builtin._ann_child import GraphBuild

TICK_S = 0.005


def _unit(rng: np.random.Generator, rows: int, dim: int) -> np.ndarray:
    matrix = rng.standard_normal((rows, dim), dtype=np.float32)
    return matrix / np.linalg.norm(matrix, axis=1, keepdims=True)


def _graph(size: int, dim: int) -> _pg_ann.Graph:
    rng = np.random.default_rng(7)
    with GraphBuild(dim=dim, threads=os.cpu_count() or 1) as build:
        for start in range(0, size, 8192):
            rows = min(8192, size - start)
            build.add(np.arange(start + 1, start + rows + 1), _unit(rng, rows, dim))
        count, data = build.result()
    head = {"embedder": "e", "dim": dim, "covered": size, "count": count}
    return _pg_ann.from_stream(head, data)


def _in_a_thread(graph: _pg_ann.Graph, keys: np.ndarray, unit: np.ndarray) -> int:
    """The way it was: copy, add, save to a file, read the file back as a view."""
    index = graph.index.copy()
    for start in range(0, len(keys), 4096):
        batch = slice(start, start + 4096)
        index.add(keys[batch].astype(np.uint64), unit[batch], threads=1)
    with tempfile.TemporaryDirectory() as directory:
        path = os.path.join(directory, "graph")
        index.save(path)
        del index
        data = np.empty(os.path.getsize(path), np.uint8)
        with open(path, "rb") as file:
            file.readinto(data.data)
    head = {**graph.described, "count": graph.count + len(keys)}
    return _pg_ann.from_stream(head, data).count


async def _ticked(work: Any) -> dict[str, float]:
    """Run ``work`` while a ticker measures the event loop's lateness."""
    late: list[float] = []
    done = asyncio.Event()

    async def ticker() -> None:
        while not done.is_set():
            due = time.perf_counter() + TICK_S
            await asyncio.sleep(TICK_S)
            late.append(max(0.0, time.perf_counter() - due) * 1000)

    tick = asyncio.create_task(ticker())
    began = time.perf_counter()
    await work
    seconds = time.perf_counter() - began
    done.set()
    await tick
    late.sort()
    return {
        "seconds": round(seconds, 2),
        "ticks": len(late),
        "late_p99_ms": round(late[int(0.99 * (len(late) - 1))], 1),
        "late_max_ms": round(late[-1], 1),
        "late_over_50ms": sum(1 for x in late if x > 50),
    }


def _run(way: str, size: int, tail: int, dim: int, out: Any) -> None:
    graph = _graph(size, dim)
    rng = np.random.default_rng(11)
    keys = np.arange(size + 1, size + tail + 1, dtype=np.int64)
    unit = _unit(rng, tail, dim)
    before = _rss_kb()
    peak = [before]
    child_mb = [0.0]
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.wait(0.01):
            peak[0] = max(peak[0], _rss_kb())
            child_mb[0] = max(child_mb[0], children_peak_mb())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()

    async def main() -> list[dict[str, float]]:
        runs = []
        for _ in range(3):
            if way == "thread":
                work = asyncio.to_thread(_in_a_thread, graph, keys, unit)
            else:
                work = _pg_ann.extend(graph, keys, unit, size + tail)
            runs.append(await _ticked(work))
        return runs

    runs = asyncio.run(main())
    sampling.set()
    sampler.join()
    out.put(
        {
            "way": way,
            "graph_mb": round(graph.nbytes / 2**20, 1),
            "runs": runs,
            "peak_rss_over_before_mb": round((peak[0] - before) / 1024, 1),
            "child_peak_rss_mb": round(child_mb[0], 1),
        }
    )


def _rss_kb() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size", type=int, default=200_000)
    parser.add_argument("--tail", type=int, default=10_000)
    parser.add_argument("--dim", type=int, default=256)
    parser.add_argument("--out", default="bench/results/graph-stalls.json")
    args = parser.parse_args()
    context = multiprocessing.get_context("spawn")
    results = []
    for way in ("thread", "child"):
        queue = context.Queue()
        process = context.Process(target=_run, args=(way, args.size, args.tail, args.dim, queue))
        process.start()
        results.append(queue.get())
        process.join()
        print(json.dumps(results[-1]), flush=True)
    report = {
        "what": "event-loop lateness (5 ms ticker) while a replica's graph is extended",
        "size": args.size,
        "tail": args.tail,
        "dim": args.dim,
        "cpus": os.cpu_count(),
        "ways": results,
    }
    Path(args.out).write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
