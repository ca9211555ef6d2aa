"""One reconcile of one HPA (``reconcileAutoscaler``, spec §2 and §3).

``reconcile(spec, snapshot, state, config)`` is a pure function: it returns the
desired replica count, the status conditions, the per-metric statuses and the new
controller state (recommendations and scale events). The caller decides when to call
it (every ``config.sync_period`` seconds in the replay).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from ragtide.planner.hpa.calculator import (
    MetricProposal,
    ResourceProposal,
    get_external_metric_replicas,
    get_external_per_pod_metric_replicas,
    get_metric_replicas,
    get_object_metric_replicas,
    get_object_per_pod_metric_replicas,
    get_raw_resource_replicas,
    get_resource_replicas,
)
from ragtide.planner.hpa.normalize import (
    convert_desired_replicas_with_behavior_rate,
    convert_desired_replicas_with_rules,
    generate_scale_down_rules,
    generate_scale_up_rules,
    stabilize_recommendation,
    stabilize_recommendation_with_behaviors,
    store_scale_event,
)
from ragtide.planner.hpa.pods import resource_pod_metrics
from ragtide.planner.hpa.types import (
    Behavior,
    Condition,
    ControllerConfig,
    ControllerState,
    MetricFailure,
    MetricKind,
    MetricSpec,
    PodSample,
    Recommendation,
    Snapshot,
    TargetType,
    Tolerances,
)

__all__ = [
    "INVALID_SOURCE_TYPE",
    "HPASpec",
    "MetricStatus",
    "Reconciliation",
    "compute_replicas_for_metric",
    "default_behavior",
    "failed_reason",
    "reconcile",
    "tolerances_for",
]

INVALID_SOURCE_TYPE = "InvalidMetricSourceType"
_FAILED_REASON: dict[str, str] = {
    MetricKind.RESOURCE: "FailedGetResourceMetric",
    MetricKind.CONTAINER_RESOURCE: "FailedGetContainerResourceMetric",
    MetricKind.PODS: "FailedGetPodsMetric",
    MetricKind.OBJECT: "FailedGetObjectMetric",
    MetricKind.EXTERNAL: "FailedGetExternalMetric",
}


@dataclass(frozen=True, slots=True)
class HPASpec:
    """The parts of an ``autoscaling/v2`` HPA spec the controller reads."""

    max_replicas: int
    metrics: tuple[MetricSpec, ...]
    min_replicas: int = 1
    behavior: Behavior | None = None


@dataclass(frozen=True, slots=True)
class MetricStatus:
    """One metric's outcome: its proposal, or the failure, and the reported usage."""

    spec: MetricSpec
    replicas: int | None
    usage: int | None = None
    utilization: int | None = None
    failure: str | None = None
    reason: str | None = None


def failed_reason(metric: MetricSpec) -> str:
    """The ScalingActive=False reason for a metric of this kind that failed."""
    return _FAILED_REASON.get(str(metric.kind), INVALID_SOURCE_TYPE)


@dataclass(frozen=True, slots=True)
class Reconciliation:
    """The result of one reconcile.

    ``desired_replicas`` is what ``status.desiredReplicas`` reports; ``rescale`` tells
    whether ``scale.spec.replicas`` was written. ``proposal`` is the combined metric
    proposal before normalization (``None`` when the metrics were not read).
    """

    desired_replicas: int
    rescale: bool
    conditions: Mapping[str, Condition]
    metrics: tuple[MetricStatus, ...]
    state: ControllerState
    proposal: int | None = None
    error: str | None = None
    stabilized: int | None = None
    notes: tuple[str, ...] = field(default=())


def default_behavior(behavior: Behavior | None, config: ControllerConfig) -> Behavior | None:
    """API defaulting plus the sync-time scale-down window (§1.3, §6.1)."""
    if behavior is None:
        return None
    return Behavior(
        scale_up=generate_scale_up_rules(behavior.scale_up),
        scale_down=generate_scale_down_rules(behavior.scale_down, config.downscale_stabilization),
    )


def tolerances_for(behavior: Behavior | None, config: ControllerConfig) -> Tolerances:
    """Per-HPA tolerances when the gate is on and set in the behavior, else the flag (§1.5)."""
    down = up = config.tolerance
    if config.configurable_tolerance and behavior is not None:
        if behavior.scale_down and behavior.scale_down.tolerance is not None:
            down = behavior.scale_down.tolerance
        if behavior.scale_up and behavior.scale_up.tolerance is not None:
            up = behavior.scale_up.tolerance
    return Tolerances(scale_down=down, scale_up=up)


