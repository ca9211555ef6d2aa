"""Plan outputs: JSON timeline, PNG chart, values fragment, summary."""

from __future__ import annotations

import json
from pathlib import Path

import yaml

from ragtide.planner.plan import Plan
from ragtide.planner.report import timeline_json, write_plan
from ragtide.planner.values import load_values


def test_timeline_json_has_series_and_decisions(busy_day_plan: Plan) -> None:
    doc = timeline_json(busy_day_plan)
    timeline = doc["timeline"]
    assert timeline["stride_seconds"] == 1
    assert len(timeline["t"]) == len(timeline["p99_ms"]) == 3660
    assert timeline["replicas_ready"][0] == 4
    assert doc["summary"]["peak_needed_replicas"] == 12
    assert any(d["target"] == "api" and d["after"] > d["before"] for d in doc["decisions"])
    assert doc["recommendation"]["summary"]["meets_slo"] is True
    json.dumps(doc, allow_nan=False)  # strict JSON: NaN became null


def test_long_traces_are_bucketed_with_max_for_p99(diurnal_plan: Plan) -> None:
    timeline = timeline_json(diurnal_plan)["timeline"]
    assert timeline["stride_seconds"] == 22
    assert len(timeline["t"]) == len(timeline["load_rps"]) == 3928
    assert max(timeline["p99_ms"]) == round(float(diurnal_plan.summary.max_p99_ms), 3)


def test_write_plan_writes_json_png_and_values(busy_day_plan: Plan, tmp_path: Path) -> None:
    written = write_plan(busy_day_plan, tmp_path)
    assert {p.name for p in written} == {"timeline.json", "timeline.png", "recommended-values.yaml"}
    assert (tmp_path / "timeline.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fragment = yaml.safe_load((tmp_path / "recommended-values.yaml").read_text())
    assert set(fragment) == {"autoscaling"}
    assert set(fragment["autoscaling"]) >= {
        "minReplicas",
        "maxReplicas",
        "targetCPUUtilizationPercentage",
        "requestRate",
        "inflightRequests",
        "behavior",
    }
    rec = busy_day_plan.recommendation
    assert rec is not None and rec.candidate is not None
    assert load_values(fragment).autoscaling == rec.candidate.autoscaling


def test_no_values_file_without_a_recommendation(diurnal_plan: Plan, tmp_path: Path) -> None:
    written = write_plan(diurnal_plan, tmp_path, chart=False)
    assert [p.name for p in written] == ["timeline.json"]


def test_buckets_without_any_ready_replica_become_null() -> None:
    import numpy as np

    from ragtide.planner.report import _series

    values = np.array([1.0, np.nan, np.nan, np.nan, 5.0, 7.0])
    assert _series(values, 2, "max") == [1.0, None, 7.0]
