"""Upstream's replica_calculator_test.go and horizontal_test.go cases, run as data."""

from __future__ import annotations

from typing import Any

import pytest

from ragtide.planner.hpa import (
    ZERO_TIME,
    Behavior,
    Condition,
    ControllerState,
    HPASpec,
    MetricFailure,
    PodPhase,
    PodSample,
    PodSpec,
    PolicyType,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    Snapshot,
    calculate_requests,
    calculate_scale_down_limit,
    calculate_scale_up_limit,
    convert_desired_replicas_with_behavior_rate,
    convert_desired_replicas_with_rules,
    generate_scale_down_rules,
    generate_scale_up_rules,
    get_external_metric_replicas,
    get_external_per_pod_metric_replicas,
    get_metric_replicas,
    get_object_metric_replicas,
    get_object_per_pod_metric_replicas,
    get_per_pod_usage,
    get_resource_replicas,
    group_pods,
    reconcile,
    replicas_change_per_period,
    resource_pod_metrics,
    stabilize_recommendation,
    stabilize_recommendation_with_behaviors,
    store_scale_event,
)

from . import hpa_fixtures as fx

CALC = fx.load("replica_calculator.yaml")
NORM = fx.load("horizontal_normalize.yaml")
CONTROLLER = fx.load("horizontal_controller.yaml")
EPS = 1e-3  # evaluation happens just after upstream's fixtures call time.Now()


def _params(cases: list[dict[str, Any]]) -> pytest.MarkDecorator:
    return pytest.mark.parametrize("case", cases, ids=[fx.case_id(c) for c in cases])


def _assert_metric(result: Any, expected: dict[str, Any]) -> None:
    if "error" in expected:
        assert isinstance(result, MetricFailure)
        assert expected["error"] in result.message
        return
    assert not isinstance(result, MetricFailure), result
    assert (result.replicas, result.usage) == (expected["replicas"], expected["usage"])


@_params(CALC["resource"])
def test_get_resource_replicas(case: dict[str, Any]) -> None:
    resource = case["resource"]
    requests = resource["requests"]
    pods = fx.calc_pods(case, case["current_replicas"], requests)
    if not requests:
        pods = fx.calc_pods(case, case["current_replicas"], None)
    container = case.get("container", "")
    metrics = resource_pod_metrics(fx.calc_resource_samples(resource), container)
    result = get_resource_replicas(
        case["current_replicas"],
        case["target_utilization"],
        "cpu",
        fx.tolerances(case),
        pods,
        metrics,
        fx.NOW,
        container=container,
        cpu_initialization_period=120.0,
        initial_readiness_delay=10.0,
    )
    expected = case["expected"]
    if "error" in expected:
        assert isinstance(result, MetricFailure)
        assert expected["error"] in result.message
        return
    assert not isinstance(result, MetricFailure), result
    got = (result.replicas, result.utilization, result.raw_average)
    assert got == (expected["replicas"], expected["utilization"], expected["raw"])


def _samples(case: dict[str, Any]) -> dict[str, PodSample]:
    return {f"test-pod-{i}": PodSample(v, ZERO_TIME) for i, v in enumerate(case["levels"])}


@_params(CALC["pods"])
def test_get_metric_replicas(case: dict[str, Any]) -> None:
    pods = fx.calc_pods(case, case["current_replicas"], None)
    result = get_metric_replicas(
        case["current_replicas"], case["target"], "qps", fx.tolerances(case), pods, _samples(case)
    )
    _assert_metric(result, case["expected"])


@_params(CALC["object"])
def test_get_object_metric_replicas(case: dict[str, Any]) -> None:
    pods = fx.calc_pods(case, case["current_replicas"], None)
    result = get_object_metric_replicas(
        case["current_replicas"], case["target"], case["value"], fx.tolerances(case), pods
    )
    _assert_metric(result, case["expected"])


