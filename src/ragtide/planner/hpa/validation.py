"""The API server's validation of an ``autoscaling/v2`` HPA spec (spec §1.4), as far as
the model reads it.

``reconcile`` never raises, whatever the spec: an unknown metric type or a target
without its value is a failed metric, reported as a condition like upstream's
controller does. ``check_spec`` is the earlier gate, for specs a user writes: it raises
``ConfigError`` naming every field the API server would reject, so a values file that
could never be applied fails with a message instead of a replay of a spec Kubernetes
would refuse.
"""

from __future__ import annotations

from ragtide.errors import ConfigError
from ragtide.planner.hpa.controller import HPASpec
from ragtide.planner.hpa.types import (
    MAX_INT32,
    MetricKind,
    MetricSpec,
    ScalingRules,
    TargetType,
)

__all__ = ["check_spec", "spec_problems"]

MAX_PERIOD_SECONDS = 1800
MAX_STABILIZATION_WINDOW_SECONDS = 3600
_KINDS = {str(k) for k in MetricKind}
_TARGET_FIELD = {
    TargetType.UTILIZATION: "averageUtilization",
    TargetType.VALUE: "value",
    TargetType.AVERAGE_VALUE: "averageValue",
}


def _metric_problems(index: int, metric: MetricSpec) -> list[str]:
    where = f"spec.metrics[{index}]"
    kind = str(metric.kind)
    if kind not in _KINDS:
        return [f"{where}.type: unsupported value {kind!r}: must be one of {sorted(_KINDS)}"]
    problems = []
    if not metric.name:
        problems.append(f"{where}: a metric (or resource) name is required")
    target = metric.target
    if target.type == TargetType.UTILIZATION and kind not in ("Resource", "ContainerResource"):
        problems.append(f"{where}.target.type: Utilization is only valid for resource metrics")
    if kind == "Pods" and target.type != TargetType.AVERAGE_VALUE:
        problems.append(f"{where}.target.type: must be AverageValue for Pods metrics")
    if kind in ("Resource", "ContainerResource") and target.type == TargetType.VALUE:
        problems.append(f"{where}.target.type: must be Utilization or AverageValue")
    if kind == "ContainerResource" and not metric.container:
        problems.append(f"{where}.containerResource.container: must be specified")
    field = _TARGET_FIELD[target.type]
    value = {
        TargetType.UTILIZATION: target.average_utilization,
        TargetType.VALUE: target.value,
        TargetType.AVERAGE_VALUE: target.average_value,
    }[target.type]
    if value is None:
        problems.append(f"{where}.target.{field}: must be set for type {target.type}")
    elif value <= 0:
        problems.append(f"{where}.target.{field}: must be positive, not {value}")
    return problems


def _rules_problems(where: str, rules: ScalingRules | None) -> list[str]:
    if rules is None:
        return []
    problems = []
    window = rules.stabilization_window_seconds
    if window is not None and not 0 <= window <= MAX_STABILIZATION_WINDOW_SECONDS:
        problems.append(
            f"{where}.stabilizationWindowSeconds: must be within "
            f"[0, {MAX_STABILIZATION_WINDOW_SECONDS}], not {window}"
        )
    if rules.policies is not None and not rules.policies:
        problems.append(f"{where}.policies: must contain at least one policy")
    for i, policy in enumerate(rules.policies or ()):
        if policy.value <= 0:
            problems.append(f"{where}.policies[{i}].value: must be positive, not {policy.value}")
        if not 0 < policy.period_seconds <= MAX_PERIOD_SECONDS:
            problems.append(
                f"{where}.policies[{i}].periodSeconds: must be within "
                f"(0, {MAX_PERIOD_SECONDS}], not {policy.period_seconds}"
            )
    if rules.tolerance is not None and rules.tolerance < 0:
        problems.append(f"{where}.tolerance: must not be negative, not {rules.tolerance}")
    return problems


def spec_problems(spec: HPASpec, *, scale_to_zero: bool = False) -> list[str]:
    """Every field of ``spec`` the API server would reject (empty when valid).

    ``scale_to_zero`` is the ``HPAScaleToZero`` gate: ``minReplicas: 0`` is admitted
    with it, and only beside an Object or External metric.
    """
    problems = []
    if spec.max_replicas < 1 or spec.max_replicas > MAX_INT32:
        problems.append(f"spec.maxReplicas: must be at least 1, not {spec.max_replicas}")
    if spec.min_replicas < 0 or spec.min_replicas > MAX_INT32:
        problems.append(f"spec.minReplicas: must be at least 1, not {spec.min_replicas}")
    elif spec.min_replicas == 0:
        external = any(str(m.kind) in ("Object", "External") for m in spec.metrics)
        if not (scale_to_zero and external):
            problems.append(
                "spec.minReplicas: must be at least 1 (0 needs the HPAScaleToZero gate "
                "and an Object or External metric)"
            )
    if spec.min_replicas > spec.max_replicas >= 1:
        problems.append(
            f"spec.maxReplicas: must be at least minReplicas ({spec.min_replicas}), "
            f"not {spec.max_replicas}"
        )
    for i, metric in enumerate(spec.metrics):
        problems.extend(_metric_problems(i, metric))
    if spec.behavior is not None:
        problems.extend(_rules_problems("spec.behavior.scaleUp", spec.behavior.scale_up))
        problems.extend(_rules_problems("spec.behavior.scaleDown", spec.behavior.scale_down))
    return problems


def check_spec(spec: HPASpec, *, scale_to_zero: bool = False) -> HPASpec:
    """``spec`` if the API server would admit it; else ``ConfigError`` listing the problems."""
    problems = spec_problems(spec, scale_to_zero=scale_to_zero)
    if problems:
        raise ConfigError("invalid HorizontalPodAutoscaler: " + "; ".join(problems))
    return spec
