"""The model server tier in the replay: its pods, its autoscaler and its per-second series.

The chart scales the model server with a KEDA ScaledObject (``modelServer.autoscaling``):
one Prometheus trigger, ``sum(requests_processing + requests_deferred)`` over the model
pods (vLLM: running + waiting), ``metricType: AverageValue`` with
``targetRequestsPerReplica`` per replica, and ``behavior`` passed to the HPA KEDA creates.
With ``minReplicas >= 1`` (the chart's schema) KEDA's own loop never acts, so the HPA
decides: an External AverageValue metric, synced with the API's HPA by the same
controller. Prometheus scrapes the model pods every ``scrape_interval``; KEDA queries it
on each HPA sync, so the HPA sees the tier's requests at the last scrape.

New model pods are Pending, then load the model for ``startup_seconds`` (minutes) before
they are Ready and get calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ragtide.planner.adapter import PipelineParams, last_tick
from ragtide.planner.fleet import Fleet, ScaleDecision, scale_decision
from ragtide.planner.hpa import (
    ControllerConfig,
    ControllerState,
    HPASpec,
    MetricSpec,
    Snapshot,
    check_spec,
    reconcile,
)
from ragtide.planner.model_tier import ModelSecond, ModelServerModel
from ragtide.planner.model_values import ModelServerValues
from ragtide.planner.queueing import RHO_MAX
from ragtide.planner.values import behavior_spec

__all__ = [
    "MODEL_METRIC_NAME",
    "ModelTierReplay",
    "ModelTierSeries",
    "model_hpa_spec",
    "replay_model_tier",
    "steady_model_replicas",
]

#: the External metric name KEDA gives its first (prometheus) trigger
MODEL_METRIC_NAME = "s0-prometheus"


def model_hpa_spec(values: ModelServerValues) -> HPASpec:
    """The HPA KEDA creates for the model server (target in milli-requests per replica)."""
    scaling = values.autoscaling
    target = round(scaling.target_requests_per_replica * 1000)
    return HPASpec(
        max_replicas=scaling.max_replicas,
        metrics=(MetricSpec.external_average(MODEL_METRIC_NAME, target),),
        min_replicas=scaling.min_replicas,
        behavior=behavior_spec(scaling.behavior),
    )


def steady_model_replicas(values: ModelServerValues, model: ModelServerModel, rps: float) -> int:
    """Replicas the autoscaler holds at a steady API load of ``rps`` (the initial fleet).

    The fewest between min and max whose requests per replica stay within the target;
    ``replicaCount`` when autoscaling is off.
    """
    scaling = values.autoscaling
    if not scaling.enabled:
        return values.replica_count
    calls = model.share * rps
    for replicas in range(scaling.min_replicas, scaling.max_replicas + 1):
        rho = calls / (replicas * model.replica_calls_per_second)
        if rho < RHO_MAX and (
            model.in_system_per_replica(rho) <= scaling.target_requests_per_replica
        ):
            return replicas
    return scaling.max_replicas


@dataclass(frozen=True, eq=False)
class ModelTierSeries:
    """The model tier's per-second series (numpy arrays of the trace's length).

    ``calls`` arrive from the API (``share`` x the turns it served); ``in_system`` is
    running plus waiting calls over the whole tier, the sum the autoscaler reads;
    ``p50_ms``/``p99_ms`` are a call's latency (wait + prefill + decode; NaN without a
    ready replica); ``busy_slots`` is the fraction of the ready slots in use.
    """

    calls: np.ndarray
    served: np.ndarray
    dropped: np.ndarray
    backlog: np.ndarray
    replicas_desired: np.ndarray
    replicas_ready: np.ndarray
    in_system: np.ndarray
    busy_slots: np.ndarray
    p50_ms: np.ndarray
    p99_ms: np.ndarray
    seconds_per_call: float
    replica_calls_per_second: float
    target_requests_per_replica: float
    notes: tuple[str, ...] = field(default=())

    @property
    def replica_hours(self) -> float:
        """Cost: pod-hours of the model Deployment (every created pod counts)."""
        return float(self.replicas_desired.sum()) / 3600

    @property
    def in_system_per_replica(self) -> np.ndarray:
        """The autoscaler's metric as it is (not as last scraped): requests per replica."""
        per: np.ndarray = self.in_system / np.maximum(self.replicas_desired, 1)
        return per


