"""Which pods count, what they request, and what the resource metrics client returns (§4.2, §4.9).

Split from ``calculator`` so the classification rules can be read and tested alone.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ragtide.planner.hpa.types import MetricFailure, PodPhase, PodSample, PodSpec, ResourceSample

__all__ = ["PodGroups", "calculate_requests", "group_pods", "resource_pod_metrics"]


@dataclass(frozen=True, slots=True)
class PodGroups:
    """``groupPods`` output: ready count and the unready, missing and ignored names."""

    ready_count: int
    unready: frozenset[str]
    missing: frozenset[str]
    ignored: frozenset[str]


def group_pods(
    pods: Sequence[PodSpec],
    metrics: Mapping[str, PodSample],
    resource: str,
    now: float,
    cpu_initialization_period: float,
    initial_readiness_delay: float,
) -> PodGroups:
    """Classify pods as ready, unready, missing or ignored (spec §4.2, first rule wins).

    Readiness is consulted only when ``resource == "cpu"``; for every other metric a
    Running pod with a sample counts as ready whatever its ``Ready`` condition.
    """
    ready = 0
    unready: set[str] = set()
    missing: set[str] = set()
    ignored: set[str] = set()
    for pod in pods:
        if pod.deleted or pod.terminal:
            ignored.add(pod.name)
            continue
        if pod.phase == PodPhase.PENDING:
            unready.add(pod.name)
            continue
        sample = metrics.get(pod.name)
        if sample is None:
            missing.add(pod.name)
            continue
        if resource == "cpu" and _cpu_unready(
            pod, sample, now, cpu_initialization_period, initial_readiness_delay
        ):
            unready.add(pod.name)
            continue
        ready += 1
    return PodGroups(ready, frozenset(unready), frozenset(missing), frozenset(ignored))


def _cpu_unready(
    pod: PodSpec, sample: PodSample, now: float, init_period: float, readiness_delay: float
) -> bool:
    if pod.ready is None or pod.start_time is None:
        return True
    if pod.start_time + init_period > now:
        # Still initializing: count the sample only if it was taken entirely while Ready.
        return pod.ready is False or sample.timestamp < pod.ready_transition + sample.window
    # Initialized: ignore it only if it is unready and has never been ready.
    return pod.ready is False and pod.start_time + readiness_delay > pod.ready_transition


def calculate_requests(
    pods: Sequence[PodSpec], container: str, resource: str, *, pod_level: bool = False
) -> dict[str, int] | MetricFailure:
    """Per-pod request of ``resource`` (§4.9), or the first missing-request failure."""
    requests: dict[str, int] = {}
    for pod in pods:
        if pod_level and pod.pod_requests is not None and container == "":
            if resource not in pod.pod_requests:
                return MetricFailure(f"missing pod-level request for {resource} in Pod {pod.name}")
            requests[pod.name] = pod.pod_requests[resource]
            continue
        total = 0
        for name, container_requests in pod.container_requests.items():
            if container in ("", name):
                if resource not in container_requests:
                    return MetricFailure(
                        f"missing request for {resource} in container {name} of Pod {pod.name}"
                    )
                total += container_requests[resource]
            if container == name:
                break
        else:
            if container != "":
                return MetricFailure(f"container {container} not found in Pod {pod.name}")
        requests[pod.name] = total
    return requests


def resource_pod_metrics(
    samples: Mapping[str, ResourceSample], container: str
) -> dict[str, PodSample] | MetricFailure:
    """The resource metrics client: one value per pod, whole-pod sum or one container."""
    if not samples:
        return MetricFailure("no metrics returned from resource metrics API")
    result: dict[str, PodSample] = {}
    for pod, sample in samples.items():
        if container:
            value = sample.usage.get(container)
        elif not sample.usage or any(v is None for v in sample.usage.values()):
            value = None
        else:
            value = sum(v for v in sample.usage.values() if v is not None)
        if value is not None:
            result[pod] = PodSample(value, sample.timestamp, sample.window)
    return result
