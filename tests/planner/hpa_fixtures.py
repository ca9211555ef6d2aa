"""Builders that turn the ported upstream fixtures (``vectors/*.yaml``) into model inputs.

They reproduce the fake clients of upstream's ``replica_calculator_test.go`` and
``horizontal_test.go`` so the vector files can stay plain data.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from ragtide.planner.hpa import (
    ZERO_TIME,
    Behavior,
    ControllerConfig,
    MetricKind,
    MetricSpec,
    MetricTarget,
    PodPhase,
    PodSpec,
    PolicyType,
    Recommendation,
    ResourceSample,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    TargetType,
    Tolerances,
)

VECTORS = Path(__file__).parent / "vectors"
NOW = 0.0
#: upstream's test constants: defaultTesting* (replica_calculator.go) and the
#: scaleUpLimitFactor override in horizontal_test.go's init()
TEST_CONFIG = ControllerConfig(
    tolerance=0.1,
    cpu_initialization_period=120.0,
    initial_readiness_delay=10.0,
    downscale_stabilization=300.0,
    scale_up_limit_factor=8.0,
)


def load(name: str) -> Any:
    return yaml.safe_load((VECTORS / name).read_text())


def case_id(case: Mapping[str, Any]) -> str:
    return f"{case.get('test', '')}: {case.get('name', '')}".strip(": ")


def tolerances(case: Mapping[str, Any]) -> Tolerances:
    down, up = case.get("tolerances", [0.1, 0.1])
    return Tolerances(scale_down=down, scale_up=up)


def _start_time(value: str | None) -> float:
    return {"now": NOW, "hot": NOW, "3m": NOW - 180.0, "cool": NOW - 180.0}.get(
        value or "", ZERO_TIME
    )


def calc_pods(
    case: Mapping[str, Any], count: int, requests: Sequence[int] | None
) -> tuple[PodSpec, ...]:
    """Pods as ``buildFakePod`` makes them: both containers request ``requests[i]``."""
    readiness = case.get("pod_readiness") or []
    starts = case.get("pod_start_time") or []
    phases = case.get("pod_phase") or []
    deleted = case.get("pod_deleted") or []
    count = max(count, len(phases))
    pods = []
    for i in range(count):
        container_requests: dict[str, dict[str, int]] = {"container1": {}, "container2": {}}
        if requests is not None and i < len(requests):
            container_requests = {
                "container1": {"cpu": requests[i]},
                "container2": {"cpu": requests[i]},
            }
        start = _start_time(starts[i] if i < len(starts) else None)
        pods.append(
            PodSpec(
                name=f"test-pod-{i}",
                phase=PodPhase(phases[i]) if i < len(phases) else PodPhase.RUNNING,
                ready=(readiness[i] == "True") if i < len(readiness) else True,
                start_time=start,
                ready_transition=ZERO_TIME,
                deleted=bool(deleted[i]) if i < len(deleted) else False,
                container_requests=container_requests,
            )
        )
    return tuple(pods)


def calc_resource_samples(resource: Mapping[str, Any]) -> dict[str, ResourceSample]:
    """``newFakeResourceMetricsClient``: two containers per pod, zero timestamp, 1 min window."""
    names = resource.get("pod_names") or []
    samples = {}
    for i, level in enumerate(resource["levels"]):
        per_container = [level, level] if isinstance(level, int) else list(level)
        usage: dict[str, int | None] = {f"container{j + 1}": v for j, v in enumerate(per_container)}
        if len(per_container) < 2:
            usage[""] = None  # upstream's zero-valued ContainerMetrics entry
        name = names[i] if i < len(names) else f"test-pod-{i}"
        samples[name] = ResourceSample(usage, timestamp=ZERO_TIME, window=60.0)
    return samples


def rules(args: Sequence[int] | None) -> ScalingRules | None:
    """upstream's ``generateScalingRules(pods, podsPeriod, percent, percentPeriod, window)``."""
    if args is None:
        return None
    pods, pods_period, percent, percent_period, window = args
    policies = []
    if pods:
        policies.append(ScalingPolicy(PolicyType.PODS, pods, pods_period))
    if percent:
        policies.append(ScalingPolicy(PolicyType.PERCENT, percent, percent_period))
    return ScalingRules(window, SelectPolicy.MAX, tuple(policies) if policies else None)


