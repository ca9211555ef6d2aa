"""Edges of the HPA port that upstream's vectors leave open: failure messages and
reasons, CPU readiness on an AverageValue target, the paths without pods, and what each
metric kind reports in its status."""

from __future__ import annotations

from dataclasses import replace

import pytest

from ragtide.planner.hpa import (
    DEFAULT_SCALE_DOWN_RULES,
    DEFAULT_SCALE_UP_RULES,
    MAX_INT64,
    Behavior,
    Condition,
    ControllerConfig,
    ControllerState,
    HPASpec,
    Limited,
    MetricFailure,
    MetricKind,
    MetricProposal,
    MetricSpec,
    MetricStatus,
    MetricTarget,
    PodPhase,
    PodSample,
    PodSpec,
    PolicyType,
    Recommendation,
    ResourceProposal,
    ResourceSample,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    Snapshot,
    TargetType,
    Tolerances,
    calculate_requests,
    calculate_scale_down_limit,
    compute_replicas_for_metric,
    convert_desired_replicas_with_behavior_rate,
    convert_desired_replicas_with_rules,
    default_behavior,
    failed_reason,
    generate_scale_down_rules,
    generate_scale_up_rules,
    get_external_metric_replicas,
    get_external_per_pod_metric_replicas,
    get_metric_replicas,
    get_object_metric_replicas,
    get_per_pod_usage,
    get_raw_resource_replicas,
    get_resource_replicas,
    group_pods,
    reconcile,
    resource_pod_metrics,
    stabilize_recommendation_with_behaviors,
    store_scale_event,
    tolerances_for,
)
from ragtide.planner.hpa.calculator import metric_usage_ratio

CPU = {"app": {"cpu": 1000}}
NO_PODS_MESSAGE = (
    "unable to calculate ready pods: no pods returned by selector while calculating replica count"
)


def test_value_metrics_without_pods_fail_with_upstreams_message() -> None:
    # outside the tolerance the ready pods are counted, and there are none to count
    external = get_external_metric_replicas(2, 100, (300,), Tolerances(), ())
    assert external == MetricFailure(NO_PODS_MESSAGE)
    obj = get_object_metric_replicas(2, 100, 300, Tolerances(), ())
    assert obj == MetricFailure(NO_PODS_MESSAGE)
    # within the tolerance, or from zero replicas, no pod is needed
    assert get_external_metric_replicas(2, 100, (105,), Tolerances(), ()) == MetricProposal(2, 105)
    assert get_external_metric_replicas(0, 100, (250,), Tolerances(), ()) == MetricProposal(3, 250)


def test_cpu_readiness_applies_to_an_average_value_target() -> None:
    now = 1000.0
    pods = (
        PodSpec("ready", start_time=0.0, container_requests=CPU),
        # started 10 s ago (inside the 300 s initialization period) and not ready yet
        PodSpec("starting", ready=False, start_time=now - 10, ready_transition=now - 10),
        # initialized long ago, never ready since it started: unready too
        PodSpec("stuck", ready=False, start_time=0.0, ready_transition=5.0, container_requests=CPU),
    )
    metrics = {
        "ready": PodSample(1600, now),
        "starting": PodSample(50, now),
        "stuck": PodSample(50, now),
    }
    raw = get_raw_resource_replicas(2, 400, "cpu", Tolerances(), pods, metrics, now)
    # the unready pods' samples are left out (usage 1600, not 566); scaling up, they count
    # as 0 in the second pass: ceil(533 / 400 * 3) = 4
    assert raw == MetricProposal(4, 1600)
    memory = get_raw_resource_replicas(2, 400, "memory", Tolerances(), pods, metrics, now)
    assert memory == MetricProposal(5, 566)  # readiness is only consulted for cpu


def test_a_missing_pods_metric_is_reported_by_name() -> None:
    spec = HPASpec(max_replicas=10, metrics=(MetricSpec.pods_average("qps", 1000),))
    result = reconcile(spec, Snapshot(100.0, 3, 3), ControllerState(()))
    (status,) = result.metrics
    assert status.failure == (
        "unable to get metric qps: unable to fetch metrics from custom metrics API: qps"
    )
    assert status.reason == "FailedGetPodsMetric"
    assert (result.desired_replicas, result.rescale) == (3, False)


def _pods_metric(
    current: int,
    samples: dict[str, int],
    pending: tuple[str, ...] = (),
    missing: tuple[str, ...] = (),
    tolerance: float = 0.1,
) -> MetricProposal | MetricFailure:
    pods = tuple(PodSpec(n) for n in samples if n not in pending) + tuple(
        PodSpec(n, phase=PodPhase.PENDING) for n in pending
    )
    pods += tuple(PodSpec(n) for n in missing)
    metrics = {n: PodSample(v) for n, v in samples.items()}
    return get_metric_replicas(current, 100, "qps", Tolerances(tolerance, tolerance), pods, metrics)


def test_a_pods_metric_counts_pending_pods_as_zero_when_scaling_up() -> None:
    # ready 150, 150 (ratio 1.5); the pending pod's own sample (500) is never used
    samples = {"a": 150, "b": 150, "p": 500}
    assert _pods_metric(2, samples, pending=("p",)) == MetricProposal(2, 150)  # 300/3: 1.0
    assert _pods_metric(2, {"a": 150, "b": 150}) == MetricProposal(3, 150)  # without it
    # a zero, not one: (151 + 151 + 0) // 3 is 100, exactly the target
    exact = {"a": 151, "b": 151, "p": 0}
    assert _pods_metric(2, exact, pending=("p",), tolerance=0.0) == MetricProposal(2, 151)


