"""KEDA's RabbitMQ ``QueueLength`` scaler: the HPA it generates, activation and cooldown (§8).

KEDA owns 0 <-> 1 (or idle <-> min) on its own polling loop; between 1 and max the
HPA it creates decides, through the legacy path (KEDA sets no ``behavior`` unless
``advanced.horizontalPodAutoscalerConfig`` does) with an External AverageValue metric.
"""

from __future__ import annotations

from dataclasses import dataclass

from ragtide.planner.hpa import HPASpec, MetricSpec
from ragtide.planner.values import KedaValues

__all__ = [
    "DEFAULT_HPA_MAX_REPLICAS",
    "METRIC_NAME",
    "KedaState",
    "is_active",
    "keda_hpa_spec",
    "scale_loop",
]

DEFAULT_HPA_MAX_REPLICAS = 100
METRIC_NAME = "s0-rabbitmq-ragtide-jobs"


@dataclass(frozen=True, slots=True)
class KedaState:
    """What KEDA remembers between polls: when the trigger was last active."""

    last_active: float | None = None
    created_at: float = 0.0
    initial_cooldown: float = 0.0


def keda_hpa_spec(values: KedaValues) -> HPASpec:
    """The HPA KEDA creates: ``minReplicas = minReplicaCount or 1``, AverageValue target.

    The target is written with milli precision (``%.3f``), so it is rounded to milli.
    """
    target_milli = round(values.queue_length * 1000)
    return HPASpec(
        max_replicas=values.max_replica_count,
        metrics=(MetricSpec.external_average(METRIC_NAME, target_milli),),
        min_replicas=values.min_replica_count if values.min_replica_count > 0 else 1,
        behavior=None,
    )


def is_active(messages: float, values: KedaValues) -> bool:
    """``isActive = messages > activationValue`` (strict)."""
    return messages > values.activation_queue_length


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
