"""Ingestion throughput of ``ragtide ingest`` with the default configuration."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

__all__ = ["measure_ingest"]

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


def measure_ingest(data: Path, work_dir: Path) -> dict[str, Any]:
    """Ingest each corpus into a fresh data directory, then again (all unchanged)."""
    results: dict[str, Any] = {"floor_seconds": 60}
    for name, (rel, expected) in CORPORA.items():
        data_dir = work_dir / name
        first = _run(data_dir, name, data / rel)
        again = _run(data_dir, name, data / rel)
        results[name] = {"expected_documents": expected, "first": first, "reingest": again}
    return results
