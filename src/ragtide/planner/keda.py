"""KEDA's RabbitMQ scaler: the HPA it generates, the metric, activation and cooldown (§8).

KEDA owns 0 <-> 1 (or idle <-> min) on its own polling loop; between 1 and max the
HPA it creates decides, through the legacy path (KEDA sets no ``behavior`` unless
``advanced.horizontalPodAutoscalerConfig`` does) with an External AverageValue metric.

Two of the scaler's modes (``pkg/scalers/rabbitmq_scaler.go``, ``GetMetricsAndActivity``;
cases from its ``rabbitmq_scaler_test.go`` in ``tests/planner/test_keda.py``):

* ``QueueLength``: the metric is the queue's messages (ready + unacknowledged);
  active while ``messages > activationValue``.
* ``MessageRate`` (HTTP management API only): the metric is the queue's publish rate
  (``message_stats.publish_details.rate``); active while the publish rate **or** the
  message count exceeds ``activationValue`` (one threshold for both), so a backlog
  keeps a worker even after publishing stops.

Both metrics go to the HPA in milli precision. The management API's rates are averages
over its statistics interval (``collect_statistics_interval``, 5 s by default), which
``publish_rate`` reproduces from the per-second arrivals.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ragtide.planner.hpa import HPASpec, MetricSpec
from ragtide.planner.values import KedaValues

__all__ = [
    "DEFAULT_HPA_MAX_REPLICAS",
    "METRIC_NAME",
    "STATS_INTERVAL_SECONDS",
    "KedaState",
    "QueueStatus",
    "is_active",
    "keda_hpa_spec",
    "metric_and_activity",
    "publish_rate",
    "scale_loop",
]

DEFAULT_HPA_MAX_REPLICAS = 100
METRIC_NAME = "s0-rabbitmq-ragtide-jobs"
STATS_INTERVAL_SECONDS = 5


@dataclass(frozen=True, slots=True)
class QueueStatus:
    """What the management API reports for the queue: messages and two rates (msg/s)."""

    messages: float
    publish_rate: float = 0.0
    deliver_get_rate: float = 0.0


@dataclass(frozen=True, slots=True)
class KedaState:
    """What KEDA remembers between polls: when the trigger was last active."""

    last_active: float | None = None
    created_at: float = 0.0
    initial_cooldown: float = 0.0


def keda_hpa_spec(values: KedaValues) -> HPASpec:
    """The HPA KEDA creates: ``minReplicas = minReplicaCount or 1``, AverageValue target.

    The target (``queueLength``, or ``messageRate`` in MessageRate mode) is written with
    milli precision (``%.3f``), so it is rounded to milli.
    """
    target_milli = round(values.target_value * 1000)
    return HPASpec(
        max_replicas=values.max_replica_count,
        metrics=(MetricSpec.external_average(METRIC_NAME, target_milli),),
        min_replicas=values.min_replica_count if values.min_replica_count > 0 else 1,
        behavior=None,
    )


def metric_and_activity(status: QueueStatus, values: KedaValues) -> tuple[int, bool]:
    """The metric KEDA serves (milli-units) and whether the trigger is active."""
    activation = values.activation_value
    if values.mode == "MessageRate":
        active = status.publish_rate > activation or status.messages > activation
        return round(status.publish_rate * 1000), active
    return round(status.messages * 1000), status.messages > activation


def is_active(messages: float, values: KedaValues, publish_rate: float = 0.0) -> bool:
    """KEDA's ``isActive`` for the configured mode (strict comparisons)."""
    return metric_and_activity(QueueStatus(messages, publish_rate), values)[1]


def publish_rate(
    arrivals: Sequence[float] | np.ndarray, end: int, interval: int = STATS_INTERVAL_SECONDS
) -> float:
    """The management API's publish rate at second ``end``: the mean of the last interval."""
    if end < 0:
        return 0.0
    start = max(0, end - interval + 1)
    return float(sum(arrivals[start : end + 1])) / interval


def scale_loop(
    current: int, active: bool, now: float, state: KedaState, values: KedaValues
) -> tuple[int | None, KedaState]:
    """One ``RequestScale``: the replica count KEDA writes (``None`` = leave it) and its state.

    Active: from 0 scale to ``minReplicaCount`` or 1 and remember the time. Inactive with
    ``minReplicaCount == 0``: scale to 0 once ``last_active + cooldownPeriod < now``
    (never active: ``created_at + initial_cooldown``). Inactive below the minimum: scale
    to the minimum.
    """
    minimum = values.min_replica_count
    if active:
        state = KedaState(now, state.created_at, state.initial_cooldown)
        if current == 0:
            return (minimum if minimum > 0 else 1), state
        return None, state
    if current > 0 and minimum == 0:
        if state.last_active is None:
            expired = state.created_at + state.initial_cooldown < now
        else:
            expired = state.last_active + values.cooldown_period < now
        return (0 if expired else None), state
    if current < minimum:
        return minimum, state
    return None, state