def test_a_pods_metric_ignores_pending_pods_when_not_scaling_up() -> None:
    # at the target (ratio 1.0, not above it): no second pass, no change
    assert _pods_metric(3, {"a": 100, "b": 100, "p": 0}, pending=("p",)) == MetricProposal(3, 100)
    # below it: ready pods only, ceil(0.8 * 2), even above the current count
    assert _pods_metric(1, {"a": 80, "b": 80, "p": 0}, pending=("p",)) == MetricProposal(2, 80)


def test_a_pods_metric_without_unready_or_missing_pods_scales_by_the_ready_count() -> None:
    assert _pods_metric(5, {"a": 150, "b": 150}) == MetricProposal(3, 150)
    assert _pods_metric(2, {"a": 105, "b": 105}) == MetricProposal(2, 105)  # within tolerance


def test_a_pods_metric_fills_missing_pods_by_direction() -> None:
    # scaling up, a missing pod counts as 0: (150 + 150 + 0) // 3 is the target
    assert _pods_metric(2, {"a": 150, "b": 150}, missing=("m",)) == MetricProposal(2, 150)
    exact = {"a": 151, "b": 151}
    assert _pods_metric(2, exact, missing=("m",), tolerance=0.0) == MetricProposal(2, 151)
    # scaling down, it counts as the target: (50 + 50 + 100) // 3 = 66: ceil(0.66 * 3)
    assert _pods_metric(3, {"a": 50, "b": 50}, missing=("m",)) == MetricProposal(2, 50)


def test_a_pods_metric_with_only_unready_pods_fails() -> None:
    assert _pods_metric(2, {"p": 100}, pending=("p",)) == MetricFailure(
        "did not receive metrics for targeted pods (pods might be unready)"
    )


def test_the_second_pass_keeps_the_direction_and_the_current_count() -> None:
    # 180, 180 and a missing pod counted as 0: (360 + 0) // 3 = 120, ratio 1.2: ceil(3.6)
    assert _pods_metric(2, {"a": 180, "b": 180}, missing=("m",)) == MetricProposal(4, 180)
    # the same proposal never scales down while the metric says up
    assert _pods_metric(5, {"a": 180, "b": 180}, missing=("m",)) == MetricProposal(5, 180)


def test_filling_missing_pods_that_flips_the_direction_keeps_the_count() -> None:
    pods = (PodSpec("a", container_requests=CPU), PodSpec("m", container_requests=CPU))
    # 20 % against 50 %: down; the missing pod filled at 100 % of its request makes
    # (200 + 1000) / 2000 = 60 %: up. A flip: no change.
    result = get_resource_replicas(2, 50, "cpu", Tolerances(), pods, {"a": PodSample(200)}, 1000.0)
    assert result == ResourceProposal(2, 20, 200)


def test_samples_of_pods_without_a_request_match_nothing() -> None:
    pods = (PodSpec("a", container_requests=CPU),)
    result = get_resource_replicas(
        1, 50, "cpu", Tolerances(), pods, {"stray": PodSample(500)}, 1000.0
    )
    assert result == MetricFailure("no metrics returned matched known pods")


def test_averages_truncate_toward_zero_like_go() -> None:
    ratio, average = metric_usage_ratio({"a": PodSample(-150), "b": PodSample(-151)}, 100)
    assert (ratio, average) == (-1.5, -150)  # -301 / 2 is -150 in Go, not -151
    assert metric_usage_ratio({"a": PodSample(301), "b": PodSample(0)}, 100) == (1.5, 150)


def test_utilization_saturates_at_int32() -> None:
    pods = (PodSpec("a", container_requests=CPU),)
    low = get_resource_replicas(1, 50, "cpu", Tolerances(), pods, {"a": PodSample(-(10**12))}, 0)
    assert isinstance(low, ResourceProposal)
    assert low.utilization == -(2**31)
    high = get_resource_replicas(1, 50, "cpu", Tolerances(), pods, {"a": PodSample(10**12)}, 0)
    assert isinstance(high, ResourceProposal)
    assert (high.utilization, high.replicas) == (2**31 - 1, 42_949_673)  # ceil(MAX / 50)


def test_a_pod_initialized_exactly_at_the_end_of_the_period_is_judged_initialized() -> None:
    now = 1000.0
    # Ready since 10 s ago; started exactly 300 s ago: past the initialization period,
    # so its sample counts although it was taken partly before the pod became ready.
    pod = PodSpec("a", start_time=now - 300, ready_transition=now - 10)
    groups = group_pods([pod], {"a": PodSample(100, now)}, "cpu", now, 300.0, 30.0)
    assert (groups.ready_count, groups.unready) == (1, frozenset())
    younger = PodSpec("a", start_time=now - 299, ready_transition=now - 10)
    groups = group_pods([younger], {"a": PodSample(100, now)}, "cpu", now, 300.0, 30.0)
    assert (groups.ready_count, groups.unready) == (0, frozenset({"a"}))


def test_pod_level_requests_only_with_the_gate() -> None:
    pods = [
        PodSpec("a", container_requests=CPU, pod_requests={"cpu": 3000}),
        PodSpec("b", container_requests=CPU, pod_requests={"cpu": 5000}),
    ]
    assert calculate_requests(pods, "", "cpu") == {"a": 1000, "b": 1000}
    assert calculate_requests(pods, "", "cpu", pod_level=True) == {"a": 3000, "b": 5000}
    assert calculate_requests(pods, "", "memory", pod_level=True) == MetricFailure(
        "missing pod-level request for memory in Pod a"
    )