@_params(CALC["object_per_pod"])
def test_get_object_per_pod_metric_replicas(case: dict[str, Any]) -> None:
    result = get_object_per_pod_metric_replicas(
        case["current_replicas"], case["target"], case["value"], fx.tolerances(case)
    )
    _assert_metric(result, case["expected"])


@_params(CALC["external"])
def test_get_external_metric_replicas(case: dict[str, Any]) -> None:
    pods = fx.calc_pods(case, case["current_replicas"], None)
    result = get_external_metric_replicas(
        case["current_replicas"], case["target"], case["values"], fx.tolerances(case), pods
    )
    _assert_metric(result, case["expected"])


@_params(CALC["external_per_pod"])
def test_get_external_per_pod_metric_replicas(case: dict[str, Any]) -> None:
    result = get_external_per_pod_metric_replicas(
        case["current_replicas"], case["target"], case["values"], fx.tolerances(case)
    )
    _assert_metric(result, case["expected"])


@_params(CALC["per_pod_usage"])
def test_get_per_pod_usage(case: dict[str, Any]) -> None:
    assert get_per_pod_usage(case["usage"], case["status_replicas"]) == case["expected"]


def _time(value: float | None) -> float | None:
    return None if value is None else fx.NOW + value


@_params(CALC["group_pods"])
def test_group_pods(case: dict[str, Any]) -> None:
    pods = [
        PodSpec(
            name=p["name"],
            phase=PodPhase(p["phase"]),
            ready=p["ready"],
            start_time=_time(p["start_time"]),
            ready_transition=_time(p.get("ready_transition")) or ZERO_TIME,
            deleted=p.get("deleted", False),
        )
        for p in case["pods"]
    ]
    metrics = {}
    for name, sample in case["metrics"].items():
        value, timestamp, window = [*sample, ZERO_TIME, 0.0][:3]
        metrics[name] = PodSample(value, timestamp, window)
    groups = group_pods(pods, metrics, case["resource"], fx.NOW, 120.0, 10.0)
    expected = case["expected"]
    assert groups.ready_count == expected["ready"]
    assert groups.unready == frozenset(expected["unready"])
    assert groups.missing == frozenset(expected["missing"])
    assert groups.ignored == frozenset(expected["ignored"])


@_params(CALC["calculate_requests"])
def test_calculate_requests(case: dict[str, Any]) -> None:
    pods = [
        PodSpec(p["name"], container_requests=p["containers"], pod_requests=p.get("pod_requests"))
        for p in case["pods"]
    ]
    result = calculate_requests(
        pods, case["container"], "cpu", pod_level=case.get("pod_level", False)
    )
    if "expected_error" in case:
        assert result == MetricFailure(case["expected_error"])
    else:
        assert result == case["expected"]


# --- horizontal_test.go: pure normalization functions ------------------------------


@_params(NORM["convert_with_rules"])
def test_convert_desired_replicas_with_rules(case: dict[str, Any]) -> None:
    limited = convert_desired_replicas_with_rules(
        case["current"], case["desired"], case["min"], case["max"]
    )
    assert (limited.replicas, limited.reason) == (case["expected"], case["condition"])


def _policies(case: dict[str, Any]) -> ScalingRules:
    policies = tuple(ScalingPolicy(PolicyType(t), v, p) for t, v, p in case["policies"])
    return ScalingRules(300, SelectPolicy(case["select"]), policies)


@_params(NORM["scale_up_limit"])
def test_calculate_scale_up_limit(case: dict[str, Any]) -> None:
    assert (
        calculate_scale_up_limit(case["current"], (), (), _policies(case), 0.0) == case["expected"]
    )


@_params(NORM["scale_down_limit"])
def test_calculate_scale_down_limit(case: dict[str, Any]) -> None:
    limit = calculate_scale_down_limit(case["current"], (), (), _policies(case), 0.0)
    assert limit == case["expected"]


