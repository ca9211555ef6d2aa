"""The issue's acceptance scenarios: the busy day and the 24 h diurnal trace."""

from __future__ import annotations

import math

import numpy as np

from ragtide.planner.plan import Plan
from ragtide.planner.report import format_summary


def test_busy_day_shows_when_capacity_arrives_and_what_p99_does(busy_day_plan: Plan) -> None:
    summary, result = busy_day_plan.summary, busy_day_plan.result
    assert result.replicas_ready[0] == 4
    assert summary.peak_needed_replicas == 12
    surge = summary.surge
    assert surge is not None and surge.start == 603
    # +2 pods per 60 s after a 60 s window: 4 -> 12 takes minutes, not 90 s.
    assert surge.desired_after is not None and surge.desired_after > 200
    assert surge.ready_after is not None and surge.ready_after > surge.desired_after
    assert surge.max_p99_ms > 10_000 and surge.breach_seconds > 200
    assert summary.dropped_requests > 0


def test_busy_day_reports_the_rate_limit_conflict(busy_day_plan: Plan) -> None:
    text = " ".join(busy_day_plan.conflicts)
    assert "cannot take 4 replicas to 12 within 90 s" in text
    assert "225 s" in text  # 45 s of stabilization + three 60 s periods
    assert "requestRate.averageValue 100" in text


def test_busy_day_recommendation_meets_the_slo_and_the_deadline(busy_day_plan: Plan) -> None:
    rec, summary = busy_day_plan.recommendation, busy_day_plan.recommended_summary
    assert rec is not None and rec.candidate is not None and rec.result is not None
    assert summary is not None and summary.meets_slo
    p99 = np.nan_to_num(rec.result.p99_ms, nan=math.inf)
    assert p99.max() <= 800 and rec.result.dropped.sum() == 0
    surge = summary.surge
    assert surge is not None and surge.ready_after is not None and surge.ready_after <= 90
    assert rec.result.replicas_ready[surge.start + surge.ready_after] >= 12


def test_busy_day_summary_prints_the_story(busy_day_plan: Plan) -> None:
    text = format_summary(busy_day_plan)
    assert "conflicts:" in text and "recommended values" in text
    assert "surge at t=603 s" in text


def test_diurnal_reports_replica_hours_saved_against_fixed_peak(diurnal_plan: Plan) -> None:
    summary = diurnal_plan.summary
    assert summary.seconds == 86_400
    assert summary.fixed_peak_replica_hours == 12 * 24
    assert 0 < summary.saved_replica_hours < summary.fixed_peak_replica_hours
    assert summary.replica_hours == diurnal_plan.result.replicas_desired.sum() / 3600
    assert summary.surge is None
    assert "saved" in format_summary(diurnal_plan)
