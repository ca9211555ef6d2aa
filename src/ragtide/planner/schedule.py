"""Scheduled minimums for known peaks: KEDA ``cron`` triggers, and the cheapest schedule.

With ``autoscaling.engine: keda`` the chart scales the API with a KEDA ScaledObject whose
triggers are the HPA's (CPU, request rate, in-flight) plus one ``cron`` trigger per
``autoscaling.keda.schedules`` entry. KEDA's cron scaler (``pkg/scalers/cron_scaler.go``)
gives the HPA it creates an External metric with an AverageValue target of 1 whose value
is ``desiredReplicas`` inside the window and 0 outside. The HPA takes the largest
proposal, so inside the window the replicas never drop below ``desiredReplicas``
(``ceil(desired / 1)``); outside it the other triggers decide.

``cron`` models the windows in the replay (daily; the trace's ``t = 0`` is 00:00).

``schedule_option`` answers "what would a schedule cost next to a warm fleet?": the
quiet minimum all day, the peak's need from one reaction chain before the load first
needs more than that minimum until it stops needing it, and the cheapest scale-up
policy that meets the SLO (Kubernetes' default ``Percent 100 / 15 s`` first).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np

from ragtide.planner.capacity import Capacity
from ragtide.planner.cron import DAY, DailyWindow, cron_expression
from ragtide.planner.queueing import ServiceModel
from ragtide.planner.simulate import SimulationParams, SimulationResult, simulate
from ragtide.planner.traffic import Trace
from ragtide.planner.values import (
    AutoscalingValues,
    BehaviorValues,
    ChartValues,
    PolicyValues,
    RulesValues,
    ScheduleValues,
)

__all__ = ["SCALE_UP_POLICIES", "ScheduleOption", "describe", "schedule_option"]

#: scale-up policies tried for the schedule, cheapest-to-configure first:
#: Kubernetes' own default (+100 % per 15 s, or +4 pods), then +100 % per 15 s alone.
SCALE_UP_POLICIES: tuple[tuple[str, tuple[PolicyValues, ...]], ...] = (
    (
        "Percent 100 / 15 s + Pods 4 / 15 s (Kubernetes' default)",
        (
            PolicyValues(type="Percent", value=100, periodSeconds=15),
            PolicyValues(type="Pods", value=4, periodSeconds=15),
        ),
    ),
    ("Percent 100 / 15 s", (PolicyValues(type="Percent", value=100, periodSeconds=15),)),
    ("Pods 2 / 60 s", (PolicyValues(type="Pods", value=2, periodSeconds=60),)),
)


@dataclass(frozen=True, slots=True)
class ScheduleOption:
    """The cheapest schedule + scale-up policy that met the SLO, beside the warm fleet."""

    autoscaling: AutoscalingValues
    policy: str
    min_replicas: int
    window: DailyWindow
    result: SimulationResult
    warm_fleet_replica_hours: float | None
    compared_to: str = "warm fleet"

    @property
    def replica_hours(self) -> float:
        return self.result.replica_hours


def _feasible(result: SimulationResult, slo_p99_ms: float) -> bool:
    p99 = np.nan_to_num(result.p99_ms, nan=np.inf)
    return bool(np.all(p99 <= slo_p99_ms) and result.dropped.sum() == 0)


def schedule_option(
    trace: Trace,
    values: ChartValues,
    capacity: Capacity,
    params: SimulationParams,
    *,
    slo_p99_ms: float,
    base: AutoscalingValues,
    lead_seconds: float,
    warm_fleet_replica_hours: float | None = None,
    compared_to: str = "warm fleet",
) -> ScheduleOption | None:
    """The cheapest daily schedule (minimum all day, the peak's need in a window) that
    meets the SLO, trying ``SCALE_UP_POLICIES`` on top of ``base`` (the recommended
    targets and scale-down). ``None`` when the trace has no window worth scheduling or
    no policy meets the SLO.
    """
    capacity = capacity.at_cpu_limit(values.cpu_limit_milli)
    model = ServiceModel.from_capacity(capacity, values.cpu_limit_milli)
    need = np.array([model.replicas_needed(float(r), slo_p99_ms) for r in trace.rps])
    peak = int(need.max())
    candidates: list[ScheduleOption] = []
    for minimum in sorted({max(1, int(np.percentile(need, q))) for q in (10, 50)}):
        busy = np.flatnonzero(need > minimum)
        if peak <= minimum or busy.size == 0:
            continue
        start = max(0, int(busy[0] - lead_seconds)) // 60 * 60
        end = min(DAY - 60, math.ceil((int(busy[-1]) + 1) / 60) * 60)
        window = DailyWindow(start, end, peak)
        schedule = ScheduleValues(
            start=cron_expression(start), end=cron_expression(end), desiredReplicas=peak
        )
        for label, policies in SCALE_UP_POLICIES:
            up = RulesValues(stabilizationWindowSeconds=0, selectPolicy="Max", policies=policies)
            down = base.behavior.scale_down if base.behavior else None
            block = base.model_copy(
                update={
                    "engine": "keda",
                    "min_replicas": minimum,
                    "max_replicas": max(base.max_replicas, peak),
                    "behavior": BehaviorValues(scaleUp=up, scaleDown=down),
                    "keda": base.keda.model_copy(update={"schedules": (schedule,)}),
                }
            )
            chart = values.model_copy(update={"autoscaling": block})
            initial = max(minimum, int(need[0]))
            result = simulate(trace, chart, capacity, replace(params, initial_replicas=initial))
            if _feasible(result, slo_p99_ms):
                candidates.append(
                    ScheduleOption(block, label, minimum, window, result, warm_fleet_replica_hours)
                )
                break  # the first policy that works; later ones are not cheaper to run
    if not candidates:
        return None
    return min(candidates, key=lambda c: c.replica_hours)


def describe(option: ScheduleOption) -> Sequence[str]:
    """Summary lines for ``ragtide plan``."""
    w = option.window
    lines = [
        f"schedule option (autoscaling.engine: keda): minReplicas {option.min_replicas}, "
        f"cron {cron_expression(w.start)!r} to {cron_expression(w.end)!r} "
        f"(trace time from 00:00) at "
        f"{w.desired} replicas, scale-up {option.policy}: "
        f"replica-hours {option.replica_hours:.1f}, p99 max "
        f"{float(np.nanmax(option.result.p99_ms)):.0f} ms",
    ]
    if option.warm_fleet_replica_hours is not None:
        saved = option.warm_fleet_replica_hours - option.replica_hours
        lines.append(
            f"  vs {option.compared_to}: {option.warm_fleet_replica_hours:.1f} replica-hours "
            f"(schedule {'saves' if saved >= 0 else 'costs'} {abs(saved):.1f})"
        )
    return lines
