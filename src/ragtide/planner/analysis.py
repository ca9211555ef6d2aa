"""What a replay means: SLO breaches, cost, time to capacity, and configuration conflicts.

``summarize`` reads a ``SimulationResult``; ``conflicts`` inspects the values against
the capacity without replaying anything (so a conflict is reported even when the
trace happens not to trigger it); ``scale_up_time`` replays only the behavior rules
(stabilization and rate limits, via ``hpa.normalize``) to tell how long the HPA needs
to go from one replica count to another at best.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ragtide.planner.capacity import Capacity
from ragtide.planner.hpa import (
    ControllerConfig,
    HPASpec,
    Recommendation,
    ScaleEvent,
    convert_desired_replicas_with_behavior_rate,
    convert_desired_replicas_with_rules,
    default_behavior,
    generate_scale_down_rules,
    generate_scale_up_rules,
    stabilize_recommendation,
    stabilize_recommendation_with_behaviors,
    store_scale_event,
)
from ragtide.planner.queueing import ServiceModel
from ragtide.planner.simulate import SimulationResult
from ragtide.planner.traffic import surge_start
from ragtide.planner.values import ChartValues, hpa_spec

__all__ = [
    "PlanSummary",
    "Surge",
    "conflicts",
    "scale_up_time",
    "summarize",
]


@dataclass(frozen=True, slots=True)
class Surge:
    """How the fleet caught up with a load increase that started at ``start`` (seconds).

    ``desired_after``/``ready_after`` count seconds from ``start`` until the Deployment
    asked for / had ready ``needed`` replicas (``None``: never within the trace);
    ``outgrown_after`` until the load exceeded what the replicas ready at ``start``
    serve within the SLO.
    """

    start: int
    needed: int
    outgrown_after: int | None
    desired_after: int | None
    ready_after: int | None
    max_p99_ms: float
    breach_seconds: int


@dataclass(frozen=True, slots=True)
class PlanSummary:
    """The numbers a plan reports. Breach seconds count p99 over the SLO or drops."""

    slo_p99_ms: float
    seconds: int
    replica_hours: float
    worker_replica_hours: float
    peak_rps: float
    peak_needed_replicas: int
    fixed_peak_replica_hours: float
    breach_seconds: int
    dropped_requests: float
    max_p99_ms: float
    max_replicas: int
    surge: Surge | None

    @property
    def saved_replica_hours(self) -> float:
        """Replica-hours saved against running the peak's replica count all the time."""
        return self.fixed_peak_replica_hours - self.replica_hours

    @property
    def meets_slo(self) -> bool:
        return self.breach_seconds == 0


def _breaches(result: SimulationResult, slo: float) -> np.ndarray:
    p99 = np.nan_to_num(result.p99_ms, nan=math.inf)
    breaches: np.ndarray = (p99 > slo) | (result.dropped > 0)
    return breaches


def summarize(result: SimulationResult, model: ServiceModel, slo_p99_ms: float) -> PlanSummary:
    """Cost, SLO breaches and, when the trace has one (``traffic.surge_start``), the surge."""
    load = result.load_rps
    peak = float(load.max())
    needed = model.replicas_needed(peak, slo_p99_ms)
    breaches = _breaches(result, slo_p99_ms)
    p99 = np.nan_to_num(result.p99_ms, nan=math.inf)
    return PlanSummary(
        slo_p99_ms=slo_p99_ms,
        seconds=int(load.size),
        replica_hours=result.replica_hours,
        worker_replica_hours=result.worker_replica_hours,
        peak_rps=peak,
        peak_needed_replicas=needed,
        fixed_peak_replica_hours=needed * load.size / 3600,
        breach_seconds=int(breaches.sum()),
        dropped_requests=float(result.dropped.sum()),
        max_p99_ms=float(p99.max()),
        max_replicas=int(result.replicas_desired.max()),
        surge=_surge(result, model, slo_p99_ms, breaches, p99),
    )


def _surge(
    result: SimulationResult,
    model: ServiceModel,
    slo_p99_ms: float,
    breaches: np.ndarray,
    p99: np.ndarray,
) -> Surge | None:
    load = result.load_rps
    start = surge_start(load)
    if start is None:
        return None
    needed = model.replicas_needed(float(load[start:].max()), slo_p99_ms)
    warm = result.replicas_ready[start] * model.max_rho_for(slo_p99_ms) * model.replica_rps
    outgrown = np.flatnonzero(load[start:] > warm)
    desired = np.flatnonzero(result.replicas_desired[start:] >= needed)
    ready = np.flatnonzero(result.replicas_ready[start:] >= needed)
    end = start + int(ready[0]) if ready.size else load.size
    window = slice(start, max(end, start + 1))
    return Surge(
        start=start,
        needed=needed,
        outgrown_after=int(outgrown[0]) if outgrown.size else None,
        desired_after=int(desired[0]) if desired.size else None,
        ready_after=int(ready[0]) if ready.size else None,
        max_p99_ms=float(p99[window].max()),
        breach_seconds=int(breaches[window].sum()),
    )


