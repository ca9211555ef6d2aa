"""/search latency at 50 req/s on one replica, alone and with an upload every 100 ms, with
the replicas told of writes (``local_notifications``, LISTEN/NOTIFY) and without, on a
schema ``python -m ragtide.bench.scale_postgres --keep`` left (its saved index and graph).

    python bench/experiments/pg_uploads.py --schema bench_scale_1000000_a91865 \
        --size 1000000 [--url postgresql://postgres@127.0.0.1:5433/ragtide] [--spawns 2] \
        [--rounds 2]

Spawns alternate between the two settings (off, on, off, on...). Each spawn serves
``--rounds`` pairs of open loops (``ragtide.bench.scale.open_loops``: ``--seconds`` alone,
then as long with ``ragtide.bench.scale``'s uploader), so a spawn's first upload run can be
told from its later ones. Each spawn's warnings go to ``--logs``; the result keeps, per
round, the stalls its event loop had (``LoopWatch``: how long, and where the loop was)
and the time its catch-ups took. Results go to ``bench/results/pg-uploads-1m.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import httpx

from ragtide.bench.scale import open_loops
from ragtide.bench.scale_postgres import NAMESPACE, _count, _spawn, kept_schema_arguments
from ragtide.bench.server import cpu_seconds, stop, wait_ready

_KEPT = ("p50_ms", "p90_ms", "p99_ms", "max_ms", "failures", "achieved_rps")
# /metrics samples read before and after each round, by key: (name, labels)
_HISTOGRAMS = {  # what the loop waited, and the catch-ups' steps: their _count and _sum
    "loop_lag": ("ragtide_event_loop_lag_seconds", {}),
    "catch_up_read": ("ragtide_local_index_catch_up_seconds", {"step": "read"}),
    "catch_up_apply": ("ragtide_local_index_catch_up_seconds", {"step": "apply"}),
}
_COUNTED = {  # what kept the index current, and where searches ranked
    **{
        kind: ("ragtide_local_keyword_index_updates_total", {"kind": kind})
        for kind in ("catch_up", "stale", "failed", "load", "load_saved", "refresh")
    },
    **{
        f"{kind}_in_{where}": ("ragtide_postgres_searches_total", {"kind": kind, "ranked": where})
        for kind in ("keyword", "vector")
        for where in ("replica", "database")
    },
}


def _read(metrics: str) -> dict[str, float]:
    """Every ``_COUNTED`` counter and ``_HISTOGRAMS``' count and sum in a /metrics text."""
    found = {key: _count(metrics, name, **labels) for key, (name, labels) in _COUNTED.items()}
    for key, (name, labels) in _HISTOGRAMS.items():
        found[f"{key}_count"] = _count(metrics, f"{name}_count", **labels)
        found[f"{key}_sum"] = _count(metrics, f"{name}_sum", **labels)
    return found


def _stalls(log: Path, since: int) -> tuple[list[dict[str, Any]], int]:
    """The "event loop blocked" records of ``log`` past byte ``since``: how long, and the
    event loop's innermost frames and the other threads' names where they were busy."""
    with log.open("rb") as f:
        f.seek(since)
        text = f.read()
    stalls = []
    for line in text.decode(errors="replace").splitlines():
        if '"event loop blocked"' not in line:
            continue
        record = json.loads(line)
        stacks: dict[str, str] = record.get("stacks", {})
        loop = next((v for k, v in stacks.items() if k.endswith("(event loop)")), "")
        stalls.append(
            {
                "at": record["ts"],
                "seconds": record["seconds"],
                "loop": loop.strip().splitlines()[-6:],
                "threads": {k: v.strip().splitlines()[-2:] for k, v in stacks.items() if v},
            }
        )
    return stalls, since + len(text)


async def _measured(
    port: int, path: str, bodies: list[dict[str, Any]], args: argparse.Namespace, log: Path
) -> dict[str, Any]:
    """A round (``open_loops``), with the stalls and the histograms' growth in each half."""
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        before = _read((await client.get("/metrics")).text)
        offset = log.stat().st_size
        quiet, mixed = await open_loops(port, path, bodies, args.rate, args.seconds)
        after = _read((await client.get("/metrics")).text)
    stalls, _ = _stalls(log, offset)
    grown = {key: after[key] - before[key] for key in after}
    return {
        "quiet": {k: quiet[k] for k in _KEPT},
        "with_uploads": {k: mixed[k] for k in _KEPT} | {"uploads": mixed["uploads"]},
        "loop_stalls": stalls,
        "histograms": {
            key: {"count": grown[f"{key}_count"], "seconds": grown[f"{key}_sum"]}
            for key in _HISTOGRAMS
        },
        "counted": {key: grown[key] for key in _COUNTED},
    }


async def _one(url: str, schema: str, notified: bool, args: argparse.Namespace) -> dict[str, Any]:
    os.environ["RAGTIDE_STORE__CONFIG__LOCAL_NOTIFICATIONS"] = "true" if notified else "false"
    corpus = args.work / f"corpus-{args.size}" / "queries.jsonl"  # the schema's queries
    queries = [json.loads(line)["text"] for line in corpus.read_text().splitlines() if line]
    path = f"/v1/namespaces/{NAMESPACE.split('/', 1)[1]}/search"
    bodies = [{"query": q, "top_k": 10} for q in queries]
    args.logs.mkdir(parents=True, exist_ok=True)
    log = args.logs / f"spawn-{int(time.time())}-{'on' if notified else 'off'}.log"
    log.touch()
    began = time.perf_counter()
    proc, port = _spawn(url, schema, args.work, log=log)
    try:
        ready_s = await asyncio.to_thread(wait_ready, proc, port, began, timeout=900)
        startup, _ = _stalls(log, 0)
        cpu0 = cpu_seconds(proc.pid)
        rounds = []
        for _ in range(args.rounds):
            rounds.append(await _measured(port, path, bodies, args, log))
        return {
            "notifications": notified,
            "spawn_to_ready_s": round(ready_s, 2),
            "loop_stalls_to_ready": startup,
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
    parser.add_argument("--logs", type=Path, default=Path("/var/tmp/bench/pg-uploads-logs"))
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
