"""Scheduled minimums (KEDA cron triggers) and the schedule option beside the warm fleet."""

from __future__ import annotations

import numpy as np
import pytest

from ragtide.errors import ConfigError
from ragtide.planner.capacity import Capacity
from ragtide.planner.cron import cron_expression, cron_metric_values, daily_window
from ragtide.planner.hpa import ControllerState, MetricKind, Snapshot, reconcile
from ragtide.planner.plan import Plan, make_plan
from ragtide.planner.report import format_summary, timeline_json
from ragtide.planner.simulate import SimulationParams, simulate
from ragtide.planner.traffic import Trace, diurnal
from ragtide.planner.values import ChartValues, ScheduleValues, hpa_spec, load_values

KEDA = {
    "engine": "keda",
    "keda": {"schedules": [{"start": "10 0 * * *", "end": "20 0 * * *", "desiredReplicas": 6}]},
}


def _window(start: str, end: str) -> tuple[int, int]:
    w = daily_window(ScheduleValues(start=start, end=end, desiredReplicas=3))
    return w.start, w.end


def test_daily_cron_windows_and_wrap_at_midnight() -> None:
    assert _window("30 8 * * *", "0 18 * * *") == (30_600, 64_800)
    night = daily_window(ScheduleValues(start="0 22 * * *", end="0 6 * * *", desiredReplicas=3))
    assert night.active(23 * 3600) and night.active(3600) and not night.active(12 * 3600)
    assert night.active(86_400 + 3600)  # the next day too
    assert cron_expression(30_600) == "30 8 * * *"
    with pytest.raises(ConfigError, match="daily schedules"):
        _window("0 8 * * 1-5", "0 18 * * 1-5")


def test_keda_engine_adds_one_cron_metric_per_schedule() -> None:
    values = load_values({"autoscaling": KEDA})
    spec = hpa_spec(values)
    cron = spec.metrics[-1]
    assert (cron.kind, cron.name, cron.target.average_value) == (
        MetricKind.EXTERNAL,
        "s3-cron",  # after cpu, request rate and in-flight
        1000,
    )
    scaling = values.autoscaling
    assert cron_metric_values(scaling, 15 * 60) == {"s3-cron": (6000,)}
    assert cron_metric_values(scaling, 5 * 60) == {"s3-cron": (0,)}
    assert hpa_spec(load_values()).metrics[-1].kind == MetricKind.PODS  # engine hpa: none


def test_a_cron_trigger_is_a_minimum_through_the_hpas_max() -> None:
    spec = hpa_spec(load_values({"autoscaling": KEDA}))
    snapshot = Snapshot(0.0, 2, 2, external_metrics={"s3-cron": (6000,)})
    assert reconcile(spec, snapshot, ControllerState(())).proposal == 6


def test_the_replay_holds_the_scheduled_minimum_inside_the_window(capacity: Capacity) -> None:
    trace = Trace(np.full(1800, 5.0), name="quiet")
    values = load_values({"autoscaling": KEDA})
    result = simulate(trace, values, capacity, SimulationParams(initial_replicas=2))
    assert result.replicas_desired[9 * 60] == 2
    assert result.replicas_desired[16 * 60] >= 6 and result.replicas_ready[16 * 60] >= 6
    assert result.replicas_desired[-1] < 6  # scaled down again after the window


def test_busy_day_schedule_option_beats_the_warm_fleet(busy_day_plan: Plan) -> None:
    option = busy_day_plan.schedule
    assert option is not None and busy_day_plan.recommended_summary is not None
    warm = busy_day_plan.recommended_summary.replica_hours
    assert option.warm_fleet_replica_hours == warm
    assert option.replica_hours < warm
    assert float(np.nanmax(option.result.p99_ms)) <= 800 and option.result.dropped.sum() == 0
    assert option.policy.startswith("Percent 100 / 15 s")
    assert option.autoscaling.engine == "keda" and len(option.autoscaling.keda.schedules) == 1
    text = format_summary(busy_day_plan)
    assert "schedule option (autoscaling.engine: keda)" in text and "vs warm fleet" in text
    doc = timeline_json(busy_day_plan)["schedule"]
    assert doc["values"]["autoscaling"]["engine"] == "keda"


def test_diurnal_reports_the_night_saving_with_its_assumption(
    values: ChartValues, capacity: Capacity
) -> None:
    plan = make_plan(diurnal(), values, capacity, SimulationParams(), search=False)
    text = format_summary(plan)
    assert "scale-to-minimum at night vs fixed peak provisioning" in text
    assert "assumes one 24 h day of raised-cosine traffic, 30 req/s at night to 200" in text