def test_pods_after_an_ignored_or_pending_one_are_still_classified() -> None:
    pods = [
        PodSpec("gone", deleted=True),
        PodSpec("done", phase=PodPhase.SUCCEEDED),
        PodSpec("waiting", phase=PodPhase.PENDING),
        PodSpec("silent"),
        PodSpec("a"),
    ]
    groups = group_pods(pods, {"a": PodSample(1)}, "qps", 0.0, 300.0, 30.0)
    assert groups.ready_count == 1
    assert groups.ignored == frozenset({"gone", "done"})
    assert (groups.unready, groups.missing) == (frozenset({"waiting"}), frozenset({"silent"}))


def test_no_pods_at_all_is_upstreams_failure() -> None:
    assert get_metric_replicas(2, 100, "qps", Tolerances(), (), {"a": PodSample(1)}) == (
        MetricFailure("no pods returned by selector while calculating replica count")
    )


def test_replica_counts_at_the_edges_of_float_and_int32() -> None:
    # 0 / 0 from zero replicas is NaN: the port proposes 0 (Go's int32(NaN) is undefined)
    assert get_object_metric_replicas(0, 0, 0, Tolerances(), ()) == MetricProposal(0, 0)
    # just above int32's minimum, ceil is still exact: -2147483647.5 rounds up
    low = get_external_per_pod_metric_replicas(1, 2, (-(2**32) + 1,), Tolerances())
    assert isinstance(low, MetricProposal) and low.replicas == -(2**31) + 1


