"""/search latency at 50 req/s on one replica, alone and with an upload every 100 ms, with
the replicas told of writes (``local_notifications``, LISTEN/NOTIFY) and without, on a
schema ``python -m ragtide.bench.scale_postgres --keep`` left (its saved index and graph).

    python bench/experiments/pg_uploads.py --schema bench_scale_1000000_a91865 \
        --size 1000000 [--url postgresql://postgres@127.0.0.1:5433/ragtide] [--spawns 2] \
        [--rounds 2]

Spawns alternate between the two settings (off, on, off, on...). Each spawn serves
``--rounds`` pairs of open loops (``ragtide.bench.scale.open_loops``: ``--seconds`` alone,
then as long with ``ragtide.bench.scale``'s uploader), so a spawn's first upload run can be
told from its later ones. Results go to ``bench/results/pg-uploads-1m.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from ragtide.bench.scale import open_loops
from ragtide.bench.scale_postgres import NAMESPACE, _spawn, kept_schema_arguments
from ragtide.bench.server import cpu_seconds, stop, wait_ready

_KEPT = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "failures", "achieved_rps")


async def _one(url: str, schema: str, notified: bool, args: argparse.Namespace) -> dict[str, Any]:
    os.environ["RAGTIDE_STORE__CONFIG__LOCAL_NOTIFICATIONS"] = "true" if notified else "false"
    corpus = args.work / f"corpus-{args.size}" / "queries.jsonl"  # the schema's queries
    queries = [json.loads(line)["text"] for line in corpus.read_text().splitlines() if line]
    path = f"/v1/namespaces/{NAMESPACE.split('/', 1)[1]}/search"
    bodies = [{"query": q, "top_k": 10} for q in queries]
    began = time.perf_counter()
    proc, port = _spawn(url, schema, args.work)
    try:
        ready_s = await asyncio.to_thread(wait_ready, proc, port, began, timeout=900)
        cpu0 = cpu_seconds(proc.pid)
        rounds = []
        for _ in range(args.rounds):
            quiet, mixed = await open_loops(port, path, bodies, args.rate, args.seconds)
            rounds.append(
                {
                    "quiet": {k: quiet[k] for k in _KEPT},
                    "with_uploads": {k: mixed[k] for k in _KEPT} | {"uploads": mixed["uploads"]},
                }
            )
        return {
            "notifications": notified,
            "spawn_to_ready_s": round(ready_s, 2),
            "replica_cpu_s": round(cpu_seconds(proc.pid) - cpu0, 1),
            "rounds": rounds,
        }
    finally:
        stop(proc)


async def main() -> None:
    parser = argparse.ArgumentParser(prog="python bench/experiments/pg_uploads.py")
    kept_schema_arguments(parser)
    parser.add_argument("--spawns", type=int, default=2, help="per setting")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--out", default="bench/results/pg-uploads-1m.json")
    args = parser.parse_args()
    runs = []
    for _ in range(args.spawns):
        for notified in (False, True):
            runs.append(await _one(args.url, args.schema, notified, args))
            print(json.dumps(runs[-1]), flush=True)
    result = {
        "bench": "bench/experiments/pg_uploads.py: /search at --rate on one replica, alone and"
        " with an upload every 100 ms, LISTEN/NOTIFY off and on",
        "schema": args.schema,
        "runs": runs,
    }
    Path(args.out).write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    asyncio.run(main())
