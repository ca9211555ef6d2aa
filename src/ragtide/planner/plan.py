"""One planning run: replay the current values, check them, search for better ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from ragtide.planner.analysis import PlanSummary, conflicts, summarize
from ragtide.planner.capacity import Capacity
from ragtide.planner.queueing import ServiceModel
from ragtide.planner.recommend import Recommendation, recommend
from ragtide.planner.schedule import ScheduleOption, schedule_option
from ragtide.planner.simulate import SimulationParams, SimulationResult, simulate
from ragtide.planner.traffic import Trace
from ragtide.planner.values import ChartValues

__all__ = ["Plan", "make_plan", "reaction_seconds"]


@dataclass(frozen=True, eq=False)
class Plan:
    """Everything one ``ragtide plan`` run produced."""

    result: SimulationResult
    summary: PlanSummary
    conflicts: tuple[str, ...]
    recommendation: Recommendation | None
    recommended_summary: PlanSummary | None
    reaction_seconds: float
    schedule: ScheduleOption | None = None


def reaction_seconds(values: ChartValues, capacity: Capacity, params: SimulationParams) -> float:
    """Best-case seconds from a load change to new ready pods, without policy limits.

    The fastest enabled signal (a CPU sample needs up to two metric-server resolutions,
    a gauge one scrape interval, a ``rate()`` most of its window), plus one HPA sync
    period, the Pending time and the measured start-up.
    """
    pipeline, scaling = params.pipeline, values.autoscaling
    lags = []
    if scaling.target_cpu is not None:
        lags.append(2 * pipeline.metric_resolution)
    if scaling.inflight_requests.enabled:
        lags.append(pipeline.scrape_interval)
    if scaling.request_rate.enabled:
        lags.append(pipeline.rate_window / 2 + pipeline.scrape_interval)
    signal = min(lags) if lags else 2 * pipeline.metric_resolution
    return (
        signal
        + pipeline.hpa_sync_period
        + params.pod_pending_seconds
        + capacity.replica.startup_seconds
    )


def make_plan(
    trace: Trace,
    values: ChartValues,
    capacity: Capacity,
    params: SimulationParams,
    *,
    slo_p99_ms: float = 800.0,
    deadline_s: float | None = 90.0,
    search: bool = True,
    progress: Callable[[str], None] | None = None,
) -> Plan:
    """Replay ``values``, summarize, list conflicts and (with ``search``) recommend values."""
    capacity = capacity.at_cpu_limit(values.cpu_limit_milli)
    model = ServiceModel.from_capacity(capacity, values.cpu_limit_milli)
    result = simulate(trace, values, capacity, params)
    summary = summarize(result, model, slo_p99_ms)
    start = int(result.replicas_ready[0]) if result.replicas_ready.size else 0
    found = conflicts(
        values,
        capacity,
        model,
        peak_rps=summary.peak_rps,
        start_replicas=start,
        slo_p99_ms=slo_p99_ms,
        deadline_s=deadline_s if summary.surge is not None else None,
        config=params.controller,
        pending_s=params.pod_pending_seconds,
    )
    recommendation = recommended = None
    if search:
        recommendation = recommend(
            trace,
            values,
            capacity,
            params,
            slo_p99_ms=slo_p99_ms,
            deadline_s=deadline_s,
            progress=progress,
        )
        if recommendation.result is not None:
            recommended = summarize(recommendation.result, model, slo_p99_ms)
    reaction = reaction_seconds(values, capacity, params)
    schedule = None
    if search and recommendation is not None and recommendation.candidate is not None:
        warm = recommended.replica_hours if recommended is not None else None
        is_warm = recommended is not None and (
            recommendation.candidate.min_replicas >= recommended.peak_needed_replicas
        )
        schedule = schedule_option(
            trace,
            values,
            capacity,
            params,
            slo_p99_ms=slo_p99_ms,
            base=recommendation.candidate.autoscaling,
            lead_seconds=reaction,
            warm_fleet_replica_hours=warm,
            compared_to="warm fleet" if is_warm else "recommended values (autoscaled)",
        )
    return Plan(result, summary, found, recommendation, recommended, reaction, schedule)
