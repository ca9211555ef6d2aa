"""Search for ``modelServer.autoscaling`` values that meet the model SLO at the lowest cost.

The model tier is searched on its own: its calls are ``share`` of the load as offered
(the API's recommendation then serves it without drops), replayed by
``model_replay.replay_model_tier``. The search space mirrors the API's:

* **one utilization knob** ``u``: the fraction of the highest utilization at which a
  call's p99 still meets the model SLO; ``targetRequestsPerReplica`` is the running +
  waiting calls a replica holds there (Little's law);
* **minReplicas** from the quietest second's need up to the peak's (bisection:
  feasibility grows with it);
* **behavior**: the values' own, or a fast scale-up (no window, +100 % or +4 pods per
  15 s) with the values' scale-down.

A candidate is feasible when no second breaches the model SLO and no call fails; the
cheapest by model replica-hours wins (on a tie, the faster scale-up). Long traces are
first replayed on their steepest windows, the winner confirmed on the whole trace.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from ragtide.planner.behavior_values import BehaviorValues
from ragtide.planner.model_analysis import model_breaches
from ragtide.planner.model_replay import ModelTierSeries, replay_model_tier
from ragtide.planner.model_tier import ModelServerModel
from ragtide.planner.model_values import ModelAutoscalingValues, ModelServerValues
from ragtide.planner.recommend import FAST_SCALE_UP, smallest_feasible, steepest_windows
from ragtide.planner.simulate import SimulationParams
from ragtide.planner.traffic import Trace

__all__ = ["MODEL_UTILIZATION_STEPS", "ModelCandidate", "ModelRecommendation", "recommend_model"]

MODEL_UTILIZATION_STEPS = (0.9, 0.8, 0.7, 0.6, 0.5, 0.4)


@dataclass(frozen=True, slots=True)
class ModelCandidate:
    """One point of the model tier's search and the ``modelServer.autoscaling`` it makes."""

    utilization: float
    min_replicas: int
    fast_scale_up: bool
    autoscaling: ModelAutoscalingValues


@dataclass(frozen=True, eq=False)
class ModelRecommendation:
    """The chosen candidate and its whole-trace replay, or ``None`` when nothing fits."""

    candidate: ModelCandidate | None
    series: ModelTierSeries | None
    evaluated: int
    notes: tuple[str, ...]


def _candidate(
    values: ModelServerValues,
    model: ModelServerModel,
    rho: float,
    minimum: int,
    maximum: int,
    fast: bool,
) -> ModelAutoscalingValues:
    current = values.autoscaling
    target = max(math.floor(10 * model.in_system_per_replica(rho)) / 10, 0.1)
    behavior = current.behavior or BehaviorValues()
    if fast:
        behavior = BehaviorValues(scaleUp=FAST_SCALE_UP, scaleDown=behavior.scale_down)
    return current.model_copy(
        update={
            "enabled": True,
            "min_replicas": minimum,
            "max_replicas": max(maximum, minimum),
            "target_requests_per_replica": target,
            "behavior": behavior,
        }
    )


def recommend_model(
    trace: Trace,
    values: ModelServerValues,
    model: ModelServerModel,
    params: SimulationParams,
    *,
    model_slo_ms: float,
    budget: int = 60,
) -> ModelRecommendation:
    """Find the cheapest feasible ``modelServer.autoscaling`` (see the module docstring)."""
    rho_max = model.max_rho_for(model_slo_ms)
    if rho_max <= 0:
        note = (
            f"a call alone takes {1000 * model.seconds_per_call:.0f} ms, over the model SLO "
            f"({model_slo_ms:.0f} ms): no number of replicas meets it"
        )
        return ModelRecommendation(None, None, 0, (note,))
    needed_peak = max(1, model.replicas_needed(float(trace.rps.max()), model_slo_ms))
    maximum = max(values.autoscaling.max_replicas, math.ceil(needed_peak * 1.5))
    quiet = max(1, model.replicas_needed(float(trace.rps.min()), model_slo_ms))
    windows = steepest_windows(trace)
    whole = windows == [slice(0, trace.seconds)]
    evaluated = 0
    notes: list[str] = []
    best: tuple[float, ModelCandidate, ModelTierSeries] | None = None

    def run(block: ModelAutoscalingValues, rps: np.ndarray) -> ModelTierSeries:
        nonlocal evaluated
        evaluated += 1
        return replay_model_tier(
            rps,
            values.model_copy(update={"autoscaling": block}),
            model,
            pipeline=params.pipeline,
            controller=params.controller,
            pending_seconds=params.pod_pending_seconds,
            warmup_seconds=params.warmup_seconds,
        )

    def estimate(rho: float, minimum: int) -> float:
        steady = np.ceil(trace.rps * model.share / (rho * model.replica_calls_per_second))
        return float(np.clip(steady, minimum, maximum).sum()) / 3600

    def ok(series: ModelTierSeries) -> bool:
        return not bool(model_breaches(series, model_slo_ms).any())

    for fast in (True, False):
        for u in MODEL_UTILIZATION_STEPS:
            if evaluated >= budget:
                notes.append(f"model search stopped after {evaluated} replays (budget {budget})")
                break
            rho = u * rho_max
            if best is not None and estimate(rho, quiet) >= best[0]:
                continue  # even a perfect follower of the load at u costs more

            def make(minimum: int, rho: float = rho, fast: bool = fast) -> ModelAutoscalingValues:
                return _candidate(values, model, rho, minimum, maximum, fast)

            def check(
                minimum: int, make: Callable[[int], ModelAutoscalingValues] = make
            ) -> ModelTierSeries | None:
                series = None
                for window in windows:
                    series = run(make(minimum), trace.rps[window])
                    if not ok(series):
                        return None
                return series

            found = smallest_feasible(quiet, max(quiet, needed_peak), check)
            if found is None:
                continue
            minimum, series = found
            if not whole:
                series = run(make(minimum), trace.rps)
                if not ok(series):
                    continue
            if best is None or series.replica_hours < best[0] - 1e-9:
                best = (
                    series.replica_hours,
                    ModelCandidate(u, minimum, fast, make(minimum)),
                    series,
                )
    if best is None:
        notes.append("no model tier setting met the model SLO; raise maxReplicas or its speed")
        return ModelRecommendation(None, None, evaluated, tuple(notes))
    if best[1].min_replicas >= needed_peak:
        notes.append(
            f"only a warm model tier of {best[1].min_replicas} replicas (the peak's need) met "
            f"the SLO: a model pod loads for {model.startup_seconds:g} s, longer than the "
            "load takes to rise; keep them for the busy period"
        )
    return ModelRecommendation(best[1], best[2], evaluated, tuple(notes))