@_params(NORM["stabilize_legacy"])
def test_stabilize_recommendation(case: dict[str, Any]) -> None:
    history = fx.history(case["recommendations"]) or ()
    result = stabilize_recommendation(history, case["desired"], fx.NOW + EPS, 300.0)
    assert result.replicas == case["expected"]
    assert len(result.recommendations) == case["log_length"]


@_params(NORM["stabilize_behavior"])
def test_stabilize_recommendation_with_behaviors(case: dict[str, Any]) -> None:
    history = fx.history(case["recommendations"]) or ()
    result = stabilize_recommendation_with_behaviors(
        history,
        case["desired"],
        case["current"],
        case["up_window"],
        case["down_window"],
        fx.NOW + EPS,
    )
    assert result.replicas == case["expected"]
    if "expected_recommendations" in case:
        assert [r.replicas for r in result.recommendations] == case["expected_recommendations"]


@_params(NORM["scaling_with_rules"])
def test_convert_desired_replicas_with_behavior_rate(case: dict[str, Any]) -> None:
    limited = convert_desired_replicas_with_behavior_rate(
        case["current"],
        case["desired"],
        case["min"],
        case["max"],
        generate_scale_up_rules(fx.rules(case.get("up_rules"))),
        generate_scale_down_rules(fx.rules(case.get("down_rules"))),
        fx.uniform_events(case.get("up_events")),
        fx.uniform_events(case.get("down_events")),
        fx.NOW + EPS,
    )
    assert (limited.replicas, limited.reason) == (case["expected"], case["condition"])


@_params(NORM["store_scale_events"])
@pytest.mark.parametrize("direction", ["up", "down"])
def test_store_scale_events(case: dict[str, Any], direction: str) -> None:
    now = fx.NOW + EPS
    prev = tuple(ScaleEvent(change, fx.NOW - age) for change, age in case["prev"])
    assert replicas_change_per_period(60, prev, now) == case["expected_change"]
    scaling = fx.rules(case["rules"])
    change = case["replica_change"]
    if direction == "up":
        behavior = None if scaling is None else Behavior(scale_up=scaling)
        events, _ = store_scale_event(behavior, prev, (), 10, 10 + change, now)
    else:
        behavior = None if scaling is None else Behavior(scale_down=scaling)
        _, events = store_scale_event(behavior, (), prev, 10, 10 - change, now)
    assert [(e.replica_change, e.outdated) for e in events] == [tuple(e) for e in case["new"]]


# --- horizontal_test.go: whole reconciles -------------------------------------------

STATUS_OK = {
    "AbleToScale": Condition(True, "SucceededRescale"),
    "ScalingActive": Condition(True, "ValidMetricFound"),
    "ScalingLimited": Condition(False, "DesiredWithinRange"),
}


def _conditions(raw: dict[str, list[Any]]) -> dict[str, Condition]:
    return {name: Condition(status, reason) for name, (status, reason) in raw.items()}


@_params(CONTROLLER["cases"])
def test_reconcile(case: dict[str, Any]) -> None:
    spec = HPASpec(
        max_replicas=case["max"],
        metrics=fx.controller_metrics(case),
        min_replicas=case["min"],
        behavior=fx.controller_behavior(case),
    )
    snapshot = Snapshot(
        now=fx.NOW,
        spec_replicas=case["spec"],
        status_replicas=case["status"],
        pods=fx.controller_pods(case),
        **fx.controller_samples(case),
    )
    state = ControllerState(recommendations=fx.history(case.get("recommendations")))
    result = reconcile(spec, snapshot, state, fx.TEST_CONFIG)
    assert result.desired_replicas == case["expected"]
    assert result.rescale == (case["expected"] != case["spec"])
    if "exact_conditions" in case:
        assert dict(result.conditions) == _conditions(case["exact_conditions"])
    else:
        assert dict(result.conditions) == {**STATUS_OK, **_conditions(case.get("conditions", {}))}
    if "cpu_current" in case:
        cpu = [m for m in result.metrics if m.spec.name == "cpu" and m.utilization is not None]
        assert cpu[0].utilization == case["cpu_current"]
