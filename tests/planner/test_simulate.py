"""The replay: steady states, pod start-up, KEDA, and conservation of requests."""

from __future__ import annotations

import numpy as np

from ragtide.planner.capacity import Capacity
from ragtide.planner.simulate import SimulationParams, simulate
from ragtide.planner.traffic import step
from ragtide.planner.values import ChartValues, load_values


def test_steady_load_within_tolerance_never_rescales(
    values: ChartValues, capacity: Capacity
) -> None:
    result = simulate(
        step(50, 50, duration=900), values, capacity, SimulationParams(initial_replicas=4)
    )
    assert [d for d in result.decisions if d.target == "api"] == []
    assert np.all(result.replicas_ready == 4)
    assert np.nanmax(result.p99_ms) < 800


def test_requests_are_served_dropped_or_waiting(values: ChartValues, capacity: Capacity) -> None:
    result = simulate(
        step(50, 200, at=60, duration=900), values, capacity, SimulationParams(initial_replicas=4)
    )
    offered = result.load_rps.sum()
    accounted = result.served_rps.sum() + result.dropped.sum() + result.backlog[-1]
    assert accounted == offered


def test_new_pods_serve_only_after_pending_and_startup(
    values: ChartValues, capacity: Capacity
) -> None:
    params = SimulationParams(initial_replicas=4, pod_pending_seconds=5)
    result = simulate(step(50, 200, at=60, duration=600), values, capacity, params)
    first = next(d for d in result.decisions if d.target == "api" and d.after > d.before)
    delay = 5 + capacity.replica.startup_seconds
    assert result.replicas_desired[first.t] == first.after
    assert result.replicas_ready[first.t + int(delay) - 1] == first.before
    assert result.replicas_ready[first.t + int(delay)] == first.after


def test_hpa_disabled_keeps_the_initial_fleet(capacity: Capacity) -> None:
    chart = load_values({"autoscaling": {"enabled": False}})
    result = simulate(
        step(50, 200, at=60, duration=300), chart, capacity, SimulationParams(initial_replicas=3)
    )
    assert result.decisions == () or all(d.target == "worker" for d in result.decisions)
    assert np.all(result.replicas_desired == 3)


def test_keda_activates_the_worker_and_cools_down(capacity: Capacity) -> None:
    chart = load_values({"worker": {"keda": {"cooldownPeriod": 60, "pollingInterval": 30}}})
    trace = step(50, 50, duration=600, queue_ratio=0.1)
    arrivals = trace.queue_arrivals
    assert arrivals is not None
    arrivals[300:] = 0  # the queue dries up half way
    result = simulate(trace, chart, capacity, SimulationParams(initial_replicas=4))
    assert result.worker_desired is not None and result.queue_length is not None
    assert result.worker_desired[0] == 0 and result.worker_desired[40] >= 1
    assert result.worker_desired[-1] == 0
    kinds = [d.reasons for d in result.decisions if d.target == "worker"]
    assert ("KEDA activation",) in kinds and ("KEDA cooldown",) in kinds