def scale_up_time(
    spec: HPASpec,
    start: int,
    target: int,
    config: ControllerConfig | None = None,
    horizon: float = 3600.0,
) -> float | None:
    """Seconds until ``spec.replicas`` can reach ``target`` from ``start`` at best.

    The metrics are assumed to ask for ``target`` from time 0 on, after ``start`` had
    been stable for a long time; only stabilization and the rate limits slow it down.
    ``None`` when ``target`` is above ``maxReplicas`` or not reached within ``horizon``.
    """
    config = config or ControllerConfig()
    if target <= start:
        return 0.0
    if target > spec.max_replicas:
        return None
    behavior = default_behavior(spec.behavior, config)
    windows = [config.downscale_stabilization]
    if behavior is not None:
        up_rules = generate_scale_up_rules(behavior.scale_up)
        down_rules = generate_scale_down_rules(behavior.scale_down, config.downscale_stabilization)
        windows += [
            float(up_rules.stabilization_window_seconds or 0),
            float(down_rules.stabilization_window_seconds or 0),
        ]
    steps = math.ceil(max(windows) / config.sync_period) + 1
    # ``start`` was recommended at every sync before time 0.
    history = tuple(Recommendation(start, -k * config.sync_period) for k in range(steps, 0, -1))
    up: tuple[ScaleEvent, ...] = ()
    down: tuple[ScaleEvent, ...] = ()
    current, now = start, 0.0
    while now <= horizon:
        if behavior is None:
            stable = stabilize_recommendation(history, target, now, config.downscale_stabilization)
            limited = convert_desired_replicas_with_rules(
                current,
                stable.replicas,
                spec.min_replicas,
                spec.max_replicas,
                scale_up_limit_factor=config.scale_up_limit_factor,
                scale_up_limit_minimum=config.scale_up_limit_minimum,
            )
        else:
            stable = stabilize_recommendation_with_behaviors(
                history,
                target,
                current,
                float(up_rules.stabilization_window_seconds or 0),
                float(down_rules.stabilization_window_seconds or 0),
                now,
            )
            limited = convert_desired_replicas_with_behavior_rate(
                current,
                stable.replicas,
                spec.min_replicas,
                spec.max_replicas,
                up_rules,
                down_rules,
                up,
                down,
                now,
            )
        history = stable.recommendations
        if limited.replicas != current:
            up, down = store_scale_event(behavior, up, down, current, limited.replicas, now)
            current = limited.replicas
        if current >= target:
            return now
        now += config.sync_period
    return None


def conflicts(
    values: ChartValues,
    capacity: Capacity,
    model: ServiceModel,
    *,
    peak_rps: float,
    start_replicas: int,
    slo_p99_ms: float,
    deadline_s: float | None,
    config: ControllerConfig | None = None,
    pending_s: float = 5.0,
) -> tuple[str, ...]:
    """Settings that cannot deliver what the trace needs, in plain sentences."""
    found = []
    scaling = values.autoscaling
    spec = hpa_spec(values)
    needed = model.replicas_needed(peak_rps, slo_p99_ms)
    startup = capacity.replica.startup_seconds + pending_s
    if needed > scaling.max_replicas:
        found.append(
            f"maxReplicas {scaling.max_replicas} is below the {needed} replicas that "
            f"{peak_rps:g} req/s needs for p99 <= {slo_p99_ms:g} ms."
        )
    if deadline_s is not None and needed > start_replicas:
        best = scale_up_time(spec, start_replicas, needed, config)
        if best is None or best + startup > deadline_s:
            when = (
                "never"
                if best is None
                else f"at best after {best:.0f} s (+{startup:.0f} s to ready)"
            )
            found.append(
                f"behavior.scaleUp cannot take {start_replicas} replicas to {needed} within "
                f"{deadline_s:g} s: spec.replicas gets there {when}."
            )
    sat_cpu = 100 * model.cpu_at(model.replica_rps) / values.cpu_request_milli
    if scaling.target_cpu is not None and scaling.target_cpu >= sat_cpu:
        found.append(
            f"targetCPUUtilizationPercentage {scaling.target_cpu} is at or above the "
            f"{sat_cpu:.0f}% a saturated replica uses: CPU never asks for more replicas."
        )
    rate = scaling.request_rate
    if rate.enabled and rate.average_value >= model.replica_rps:
        found.append(
            f"requestRate.averageValue {rate.average_value:g} req/s per pod is above the "
            f"{model.replica_rps:.1f} req/s one replica can serve: this metric never triggers."
        )
    if scaling.min_replicas >= needed > 0:
        found.append(
            f"minReplicas {scaling.min_replicas} already covers the peak ({needed}): "
            "the HPA never adds capacity, you pay for the peak all day."
        )
    worker = capacity.worker
    keda = values.keda
    if (
        keda.enabled
        and worker is not None
        and keda.max_replica_count * worker.messages_per_second <= 0
    ):
        found.append("worker.keda.maxReplicaCount allows no throughput.")
    return tuple(found)