class ModelTierReplay:
    """The model Deployment, its KEDA-made HPA, and the calls waiting for a slot."""

    def __init__(
        self,
        values: ModelServerValues,
        model: ModelServerModel,
        *,
        length: int,
        initial_replicas: int,
        pipeline: PipelineParams,
        controller: ControllerConfig,
        pending_seconds: float,
    ) -> None:
        self.values, self.model = values, model
        self.spec = model_hpa_spec(values)
        if values.autoscaling.enabled:
            check_spec(self.spec)
        self.pipeline, self.controller = pipeline, controller
        self.fleet = Fleet("model", pending_seconds, model.startup_seconds)
        for _ in range(initial_replicas):
            self.fleet.add(0.0, warm=True)
        self.state = ControllerState()
        self.timeout = values.timeout_seconds
        self.backlog = 0.0
        self.history: list[float] = []
        self.out = {
            k: np.zeros(length)
            for k in (
                "calls",
                "served",
                "dropped",
                "backlog",
                "desired",
                "ready",
                "in_system",
                "busy",
                "p50",
                "p99",
            )
        }

    def _metric(self, now: int) -> int:
        """The tier's running + waiting requests at the last scrape, in milli."""
        pipeline = self.pipeline
        last = int(last_tick(now, pipeline.scrape_interval, pipeline.scrape_offset))
        if last < 1 or last - 1 >= len(self.history):
            return 0
        return round(1000 * self.history[last - 1])

    def tick(
        self, i: int, t: int, sync: bool, calls: float, decisions: list[ScaleDecision]
    ) -> ModelSecond:
        """One second: the HPA's sync (on ``sync``), then the ready pods serve ``calls``."""
        if sync and self.values.autoscaling.enabled:
            pods = len(self.fleet.pods)
            snapshot = Snapshot(
                now=float(i),
                spec_replicas=pods,
                status_replicas=pods,
                external_metrics={MODEL_METRIC_NAME: (self._metric(i),)},
            )
            result = reconcile(self.spec, snapshot, self.state, self.controller)
            self.state = result.state
            if result.rescale:
                decisions.append(scale_decision(t, "model", pods, result))
                self.fleet.resize(result.desired_replicas, i)
        ready = self.fleet.ready(i)
        second = self.model.step(calls, ready, self.backlog, self.timeout)
        self.backlog = second.backlog
        self.history.append(second.in_system)
        if t >= 0:
            out = self.out
            out["calls"][t] = calls
            out["served"][t] = second.served
            out["dropped"][t] = second.dropped
            out["backlog"][t] = second.backlog
            out["desired"][t] = len(self.fleet.pods)
            out["ready"][t] = ready
            out["in_system"][t] = second.in_system
            out["busy"][t] = second.busy_slots
            out["p50"][t] = second.p50_ms
            out["p99"][t] = second.p99_ms
        return second

    def series(self) -> ModelTierSeries:
        out = self.out
        return ModelTierSeries(
            calls=out["calls"],
            served=out["served"],
            dropped=out["dropped"],
            backlog=out["backlog"],
            replicas_desired=out["desired"],
            replicas_ready=out["ready"],
            in_system=out["in_system"],
            busy_slots=out["busy"],
            p50_ms=out["p50"],
            p99_ms=out["p99"],
            seconds_per_call=self.model.seconds_per_call,
            replica_calls_per_second=self.model.replica_calls_per_second,
            target_requests_per_replica=self.values.autoscaling.target_requests_per_replica,
        )


def replay_model_tier(
    rps: np.ndarray,
    values: ModelServerValues,
    model: ModelServerModel,
    *,
    pipeline: PipelineParams,
    controller: ControllerConfig,
    pending_seconds: float,
    warmup_seconds: int = 300,
    initial_replicas: int | None = None,
) -> ModelTierSeries:
    """The model tier alone, its calls ``share`` x the API load as offered (the API is
    assumed to serve it): what the model tier's recommendation replays."""
    if initial_replicas is None:
        initial_replicas = steady_model_replicas(values, model, float(rps[0]))
    replay = ModelTierReplay(
        values,
        model,
        length=rps.size,
        initial_replicas=initial_replicas,
        pipeline=pipeline,
        controller=controller,
        pending_seconds=pending_seconds,
    )
    decisions: list[ScaleDecision] = []
    first = float(rps[0]) * model.share
    for i in range(warmup_seconds + rps.size):
        t = i - warmup_seconds
        tick = last_tick(t, pipeline.hpa_sync_period, pipeline.hpa_sync_offset)
        calls = first if t < 0 else float(rps[t]) * model.share
        replay.tick(i, t, t >= 0 and tick == t, calls, decisions)
    return replay.series()
