"""Any HPA spec a user can write gives a result or a clear error, never a traceback.

Hypothesis draws specs far outside the chart's values (unknown metric types, missing or
zero targets, min above max, zero replicas, odd behaviors, int32 extremes) and
snapshots with missing, empty or extreme metrics. ``check_spec`` either accepts a spec
or raises ``ConfigError`` naming the field, as the API server
would; ``reconcile`` returns a ``Reconciliation`` for every spec, valid or not, with
the desired replicas within int32 when the spec is valid and every failure reported as a condition.
"""

from __future__ import annotations

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from ragtide.errors import ConfigError
from ragtide.planner.hpa import (
    MAX_INT32,
    Behavior,
    ControllerConfig,
    ControllerState,
    HPASpec,
    MetricKind,
    MetricSpec,
    MetricTarget,
    PodSpec,
    PolicyType,
    Recommendation,
    ResourceSample,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    Snapshot,
    TargetType,
    check_spec,
    reconcile,
    spec_problems,
)

int32 = st.integers(-(2**31), MAX_INT32)
small = st.one_of(st.integers(-5, 50), int32)
optional = st.one_of(st.none(), small)
kinds = st.one_of(st.sampled_from(list(MetricKind)), st.text(max_size=12))
targets = st.builds(
    MetricTarget,
    st.sampled_from(list(TargetType)),
    average_utilization=optional,
    value=optional,
    average_value=optional,
)
metric_names = st.sampled_from(["cpu", "memory", "qps", "http_requests_in_flight", ""])
metrics = st.builds(
    MetricSpec, kinds, metric_names, targets, st.sampled_from(["", "container1", "nope"])
)
policies = st.builds(ScalingPolicy, st.sampled_from(list(PolicyType)), small, small)
rules = st.one_of(
    st.none(),
    st.builds(
        ScalingRules,
        stabilization_window_seconds=optional,
        select_policy=st.one_of(st.none(), st.sampled_from(list(SelectPolicy))),
        policies=st.one_of(st.none(), st.lists(policies, max_size=3).map(tuple)),
        tolerance=st.one_of(st.none(), st.floats(-1, 5, allow_nan=False)),
    ),
)
behaviors = st.one_of(st.none(), st.builds(Behavior, rules, rules))
specs = st.builds(
    HPASpec,
    max_replicas=small,
    metrics=st.lists(metrics, max_size=4).map(tuple),
    min_replicas=small,
    behavior=behaviors,
)
values = st.one_of(st.integers(0, 10**6), int32)


@st.composite
def snapshots(draw: st.DrawFn) -> Snapshot:
    count = draw(st.integers(0, 6))
    pods = tuple(
        PodSpec(
            f"p{i}",
            ready=draw(st.one_of(st.none(), st.booleans())),
            container_requests={"container1": {"cpu": draw(st.integers(0, 2000))}},
        )
        for i in range(count)
    )
    names = [p.name for p in pods] + draw(st.lists(st.just("stray"), max_size=1))
    cpu = {n: ResourceSample({"container1": draw(values)}) for n in names}
    per_pod = {n: draw(values) for n in names}
    return Snapshot(
        now=draw(st.floats(0, 10_000, allow_nan=False)),
        spec_replicas=draw(st.integers(0, 60)),
        status_replicas=draw(st.integers(0, 60)),
        pods=pods,
        resource_metrics=draw(st.sampled_from([{}, {"cpu": cpu}, {"cpu": {}}])),
        pods_metrics=draw(st.sampled_from([{}, {"qps": per_pod}])),
        object_metrics=draw(st.sampled_from([{}, {"qps": draw(values)}])),
        external_metrics=draw(st.sampled_from([{}, {"qps": (draw(values),)}, {"qps": ()}])),
    )


histories = st.one_of(
    st.none(),
    st.lists(st.builds(Recommendation, st.integers(0, 60), st.floats(-1000, 1000))).map(tuple),
)
events = st.lists(st.builds(ScaleEvent, st.integers(0, 60), st.floats(-1000, 1000))).map(tuple)
states = st.builds(ControllerState, histories, events, events)


# No deadline or speed health check: a busy machine (a mutation run, a shared CI host) must
# not fail a test that is about results, not time.
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs, snapshots(), states)
@example(  # one metric broken, the valid one at the current count: scaling goes on
    HPASpec(
        max_replicas=10,
        metrics=(MetricSpec.external_average("queue", 1000), MetricSpec.pods_average("qps", 1)),
    ),
    Snapshot(100.0, 3, 3, external_metrics={"queue": (3000,)}),
    ControllerState(),
)
def test_reconcile_never_raises(spec: HPASpec, snapshot: Snapshot, state: ControllerState) -> None:
    result = reconcile(spec, snapshot, state, ControllerConfig())
    if not spec_problems(spec):
        assert 0 <= result.desired_replicas <= MAX_INT32
    for status in result.metrics:
        assert (status.replicas is None) == (status.failure is not None)
        if status.failure is not None:
            assert status.reason
    if result.error is not None:
        active = result.conditions["ScalingActive"]
        if active.status:  # a valid metric that does not ask for fewer replicas: scaling goes on
            assert active.reason == "ValidMetricFound"
            assert result.proposal is not None and result.proposal >= snapshot.spec_replicas
        else:  # refused: every metric is broken, or the valid ones would scale down
            assert (result.rescale, result.proposal) == (False, None)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(specs)
def test_check_spec_accepts_or_names_the_problem(spec: HPASpec) -> None:
    try:
        check_spec(spec)
    except ConfigError as exc:
        assert "spec." in str(exc)


def test_unknown_metric_type_is_an_invalid_metric_not_a_crash() -> None:
    cheese = MetricSpec("CheddarCheese", "", MetricTarget(TargetType.VALUE))
    spec = HPASpec(max_replicas=6, metrics=(cheese,), min_replicas=2)
    result = reconcile(spec, Snapshot(0.0, 3, 3), ControllerState(()))
    assert result.desired_replicas == 3 and not result.rescale
    assert result.conditions["ScalingActive"].reason == "InvalidMetricSourceType"
    assert result.metrics[0].failure == "unknown metric source type 'CheddarCheese'"