def uniform_events(spec: Mapping[str, Any] | None) -> tuple[ScaleEvent, ...]:
    """upstream's ``generateEventsUniformDistribution``: events centred in equal segments."""
    if not spec:
        return ()
    changes, period = spec["changes"], spec["period"]
    segment = period / len(changes)
    events = []
    for idx, change in enumerate(changes):
        age = int(period - segment * (idx + 1) + segment / 2)  # Duration(float) truncates
        events.append(ScaleEvent(change, NOW - age))
    return tuple(events)


def history(pairs: Sequence[Sequence[float]] | None) -> tuple[Recommendation, ...] | None:
    if pairs is None:
        return None
    return tuple(Recommendation(int(r), NOW - age) for r, age in pairs)


# --- horizontal_test.go testCase ---------------------------------------------------


def controller_pods(case: Mapping[str, Any]) -> tuple[PodSpec, ...]:
    requests = case.get("requests")
    count = len(requests) if requests is not None else case["status"]
    readiness = case.get("readiness") or []
    starts = case.get("start_time") or []
    phases = case.get("phase") or []
    deleted = case.get("deleted") or []
    pods = []
    for i in range(count):
        request = requests[i] if requests is not None else 1000
        start = _start_time(starts[i] if i < len(starts) else None)
        pods.append(
            PodSpec(
                name=f"test-pod-{i}",
                phase=PodPhase(phases[i]) if i < len(phases) else PodPhase.RUNNING,
                ready=(readiness[i] == "True") if i < len(readiness) else True,
                start_time=start,
                ready_transition=start,
                deleted=bool(deleted[i]) if i < len(deleted) else False,
                container_requests={
                    "container1": {"cpu": request // 2},
                    "container2": {"cpu": request // 2},
                },
            )
        )
    return tuple(pods)


def controller_metrics(case: Mapping[str, Any]) -> tuple[MetricSpec, ...]:
    metrics: list[MetricSpec] = []
    if case.get("cpu_target"):
        metrics.append(MetricSpec.cpu_utilization(case["cpu_target"]))
    known = {str(k) for k in MetricKind}
    for m in case.get("metrics") or []:
        # an unknown type (upstream's "CheddarCheese") stays a string, with no target
        kind: MetricKind | str = MetricKind(m["type"]) if m["type"] in known else m["type"]
        if "target_type" not in m:
            metrics.append(MetricSpec(kind, m.get("name", ""), MetricTarget(TargetType.VALUE)))
            continue
        target_type = TargetType(m["target_type"])
        if target_type == TargetType.UTILIZATION:
            target = MetricTarget(target_type, average_utilization=m["target"])
        elif target_type == TargetType.VALUE:
            target = MetricTarget(target_type, value=m["target"])
        else:
            target = MetricTarget(target_type, average_value=m["target"])
        metrics.append(MetricSpec(kind, m["name"], target, m.get("container", "")))
    if not metrics:
        metrics.append(MetricSpec(MetricKind.RESOURCE, "cpu", MetricTarget(TargetType.UTILIZATION)))
    return tuple(metrics)


def controller_behavior(case: Mapping[str, Any]) -> Behavior | None:
    up, down = rules(case.get("scale_up_rules")), rules(case.get("scale_down_rules"))
    if up is None and down is None:
        return None
    return Behavior(scale_up=up, scale_down=down)


def controller_samples(case: Mapping[str, Any]) -> dict[str, Any]:
    """The four fake metrics clients, minus the sources listed in ``failing``."""
    levels: list[int] = case.get("levels") or []
    failing = set(case.get("failing") or [])
    cpu = {
        f"test-pod-{i}": ResourceSample(
            {"container1": level // 2, "container2": level // 2}, timestamp=NOW, window=60.0
        )
        for i, level in enumerate(levels)
    }
    out: dict[str, Any] = {
        "resource_metrics": {} if "Resource" in failing else {"cpu": cpu},
        "pods_metrics": {}
        if "Pods" in failing
        else {"qps": {f"test-pod-{i}": level for i, level in enumerate(levels)}},
        "object_metrics": {} if "Object" in failing or not levels else {"qps": levels[0]},
        "external_metrics": {} if "External" in failing else {"qps": tuple(levels)},
    }
    return out