def test_external_series_are_summed_and_capped_at_int64() -> None:
    assert get_external_metric_replicas(0, 100, (300, 200), Tolerances(), ()) == (
        MetricProposal(5, 500)
    )
    capped = get_external_metric_replicas(0, 100, (MAX_INT64, 1), Tolerances(), ())
    assert isinstance(capped, MetricProposal) and capped.usage == MAX_INT64
    assert get_per_pod_usage(MAX_INT64, 2) == MAX_INT64  # as a float it is 2**63: overflow
    assert get_per_pod_usage(MAX_INT64 // 4, 2) == 2**60  # float rounding, then the ceil


def test_division_by_zero_follows_ieee() -> None:
    # usage over a zero target: +inf, saturated to int32 from zero replicas
    assert get_object_metric_replicas(0, 0, 300, Tolerances(), ()) == MetricProposal(2**31 - 1, 300)
    assert get_object_metric_replicas(0, 0, -300, Tolerances(), ()) == MetricProposal(
        -(2**31), -300
    )
    # below int32's minimum, saturated; exactly one below it too
    low = get_external_per_pod_metric_replicas(1, 1, (-(10**12),), Tolerances())
    assert isinstance(low, MetricProposal) and low.replicas == -(2**31)
    edge = get_external_per_pod_metric_replicas(1, 1, (-(2**31) - 1,), Tolerances())
    assert isinstance(edge, MetricProposal) and edge.replicas == -(2**31)


def test_tolerance_bounds_are_inclusive() -> None:
    tolerances = Tolerances(scale_down=0.25, scale_up=0.5)
    assert tolerances.is_within(0.75) and tolerances.is_within(1.5)
    assert not tolerances.is_within(0.7499) and not tolerances.is_within(1.5001)


@pytest.mark.parametrize("utilization", [False, True])
def test_resource_defaults_are_upstreams_periods(utilization: bool) -> None:
    now = 1000.0

    def replicas(pod: PodSpec) -> int:
        pods = (PodSpec("a", container_requests=CPU), pod)
        metrics = {"a": PodSample(400, now), pod.name: PodSample(1200, now)}
        if utilization:  # 40 % of a 1000m request against a 40 % target
            got = get_resource_replicas(2, 40, "cpu", Tolerances(), pods, metrics, now)
            assert isinstance(got, ResourceProposal)
            return got.replicas
        raw = get_raw_resource_replicas(2, 400, "cpu", Tolerances(), pods, metrics, now)
        assert isinstance(raw, MetricProposal)
        return raw.replicas

    counted, left_out = 4, 2  # (400 + 1200) / 2 is twice the target; a alone is at it
    # cpu_initialization_period is 300 s: started exactly that long ago is initialized
    ready_late = dict(ready_transition=now - 10, container_requests=CPU)
    assert replicas(PodSpec("b", start_time=now - 300, **ready_late)) == counted
    assert replicas(PodSpec("b", start_time=now - 299, **ready_late)) == left_out
    # initial_readiness_delay is 30 s: unready, but it was ready once after its first 30 s
    start = 0.0
    once = dict(ready=False, start_time=start, container_requests=CPU)
    assert replicas(PodSpec("b", ready_transition=start + 30, **once)) == counted
    assert replicas(PodSpec("b", ready_transition=start + 29, **once)) == left_out


def test_resource_requests_are_per_container_unless_pod_level_is_on() -> None:
    pods = (PodSpec("a", container_requests=CPU, pod_requests={"cpu": 4000}),)
    metrics = {"a": PodSample(1000)}
    by_container = get_resource_replicas(1, 50, "cpu", Tolerances(), pods, metrics, 0.0)
    assert by_container == ResourceProposal(2, 100, 1000)  # 1000m of a 1000m request
    pod_level = get_resource_replicas(
        1, 50, "cpu", Tolerances(), pods, metrics, 0.0, pod_level_resources=True
    )
    assert pod_level == ResourceProposal(1, 25, 1000)  # of 4000m: ceil(0.5 * 1)


def test_the_resource_metrics_client_drops_pods_with_a_missing_container_value() -> None:
    samples = {
        "a": ResourceSample({"app": 100, "sidecar": None}),
        "b": ResourceSample({}),
        "c": ResourceSample({"app": 5, "sidecar": 7}, timestamp=3.0, window=30.0),
    }
    assert resource_pod_metrics(samples, "") == {"c": PodSample(12, 3.0, 30.0)}
    assert resource_pod_metrics(samples, "app") == {
        "a": PodSample(100, 0.0, 60.0),
        "c": PodSample(5, 3.0, 30.0),
    }


def test_an_unknown_kind_fails_as_an_invalid_source_type() -> None:
    cheese = MetricSpec("Cheese", "x", MetricTarget(TargetType.VALUE, value=1))
    assert failed_reason(cheese) == "InvalidMetricSourceType"
    assert failed_reason(MetricSpec.pods_average("qps", 1)) == "FailedGetPodsMetric"


def test_a_resource_metric_with_only_unready_pods_fails() -> None:
    pods = (PodSpec("p", phase=PodPhase.PENDING, container_requests=CPU),)
    result = get_resource_replicas(1, 50, "cpu", Tolerances(), pods, {"p": PodSample(9)}, 0.0)
    assert result == MetricFailure(
        "did not receive metrics for targeted pods (pods might be unready)"
    )


@pytest.mark.parametrize(
    ("current", "target", "usage", "missing", "pending", "expected"),
    [
        # a at the target with a pending pod: no second pass, no change
        (3, 40, 400, 0, 1, 3),
        # a at the target with a missing pod: filled with nothing, no change
        (2, 40, 400, 1, 0, 2),
        # down: missing pods filled at 100 % of their request (not 101 %, not / 101):
        # (10 + 3 * 1000) // 40 = 75 %: ceil(0.75 * 4) = 3; (40 + 3000) // 40 = 76 %: 4
        (4, 100, 10, 3, 0, 3),
        (4, 100, 40, 3, 0, 4),
        # up at 1.5: a missing pod counts 0, 75 % flips the direction: no change
        (1, 100, 1500, 1, 0, 1),
        # up: a missing or pending pod counts exactly 0: 3019 // 20 = 150 %: ceil(3.0)
        (2, 100, 3019, 1, 0, 3),
        (2, 100, 3019, 0, 1, 3),
    ],
)
def test_a_resource_metrics_second_pass(
    current: int, target: int, usage: int, missing: int, pending: int, expected: int
) -> None:
    pods = (PodSpec("a", container_requests=CPU),)
    pods += tuple(PodSpec(f"m{i}", container_requests=CPU) for i in range(missing))
    pods += tuple(
        PodSpec(f"p{i}", phase=PodPhase.PENDING, container_requests=CPU) for i in range(pending)
    )
    metrics = {"a": PodSample(usage)} | {f"p{i}": PodSample(5) for i in range(pending)}
    result = get_resource_replicas(current, target, "cpu", Tolerances(), pods, metrics, 0.0)
    assert isinstance(result, ResourceProposal)
    assert result.replicas == expected
    assert (result.utilization, result.raw_average) == (usage * 100 // 1000, usage)


def test_a_percent_scale_down_policy_truncates_the_remaining_share() -> None:
    rules = ScalingRules(0, SelectPolicy.MAX, (ScalingPolicy(PolicyType.PERCENT, 50, 60),))
    assert calculate_scale_down_limit(1000, (), (), rules, 0.0) == 500
    all_of_them = ScalingRules(0, SelectPolicy.MAX, (ScalingPolicy(PolicyType.PERCENT, 100, 60),))
    assert calculate_scale_down_limit(101, (), (), all_of_them, 0.0) == 0


def test_behavior_stabilization_keeps_entries_at_a_window_edge() -> None:
    now = 100.0
    # at exactly the up window's edge (and outside the down window): not outdated yet,
    # so the new recommendation is appended, not written over it
    edge_up = stabilize_recommendation_with_behaviors((Recommendation(5, 40.0),), 5, 5, 60, 30, now)
    assert [r.timestamp for r in edge_up.recommendations] == [40.0, now]
    edge_down = stabilize_recommendation_with_behaviors(
        (Recommendation(5, 40.0),), 5, 5, 30, 60, now
    )
    assert [r.timestamp for r in edge_down.recommendations] == [40.0, now]
    outdated = stabilize_recommendation_with_behaviors(
        (Recommendation(5, 39.0),), 5, 5, 60, 60, now
    )
    assert [r.timestamp for r in outdated.recommendations] == [now]


def test_behavior_stabilization_names_the_direction() -> None:
    history = (Recommendation(8, 90.0),)
    up = stabilize_recommendation_with_behaviors(history, 6, 4, 60, 300, 100.0)
    assert (up.replicas, up.reason) == (6, "ScaleUpStabilized")
    same = stabilize_recommendation_with_behaviors(history, 4, 4, 60, 300, 100.0)
    assert same.reason == "ScaleUpStabilized"  # desired == current counts as up
    down = stabilize_recommendation_with_behaviors(history, 2, 4, 60, 300, 100.0)
    assert (down.replicas, down.reason) == (4, "ScaleDownStabilized")  # held at current


def test_user_rules_replace_defaults_field_by_field() -> None:
    up = generate_scale_up_rules(ScalingRules(select_policy=SelectPolicy.MIN, tolerance=0.2))
    assert up == ScalingRules(
        stabilization_window_seconds=0,
        select_policy=SelectPolicy.MIN,
        policies=DEFAULT_SCALE_UP_RULES.policies,
        tolerance=0.2,
    )
    down = generate_scale_down_rules(ScalingRules(stabilization_window_seconds=60), 300.0)
    assert down == ScalingRules(60, SelectPolicy.MAX, DEFAULT_SCALE_DOWN_RULES.policies, None)
    assert generate_scale_down_rules(ScalingRules(), 120.0).stabilization_window_seconds == 120


def test_scale_events_outdate_strictly_past_the_longest_period() -> None:
    now = 100.0
    rules = ScalingRules(policies=(ScalingPolicy(PolicyType.PODS, 1, 60),))
    behavior = Behavior(scale_up=rules)
    at_edge = (ScaleEvent(1, now - 60),)
    up, _ = store_scale_event(behavior, at_edge, (), 2, 3, now)
    assert [(e.replica_change, e.timestamp, e.outdated) for e in up] == [
        (1, now - 60, False),
        (1, now, False),
    ]
    # no scale-down rules at all: every earlier event is past the longest period (0 s)
    recent = (ScaleEvent(2, now - 0.5),)
    _, down = store_scale_event(behavior, (), recent, 3, 1, now)
    assert [(e.replica_change, e.timestamp) for e in down] == [(2, now)]
    no_policies = Behavior(scale_up=rules, scale_down=ScalingRules())
    _, down = store_scale_event(no_policies, (), recent, 3, 1, now)
    assert [(e.replica_change, e.timestamp) for e in down] == [(2, now)]


def test_an_average_value_resource_metric_names_the_resource_it_could_not_read() -> None:
    failed = MetricFailure("no metrics returned from resource metrics API")
    pods = (PodSpec("a", container_requests=CPU),)
    raw = get_raw_resource_replicas(2, 400, "memory", Tolerances(), pods, failed, 0.0)
    assert raw == MetricFailure(
        "unable to get metrics for resource memory: no metrics returned from resource metrics API"
    )


def test_the_legacy_clamp_names_the_bound_that_limits() -> None:
    # from one replica the legacy limit is max(2 * 1, 4) = 4 by default
    assert convert_desired_replicas_with_rules(1, 10, 1, 10) == Limited(4, "ScaleUpLimit")
    # a maximum equal to the scale-up limit is the maximum that limits (TooManyReplicas)
    assert convert_desired_replicas_with_rules(2, 6, 1, 4) == Limited(4, "TooManyReplicas")
    assert convert_desired_replicas_with_rules(2, 6, 1, 5) == Limited(4, "ScaleUpLimit")


UP_TWO = ScalingRules(0, SelectPolicy.MAX, (ScalingPolicy(PolicyType.PODS, 2, 60),))
DOWN_TWO = ScalingRules(0, SelectPolicy.MAX, (ScalingPolicy(PolicyType.PODS, 2, 60),))


def _rate(current: int, desired: int, minimum: int, maximum: int) -> Limited:
    return convert_desired_replicas_with_behavior_rate(
        current, desired, minimum, maximum, UP_TWO, DOWN_TWO, (), (), 100.0
    )


def test_the_behavior_rate_names_the_bound_that_limits() -> None:
    # up: +2 pods allowed from 2 is 4; a maximum of exactly 4 is what limits
    assert _rate(2, 6, 1, 4) == Limited(4, "TooManyReplicas")
    assert _rate(2, 6, 1, 10) == Limited(4, "ScaleUpLimit")
    assert _rate(2, 4, 1, 10) == Limited(4, "DesiredWithinRange")  # exactly the limit
    # down: -2 pods allowed from 10 is 8; a minimum of exactly 8 is what limits
    assert _rate(10, 5, 8, 20) == Limited(8, "TooFewReplicas")
    assert _rate(10, 5, 1, 20) == Limited(8, "ScaleDownLimit")
    assert _rate(10, 8, 1, 20) == Limited(8, "DesiredWithinRange")


def test_the_behavior_rate_leaves_an_unchanged_count_alone_even_outside_the_bounds() -> None:
    # neither direction applies: the bounds of the direction of travel are not enforced
    assert _rate(5, 5, 1, 3) == Limited(5, "DesiredWithinRange")
    assert _rate(2, 2, 3, 10) == Limited(2, "DesiredWithinRange")


@pytest.mark.parametrize(("queue", "desired", "rescale"), [(6000, 6, True), (3000, 3, False)])
def test_a_reconcile_with_a_broken_metric_reports_the_error_and_the_stabilized_count(
    queue: int, desired: int, rescale: bool
) -> None:
    metrics = (MetricSpec.external_average("queue", 1000), MetricSpec.pods_average("qps", 1000))
    spec = HPASpec(max_replicas=10, metrics=metrics)
    snapshot = Snapshot(100.0, 3, 3, external_metrics={"queue": (queue,)})
    result = reconcile(spec, snapshot, ControllerState())
    assert (result.desired_replicas, result.rescale, result.stabilized) == (
        desired,
        rescale,
        desired,
    )
    assert result.error == (
        "invalid metrics (1 invalid out of 2), first error is: unable to get metric qps: "
        "unable to fetch metrics from custom metrics API: qps"
    )


def test_per_hpa_tolerances_replace_the_flag_only_with_the_gate() -> None:
    behavior = Behavior(
        scale_up=ScalingRules(tolerance=0.05), scale_down=ScalingRules(tolerance=0.3)
    )
    flag = ControllerConfig(tolerance=0.2)
    assert tolerances_for(behavior, flag) == Tolerances(scale_down=0.3, scale_up=0.05)
    only_up = Behavior(scale_up=ScalingRules(tolerance=0.05))
    assert tolerances_for(only_up, flag) == Tolerances(scale_down=0.2, scale_up=0.05)
    gate_off = ControllerConfig(tolerance=0.2, configurable_tolerance=False)
    assert tolerances_for(behavior, gate_off) == Tolerances(scale_down=0.2, scale_up=0.2)
    assert tolerances_for(None, flag) == Tolerances(scale_down=0.2, scale_up=0.2)


# One snapshot read by every kind of metric. With the config below (initialization period
# 60 s, readiness delay 5 s, pod-level requests on) all three pods count for cpu: b started
# 100 s ago and c turned unready after its first 5 s; with the defaults (300 s, 30 s) b is
# still initializing and c never became ready.
NOW = 1000.0
BOTH = {"app": {"cpu": 1000}, "sidecar": {"cpu": 1000}}
POD_LEVEL = {"cpu": 3000}
SNAPSHOT = Snapshot(
    NOW,
    3,
    4,  # status.replicas differs from spec.replicas: the AverageValue paths read it
    (
        PodSpec("a", start_time=0.0, container_requests=BOTH, pod_requests=POD_LEVEL),
        PodSpec(
            "b",
            start_time=NOW - 100,
            ready_transition=NOW - 10,
            container_requests=BOTH,
            pod_requests=POD_LEVEL,
        ),
        PodSpec(
            "c",
            ready=False,
            start_time=0.0,
            ready_transition=10.0,
            container_requests=BOTH,
            pod_requests=POD_LEVEL,
        ),
    ),
    resource_metrics={
        "cpu": {p: ResourceSample({"app": 1000, "sidecar": 500}, NOW) for p in "abc"}
    },
    pods_metrics={"qps": {"a": 200, "b": 200, "c": 200}},
    object_metrics={"hits": 3000},
    external_metrics={"queue": (1000, 2000)},
)
CONFIG = ControllerConfig(
    cpu_initialization_period=60.0, initial_readiness_delay=5.0, pod_level_resources=True
)
UTIL, VALUE, AVERAGE = TargetType.UTILIZATION, TargetType.VALUE, TargetType.AVERAGE_VALUE
RESOURCE, CONTAINER = MetricKind.RESOURCE, MetricKind.CONTAINER_RESOURCE


@pytest.mark.parametrize(
    ("metric", "replicas", "usage", "utilization", "with_defaults"),
    [
        # 4500m of 9000m pod-level requests: 50 % against 25 %, ceil(2.0 * 3);
        # with the defaults only a counts (1500m of 2000m: 75 %), the unready pods as 0
        # in the second pass make 25 %: within tolerance, 3
        (MetricSpec(RESOURCE, "cpu", MetricTarget(UTIL, 25)), 6, 1500, 50, (3, 1500, 75)),
        # one container: 1000m of its 1000m request (pod-level requests are not read);
        # with the defaults 1000m of 3000m in the second pass: 33 %, ceil(1.32 * 3)
        (
            MetricSpec(CONTAINER, "cpu", MetricTarget(UTIL, 25), container="app"),
            12,
            1000,
            100,
            (4, 1000, 100),
        ),
        # an average of 1500m against 750m; with the defaults the second pass flips: 3
        (
            MetricSpec(RESOURCE, "cpu", MetricTarget(AVERAGE, average_value=750)),
            6,
            1500,
            None,
            (3, 1500, None),
        ),
        # an AverageValue target that also carries a percent is still an AverageValue one
        (
            MetricSpec(RESOURCE, "cpu", MetricTarget(AVERAGE, 25, average_value=750)),
            6,
            1500,
            None,
            (3, 1500, None),
        ),
        # readiness is not consulted for a Pods metric: 200 against 100 over 3 pods
        (MetricSpec.pods_average("qps", 100), 6, 200, None, (6, 200, None)),
        # Value: 3000 / 1000 times the 2 Running Ready pods
        (
            MetricSpec(MetricKind.OBJECT, "hits", MetricTarget(VALUE, value=1000)),
            6,
            3000,
            None,
            (6, 3000, None),
        ),
        # AverageValue: ceil(3000 / 500), usage per status replica ceil(3000 / 4)
        (
            MetricSpec(
                MetricKind.OBJECT, "hits", MetricTarget(AVERAGE, value=1000, average_value=500)
            ),
            6,
            750,
            None,
            (6, 750, None),
        ),
        (MetricSpec.external_average("queue", 500), 6, 750, None, (6, 750, None)),
        (
            MetricSpec(
                MetricKind.EXTERNAL, "queue", MetricTarget(VALUE, value=1000, average_value=500)
            ),
            6,
            3000,
            None,
            (6, 3000, None),
        ),
    ],
)
def test_each_metric_kind_reads_its_part_of_the_snapshot_and_the_config(
    metric: MetricSpec,
    replicas: int,
    usage: int,
    utilization: int | None,
    with_defaults: tuple[int, int, int | None],
) -> None:
    status = compute_replicas_for_metric(metric, SNAPSHOT, Tolerances(), CONFIG)
    assert status == MetricStatus(metric, replicas, usage, utilization)
    default = compute_replicas_for_metric(metric, SNAPSHOT, Tolerances(), ControllerConfig())
    assert default == MetricStatus(metric, *with_defaults)


@pytest.mark.parametrize(
    ("metric", "failure", "reason"),
    [
        (
            MetricSpec(RESOURCE, "memory", MetricTarget(UTIL, 50)),
            "unable to get metrics for resource memory: "
            "unable to fetch metrics from resource metrics API",
            "FailedGetResourceMetric",
        ),
        (
            MetricSpec(RESOURCE, "cpu", MetricTarget(UTIL)),
            "invalid resource metric source: neither a utilization target",
            "FailedGetResourceMetric",
        ),
        (
            MetricSpec(CONTAINER, "cpu", MetricTarget(VALUE, value=1, average_value=750), "app"),
            "invalid resource metric source: neither a utilization target",
            "FailedGetContainerResourceMetric",
        ),
        (
            MetricSpec(MetricKind.PODS, "qps", MetricTarget(AVERAGE, value=100)),
            "invalid pods metric source: an AverageValue target is required",
            "FailedGetPodsMetric",
        ),
        (
            MetricSpec(MetricKind.OBJECT, "nothing", MetricTarget(VALUE, value=1)),
            "unable to get metric nothing",
            "FailedGetObjectMetric",
        ),
        (
            MetricSpec(MetricKind.OBJECT, "hits", MetricTarget(VALUE, average_value=500)),
            "invalid object metric source: neither a value target",
            "FailedGetObjectMetric",
        ),
        (
            MetricSpec(MetricKind.EXTERNAL, "nothing", MetricTarget(VALUE, value=1)),
            "unable to get external metric nothing",
            "FailedGetExternalMetric",
        ),
        (
            MetricSpec(MetricKind.EXTERNAL, "queue", MetricTarget(UTIL, 50, value=1000)),
            "invalid external metric source: neither a value target",
            "FailedGetExternalMetric",
        ),
        (
            MetricSpec("Cheese", "x", MetricTarget(VALUE, value=1)),
            "unknown metric source type 'Cheese'",
            "InvalidMetricSourceType",
        ),
    ],
)
def test_a_metric_that_cannot_propose_reports_why(
    metric: MetricSpec, failure: str, reason: str
) -> None:
    status = compute_replicas_for_metric(metric, SNAPSHOT, Tolerances(), CONFIG)
    assert status == MetricStatus(metric, None, failure=failure, reason=reason)


def _queue(current: int, usage: int, now: float = 100.0) -> Snapshot:
    """An External AverageValue metric of 1000 per pod: proposes ceil(usage / 1000)."""
    return Snapshot(now, current, current, external_metrics={"queue": (usage,)})


QUEUE = (MetricSpec.external_average("queue", 1000),)


def test_a_refused_reconcile_keeps_the_state_and_reports_the_error() -> None:
    spec = HPASpec(max_replicas=10, metrics=(MetricSpec.pods_average("qps", 1000),))
    result = reconcile(spec, Snapshot(100.0, 5, 5), ControllerState())
    assert (result.desired_replicas, result.rescale) == (5, False)
    assert result.conditions["ScalingActive"] == Condition(False, "FailedGetPodsMetric")
    assert result.state == ControllerState((Recommendation(5, 100.0),))
    assert (result.proposal, result.stabilized) == (None, None)
    assert result.error == (
        "invalid metrics (1 invalid out of 1), first error is: unable to get metric qps: "
        "unable to fetch metrics from custom metrics API: qps"
    )


@pytest.mark.parametrize(
    ("current", "factor", "minimum", "expected"),
    [(2, 3.0, 1.0, 6), (1, 3.0, 7.0, 7)],  # max(factor * current, minimum)
)
def test_the_legacy_path_takes_its_scale_up_limit_from_the_config(
    current: int, factor: float, minimum: float, expected: int
) -> None:
    config = ControllerConfig(scale_up_limit_factor=factor, scale_up_limit_minimum=minimum)
    spec = HPASpec(max_replicas=100, metrics=QUEUE)
    result = reconcile(spec, _queue(current, 50_000), ControllerState(), config)
    assert (result.proposal, result.desired_replicas) == (50, expected)
    assert result.conditions["ScalingLimited"] == Condition(True, "ScaleUpLimit")


def test_a_scale_down_window_of_zero_does_not_hold_the_first_recommendation() -> None:
    no_window = Behavior(scale_down=ScalingRules(stabilization_window_seconds=0))
    spec = HPASpec(max_replicas=10, metrics=QUEUE, behavior=no_window)
    result = reconcile(spec, _queue(5, 2000), ControllerState())
    assert (result.desired_replicas, result.rescale) == (2, True)
    # with the default window (the controller flag, 300 s) the first sight holds it at 5
    held = reconcile(replace(spec, behavior=Behavior()), _queue(5, 2000), ControllerState())
    assert (held.desired_replicas, held.stabilized, held.rescale) == (5, 5, False)


def test_the_behavior_path_says_whether_stabilization_held_the_count() -> None:
    spec = HPASpec(max_replicas=10, metrics=QUEUE, behavior=Behavior())
    held = reconcile(spec, _queue(5, 2000), ControllerState())
    assert held.conditions["AbleToScale"] == Condition(True, "ScaleDownStabilized")
    steady = reconcile(spec, _queue(5, 5000), ControllerState())
    assert (steady.proposal, steady.desired_replicas) == (5, 5)
    assert steady.conditions["AbleToScale"] == Condition(True, "ReadyForNewScale")


def test_an_unchanged_count_is_stored_as_a_scale_down_of_zero() -> None:
    # upstream's storeScaleEvent: anything but an increase is a scale-down event
    behavior = Behavior(scale_up=UP_TWO, scale_down=DOWN_TWO)
    up, down = store_scale_event(behavior, (), (), 3, 3, 100.0)
    assert (up, down) == ((), (ScaleEvent(0, 100.0),))
    up, down = store_scale_event(behavior, (), (), 3, 4, 100.0)
    assert (up, down) == ((ScaleEvent(1, 100.0),), ())


def test_a_sum_that_reaches_int64_exactly_is_not_an_overflow() -> None:
    # MAX - 1 + 1 is exactly MaxInt64, which fits: the series after it still count
    values = (MAX_INT64 - 1, 1, -(2**62))
    proposal = get_external_metric_replicas(0, 100, values, Tolerances(), ())
    assert isinstance(proposal, MetricProposal) and proposal.usage == MAX_INT64 - 2**62
    # one more is an overflow: the sum stops at MaxInt64
    over = get_external_metric_replicas(0, 100, (MAX_INT64 - 1, 2, -(2**62)), Tolerances(), ())
    assert isinstance(over, MetricProposal) and over.usage == MAX_INT64


def test_the_defaulted_scale_down_window_is_the_controller_flag() -> None:
    config = ControllerConfig(downscale_stabilization=120.0)
    defaulted = default_behavior(Behavior(), config)
    assert defaulted is not None and defaulted.scale_down is not None
    assert defaulted.scale_down.stabilization_window_seconds == 120
    assert default_behavior(None, config) is None


def test_the_largest_proposal_wins_whatever_the_order() -> None:
    metrics = tuple(MetricSpec.external_average(name, 1000) for name in ("a", "b", "c"))
    spec = HPASpec(max_replicas=10, metrics=metrics, behavior=Behavior())
    # a proposes 1 (1000 over 4 pods is outside the tolerance), b 0, c 3
    snapshot = Snapshot(100.0, 4, 4, external_metrics={"a": (1000,), "b": (0,), "c": (3000,)})
    assert reconcile(spec, snapshot, ControllerState()).proposal == 3
    two = replace(spec, metrics=metrics[:2])
    assert reconcile(two, snapshot, ControllerState()).proposal == 1  # not the 0 after it


def test_scaling_disabled_at_zero_replicas_keeps_the_first_recommendation() -> None:
    spec = HPASpec(max_replicas=10, metrics=QUEUE)
    result = reconcile(spec, _queue(0, 5000), ControllerState())
    assert result.conditions["ScalingActive"] == Condition(False, "ScalingDisabled")
    assert (result.desired_replicas, result.rescale, result.metrics) == (0, False, ())
    assert result.state == ControllerState((Recommendation(0, 100.0),))


def test_at_exactly_the_maximum_the_metrics_are_still_read() -> None:
    spec = HPASpec(max_replicas=4, metrics=QUEUE)
    result = reconcile(spec, _queue(4, 4000), ControllerState())
    assert [m.replicas for m in result.metrics] == [4]
    assert result.conditions["ScalingActive"] == Condition(True, "ValidMetricFound")
    assert result.error is None  # every metric valid: no error, not an empty one


@pytest.mark.parametrize(("current", "desired"), [(12, 10), (1, 3)])
def test_a_count_outside_the_bounds_is_clamped_and_recorded_as_a_scale_event(
    current: int, desired: int
) -> None:
    spec = HPASpec(max_replicas=10, metrics=QUEUE, min_replicas=3, behavior=Behavior())
    result = reconcile(spec, _queue(current, 1000), ControllerState())
    assert (result.desired_replicas, result.rescale, result.metrics) == (desired, True, ())
    event = (ScaleEvent(abs(desired - current), 100.0),)
    up, down = result.state.scale_up_events, result.state.scale_down_events
    assert (up, down) == (((), event) if desired < current else (event, ()))


def test_a_behaviors_tolerance_applies_to_its_metrics() -> None:
    tolerant = Behavior(scale_up=ScalingRules(tolerance=0.5))
    spec = HPASpec(max_replicas=10, metrics=QUEUE, behavior=tolerant)
    # 5200 over 4 pods is 1.3 times the target: within +50 %, not within the flag's +10 %
    assert reconcile(spec, _queue(4, 5200), ControllerState()).desired_replicas == 4
    flag = reconcile(replace(spec, behavior=Behavior()), _queue(4, 5200), ControllerState())
    assert flag.desired_replicas == 6


def test_at_zero_replicas_broken_metrics_are_still_refused() -> None:
    # scaled to zero (minReplicas 0): nothing to scale down, but no metric is valid either
    spec = HPASpec(
        max_replicas=10, metrics=(MetricSpec.external_average("gone", 1000),), min_replicas=0
    )
    result = reconcile(spec, _queue(0, 5000), ControllerState())
    assert result.conditions["ScalingActive"] == Condition(False, "FailedGetExternalMetric")
    assert (result.desired_replicas, result.rescale, result.proposal) == (0, False, None)
