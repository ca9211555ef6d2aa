"""The API server's checks of an HPA spec (``hpa.validation``), rule by rule: each field it
rejects is named with the reason, and every bound is pinned on both sides."""

from __future__ import annotations

import pytest

from ragtide.errors import ConfigError
from ragtide.planner.hpa import (
    MAX_INT32,
    Behavior,
    HPASpec,
    MetricKind,
    MetricSpec,
    MetricTarget,
    PolicyType,
    ScalingPolicy,
    ScalingRules,
    TargetType,
    check_spec,
    spec_problems,
)

CPU = MetricSpec.cpu_utilization(70)


def _spec(*metrics: MetricSpec, **fields: object) -> HPASpec:
    return HPASpec(metrics=metrics or (CPU,), **{"max_replicas": 10, **fields})  # type: ignore[arg-type]


@pytest.mark.parametrize("max_replicas", [1, 10, MAX_INT32])
def test_max_replicas_in_range_is_admitted(max_replicas: int) -> None:
    assert spec_problems(_spec(max_replicas=max_replicas)) == []


@pytest.mark.parametrize("max_replicas", [0, -3, MAX_INT32 + 1])
def test_max_replicas_out_of_range_is_named(max_replicas: int) -> None:
    problems = spec_problems(_spec(max_replicas=max_replicas))
    assert f"spec.maxReplicas: must be at least 1, not {max_replicas}" in problems


@pytest.mark.parametrize("min_replicas", [-1, MAX_INT32 + 1])
def test_min_replicas_out_of_range_is_named(min_replicas: int) -> None:
    problems = spec_problems(_spec(min_replicas=min_replicas, max_replicas=MAX_INT32))
    assert problems[0] == f"spec.minReplicas: must be at least 1, not {min_replicas}"


def test_min_replicas_bounds_inside_are_admitted() -> None:
    assert spec_problems(_spec(min_replicas=1, max_replicas=1)) == []
    assert spec_problems(_spec(min_replicas=MAX_INT32, max_replicas=MAX_INT32)) == []


ZERO = (
    "spec.minReplicas: must be at least 1 (0 needs the HPAScaleToZero gate "
    "and an Object or External metric)"
)
OBJECT = MetricSpec(MetricKind.OBJECT, "queue", MetricTarget(TargetType.VALUE, value=5))
EXTERNAL = MetricSpec.external_average("queue", 1000)
PODS = MetricSpec.pods_average("qps", 1000)


@pytest.mark.parametrize(
    ("metrics", "gate", "admitted"),
    [
        ((OBJECT,), True, True),
        ((EXTERNAL,), True, True),
        ((CPU, EXTERNAL), True, True),
        ((OBJECT,), False, False),
        ((EXTERNAL,), False, False),
        ((CPU, PODS), True, False),
    ],
)
def test_scale_to_zero_needs_the_gate_and_an_object_or_external_metric(
    metrics: tuple[MetricSpec, ...], gate: bool, admitted: bool
) -> None:
    problems = spec_problems(_spec(*metrics, min_replicas=0), scale_to_zero=gate)
    assert problems == ([] if admitted else [ZERO])


def test_min_above_max_is_named_once() -> None:
    assert spec_problems(_spec(min_replicas=5, max_replicas=4)) == [
        "spec.maxReplicas: must be at least minReplicas (5), not 4"
    ]
    assert spec_problems(_spec(min_replicas=4, max_replicas=4)) == []
    # an invalid maxReplicas is reported as such, not as below minReplicas as well
    assert spec_problems(_spec(min_replicas=2, max_replicas=0)) == [
        "spec.maxReplicas: must be at least 1, not 0"
    ]


def test_an_unknown_metric_type_is_the_only_problem_of_that_metric() -> None:
    cheese = MetricSpec("Cheese", "", MetricTarget(TargetType.UTILIZATION))
    (problem,) = spec_problems(_spec(CPU, cheese))
    kinds = sorted(str(k) for k in MetricKind)
    assert problem == f"spec.metrics[1].type: unsupported value 'Cheese': must be one of {kinds}"


def _metric(kind: MetricKind, target: MetricTarget, name: str = "m", container: str = "") -> str:
    return "; ".join(spec_problems(_spec(MetricSpec(kind, name, target, container))))


def test_each_metric_rule_is_named() -> None:
    util = MetricTarget(TargetType.UTILIZATION, average_utilization=50)
    value = MetricTarget(TargetType.VALUE, value=5)
    average = MetricTarget(TargetType.AVERAGE_VALUE, average_value=5)
    assert _metric(MetricKind.PODS, average, name="") == (
        "spec.metrics[0]: a metric (or resource) name is required"
    )
    assert _metric(MetricKind.PODS, util) == (
        "spec.metrics[0].target.type: Utilization is only valid for resource metrics; "
        "spec.metrics[0].target.type: must be AverageValue for Pods metrics"
    )
    assert _metric(MetricKind.PODS, value) == (
        "spec.metrics[0].target.type: must be AverageValue for Pods metrics"
    )
    assert _metric(MetricKind.EXTERNAL, util) == (
        "spec.metrics[0].target.type: Utilization is only valid for resource metrics"
    )
    assert _metric(MetricKind.OBJECT, util) == (
        "spec.metrics[0].target.type: Utilization is only valid for resource metrics"
    )
    assert _metric(MetricKind.RESOURCE, value) == (
        "spec.metrics[0].target.type: must be Utilization or AverageValue"
    )
    assert _metric(MetricKind.CONTAINER_RESOURCE, value, container="app") == (
        "spec.metrics[0].target.type: must be Utilization or AverageValue"
    )
    assert _metric(MetricKind.CONTAINER_RESOURCE, util) == (
        "spec.metrics[0].containerResource.container: must be specified"
    )
    for kind in (MetricKind.RESOURCE, MetricKind.CONTAINER_RESOURCE):
        assert _metric(kind, util, container="app") == ""
        assert _metric(kind, average, container="app") == ""
    for kind in (MetricKind.OBJECT, MetricKind.EXTERNAL):
        assert _metric(kind, value) == ""
        assert _metric(kind, average) == ""
    assert _metric(MetricKind.PODS, average) == ""
    assert _metric(MetricKind.RESOURCE, util, container="") == ""


