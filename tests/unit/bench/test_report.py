"""The README's ingestion row for one large local JSONL, from ``bench.ingest --large``."""

from __future__ import annotations

from typing import Any

from ragtide.bench.report import _large_jsonl_row


def _large(rates: list[float], rate: float) -> dict[str, Any]:
    return {
        "file_bytes": 210_155_830,
        "chunks": 206_006,
        "documents": 133_333,
        "seconds": 255.4,
        "chunks_per_s": rate,
        "segment_chunks": 10_000,
        "chunks_per_s_by_segment": rates,
        "cpu_ms_per_chunk": {"process": 1.126, "parse_workers": 0.231},
        "loadavg_1m": [1.55, 1.28],
    }


def test_the_row_states_the_range_the_trend_and_the_verdict() -> None:
    row = _large_jsonl_row(_large([900.0, 700.0, 880.0, 910.0, 860.0, 890.0], 806.5))
    assert "one 210 MB JSONL" in row and "rate per 10,000 chunks 700-910/s, no decline" in row
    assert "1.13 ms + 0.23 ms in parse workers" in row and "load 1.3-1.6" in row
    assert row.endswith(
        "| 133333 | 206006 | 255.4 | 806.5 | - | ≥ 850 chunks/s (1M in 20 min): not met |"
    )


def test_a_rate_that_falls_as_the_namespace_grows_is_called_declining() -> None:
    row = _large_jsonl_row(_large([1200.0, 1100.0, 1000.0, 900.0, 800.0, 700.0], 950.0))
    assert "700-1200/s, declining" in row
    assert row.endswith("(1M in 20 min): met |")
