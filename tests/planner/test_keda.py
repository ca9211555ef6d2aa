"""KEDA: the generated HPA, both RabbitMQ modes, activation and cooldown."""

from __future__ import annotations

import numpy as np
import pytest

from ragtide.planner.capacity import default_capacity
from ragtide.planner.hpa import ControllerState, Snapshot, reconcile
from ragtide.planner.keda import (
    METRIC_NAME,
    KedaState,
    QueueStatus,
    is_active,
    keda_hpa_spec,
    metric_and_activity,
    publish_rate,
    scale_loop,
)
from ragtide.planner.simulate import SimulationParams, simulate
from ragtide.planner.traffic import Trace
from ragtide.planner.values import KedaValues, load_values


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


# KEDA's own cases (pkg/scalers/rabbitmq_scaler_test.go, testQueueInfoTestData): the
# management API's messages, publish rate and deliver/get rate, the mode, and isActive.
# activationValue is KEDA's default, 0.
KEDA_QUEUE_INFO = [
    # legacy queueLength: 10 (QueueLength mode)
    ("QueueLength", 4, 0.0, 0.0, True),
    ("QueueLength", 1, 0.0, 0.0, True),
    ("QueueLength", 0, 0.0, 0.0, False),
    ("QueueLength", 4, 1.4, 0.8, True),
    ("QueueLength", 1, 1.4, 1.6, True),
    ("QueueLength", 0, 1.4, 2.0, False),
    # mode QueueLength, value 100
    ("QueueLength", 4, 0.0, 1.3, True),
    ("QueueLength", 1, 0.0, 1.0, True),
    ("QueueLength", 0, 0.0, 0.0, False),
    ("QueueLength", 4, 1.4, 1.3, True),
    ("QueueLength", 1, 1.4, 1.0, True),
    ("QueueLength", 0, 1.4, 0.0, False),
    # mode MessageRate, value 100
    ("MessageRate", 4, 0.0, 1.3, True),
    ("MessageRate", 1, 0.0, 1.0, True),
    ("MessageRate", 0, 0.0, 0.0, False),
    ("MessageRate", 4, 1.4, 1.3, True),
    ("MessageRate", 1, 1.4, 1.0, True),
    ("MessageRate", 0, 1.4, 0.0, True),  # publishing into an empty queue activates
]


@pytest.mark.parametrize(("mode", "messages", "publish", "deliver", "active"), KEDA_QUEUE_INFO)
def test_activity_matches_kedas_own_cases(
    mode: str, messages: int, publish: float, deliver: float, active: bool
) -> None:
    values = _values(mode=mode, queueLength=100, messageRate=100)
    status = QueueStatus(messages, publish, deliver)
    assert metric_and_activity(status, values)[1] is active


def test_message_rate_serves_the_publish_rate_in_milli() -> None:
    values = _values(mode="MessageRate", messageRate=10, activationMessageRate=2)
    assert metric_and_activity(QueueStatus(0, 1.4, 9.0), values) == (1400, False)
    # one threshold for both: a backlog above it keeps the trigger active
    assert metric_and_activity(QueueStatus(3, 0.0, 0.0), values) == (0, True)
    assert metric_and_activity(QueueStatus(2, 2.0, 0.0), values) == (2000, False)  # strict
    spec = keda_hpa_spec(values)
    assert spec.metrics[0].target.average_value == 10_000
    snapshot = Snapshot(0, 2, 2, external_metrics={METRIC_NAME: (35_000,)})  # 35 msg/s
    assert reconcile(spec, snapshot, ControllerState(())).proposal == 4  # ceil(35 / 10)


def test_queue_length_serves_the_message_count_and_ignores_rates() -> None:
    values = _values(queueLength=20, activationQueueLength=3)
    assert metric_and_activity(QueueStatus(3, 50.0, 0.0), values) == (3000, False)


def test_publish_rate_is_the_management_apis_5s_average() -> None:
    arrivals = [0, 0, 5, 5, 5, 5, 5, 0]
    assert publish_rate(arrivals, 6) == 5.0
    assert publish_rate(arrivals, 7) == 4.0
    assert publish_rate(arrivals, 0) == 0.0


def test_message_rate_replay_scales_the_worker_on_publishing() -> None:
    trace = Trace(np.full(1200, 20.0), queue_arrivals=np.full(1200, 40.0), name="steady")
    raw = {"worker": {"keda": {"mode": "MessageRate", "messageRate": 10}}}
    result = simulate(trace, load_values(raw), default_capacity(), SimulationParams())
    assert result.worker_desired is not None
    assert result.worker_desired[-1] == 4  # 40 msg/s published / 10 per replica