@pytest.mark.parametrize(
    ("target", "field"),
    [
        (TargetType.UTILIZATION, "averageUtilization"),
        (TargetType.VALUE, "value"),
        (TargetType.AVERAGE_VALUE, "averageValue"),
    ],
)
def test_a_target_needs_its_value_and_a_positive_one(target: TargetType, field: str) -> None:
    kind = MetricKind.RESOURCE if target != TargetType.VALUE else MetricKind.EXTERNAL
    keyword = {
        TargetType.UTILIZATION: "average_utilization",
        TargetType.VALUE: "value",
        TargetType.AVERAGE_VALUE: "average_value",
    }[target]
    assert _metric(kind, MetricTarget(target)) == (
        f"spec.metrics[0].target.{field}: must be set for type {target}"
    )
    for bad in (0, -2):
        assert _metric(kind, MetricTarget(target, **{keyword: bad})) == (
            f"spec.metrics[0].target.{field}: must be positive, not {bad}"
        )
    assert _metric(kind, MetricTarget(target, **{keyword: 1})) == ""
    # only the field the type reads counts
    others = {k: 7 for k in ("average_utilization", "value", "average_value") if k != keyword}
    assert _metric(kind, MetricTarget(target, **others)).endswith("must be set for type " + target)


def _rules(**fields: object) -> list[str]:
    up = ScalingRules(**fields)  # type: ignore[arg-type]
    return spec_problems(_spec(behavior=Behavior(scale_up=up)))


def test_behavior_bounds_inside_are_admitted() -> None:
    assert _rules(stabilization_window_seconds=0) == []
    assert _rules(stabilization_window_seconds=3600) == []
    assert _rules(policies=(ScalingPolicy(PolicyType.PODS, 1, 1),)) == []
    assert _rules(policies=(ScalingPolicy(PolicyType.PERCENT, 100, 1800),)) == []
    assert _rules(tolerance=0.0) == []
    assert _rules() == []
    assert spec_problems(_spec(behavior=Behavior())) == []


def test_each_behavior_rule_is_named() -> None:
    for window in (-1, 3601):
        assert _rules(stabilization_window_seconds=window) == [
            "spec.behavior.scaleUp.stabilizationWindowSeconds: must be within "
            f"[0, 3600], not {window}"
        ]
    assert _rules(policies=()) == [
        "spec.behavior.scaleUp.policies: must contain at least one policy"
    ]
    ok = ScalingPolicy(PolicyType.PODS, 4, 15)
    assert _rules(policies=(ok, ScalingPolicy(PolicyType.PODS, 0, 15))) == [
        "spec.behavior.scaleUp.policies[1].value: must be positive, not 0"
    ]
    for period in (0, 1801):
        assert _rules(policies=(ScalingPolicy(PolicyType.PERCENT, 10, period),)) == [
            "spec.behavior.scaleUp.policies[0].periodSeconds: must be within "
            f"(0, 1800], not {period}"
        ]
    assert _rules(tolerance=-0.01) == [
        "spec.behavior.scaleUp.tolerance: must not be negative, not -0.01"
    ]


def test_scale_down_rules_are_checked_under_their_own_name() -> None:
    down = ScalingRules(stabilization_window_seconds=-5, tolerance=-1.0)
    up = ScalingRules(policies=())
    assert spec_problems(_spec(behavior=Behavior(scale_up=up, scale_down=down))) == [
        "spec.behavior.scaleUp.policies: must contain at least one policy",
        "spec.behavior.scaleDown.stabilizationWindowSeconds: must be within [0, 3600], not -5",
        "spec.behavior.scaleDown.tolerance: must not be negative, not -1.0",
    ]


def test_check_spec_returns_a_valid_spec_and_lists_every_problem_of_another() -> None:
    spec = _spec()
    assert check_spec(spec) is spec
    zero = _spec(EXTERNAL, min_replicas=0)
    assert check_spec(zero, scale_to_zero=True) is zero
    with pytest.raises(ConfigError) as raised:
        check_spec(zero)
    assert raised.value.message == f"invalid HorizontalPodAutoscaler: {ZERO}"
    bad = _spec(MetricSpec(MetricKind.PODS, "", MetricTarget(TargetType.AVERAGE_VALUE)))
    with pytest.raises(ConfigError) as raised:
        check_spec(bad, scale_to_zero=True)
    assert raised.value.message == (
        "invalid HorizontalPodAutoscaler: spec.metrics[0]: a metric (or resource) name is "
        "required; spec.metrics[0].target.averageValue: must be set for type AverageValue"
    )


def test_scale_to_zero_is_off_unless_asked_for() -> None:
    assert spec_problems(_spec(EXTERNAL, min_replicas=0)) == [ZERO]


def test_min_above_a_max_of_one_is_named() -> None:
    assert spec_problems(_spec(min_replicas=2, max_replicas=1)) == [
        "spec.maxReplicas: must be at least minReplicas (2), not 1"
    ]
