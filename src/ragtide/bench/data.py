"""Locating and reading the shared evaluation data (never copied into the repository)."""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

__all__ = ["data_dir", "read_jsonl", "read_qrels"]


def data_dir(explicit: str | None = None) -> Path:
    """``--data``, else ``RAGTIDE_BENCH_DATA``, else ``../shared/data`` beside the checkout."""
    candidates = [explicit, os.environ.get("RAGTIDE_BENCH_DATA")]
    here = Path(__file__).resolve()
    candidates += [str(p / "shared" / "data") for p in here.parents]
    for candidate in candidates:
        if candidate and (Path(candidate) / "scifact").is_dir():
            return Path(candidate)
    raise SystemExit("bench: evaluation data not found; pass --data or set RAGTIDE_BENCH_DATA")


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield json.loads(line)


def read_qrels(path: Path) -> dict[str, dict[str, int]]:
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as f:
        for row in csv.reader(f, delimiter="\t"):
            if not row or row[0] in ("query-id", "query_id"):
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(row[2])
    return qrels
