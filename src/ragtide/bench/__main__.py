"""``ragtide bench``: run benchmarks and write their JSON results.

ragtide bench quality [--embedders static,minilm]   retrieval quality on SciFact
ragtide bench squad                                 answer quality on SQuAD
ragtide bench ingest                                ingestion throughput
ragtide bench server                                startup, memory, throughput vs baseline
ragtide bench capacity                              one replica's capacity for the planner
ragtide bench auth                                  auth's cost on /search, key revocation delay
ragtide bench hardening                             /healthz, /search under load, bombs
ragtide bench grpc                                  gRPC Search vs HTTP /search, one process
ragtide bench scale [--sizes 10000,100000]          the embedded store as a namespace grows
ragtide bench scale-postgres [--sizes 10000,100000] PostgreSQL+pgvector: ingest and search per tier
ragtide bench llm                                   TTFT, CPU and /chat throughput vs llama.cpp
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["main"]


def _write(out_dir: Path, name: str, result: dict[str, Any]) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{name}.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    print(f"wrote {path}", file=sys.stderr)


def _quality_on_postgres(args: argparse.Namespace, data: Path, work: Path) -> dict[str, Any]:
    import secrets

    import psycopg

    from ragtide.bench.quality import VARIANTS, evaluate

    schema = f"bench_{secrets.token_hex(4)}"
    store = {"use": "postgres", "config": {"url": args.store, "db_schema": schema}}
    keep = [v for v in VARIANTS if v[0] == "keyword" or v[1:] in ((0.5, 300), (0.5, 20))]
    try:
        return asyncio.run(evaluate(data, ["static"], work, keep, store))
    finally:
        with psycopg.connect(args.store, autocommit=True) as conn:
            conn.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def main(argv: Sequence[str] | None = None) -> int:
    from ragtide.bench.data import data_dir

    parser = argparse.ArgumentParser(prog="ragtide bench", description=__doc__)
    parser.add_argument(
        "what",
        choices=[
            "quality",
            "squad",
            "ingest",
            "server",
            "capacity",
            "cluster",
            "auth",
            "hardening",
            "grpc",
            "grounding",
            "llm",
            "scale",
            "scale-postgres",
            "report",
        ],
    )
    parser.add_argument("--data", help="evaluation data directory (has scifact/, ...)")
    parser.add_argument("--out", default="bench/results", help="where JSON results go")
    parser.add_argument("--embedders", default="static", help="comma-separated embedders")
    parser.add_argument(
        "--store", help="quality on PostgreSQL: an admin DSN; a fresh schema is used, then dropped"
    )
    args, rest = parser.parse_known_args(argv)
    out = Path(args.out)
    if args.what == "scale-postgres":
        from ragtide.bench.scale_postgres import main as scale_postgres

        return scale_postgres(
            [*rest, "--out", str(out / "scale-postgres.json")]
            + (["--data", args.data] if args.data else [])
        )
    if args.what == "report":
        from ragtide.bench.report import render

        print(render(out))
        return 0
    data = data_dir(args.data)
    with tempfile.TemporaryDirectory(prefix="ragtide-bench-") as tmp:
        work = Path(tmp)
        if args.what == "quality":
            from ragtide.bench.quality import evaluate

            if args.store:
                _write(out, "quality-scifact-postgres", _quality_on_postgres(args, data, work))
            else:
                result = asyncio.run(evaluate(data, args.embedders.split(","), work))
                _write(out, "quality-scifact", result)
        elif args.what == "squad":
            from ragtide.bench.squad import evaluate_squad

            _write(out, "answers-squad", asyncio.run(evaluate_squad(data, work)))
        elif args.what == "ingest":
            from ragtide.bench.ingest import measure_ingest

            _write(out, "ingest", measure_ingest(data, work))
        elif args.what == "server":
            from ragtide.bench.server import measure_server

            _write(out, "server", measure_server(data, work, rest))
        elif args.what == "cluster":
            from ragtide.bench.cluster import measure_cluster

            _write(out, "cluster", measure_cluster(data, work, rest))
        elif args.what == "hardening":
            from ragtide.bench.hardening import measure_hardening

            _write(out, "hardening", measure_hardening(work, rest))
        elif args.what == "grpc":
            import os

            from ragtide.grpc.bench import measure

            load = os.getloadavg()
            result = measure(data)
            result["machine"] = {
                "cores": os.cpu_count(),
                "loadavg_at_start": [round(x, 2) for x in load],
                "loadavg_at_end": [round(x, 2) for x in os.getloadavg()],
            }
            _write(out, "grpc", result)
        elif args.what == "llm":
            from ragtide.bench.llm import measure_llm

            _write(out, "llm", measure_llm(data, work, rest))
        elif args.what == "scale":
            from ragtide.bench.scale import measure_scale

            _write(out, "scale", measure_scale(data, work, rest))
        elif args.what == "grounding":
            from ragtide.bench.grounding import measure_grounding

            _write(out, "grounding", measure_grounding(data, work, rest))
        elif args.what == "auth":
            from ragtide.bench.auth import measure_auth

            _write(out, "auth", measure_auth(data, work, rest))
        else:
            from ragtide.bench.server import measure_capacity

            _write(out, "capacity", measure_capacity(data, work, rest))
    return 0


if __name__ == "__main__":
    sys.exit(main())
