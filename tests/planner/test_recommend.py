"""The values search: consistent targets, windows, and a feasible cheapest pick."""

from __future__ import annotations

import pytest

from ragtide.planner.plan import Plan
from ragtide.planner.queueing import ServiceModel
from ragtide.planner.recommend import FAST_SCALE_UP, candidate_values, steepest_windows
from ragtide.planner.traffic import busy_day, diurnal, step
from ragtide.planner.values import ChartValues, hpa_spec, load_values, values_fragment


def test_candidate_targets_agree_on_one_utilization(
    values: ChartValues, model: ServiceModel
) -> None:
    block = candidate_values(values, model, 0.5, 3, 20, fast_scale_up=True)
    rate = 0.5 * model.replica_rps
    assert block.request_rate.average_value == pytest.approx(rate, abs=0.05)
    assert block.target_cpu == int(100 * model.cpu_at(rate) / values.cpu_request_milli)
    assert block.inflight_requests.average_value == pytest.approx(
        rate * model.latency(0.5)[2] / 1000, abs=0.1
    )
    assert block.behavior is not None and block.behavior.scale_up == FAST_SCALE_UP
    assert (block.min_replicas, block.max_replicas) == (3, 20)
    chart = values.model_copy(update={"autoscaling": block})
    assert hpa_spec(chart).min_replicas == 3  # renders to a valid HPA


def test_steepest_windows() -> None:
    assert steepest_windows(step(10, 20, at=100, duration=600)) == [slice(0, 600)]
    windows = steepest_windows(busy_day())
    assert any(w.start <= 603 < w.stop for w in windows)
    assert all(w.stop - w.start == 1200 for w in diurnal_windows())


def diurnal_windows() -> list[slice]:
    return steepest_windows(diurnal())


def test_recommended_fragment_loads_back_as_the_same_values(busy_day_plan: Plan) -> None:
    rec = busy_day_plan.recommendation
    assert rec is not None and rec.candidate is not None
    again = load_values(values_fragment(rec.candidate.autoscaling))
    assert again.autoscaling == rec.candidate.autoscaling
