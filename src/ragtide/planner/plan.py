"""One planning run: replay the current values, check them, search for better ones."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace

from ragtide.planner.analysis import PlanSummary, conflicts, summarize
from ragtide.planner.capacity import Capacity
from ragtide.planner.model_analysis import (
    BreachInterval,
    ModelTierSummary,
    breach_intervals,
    default_model_slo_ms,
    model_conflicts,
    summarize_model,
)
from ragtide.planner.model_recommend import ModelRecommendation, recommend_model
from ragtide.planner.model_tier import ModelServerModel
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
    model_summary: ModelTierSummary | None = None
    model_recommendation: ModelRecommendation | None = None
    recommended_model_summary: ModelTierSummary | None = None
    breaches: tuple[BreachInterval, ...] = ()


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
    model_slo_p99_ms: float | None = None,
) -> Plan:
    """Replay ``values``, summarize, list conflicts and (with ``search``) recommend values.

    With a ``model_server`` in the capacity both tiers are replayed, summarized and
    searched (the model tier first; the API's search then runs beside the recommended
    model tier); ``model_slo_p99_ms`` defaults to a call's own time plus ``slo_p99_ms``.
    """
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
    tier = _ModelPlan.start(trace, values, capacity, params, result, slo_p99_ms, model_slo_p99_ms)
    if tier is not None:
        found += tier.conflicts(values, capacity, model, trace, slo_p99_ms, params)
    recommendation = recommended = None
    if search:
        if tier is not None:
            values = tier.search(trace, values, params)
        recommendation = recommend(
            trace,
            values,
            capacity,
            params,
            slo_p99_ms=slo_p99_ms,
            deadline_s=deadline_s,
            progress=progress,
            model_slo_ms=tier.slo_for_search if tier is not None else None,
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
    plan = Plan(result, summary, found, recommendation, recommended, reaction, schedule)
    return tier.attach(plan) if tier is not None else plan


@dataclass(eq=False)
class _ModelPlan:
    """The model tier's part of a plan, gathered while ``make_plan`` runs."""

    model: ModelServerModel
    slo_ms: float
    summary: ModelTierSummary | None
    breaches: tuple[BreachInterval, ...]
    recommendation: ModelRecommendation | None = None

    @classmethod
    def start(
        cls,
        trace: Trace,
        values: ChartValues,
        capacity: Capacity,
        params: SimulationParams,
        result: SimulationResult,
        slo_p99_ms: float,
        model_slo_p99_ms: float | None,
    ) -> _ModelPlan | None:
        if capacity.model_server is None:
            return None
        model = ModelServerModel.from_capacity(capacity.model_server)
        slo = model_slo_p99_ms or default_model_slo_ms(capacity.model_server, slo_p99_ms)
        return cls(
            model,
            slo,
            summarize_model(result, model, slo),
            tuple(breach_intervals(result, slo_p99_ms, slo)),
        )

    def conflicts(
        self,
        values: ChartValues,
        capacity: Capacity,
        api: ServiceModel,
        trace: Trace,
        slo_p99_ms: float,
        params: SimulationParams,
    ) -> tuple[str, ...]:
        assert capacity.model_server is not None  # start() made this tier from it
        return model_conflicts(
            values,
            capacity.model_server,
            api,
            load=trace.rps,
            slo_p99_ms=slo_p99_ms,
            model_slo_ms=self.slo_ms,
            params=params,
            config=params.controller,
        )

    def search(self, trace: Trace, values: ChartValues, params: SimulationParams) -> ChartValues:
        """Recommend the model tier; the chart values the API's search then runs beside."""
        self.recommendation = recommend_model(
            trace, values.model_server, self.model, params, model_slo_ms=self.slo_ms
        )
        candidate = self.recommendation.candidate
        if candidate is None:
            return values
        tier = values.model_server.model_copy(update={"autoscaling": candidate.autoscaling})
        return values.model_copy(update={"model_server": tier})

    @property
    def slo_for_search(self) -> float | None:
        """The model SLO the API's candidates must keep (only when a model tier can)."""
        rec = self.recommendation
        return self.slo_ms if rec is not None and rec.candidate is not None else None

    def attach(self, plan: Plan) -> Plan:
        rec = plan.recommendation
        recommended = None
        if rec is not None and rec.result is not None:
            recommended = summarize_model(rec.result, self.model, self.slo_ms)
        return replace(
            plan,
            model_summary=self.summary,
            model_recommendation=self.recommendation,
            recommended_model_summary=recommended,
            breaches=self.breaches,
        )
