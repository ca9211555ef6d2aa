"""Search for chart values that meet the p99 SLO at the lowest replica-hours.

The search space is small and explained:

* **one utilization knob** ``u`` (the fraction of a replica's saturation throughput the
  HPA should aim for) sets the three metric targets consistently: the request rate at
  ``u``, the CPU percent a replica uses at that rate, and the in-flight requests that
  Little's law gives at that rate;
* **minReplicas** from the quietest second's need up to the peak's need;
* **behavior**: the values' own rules, or a fast scale-up (no stabilization window,
  +100 % or +4 pods per 15 s, Kubernetes' own defaults) with the values' scale-down.

A candidate is feasible when its replay has no second with p99 above the SLO and no
dropped request and, when a deadline is given and the replay has a surge
(``traffic.surge_start``), its ready replicas reach what the surge's peak needs
within the deadline after the surge starts. A candidate is replayed from its own steady state (the
replicas it holds at the first second's load). It is first replayed on the trace's
steepest windows (cheap), then confirmed on the whole trace; for each ``u`` the
smallest feasible ``minReplicas`` is found by bisection (feasibility grows with it),
and ``u`` values whose optimistic cost cannot beat the best so far are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

import numpy as np

from ragtide.planner.capacity import Capacity
from ragtide.planner.model_analysis import model_breaches, rho_at_target
from ragtide.planner.model_tier import ModelServerModel
from ragtide.planner.queueing import ServiceModel
from ragtide.planner.simulate import SimulationParams, SimulationResult, simulate
from ragtide.planner.traffic import Trace, surge_start
from ragtide.planner.values import (
    AutoscalingValues,
    BehaviorValues,
    ChartValues,
    MetricValues,
    PolicyValues,
    RulesValues,
)

__all__ = [
    "FAST_SCALE_UP",
    "UTILIZATION_STEPS",
    "Candidate",
    "Recommendation",
    "candidate_values",
    "feasible",
    "model_hold_seconds",
    "recommend",
    "steepest_windows",
]

UTILIZATION_STEPS = (0.85, 0.75, 0.65, 0.55, 0.45, 0.35, 0.3, 0.25, 0.2)
FAST_SCALE_UP = RulesValues(
    stabilizationWindowSeconds=0,
    selectPolicy="Max",
    policies=(
        PolicyValues(type="Percent", value=100, periodSeconds=15),
        PolicyValues(type="Pods", value=4, periodSeconds=15),
    ),
)
_BEFORE, _AFTER = 300, 900


@dataclass(frozen=True, slots=True)
class Candidate:
    """One point of the search: the knob values and the autoscaling block they produce."""

    utilization: float
    min_replicas: int
    fast_scale_up: bool
    autoscaling: AutoscalingValues


@dataclass(frozen=True, eq=False)
class Recommendation:
    """The chosen candidate and its whole-trace replay, or ``None`` when nothing fits."""

    candidate: Candidate | None
    result: SimulationResult | None
    evaluated: int
    notes: tuple[str, ...]


def candidate_values(
    values: ChartValues,
    model: ServiceModel,
    utilization: float,
    min_replicas: int,
    max_replicas: int,
    *,
    fast_scale_up: bool,
    hold_seconds: float = 0.0,
) -> AutoscalingValues:
    """The ``autoscaling`` block for knob ``utilization`` (fraction of replica throughput).

    ``hold_seconds`` is the mean time a request also holds its slot waiting on the model
    tier (``share`` x a call's mean latency): it counts in the in-flight target.
    """
    current = values.autoscaling
    rate = utilization * model.replica_rps
    _, _, mean_ms = model.latency(utilization)
    cpu_percent = math.floor(100 * model.cpu_at(rate) / values.cpu_request_milli)
    inflight = max(1.0, math.ceil(10 * rate * (mean_ms / 1000 + hold_seconds)) / 10)
    behavior = current.behavior or BehaviorValues()
    if fast_scale_up:
        behavior = BehaviorValues(scaleUp=FAST_SCALE_UP, scaleDown=behavior.scale_down)
    return AutoscalingValues(
        enabled=True,
        minReplicas=min_replicas,
        maxReplicas=max_replicas,
        targetCPUUtilizationPercentage=max(cpu_percent, 1),
        requestRate=MetricValues(
            enabled=True,
            metricName=current.request_rate.metric_name or "http_requests_per_second",
            averageValue=round(rate, 1),
        ),
        inflightRequests=MetricValues(
            enabled=True,
            metricName=current.inflight_requests.metric_name or "http_requests_in_flight",
            averageValue=inflight,
        ),
        behavior=behavior,
    )


def feasible(
    result: SimulationResult,
    model: ServiceModel,
    slo_p99_ms: float,
    deadline_s: float | None,
    model_slo_ms: float | None = None,
) -> bool:
    """No second over the SLO, nothing dropped, and the surge's need met within the deadline;
    with ``model_slo_ms``, no model call over it or failed either."""
    p99 = np.nan_to_num(result.p99_ms, nan=math.inf)
    if bool((p99 > slo_p99_ms).any()) or bool((result.dropped > 0).any()):
        return False
    if model_slo_ms is not None and result.model is not None:
        if bool(model_breaches(result.model, model_slo_ms).any()):
            return False
    load = result.load_rps
    start = surge_start(load)
    if deadline_s is None or start is None:
        return True
    needed = model.replicas_needed(float(load[start:].max()), slo_p99_ms)
    ready = np.flatnonzero(result.replicas_ready[start:] >= needed)
    return bool(ready.size) and int(ready[0]) <= deadline_s


def steepest_windows(trace: Trace, count: int = 2) -> list[slice]:
    """Windows around the trace's steepest 2-minute rises (the whole trace if it is short)."""
    span = _BEFORE + _AFTER
    if trace.seconds <= span + 120:
        return [slice(0, trace.seconds)]
    rise = trace.rps[120:] - trace.rps[:-120]
    picked: list[int] = []
    for index in np.argsort(rise, kind="stable")[::-1]:
        if rise[index] <= 0 and picked:
            break
        if all(abs(int(index) - p) > span for p in picked):
            picked.append(int(index))
        if len(picked) == count:
            break
    windows = []
    for p in sorted(picked):
        start = min(max(0, p - _BEFORE), trace.seconds - span)
        windows.append(slice(start, start + span))
    return windows


def _sub_trace(trace: Trace, window: slice) -> Trace:
    arrivals = None if trace.queue_arrivals is None else trace.queue_arrivals[window]
    return Trace(trace.rps[window], arrivals, trace.name, dict(trace.notes))


def recommend(
    trace: Trace,
    values: ChartValues,
    capacity: Capacity,
    params: SimulationParams,
    *,
    slo_p99_ms: float,
    deadline_s: float | None = None,
    budget: int = 60,
    progress: Callable[[str], None] | None = None,
    model_slo_ms: float | None = None,
) -> Recommendation:
    """Find the cheapest feasible candidate (see the module docstring for the rules).

    With a model tier in ``capacity`` its replays include it with ``values``'
    ``modelServer`` settings from their steady state, the in-flight target counts the
    time turns wait on the model, and ``model_slo_ms`` (when given) must hold too.
    """
    capacity = capacity.at_cpu_limit(values.cpu_limit_milli)
    model = ServiceModel.from_capacity(capacity, values.cpu_limit_milli)
    hold = model_hold_seconds(values, capacity)
    needed_peak = model.replicas_needed(float(trace.rps.max()), slo_p99_ms)
    max_replicas = max(values.autoscaling.max_replicas, math.ceil(needed_peak * 1.5))
    floor_load = float(trace.rps.min())
    windows = steepest_windows(trace)
    whole = windows == [slice(0, trace.seconds)]
    notes: list[str] = []
    evaluated = 0
    best: tuple[float, Candidate, SimulationResult] | None = None

    def run(candidate: Candidate, sub: Trace) -> SimulationResult:
        nonlocal evaluated
        evaluated += 1
        chart = values.model_copy(update={"autoscaling": candidate.autoscaling})
        steady = math.ceil(sub.rps[0] / (candidate.utilization * model.replica_rps))
        start = min(max(steady, candidate.min_replicas), max_replicas)
        start_params = replace(params, initial_replicas=start, initial_model_replicas=None)
        return simulate(sub, chart, capacity, start_params)

    def on_windows(candidate: Candidate) -> SimulationResult | None:
        result = None
        for window in windows:
            result = run(candidate, _sub_trace(trace, window))
            if not feasible(result, model, slo_p99_ms, deadline_s, model_slo_ms):
                return None
        return result

    def estimate(utilization: float, minimum: int) -> float:
        steady = np.ceil(trace.rps / (utilization * model.replica_rps))
        return float(np.clip(steady, minimum, max_replicas).sum()) / 3600

    for fast in (True, False):  # on equal cost, prefer the faster scale-up
        for utilization in UTILIZATION_STEPS:
            low = max(1, math.ceil(floor_load / (utilization * model.replica_rps)))
            high = max(low, needed_peak)
            if best is not None and estimate(utilization, low) >= best[0]:
                continue
            if evaluated >= budget:
                notes.append(f"search stopped after {evaluated} replays (budget {budget})")
                break
            make = _maker(values, model, utilization, max_replicas, fast, hold)

            def check(
                minimum: int, make: Callable[[int], Candidate] = make
            ) -> SimulationResult | None:
                return on_windows(make(minimum))

            found = smallest_feasible(low, high, check)
            if found is None:
                continue
            minimum, result = found
            candidate = make(minimum)
            if not whole:
                result = run(candidate, trace)
                if not feasible(result, model, slo_p99_ms, None, model_slo_ms):
                    continue
            if best is None or result.replica_hours < best[0]:
                best = (result.replica_hours, candidate, result)
            if progress:
                progress(
                    f"u={utilization:.2f} fast_scale_up={fast}: minReplicas {minimum}, "
                    f"{result.replica_hours:.1f} replica-hours"
                )
    if best is None:
        notes.append("no candidate met the SLO; raise maxReplicas or per-replica capacity")
        return Recommendation(None, None, evaluated, tuple(notes))
    if best[1].min_replicas >= needed_peak:
        notes.append(
            f"only a warm fleet of {best[1].min_replicas} replicas (the peak's need) met the "
            "SLO: the load grows faster than pods can be added; raise minReplicas for the busy "
            "period (for example on a schedule) rather than relying on the HPA"
        )
    return Recommendation(best[1], best[2], evaluated, tuple(notes))


def model_hold_seconds(values: ChartValues, capacity: Capacity) -> float:
    """Mean seconds a request waits on the model tier when it runs at its target: ``share``
    x a call's mean latency (0 without a model tier)."""
    if capacity.model_server is None:
        return 0.0
    tier = ModelServerModel.from_capacity(capacity.model_server)
    target = values.model_server.autoscaling.target_requests_per_replica
    return tier.share * tier.latency_ms(rho_at_target(tier, target))[2] / 1000


def _maker(
    values: ChartValues,
    model: ServiceModel,
    utilization: float,
    max_replicas: int,
    fast: bool,
    hold: float = 0.0,
) -> Callable[[int], Candidate]:
    def make(minimum: int) -> Candidate:
        block = candidate_values(
            values, model, utilization, minimum, max_replicas, fast_scale_up=fast, hold_seconds=hold
        )
        return Candidate(utilization, minimum, fast, block)

    return make


T = TypeVar("T")


def smallest_feasible(
    low: int, high: int, check: Callable[[int], T | None]
) -> tuple[int, T] | None:
    """Bisection for the smallest ``m`` in [low, high] whose ``check`` passes (returns not
    None), with what it returned; None when not even ``high`` passes. ``check`` must be
    monotone: whatever passes at ``m`` passes above it."""
    top = check(high)
    if top is None:
        return None
    found = (high, top)
    lo, hi = low, high - 1
    while lo <= hi:
        mid = (lo + hi) // 2
        result = check(mid)
        if result is None:
            lo = mid + 1
        else:
            found = (mid, result)
            hi = mid - 1
    return found
