"""The replay: one second at a time, the fleet serves the trace and the autoscalers react.

Each second ``t``:

1. on an HPA sync tick, the API HPA reconciles (``hpa.reconcile``) against what the
   metrics pipeline (``adapter``) shows at ``t``, and the Deployment is resized: new pods
   are Pending for ``pod_pending_seconds``, then start and become Ready after the
   measured ``startup_seconds``; removed pods stop serving at once (not-ready first,
   then newest);
2. on KEDA's polling tick the worker's activation/cooldown runs; on HPA ticks the
   worker's KEDA-generated HPA reconciles;
3. the ready API pods serve the second's load (``queueing.ServiceModel.step``) and the
   ready workers drain the queue;
4. with a ``model_server`` in the capacity, the model tier (``model_replay``) syncs its
   own HPA on the same ticks and serves ``share`` of the turns the API served; every
   call holds its turn's API slot until the model answers, so the calls in the model
   tier (running and waiting) count in the API pods' in-flight requests too.

Before ``t = 0`` a warm-up (load held at the first second's rate, replicas fixed at
the initial count, autoscalers off) fills the metric histories, so the first sync
sees a steady state. The HPA starts at ``t = 0`` with an empty memory (first sight).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np

from ragtide.planner.adapter import (
    PipelineParams,
    cpu_sample,
    gauge_sample,
    last_tick,
    rate_sample,
)
from ragtide.planner.capacity import Capacity
from ragtide.planner.cron import cron_metric_values
from ragtide.planner.fleet import Fleet, ScaleDecision, scale_decision
from ragtide.planner.hpa import (
    ControllerConfig,
    ControllerState,
    HPASpec,
    PodPhase,
    PodSpec,
    ResourceSample,
    Snapshot,
    reconcile,
)
from ragtide.planner.keda import (
    METRIC_NAME,
    KedaState,
    QueueStatus,
    keda_hpa_spec,
    metric_and_activity,
    publish_rate,
    scale_loop,
)
from ragtide.planner.model_replay import ModelTierReplay, ModelTierSeries, steady_model_replicas
from ragtide.planner.model_tier import ModelServerModel
from ragtide.planner.queueing import ServiceModel
from ragtide.planner.traffic import Trace
from ragtide.planner.values import ChartValues, hpa_spec

__all__ = [
    "ScaleDecision",
    "SimulationParams",
    "SimulationResult",
    "simulate",
]


@dataclass(frozen=True, slots=True)
class SimulationParams:
    """Replay settings; ``None`` initial replicas means a 70 %-utilised fleet for second 0."""

    pipeline: PipelineParams = field(default_factory=PipelineParams)
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    pod_pending_seconds: float = 5.0
    request_timeout_seconds: float = 30.0
    warmup_seconds: int = 300
    initial_replicas: int | None = None
    initial_worker_replicas: int = 0
    initial_model_replicas: int | None = None  # None: the autoscaler's steady state


@dataclass(frozen=True, eq=False)
class SimulationResult:
    """Per-second series (numpy arrays of the trace's length) and the scale decisions.

    ``replicas_desired`` is the Deployment's ``spec.replicas`` after the second's sync;
    ``p50_ms``/``p99_ms`` are the latency of requests arriving in that second (NaN when
    no replica was ready); ``cpu_utilization`` is the true mean CPU of the ready pods
    in percent of their request.
    """

    trace: Trace
    load_rps: np.ndarray
    served_rps: np.ndarray
    dropped: np.ndarray
    backlog: np.ndarray
    replicas_desired: np.ndarray
    replicas_ready: np.ndarray
    cpu_utilization: np.ndarray
    inflight_per_pod: np.ndarray
    p50_ms: np.ndarray
    p99_ms: np.ndarray
    queue_length: np.ndarray | None
    worker_desired: np.ndarray | None
    worker_ready: np.ndarray | None
    decisions: tuple[ScaleDecision, ...]
    replica_rps: float
    notes: tuple[str, ...] = field(default=())
    model: ModelTierSeries | None = None

    @property
    def replica_hours(self) -> float:
        """Cost: pod-hours of the API Deployment (every created pod counts)."""
        return float(self.replicas_desired.sum()) / 3600

    @property
    def worker_replica_hours(self) -> float:
        return 0.0 if self.worker_desired is None else float(self.worker_desired.sum()) / 3600


def _initial_replicas(
    spec: HPASpec, trace: Trace, model: ServiceModel, params: SimulationParams
) -> int:
    if params.initial_replicas is not None:
        return params.initial_replicas
    guess = math.ceil(trace.rps[0] / (0.7 * model.replica_rps)) if trace.rps[0] > 0 else 0
    return min(max(guess, spec.min_replicas), spec.max_replicas)


def simulate(
    trace: Trace,
    values: ChartValues,
    capacity: Capacity,
    params: SimulationParams | None = None,
    *,
    spec: HPASpec | None = None,
) -> SimulationResult:
    """Replay ``trace`` through the chart's autoscaling (``spec`` overrides the rendered HPA)."""
    params = params or SimulationParams()
    capacity = capacity.at_cpu_limit(values.cpu_limit_milli)
    model = ServiceModel.from_capacity(capacity, values.cpu_limit_milli)
    spec = spec or hpa_spec(values)
    scaling = values.autoscaling
    rate_name = scaling.request_rate.metric_name
    inflight_name = scaling.inflight_requests.metric_name
    warm, length = params.warmup_seconds, trace.seconds
    total = warm + length
    load = np.concatenate([np.full(warm, trace.rps[0]), trace.rps])
    arrivals = None
    if trace.queue_arrivals is not None and values.keda.enabled:
        arrivals = np.concatenate([np.zeros(warm), trace.queue_arrivals])

    api = Fleet("api", params.pod_pending_seconds, capacity.replica.startup_seconds)
    for _ in range(_initial_replicas(spec, trace, model, params)):
        api.add(0.0, warm=True)
    state = ControllerState()
    cpu_prefix, served_prefix = [0.0], [0.0]
    inflight: list[float] = []
    out = {
        k: np.zeros(length)
        for k in (
            "served",
            "dropped",
            "backlog",
            "desired",
            "ready",
            "cpu",
            "inflight",
            "p50",
            "p99",
        )
    }
    decisions: list[ScaleDecision] = []
    backlog = 0.0
    pipeline = params.pipeline
    request = values.cpu_request_milli

    worker = _Worker(values, capacity, params, arrivals, warm) if arrivals is not None else None
    tier = _model_tier(values, capacity, params, trace)

    for i in range(total):
        t = i - warm
        sync = t >= 0 and last_tick(t, pipeline.hpa_sync_period, pipeline.hpa_sync_offset) == t
        if sync and scaling.enabled:
            snapshot = _snapshot(
                api,
                i,
                request,
                pipeline,
                cpu_prefix,
                served_prefix,
                inflight,
                model.startup_cpu_milli,
                rate_name,
                inflight_name,
            )
            if scaling.engine == "keda" and scaling.keda.schedules:
                crons = cron_metric_values(scaling, float(t))
                snapshot = dataclasses.replace(snapshot, external_metrics=crons)
            result = reconcile(spec, snapshot, state, params.controller)
            state = result.state
            if result.rescale:
                decisions.append(scale_decision(t, "api", len(api.pods), result))
                api.resize(result.desired_replicas, i)
        if worker is not None:
            worker.tick(i, t, sync, decisions)

        ready = api.ready(i)
        second = model.step(float(load[i]), ready, backlog, params.request_timeout_seconds)
        backlog = second.backlog
        per_pod = second.served / ready if ready else 0.0
        cpu_prefix.append(
            cpu_prefix[-1] + (second.cpu_per_pod_milli if ready else model.idle_cpu_milli)
        )
        served_prefix.append(served_prefix[-1] + per_pod)
        held = second.inflight_per_pod
        if tier is not None:  # turns waiting on the model hold their API slots
            call = tier.tick(i, t, sync, tier.model.share * second.served, decisions)
            held += call.in_system / ready if ready else 0.0
        inflight.append(held)
        if t >= 0:
            out["served"][t] = second.served
            out["dropped"][t] = second.dropped
            out["backlog"][t] = second.backlog
            out["desired"][t] = len(api.pods)
            out["ready"][t] = ready
            out["cpu"][t] = 100 * second.cpu_per_pod_milli / request if ready else 0.0
            out["inflight"][t] = held
            out["p50"][t] = second.p50_ms
            out["p99"][t] = second.p99_ms

    return SimulationResult(
        trace=trace,
        load_rps=trace.rps.astype(float),
        served_rps=out["served"],
        dropped=out["dropped"],
        backlog=out["backlog"],
        replicas_desired=out["desired"],
        replicas_ready=out["ready"],
        cpu_utilization=out["cpu"],
        inflight_per_pod=out["inflight"],
        p50_ms=out["p50"],
        p99_ms=out["p99"],
        queue_length=worker.queue_out if worker else None,
        worker_desired=worker.desired_out if worker else None,
        worker_ready=worker.ready_out if worker else None,
        decisions=tuple(decisions),
        replica_rps=model.replica_rps,
        model=tier.series() if tier is not None else None,
    )


def _model_tier(
    values: ChartValues, capacity: Capacity, params: SimulationParams, trace: Trace
) -> ModelTierReplay | None:
    """The model tier's replay when the capacity has one (``None`` otherwise)."""
    if capacity.model_server is None:
        return None
    model = ModelServerModel.from_capacity(capacity.model_server)
    initial = params.initial_model_replicas
    if initial is None:
        initial = steady_model_replicas(values.model_server, model, float(trace.rps[0]))
    return ModelTierReplay(
        values.model_server,
        model,
        length=trace.seconds,
        initial_replicas=initial,
        pipeline=params.pipeline,
        controller=params.controller,
        pending_seconds=params.pod_pending_seconds,
    )


def _snapshot(
    fleet: Fleet,
    now: int,
    cpu_request: int,
    pipeline: PipelineParams,
    cpu_prefix: list[float],
    served_prefix: list[float],
    inflight: list[float],
    startup_cpu: float,
    rate_name: str,
    inflight_name: str,
) -> Snapshot:
    pods, cpu, rates, gauges = [], {}, {}, {}
    for pod in fleet.pods:
        times = pod.times
        running, ready = now >= times.start, now >= times.ready_at
        pods.append(
            PodSpec(
                name=pod.name,
                phase=PodPhase.RUNNING if running else PodPhase.PENDING,
                ready=ready,
                start_time=times.start if running else None,
                ready_transition=times.ready_at if ready else times.start,
                container_requests={"app": {"cpu": cpu_request}},
            )
        )
        sample = cpu_sample(times, now, pipeline.metric_resolution, cpu_prefix, startup_cpu)
        if sample is not None:
            cpu[pod.name] = ResourceSample(
                {"app": sample[0]}, timestamp=sample[1], window=pipeline.metric_resolution
            )
        rate = rate_sample(times, now, pipeline, served_prefix)
        if rate is not None:
            rates[pod.name] = rate
        gauge = gauge_sample(times, now, pipeline, inflight)
        if gauge is not None:
            gauges[pod.name] = gauge
    return Snapshot(
        now=float(now),
        spec_replicas=len(fleet.pods),
        status_replicas=len(fleet.pods),
        pods=tuple(pods),
        resource_metrics={"cpu": cpu},
        pods_metrics={rate_name: rates, inflight_name: gauges},
    )


class _Worker:
    """The RabbitMQ worker: KEDA's loop, its HPA, and the queue the workers drain."""

    def __init__(
        self,
        values: ChartValues,
        capacity: Capacity,
        params: SimulationParams,
        arrivals: np.ndarray,
        warm: int,
    ) -> None:
        self.values, self.params, self.arrivals, self.warm = values.keda, params, arrivals, warm
        worker = capacity.worker
        self.rate = worker.messages_per_second if worker else 1.0
        self.fleet = Fleet(
            "worker", params.pod_pending_seconds, worker.startup_seconds if worker else 20.0
        )
        for _ in range(params.initial_worker_replicas):
            self.fleet.add(0.0, warm=True)
        self.spec = keda_hpa_spec(values.keda)
        self.hpa_state = ControllerState()
        self.keda_state = KedaState(created_at=float(warm))
        self.queue = 0.0
        self.cached = 0
        length = arrivals.size - warm
        self.queue_out = np.zeros(length)
        self.desired_out = np.zeros(length)
        self.ready_out = np.zeros(length)

    def tick(self, i: int, t: int, sync: bool, decisions: list[ScaleDecision]) -> None:
        keda = self.values
        status = QueueStatus(self.queue, publish_rate(self.arrivals, i - 1))
        metric, active = metric_and_activity(status, keda)
        if t >= 0 and t % keda.polling_interval == 0:
            self.cached = metric
            replicas, self.keda_state = scale_loop(
                len(self.fleet.pods), active, float(i), self.keda_state, keda
            )
            if replicas is not None and replicas != len(self.fleet.pods):
                reason = (
                    ("KEDA activation",) if replicas > len(self.fleet.pods) else ("KEDA cooldown",)
                )
                decisions.append(
                    ScaleDecision(t, "worker", len(self.fleet.pods), replicas, None, reason)
                )
                self.fleet.resize(replicas, i)
        if sync:
            value = self.cached if self.params.pipeline.keda_use_cached_metrics else metric
            snapshot = Snapshot(
                now=float(i),
                spec_replicas=len(self.fleet.pods),
                status_replicas=len(self.fleet.pods),
                external_metrics={METRIC_NAME: (value,)},
            )
            result = reconcile(self.spec, snapshot, self.hpa_state, self.params.controller)
            self.hpa_state = result.state
            if result.rescale:
                decisions.append(scale_decision(t, "worker", len(self.fleet.pods), result))
                self.fleet.resize(result.desired_replicas, i)
        ready = self.fleet.ready(i)
        self.queue = max(0.0, self.queue + float(self.arrivals[i]) - ready * self.rate)
        if t >= 0:
            self.queue_out[t] = self.queue
            self.desired_out[t] = len(self.fleet.pods)
            self.ready_out[t] = ready
