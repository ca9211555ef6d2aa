"""What a replay means for the model tier: its SLO, breaches by tier, cost and conflicts.

The model tier's SLO is on a model call's p99 (wait for a slot + prefill + decode); by
default ``seconds_per_call`` plus the API's SLO, i.e. at the 99th percentile a call may
wait for a slot as long as the API's whole SLO. A second breaches in the API tier when
the API's own p99 is over its SLO or the API drops requests, and in the model tier when
a call's p99 is over the model SLO or calls fail (no ready replica, or waiting past the
model call's timeout).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ragtide.planner.analysis import scale_up_time
from ragtide.planner.capacity import ModelServerCapacity
from ragtide.planner.hpa import ControllerConfig
from ragtide.planner.model_replay import ModelTierSeries, model_hpa_spec, steady_model_replicas
from ragtide.planner.model_tier import ModelServerModel
from ragtide.planner.queueing import RHO_MAX, ServiceModel
from ragtide.planner.simulate import SimulationParams, SimulationResult
from ragtide.planner.traffic import surge_start
from ragtide.planner.values import ChartValues

__all__ = [
    "BreachInterval",
    "ModelTierSummary",
    "api_breaches",
    "breach_intervals",
    "default_model_slo_ms",
    "model_breaches",
    "model_conflicts",
    "rho_at_target",
    "summarize_model",
]


@dataclass(frozen=True, slots=True)
class BreachInterval:
    """Consecutive seconds over the SLO, and the tier that caused them (``api``,
    ``model`` or ``api+model``)."""

    start: int
    end: int
    tier: str


@dataclass(frozen=True, slots=True)
class ModelTierSummary:
    """The model tier's numbers in a plan; surge times count from the surge's start."""

    slo_p99_ms: float
    seconds_per_call_ms: float
    replica_calls_per_second: float
    replica_hours: float
    peak_calls_per_second: float
    peak_needed_replicas: int
    breach_seconds: int
    dropped_calls: float
    max_p99_ms: float
    max_replicas: int
    surge_needed: int | None
    surge_ready_after: int | None


def default_model_slo_ms(capacity: ModelServerCapacity, slo_p99_ms: float) -> float:
    """A call's own prefill and decode, plus the API's SLO as the most it may wait."""
    return 1000 * capacity.seconds_per_call + slo_p99_ms


def api_breaches(result: SimulationResult, slo_p99_ms: float) -> np.ndarray:
    p99 = np.nan_to_num(result.p99_ms, nan=math.inf)
    breaches: np.ndarray = (p99 > slo_p99_ms) | (result.dropped > 0)
    return breaches


def model_breaches(series: ModelTierSeries, slo_p99_ms: float) -> np.ndarray:
    """Seconds whose model calls were over the SLO, or failed (NaN p99 with calls: none
    was ready)."""
    p99 = np.where(series.calls > 0, np.nan_to_num(series.p99_ms, nan=math.inf), 0.0)
    breaches: np.ndarray = (p99 > slo_p99_ms) | (series.dropped > 1e-9)
    return breaches


def breach_intervals(
    result: SimulationResult, slo_p99_ms: float, model_slo_ms: float
) -> list[BreachInterval]:
    """Runs of breaching seconds, each with the tier (or tiers) that breached."""
    api = api_breaches(result, slo_p99_ms)
    model = (
        model_breaches(result.model, model_slo_ms)
        if result.model is not None
        else np.zeros_like(api)
    )
    labels = np.where(api & model, 3, np.where(model, 2, np.where(api, 1, 0)))
    names = {1: "api", 2: "model", 3: "api+model"}
    found: list[BreachInterval] = []
    start = 0
    for t in range(1, labels.size + 1):
        if t == labels.size or labels[t] != labels[start]:
            if labels[start]:
                found.append(BreachInterval(start, t - 1, names[int(labels[start])]))
            start = t
    return found


def summarize_model(
    result: SimulationResult, model: ModelServerModel, model_slo_ms: float
) -> ModelTierSummary | None:
    """The model tier's cost, breaches and surge; ``None`` without a model tier."""
    series = result.model
    if series is None:
        return None
    load = result.load_rps
    peak_calls = float(load.max()) * model.share
    p99 = np.nan_to_num(series.p99_ms, nan=math.inf)
    surge_needed = ready_after = None
    start = surge_start(load)
    if start is not None:
        surge_needed = model.replicas_needed(float(load[start:].max()), model_slo_ms)
        ready = np.flatnonzero(series.replicas_ready[start:] >= surge_needed)
        ready_after = int(ready[0]) if ready.size else None
    return ModelTierSummary(
        slo_p99_ms=model_slo_ms,
        seconds_per_call_ms=1000 * model.seconds_per_call,
        replica_calls_per_second=model.replica_calls_per_second,
        replica_hours=series.replica_hours,
        peak_calls_per_second=peak_calls,
        peak_needed_replicas=model.replicas_needed(float(load.max()), model_slo_ms),
        breach_seconds=int(model_breaches(series, model_slo_ms).sum()),
        dropped_calls=float(series.dropped.sum()),
        max_p99_ms=float(p99[series.calls > 0].max()) if (series.calls > 0).any() else 0.0,
        max_replicas=int(series.replicas_desired.max()),
        surge_needed=surge_needed,
        surge_ready_after=ready_after,
    )


def rho_at_target(model: ModelServerModel, target: float) -> float:
    """The utilization at which a replica holds ``target`` running + waiting calls."""
    if model.in_system_per_replica(RHO_MAX) <= target:
        return RHO_MAX
    lo, hi = 0.0, RHO_MAX
    for _ in range(50):
        mid = (lo + hi) / 2
        if model.in_system_per_replica(mid) <= target:
            lo = mid
        else:
            hi = mid
    return lo


