"""KEDA: the generated HPA, activation and cooldown."""

from __future__ import annotations

from ragtide.planner.hpa import ControllerState, Snapshot, reconcile
from ragtide.planner.keda import METRIC_NAME, KedaState, is_active, keda_hpa_spec, scale_loop
from ragtide.planner.values import KedaValues


def _values(**kwargs: object) -> KedaValues:
    return KedaValues.model_validate({"enabled": True, **kwargs})


def test_generated_hpa_has_min_one_and_no_behavior() -> None:
    spec = keda_hpa_spec(_values(minReplicaCount=0, maxReplicaCount=20, queueLength=100))
    assert (spec.min_replicas, spec.max_replicas, spec.behavior) == (1, 20, None)
    assert spec.metrics[0].target.average_value == 100_000


def test_95_messages_with_value_10_propose_10_replicas() -> None:
    spec = keda_hpa_spec(_values(queueLength=10))
    snapshot = Snapshot(0, 1, 1, external_metrics={METRIC_NAME: (95_000,)})
    result = reconcile(spec, snapshot, ControllerState(()))
    assert result.proposal == 10  # ceil(95 / 10)
    assert result.desired_replicas == 4  # legacy path: at most max(2 * 1, 4) per sync
    again = Snapshot(15, 4, 4, external_metrics={METRIC_NAME: (95_000,)})
    assert reconcile(spec, again, result.state).desired_replicas == 8


def test_activation_is_strict() -> None:
    values = _values(activationQueueLength=5)
    assert (is_active(5, values), is_active(5.001, values)) == (False, True)


def test_scale_from_zero_and_to_zero_after_cooldown() -> None:
    values = _values(minReplicaCount=0, cooldownPeriod=300)
    replicas, state = scale_loop(0, True, 100.0, KedaState(), values)
    assert (replicas, state.last_active) == (1, 100.0)
    assert scale_loop(1, False, 400.0, state, values)[0] is None  # 100 + 300 is not < 400
    assert scale_loop(1, False, 401.0, state, values)[0] == 0
    assert scale_loop(3, True, 500.0, state, values)[0] is None  # the HPA owns 1..max


def test_min_replica_count_is_restored_when_inactive() -> None:
    values = _values(minReplicaCount=2)
    assert scale_loop(0, True, 0.0, KedaState(), values)[0] == 2
    assert scale_loop(1, False, 0.0, KedaState(), values)[0] == 2
