"""Per-metric replica proposals: upstream's ``replica_calculator.go`` (spec §4).

Each ``get_*_replicas`` function mirrors the upstream method of the same name and
returns either a proposal or a ``MetricFailure`` (upstream returns an ``error``).
Arithmetic follows upstream exactly: integer milli-units, truncating integer division
for averages and the utilization percent, ``ceil`` of a float64 for replica counts,
IEEE division (a zero denominator gives ``inf`` or ``nan``, never an exception).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ragtide.planner.hpa.pods import calculate_requests, group_pods
from ragtide.planner.hpa.types import (
    MAX_INT32,
    MAX_INT64,
    MetricFailure,
    PodPhase,
    PodSample,
    PodSpec,
    Tolerances,
)

__all__ = [
    "MetricProposal",
    "ResourceProposal",
    "get_external_metric_replicas",
    "get_external_per_pod_metric_replicas",
    "get_metric_replicas",
    "get_object_metric_replicas",
    "get_object_per_pod_metric_replicas",
    "get_per_pod_usage",
    "get_raw_resource_replicas",
    "get_resource_replicas",
    "metric_usage_ratio",
    "resource_utilization_ratio",
]


@dataclass(frozen=True, slots=True)
class ResourceProposal:
    """A Utilization proposal with the status values (``currentAverageUtilization``...)."""

    replicas: int
    utilization: int
    raw_average: int


@dataclass(frozen=True, slots=True)
class MetricProposal:
    """A proposal from a value metric, with the usage reported in the HPA status."""

    replicas: int
    usage: int


def _fdiv(num: float, den: float) -> float:
    """IEEE-754 division as Go does it for float64."""
    if den != 0:
        return num / den
    if num == 0 or math.isnan(num):
        return math.nan
    return math.copysign(math.inf, num) * math.copysign(1.0, den)


def _ceil32(value: float) -> int:
    """``int32(math.Ceil(value))`` with the saturation upstream applies where it does."""
    if math.isnan(value):
        return 0
    if value > MAX_INT32:
        return MAX_INT32
    if value < -MAX_INT32 - 1:
        return -MAX_INT32 - 1
    return math.ceil(value)


def _quo(num: int, den: int) -> int:
    """Go's integer division: truncation toward zero."""
    quotient = abs(num) // abs(den)
    return quotient if (num >= 0) == (den > 0) else -quotient


def resource_utilization_ratio(
    metrics: Mapping[str, PodSample], requests: Mapping[str, int], target_utilization: int
) -> tuple[float, int, int] | MetricFailure:
    """``(ratio, utilization percent, raw average)`` over the pods that have a request.

    The percent is truncated first and the ratio computed from the truncated percent.
    """
    metrics_total = requests_total = entries = 0
    for pod, sample in metrics.items():
        if pod in requests:
            metrics_total += sample.value
            requests_total += requests[pod]
            entries += 1
    if requests_total == 0:
        return MetricFailure("no metrics returned matched known pods")
    utilization = max(-MAX_INT32 - 1, min(MAX_INT32, _quo(metrics_total * 100, requests_total)))
    ratio = _fdiv(utilization, target_utilization)
    return ratio, utilization, _quo(metrics_total, entries)


def metric_usage_ratio(metrics: Mapping[str, PodSample], target: int) -> tuple[float, int]:
    """``(ratio, integer average)``: the average is truncated before the ratio (§4.6)."""
    average = _quo(sum(s.value for s in metrics.values()), len(metrics))
    return _fdiv(average, target), average


def _pods_or_failure(pods: Sequence[PodSpec]) -> MetricFailure | None:
    if not pods:
        return MetricFailure("no pods returned by selector while calculating replica count")
    return None