def _rise_seconds(load: np.ndarray, start: int) -> int:
    """Seconds from a surge's start until the load first reaches 95 % of its peak."""
    peak = float(load[start:].max())
    return max(1, int(np.flatnonzero(load[start:] >= 0.95 * peak)[0]))


def model_conflicts(
    values: ChartValues,
    capacity: ModelServerCapacity,
    api: ServiceModel,
    *,
    load: np.ndarray,
    slo_p99_ms: float,
    model_slo_ms: float,
    params: SimulationParams,
    config: ControllerConfig | None = None,
) -> tuple[str, ...]:
    """The model tier's settings that cannot deliver what the trace needs, in sentences."""
    model = ModelServerModel.from_capacity(capacity)
    chart = values.model_server
    scaling = chart.autoscaling
    found: list[str] = []
    peak = float(load.max())
    needed = model.replicas_needed(peak, model_slo_ms)
    calls = peak * model.share
    one = f"one replica: {model.replica_calls_per_second:.2f} calls/s"
    if not chart.enabled:
        found.append(
            "modelServer.enabled is false: the chart renders no model server; the replay "
            "scales the model tier of capacity.json with the modelServer.* values as if it did."
        )
    top = scaling.max_replicas if scaling.enabled else chart.replica_count
    key = "maxReplicas" if scaling.enabled else "replicaCount"
    if needed > top:
        found.append(
            f"model server {key} {top} cannot hold {peak:g} turns/s ({calls:g} model calls/s): "
            f"needs {needed} ({one}, p99 of a call <= {model_slo_ms:.0f} ms)."
        )
    pipeline = params.pipeline
    lag = pipeline.scrape_interval + pipeline.hpa_sync_period + params.pod_pending_seconds
    start = surge_start(load)
    if scaling.enabled and start is not None:
        before = steady_model_replicas(chart, model, float(load[max(start - 1, 0)]))
        surge_need = model.replicas_needed(float(load[start:].max()), model_slo_ms)
        rise = _rise_seconds(load, start)
        if surge_need > before and model.startup_seconds + lag > rise:
            also = " (and maxReplicas with it)" if surge_need > top else ""
            found.append(
                f"model pods take {model.startup_seconds:g} s to start (+{lag:g} s to see the "
                f"load and sync), the surge reaches its peak in {rise} s: raise "
                f"modelServer.autoscaling.minReplicas to {surge_need}{also} for the busy period."
            )
        best = scale_up_time(model_hpa_spec(chart), before, min(surge_need, top), config)
        if best is not None and best > model.startup_seconds + lag:
            found.append(
                f"modelServer.autoscaling.behavior.scaleUp takes {before} to "
                f"{min(surge_need, top)} model replicas in {best:.0f} s at best, longer than "
                f"a pod takes to load ({model.startup_seconds:g} s): the policy is the "
                "bottleneck."
            )
    if scaling.enabled:
        rho = rho_at_target(model, scaling.target_requests_per_replica)
        p99 = model.latency_ms(rho)[1]
        if p99 > model_slo_ms:
            fit = math.floor(10 * model.in_system_per_replica(model.max_rho_for(model_slo_ms)))
            found.append(
                f"modelServer.autoscaling.targetRequestsPerReplica "
                f"{scaling.target_requests_per_replica:g} keeps a replica {rho:.0%} busy, where "
                f"a call's p99 is {p99:.0f} ms (SLO {model_slo_ms:.0f} ms): lower it to "
                f"{max(fit, 1) / 10:g}."
            )
    found.extend(_measured_mismatch(values, capacity))
    found.extend(_api_inflight(values, api, model, peak, slo_p99_ms))
    return tuple(found)


def _measured_mismatch(values: ChartValues, capacity: ModelServerCapacity) -> list[str]:
    chart = values.model_server
    if chart.engine != "llamacpp":
        return []
    found = []
    if chart.llamacpp.parallel != capacity.parallel:
        found.append(
            f"capacity.json's model_server has parallel {capacity.parallel}, the chart runs "
            f"modelServer.llamacpp.parallel {chart.llamacpp.parallel}: the speed per slot "
            "changes with it, measure again."
        )
    threads = chart.llamacpp.threads
    if capacity.threads is not None and threads is not None and threads != capacity.threads:
        found.append(
            f"capacity.json's model_server has threads {capacity.threads:g}, the chart runs "
            f"modelServer.llamacpp.threads {threads}: measure again."
        )
    return found


def _api_inflight(
    values: ChartValues,
    api: ServiceModel,
    model: ModelServerModel,
    peak: float,
    slo_p99_ms: float,
) -> list[str]:
    """The API's in-flight target against the turns it holds while the model answers."""
    inflight = values.autoscaling.inflight_requests
    needed = api.replicas_needed(peak, slo_p99_ms)
    if not inflight.enabled or needed <= 0 or needed >= 10**9:
        return []
    per_pod = peak / needed
    own = per_pod * api.latency(per_pod / api.replica_rps)[2] / 1000
    model_rho = rho_at_target(model, values.model_server.autoscaling.target_requests_per_replica)
    waiting = per_pod * model.share * model.latency_ms(model_rho)[2] / 1000
    held = own + waiting
    if held <= 1.1 * inflight.average_value:  # within the HPA's tolerance
        return []
    replicas = math.ceil(needed * held / inflight.average_value)
    return [
        f"autoscaling.inflightRequests.averageValue {inflight.average_value:g} counts the "
        f"turns waiting on the model: at the peak an API replica holds {held:.1f} ({own:.1f} "
        f"of its own work, {waiting:.1f} waiting on the model), so the API scales to "
        f"{replicas} replicas on in-flight alone where its own work needs {needed}; raise it "
        f"to {math.ceil(held * 10) / 10:g}."
    ]