def _pods_metric(snapshot: Snapshot, name: str) -> Mapping[str, PodSample] | MetricFailure:
    values = snapshot.pods_metrics.get(name)
    if values is None:
        return MetricFailure(f"unable to fetch metrics from custom metrics API: {name}")
    return {pod: PodSample(v, snapshot.now) for pod, v in values.items()}


def compute_replicas_for_metric(
    metric: MetricSpec,
    snapshot: Snapshot,
    tolerances: Tolerances,
    config: ControllerConfig,
) -> MetricStatus:
    """One metric's proposal from the snapshot (dispatch of ``computeReplicasForMetric``)."""
    spec_replicas, pods, target = snapshot.spec_replicas, snapshot.pods, metric.target
    result: MetricProposal | ResourceProposal | MetricFailure
    if metric.kind in (MetricKind.RESOURCE, MetricKind.CONTAINER_RESOURCE):
        raw = snapshot.resource_metrics.get(metric.name)
        samples = (
            resource_pod_metrics(raw, metric.container)
            if raw is not None
            else MetricFailure("unable to fetch metrics from resource metrics API")
        )
        if target.type == TargetType.UTILIZATION and target.average_utilization is not None:
            result = get_resource_replicas(
                spec_replicas,
                target.average_utilization,
                metric.name,
                tolerances,
                pods,
                samples,
                snapshot.now,
                container=metric.container,
                cpu_initialization_period=config.cpu_initialization_period,
                initial_readiness_delay=config.initial_readiness_delay,
                pod_level_resources=config.pod_level_resources,
            )
        elif target.type == TargetType.AVERAGE_VALUE and target.average_value is not None:
            result = get_raw_resource_replicas(
                spec_replicas,
                target.average_value,
                metric.name,
                tolerances,
                pods,
                samples,
                snapshot.now,
                cpu_initialization_period=config.cpu_initialization_period,
                initial_readiness_delay=config.initial_readiness_delay,
            )
        else:
            result = MetricFailure("invalid resource metric source: neither a utilization target")
    elif metric.kind == MetricKind.PODS:
        if target.average_value is None:
            result = MetricFailure("invalid pods metric source: an AverageValue target is required")
        else:
            result = get_metric_replicas(
                spec_replicas,
                target.average_value,
                metric.name,
                tolerances,
                pods,
                _pods_metric(snapshot, metric.name),
                snapshot.now,
            )
    elif metric.kind == MetricKind.OBJECT:
        usage: int | MetricFailure = snapshot.object_metrics.get(
            metric.name, MetricFailure(f"unable to get metric {metric.name}")
        )
        if target.type == TargetType.VALUE and target.value is not None:
            result = get_object_metric_replicas(
                spec_replicas, target.value, usage, tolerances, pods
            )
        elif target.type == TargetType.AVERAGE_VALUE and target.average_value is not None:
            result = get_object_per_pod_metric_replicas(
                snapshot.status_replicas, target.average_value, usage, tolerances
            )
        else:
            result = MetricFailure("invalid object metric source: neither a value target")
    elif metric.kind == MetricKind.EXTERNAL:
        values: tuple[int, ...] | MetricFailure = snapshot.external_metrics.get(
            metric.name, MetricFailure(f"unable to get external metric {metric.name}")
        )
        if target.type == TargetType.AVERAGE_VALUE and target.average_value is not None:
            result = get_external_per_pod_metric_replicas(
                snapshot.status_replicas, target.average_value, values, tolerances
            )
        elif target.type == TargetType.VALUE and target.value is not None:
            result = get_external_metric_replicas(
                spec_replicas, target.value, values, tolerances, pods
            )
        else:
            result = MetricFailure("invalid external metric source: neither a value target")
    else:
        result = MetricFailure(
            f"unknown metric source type {str(metric.kind)!r}", reason=INVALID_SOURCE_TYPE
        )
    if isinstance(result, MetricFailure):
        reason = result.reason or failed_reason(metric)
        return MetricStatus(metric, None, failure=result.message, reason=reason)
    if isinstance(result, ResourceProposal):
        return MetricStatus(metric, result.replicas, result.raw_average, result.utilization)
    return MetricStatus(metric, result.replicas, result.usage)


