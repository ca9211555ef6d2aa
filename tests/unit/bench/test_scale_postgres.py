"""``scale_postgres._count``: a sample of a /metrics text, labelled or not."""

from __future__ import annotations

from ragtide.bench.scale_postgres import _count

_METRICS = """\
# TYPE ragtide_event_loop_lag_seconds histogram
ragtide_event_loop_lag_seconds_count 12.0
ragtide_event_loop_lag_seconds_sum 0.25
ragtide_postgres_searches_total{kind="vector",ranked="replica"} 3.0
ragtide_postgres_searches_total{kind="vector",ranked="database"} 7.0
ragtide_local_index_catch_up_seconds_count{step="read"} 5.0
"""


def test_a_sample_is_found_by_its_name_and_every_label_in_order() -> None:
    assert _count(_METRICS, "ragtide_event_loop_lag_seconds_count") == 12.0
    assert _count(_METRICS, "ragtide_event_loop_lag_seconds_sum") == 0.25
    searches = "ragtide_postgres_searches_total"
    assert _count(_METRICS, searches, kind="vector", ranked="database") == 7.0
    assert _count(_METRICS, searches, kind="vector", ranked="replica") == 3.0
    assert _count(_METRICS, "ragtide_local_index_catch_up_seconds_count", step="read") == 5.0


def test_an_absent_sample_is_zero_and_a_prefix_is_not_a_match() -> None:
    assert _count(_METRICS, "ragtide_event_loop_lag_seconds") == 0.0  # only _count, _sum
    assert _count(_METRICS, "ragtide_postgres_searches_total") == 0.0  # needs its labels
    assert _count(_METRICS, "ragtide_postgres_searches_total", kind="vector") == 0.0
    assert _count(_METRICS, "ragtide_local_index_catch_up_seconds_count", step="apply") == 0.0