def get_resource_replicas(
    current_replicas: int,
    target_utilization: int,
    resource: str,
    tolerances: Tolerances,
    pods: Sequence[PodSpec],
    metrics: Mapping[str, PodSample] | MetricFailure,
    now: float,
    *,
    container: str = "",
    cpu_initialization_period: float = 300.0,
    initial_readiness_delay: float = 30.0,
    pod_level_resources: bool = False,
) -> ResourceProposal | MetricFailure:
    """Resource or ContainerResource metric with a Utilization target (spec §4.3)."""
    if isinstance(metrics, MetricFailure):
        return MetricFailure(f"unable to get metrics for resource {resource}: {metrics.message}")
    if failure := _pods_or_failure(pods):
        return failure
    groups = group_pods(
        pods, metrics, resource, now, cpu_initialization_period, initial_readiness_delay
    )
    usable = {p: s for p, s in metrics.items() if p not in groups.ignored | groups.unready}
    if not usable:
        return MetricFailure("did not receive metrics for targeted pods (pods might be unready)")
    requests = calculate_requests(pods, container, resource, pod_level=pod_level_resources)
    if isinstance(requests, MetricFailure):
        return requests
    first = resource_utilization_ratio(usable, requests, target_utilization)
    if isinstance(first, MetricFailure):
        return first
    ratio, utilization, raw = first

    def proposal(replicas: int) -> ResourceProposal:
        return ResourceProposal(replicas, utilization, raw)

    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tolerances.is_within(ratio):
            return proposal(current_replicas)
        return proposal(_ceil32(ratio * groups.ready_count))
    filled = dict(usable)
    if groups.missing:
        if ratio < 1.0:
            fallback = max(100, target_utilization)
            for pod in groups.missing:
                filled[pod] = PodSample(_quo(requests[pod] * fallback, 100))
        elif ratio > 1.0:
            for pod in groups.missing:
                filled[pod] = PodSample(0)
    if scale_up_with_unready:
        for pod in groups.unready:
            filled[pod] = PodSample(0)
    second = resource_utilization_ratio(filled, requests, target_utilization)
    if isinstance(second, MetricFailure):
        return second
    return proposal(_second_pass(ratio, second[0], len(filled), current_replicas, tolerances))


def _second_pass(
    ratio: float, new_ratio: float, count: int, current: int, tolerances: Tolerances
) -> int:
    """The shared tail of §4.3/§4.6: no change on a direction flip or within tolerance."""
    if (
        tolerances.is_within(new_ratio)
        or (ratio < 1.0 and new_ratio > 1.0)
        or (ratio > 1.0 and new_ratio < 1.0)
    ):
        return current
    new_replicas = _ceil32(new_ratio * count)
    if (new_ratio < 1.0 and new_replicas > current) or (new_ratio > 1.0 and new_replicas < current):
        return current
    return new_replicas


def get_raw_resource_replicas(
    current_replicas: int,
    target_usage: int,
    resource: str,
    tolerances: Tolerances,
    pods: Sequence[PodSpec],
    metrics: Mapping[str, PodSample] | MetricFailure,
    now: float,
    *,
    cpu_initialization_period: float = 300.0,
    initial_readiness_delay: float = 30.0,
) -> MetricProposal | MetricFailure:
    """Resource metric with an AverageValue target (§4.4): §4.6 with readiness rules."""
    if isinstance(metrics, MetricFailure):
        return MetricFailure(f"unable to get metrics for resource {resource}: {metrics.message}")
    return _plain_metric_replicas(
        metrics,
        current_replicas,
        target_usage,
        tolerances,
        pods,
        resource,
        now,
        cpu_initialization_period,
        initial_readiness_delay,
    )


def get_metric_replicas(
    current_replicas: int,
    target_usage: int,
    metric_name: str,
    tolerances: Tolerances,
    pods: Sequence[PodSpec],
    metrics: Mapping[str, PodSample] | MetricFailure,
    now: float = 0.0,
) -> MetricProposal | MetricFailure:
    """Pods metric with an AverageValue target (§4.6); readiness is not consulted."""
    if isinstance(metrics, MetricFailure):
        return MetricFailure(f"unable to get metric {metric_name}: {metrics.message}")
    return _plain_metric_replicas(
        metrics, current_replicas, target_usage, tolerances, pods, "", now, 0.0, 0.0
    )


def _plain_metric_replicas(
    metrics: Mapping[str, PodSample],
    current_replicas: int,
    target_usage: int,
    tolerances: Tolerances,
    pods: Sequence[PodSpec],
    resource: str,
    now: float,
    init_period: float,
    readiness_delay: float,
) -> MetricProposal | MetricFailure:
    if failure := _pods_or_failure(pods):
        return failure
    groups = group_pods(pods, metrics, resource, now, init_period, readiness_delay)
    usable = {p: s for p, s in metrics.items() if p not in groups.ignored | groups.unready}
    if not usable:
        return MetricFailure("did not receive metrics for targeted pods (pods might be unready)")
    ratio, usage = metric_usage_ratio(usable, target_usage)
    scale_up_with_unready = bool(groups.unready) and ratio > 1.0
    if not scale_up_with_unready and not groups.missing:
        if tolerances.is_within(ratio):
            return MetricProposal(current_replicas, usage)
        return MetricProposal(_ceil32(ratio * groups.ready_count), usage)
    filled = dict(usable)
    if groups.missing:
        if ratio < 1.0:
            for pod in groups.missing:
                filled[pod] = PodSample(target_usage)
        elif ratio > 1.0:
            for pod in groups.missing:
                filled[pod] = PodSample(0)
    if scale_up_with_unready:
        for pod in groups.unready:
            filled[pod] = PodSample(0)
    new_ratio, _ = metric_usage_ratio(filled, target_usage)
    replicas = _second_pass(ratio, new_ratio, len(filled), current_replicas, tolerances)
    return MetricProposal(replicas, usage)