def reconcile(
    spec: HPASpec,
    snapshot: Snapshot,
    state: ControllerState,
    config: ControllerConfig | None = None,
) -> Reconciliation:
    """Run one sync of the HPA controller for ``spec`` against ``snapshot``.

    Steps, in upstream order: record the initial recommendation on first sight; take
    an early exit when the target has 0 replicas (and ``minReplicas != 0``) or is
    outside ``[min, max]``; else compute every metric's proposal, combine them (max of
    the valid ones; refuse a scale-down while any metric is broken), normalize through
    the legacy path or the behavior path, and record a scale event on a rescale.
    """
    config = config or ControllerConfig()
    now, current = snapshot.now, snapshot.spec_replicas
    conditions: dict[str, Condition] = {"AbleToScale": Condition(True, "SucceededGetScale")}
    recommendations = state.recommendations
    if recommendations is None:
        recommendations = (Recommendation(current, now),)
    state = ControllerState(recommendations, state.scale_up_events, state.scale_down_events)
    behavior = default_behavior(spec.behavior, config)
    min_replicas = spec.min_replicas

    if current == 0 and min_replicas != 0:
        conditions["ScalingActive"] = Condition(False, "ScalingDisabled")
        return Reconciliation(0, False, conditions, (), state)
    if current > spec.max_replicas:
        return _finish(spec.max_replicas, current, now, behavior, conditions, (), state)
    if current < min_replicas:
        return _finish(min_replicas, current, now, behavior, conditions, (), state)

    tolerances = tolerances_for(behavior, config)
    statuses = tuple(
        compute_replicas_for_metric(m, snapshot, tolerances, config) for m in spec.metrics
    )
    proposal = 0
    for status in statuses:
        if status.replicas is not None and (proposal == 0 or status.replicas > proposal):
            proposal = status.replicas
    failures = [s for s in statuses if s.failure is not None]
    error = None
    if failures:
        error = (
            f"invalid metrics ({len(failures)} invalid out of {len(statuses)}), "
            f"first error is: {failures[0].failure}"
        )
        if len(failures) >= len(statuses) or proposal < current:
            reason = failures[0].reason or failed_reason(failures[0].spec)
            conditions["ScalingActive"] = Condition(False, reason)
            return Reconciliation(current, False, conditions, statuses, state, None, error)
    conditions["ScalingActive"] = Condition(True, "ValidMetricFound")
    desired = max(0, proposal)

    if behavior is None:
        stabilized = stabilize_recommendation(
            recommendations, desired, now, config.downscale_stabilization
        )
        conditions["AbleToScale"] = Condition(True, stabilized.reason)
        limited = convert_desired_replicas_with_rules(
            current,
            stabilized.replicas,
            min_replicas,
            spec.max_replicas,
            scale_up_limit_factor=config.scale_up_limit_factor,
            scale_up_limit_minimum=config.scale_up_limit_minimum,
        )
    else:
        up_rules = generate_scale_up_rules(behavior.scale_up)
        down_rules = generate_scale_down_rules(behavior.scale_down, config.downscale_stabilization)
        stabilized = stabilize_recommendation_with_behaviors(
            recommendations,
            desired,
            current,
            float(up_rules.stabilization_window_seconds or 0),
            float(down_rules.stabilization_window_seconds or 0),
            now,
        )
        reason = stabilized.reason if stabilized.replicas != desired else "ReadyForNewScale"
        conditions["AbleToScale"] = Condition(True, reason)
        limited = convert_desired_replicas_with_behavior_rate(
            current,
            stabilized.replicas,
            min_replicas,
            spec.max_replicas,
            up_rules,
            down_rules,
            state.scale_up_events,
            state.scale_down_events,
            now,
        )
    conditions["ScalingLimited"] = Condition(
        limited.replicas != stabilized.replicas, limited.reason
    )
    state = ControllerState(
        stabilized.recommendations, state.scale_up_events, state.scale_down_events
    )
    return _finish(
        limited.replicas,
        current,
        now,
        behavior,
        conditions,
        statuses,
        state,
        proposal,
        error,
        stabilized.replicas,
    )


def _finish(
    desired: int,
    current: int,
    now: float,
    behavior: Behavior | None,
    conditions: dict[str, Condition],
    statuses: tuple[MetricStatus, ...],
    state: ControllerState,
    proposal: int | None = None,
    error: str | None = None,
    stabilized: int | None = None,
) -> Reconciliation:
    if desired == current:
        return Reconciliation(
            current, False, conditions, statuses, state, proposal, error, stabilized
        )
    conditions["AbleToScale"] = Condition(True, "SucceededRescale")
    up, down = store_scale_event(
        behavior, state.scale_up_events, state.scale_down_events, current, desired, now
    )
    new_state = ControllerState(state.recommendations, up, down)
    return Reconciliation(
        desired, True, conditions, statuses, new_state, proposal, error, stabilized
    )
