"""Scale-up time from the behavior rules alone, and static conflict checks."""

from __future__ import annotations

from ragtide.planner.analysis import conflicts, scale_up_time
from ragtide.planner.capacity import Capacity
from ragtide.planner.queueing import ServiceModel
from ragtide.planner.values import hpa_spec, load_values


def test_scale_up_time_of_the_chart_defaults() -> None:
    spec = hpa_spec(load_values())
    assert scale_up_time(spec, 4, 12) == 225.0
    assert scale_up_time(spec, 4, 4) == 0.0
    assert scale_up_time(spec, 4, 21) is None  # above maxReplicas


def test_scale_up_time_legacy_and_api_default_rules() -> None:
    assert scale_up_time(hpa_spec(load_values({"autoscaling": {"behavior": None}})), 4, 12) == 15.0
    api_defaults = load_values({"autoscaling": {"behavior": {"scaleUp": None}}})
    assert scale_up_time(hpa_spec(api_defaults), 1, 12) == 30.0  # 1 -> 5 -> 12


def test_conflicts_name_unreachable_settings(capacity: Capacity, model: ServiceModel) -> None:
    values = load_values(
        {"autoscaling": {"maxReplicas": 8, "targetCPUUtilizationPercentage": 150, "minReplicas": 2}}
    )
    found = " ".join(
        conflicts(
            values, capacity, model, peak_rps=200, start_replicas=4, slo_p99_ms=800, deadline_s=90
        )
    )
    assert "maxReplicas 8 is below the 12 replicas" in found
    assert "targetCPUUtilizationPercentage 150" in found
    assert "never triggers" in found


def test_no_conflicts_for_generous_values(capacity: Capacity, model: ServiceModel) -> None:
    values = load_values(
        {"autoscaling": {"requestRate": {"averageValue": 15}, "behavior": {"scaleUp": None}}}
    )
    assert (
        conflicts(
            values, capacity, model, peak_rps=100, start_replicas=8, slo_p99_ms=800, deadline_s=90
        )
        == ()
    )
