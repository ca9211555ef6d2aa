"""The README's rows of ``ragtide bench scale --small-namespaces``."""

from __future__ import annotations

from typing import Any

from ragtide.bench.scale_namespaces import report_lines


def _run(**extra: Any) -> dict[str, Any]:
    part = {"searches": 10, "p50_ms": 1.0, "p99_ms": 2.0, "service_p50_ms": 0.5}
    return {
        "resident_namespaces_end": 100,
        "hit_rate": 1.0,
        "rss_mb_all_loaded": 300.0,
        "rss_mb_end": 310.0,
        "resident": part,
        "reloaded": {**part, "searches": 0},
        "evictions": 0,
        **extra,
    }


def _small(namespaces: int) -> dict[str, Any]:
    budgeted = _run(
        budget_share=0.1,
        budget_bytes=2**20,
        hit_rate=0.1,
        reloaded={"searches": 9, "p50_ms": 3.0, "p99_ms": 9.0, "service_p50_ms": 2.5},
        identical_results=False,
    )
    return {
        "target_namespaces": 100,
        "chunks_per_namespace_target": 50,
        "namespaces": namespaces,
        "ingest": {
            "chunks": namespaces * 51,
            "chunks_per_namespace": 51.0,
            "seconds": 5.0,
            "chunks_per_s": 1020.0,
            "parallel": 3,
            "cpu_ms_per_chunk": {"process": 0.8, "parse_workers": 0.3},
        },
        "settings": {"rate": 50.0},
        "machine": {"loadavg_1m": [1.0, 2.5], "machine_busy": True},
        "unlimited": {**_run(), "index_bytes_all_loaded": 10 * 2**20, "rss_mb_start": 100.0},
        "budgeted": [budgeted],
        "estimate": {"index_bytes_per_namespace": 100_000, "rss_growth_bytes_per_namespace": 2e6},
    }


def test_the_paragraph_says_how_far_and_how_fast_the_ingest_went() -> None:
    whole = report_lines(_small(100))
    assert whole[0].startswith(
        "Many small namespaces, one process (`ragtide bench scale --small-namespaces 100x50`: "
        "100 namespaces of ~51.0 chunks, 5,100 chunks ingested in 5 s, 1,020 chunks/s "
        "(3 namespaces at a time; CPU per chunk 0.8 ms in the process + 0.3 ms in the parse "
        "workers); searched"
    ), whole[0]
    assert "machine busy, 1-minute load 1.0-2.5" in whole[0]
    assert "(all that" not in whole[0]
    assert "(all that 5 s of ingest reached)" in report_lines(_small(60))[0]


def test_a_row_per_budget_and_a_difference_from_unlimited_is_flagged() -> None:
    lines = report_lines(_small(100))
    rows = [line for line in lines if line.startswith("| ") and "---" not in line][1:]
    assert rows[0].startswith("| unlimited, all loaded first (10 MiB) | 100 | 1.0 |")
    assert rows[0].endswith("| - | 0 | yes |")
    assert rows[1].startswith("| 10% of that (1.0 MiB) | 100 | 0.1 |")
    assert rows[1].endswith("| 3.0 / 9.0 (2.5) ms | 0 | **no** |")
    assert "A reload cost ~2.0 ms more than a resident search." in lines[-1]