def _usage_ratio_replica_count(
    current_replicas: int, ratio: float, tolerances: Tolerances, pods: Sequence[PodSpec]
) -> int | MetricFailure:
    """``getUsageRatioReplicaCount``: ready Running pods, or ``ceil(ratio)`` from zero."""
    if current_replicas == 0:
        return _ceil32(ratio)
    if tolerances.is_within(ratio):
        return current_replicas
    if not pods:
        return MetricFailure(
            "unable to calculate ready pods: no pods returned by selector "
            "while calculating replica count"
        )
    ready = sum(1 for p in pods if p.phase == PodPhase.RUNNING and p.ready is True)
    return _ceil32(ratio * ready)


def get_object_metric_replicas(
    current_replicas: int,
    target_usage: int,
    usage: int | MetricFailure,
    tolerances: Tolerances,
    pods: Sequence[PodSpec],
) -> MetricProposal | MetricFailure:
    """Object metric with a Value target (§4.7)."""
    if isinstance(usage, MetricFailure):
        return usage
    replicas = _usage_ratio_replica_count(
        current_replicas, _fdiv(usage, target_usage), tolerances, pods
    )
    return replicas if isinstance(replicas, MetricFailure) else MetricProposal(replicas, usage)


def get_per_pod_usage(usage: int, status_replicas: int) -> int:
    """``ceil(usage / statusReplicas)``; 0 without replicas, MaxInt64 on overflow."""
    if float(usage) >= float(MAX_INT64):
        return MAX_INT64
    if status_replicas == 0:
        return 0
    value = math.ceil(float(usage) / float(status_replicas))
    return min(value, MAX_INT64)


def get_object_per_pod_metric_replicas(
    status_replicas: int,
    target_average_usage: int,
    usage: int | MetricFailure,
    tolerances: Tolerances,
) -> MetricProposal | MetricFailure:
    """Object metric with an AverageValue target (§4.7); uses ``status.replicas``."""
    if isinstance(usage, MetricFailure):
        return usage
    replicas = status_replicas
    ratio = _fdiv(usage, float(target_average_usage) * float(status_replicas))
    if not tolerances.is_within(ratio):
        replicas = _ceil32(_fdiv(usage, target_average_usage))
    return MetricProposal(replicas, get_per_pod_usage(usage, status_replicas))


def _sum_capped(values: Sequence[int]) -> int:
    """Sum of series values; stops at MaxInt64 on positive overflow (§4.8)."""
    total = 0
    for value in values:
        if value > 0 and total > MAX_INT64 - value:
            return MAX_INT64
        total += value
    return total


def get_external_metric_replicas(
    current_replicas: int,
    target_usage: int,
    values: Sequence[int] | MetricFailure,
    tolerances: Tolerances,
    pods: Sequence[PodSpec],
) -> MetricProposal | MetricFailure:
    """External metric with a Value target (§4.8): the series are summed first."""
    if isinstance(values, MetricFailure):
        return values
    usage = _sum_capped(values)
    replicas = _usage_ratio_replica_count(
        current_replicas, _fdiv(usage, target_usage), tolerances, pods
    )
    return replicas if isinstance(replicas, MetricFailure) else MetricProposal(replicas, usage)


def get_external_per_pod_metric_replicas(
    status_replicas: int,
    target_usage_per_pod: int,
    values: Sequence[int] | MetricFailure,
    tolerances: Tolerances,
) -> MetricProposal | MetricFailure:
    """External metric with an AverageValue target (§4.8), the type KEDA generates."""
    if isinstance(values, MetricFailure):
        return values
    usage = _sum_capped(values)
    replicas = status_replicas
    ratio = _fdiv(usage, float(target_usage_per_pod) * float(status_replicas))
    if not tolerances.is_within(ratio):
        replicas = _ceil32(_fdiv(usage, target_usage_per_pod))
    return MetricProposal(replicas, get_per_pod_usage(usage, status_replicas))
