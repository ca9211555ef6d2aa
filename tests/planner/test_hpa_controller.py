"""Acceptance examples of the issue, run through ``hpa.reconcile`` over time."""

from __future__ import annotations

from ragtide.planner.hpa import (
    ControllerState,
    HPASpec,
    MetricSpec,
    PodSpec,
    ResourceSample,
    Snapshot,
    reconcile,
)
from ragtide.planner.values import hpa_spec, load_values

CPU = {"app": {"cpu": 250}}


def _cpu_snapshot(replicas: int, percent: int, now: float = 1000.0) -> Snapshot:
    pods = tuple(PodSpec(f"p{i}", container_requests=CPU) for i in range(replicas))
    usage = 250 * percent // 100
    samples = {p.name: ResourceSample({"app": usage}, timestamp=now) for p in pods}
    return Snapshot(now, replicas, replicas, pods, resource_metrics={"cpu": samples})


def test_worked_example_4_replicas_at_90_percent_against_70_give_6() -> None:
    spec = HPASpec(max_replicas=20, metrics=(MetricSpec.cpu_utilization(70),), min_replicas=2)
    result = reconcile(spec, _cpu_snapshot(4, 90), ControllerState(recommendations=()))
    assert (result.desired_replicas, result.rescale) == (6, True)
    assert result.metrics[0].utilization == 90


def test_worked_example_ratio_within_tolerance_gives_no_change() -> None:
    spec = HPASpec(max_replicas=20, metrics=(MetricSpec.cpu_utilization(70),), min_replicas=2)
    result = reconcile(spec, _cpu_snapshot(4, 76), ControllerState(recommendations=()))
    assert (result.desired_replicas, result.rescale) == (4, False)
    assert result.conditions["AbleToScale"].reason == "ReadyForNewScale"


def _drive(
    spec: HPASpec, current: int, proposals: list[tuple[float, int]]
) -> list[tuple[float, int]]:
    """Reconcile every given time with an External AverageValue metric forcing the proposal."""
    state, changes = ControllerState(), []
    for now, proposal in proposals:
        snapshot = Snapshot(now, current, current, external_metrics={"queue": (proposal * 1000,)})
        result = reconcile(spec, snapshot, state)
        state = result.state
        if result.desired_replicas != current:
            changes.append((now, result.desired_replicas))
        current = result.desired_replicas
    return changes


def _chart_spec() -> HPASpec:
    """The chart's default behavior with one metric we can steer."""
    spec = hpa_spec(load_values())
    return HPASpec(
        max_replicas=spec.max_replicas,
        metrics=(MetricSpec.external_average("queue", 1000),),
        min_replicas=spec.min_replicas,
        behavior=spec.behavior,
    )


def test_chart_scale_up_is_limited_to_two_pods_per_60_seconds() -> None:
    changes = _drive(_chart_spec(), 4, [(15.0 * k, 12) for k in range(0, 25)])
    # 60 s stabilization (min over the window), then +2 pods per 60 s period.
    assert changes == [(60.0, 6), (120.0, 8), (180.0, 10), (240.0, 12)]


def test_chart_scale_down_waits_300_seconds_then_removes_10_percent_per_minute() -> None:
    history = [(15.0 * k, 10) for k in range(-40, 0)]  # the last 10 is recorded at t=-15
    changes = _drive(_chart_spec(), 10, [*history, *[(15.0 * k, 2) for k in range(0, 60)]])
    # The window keeps entries strictly younger than 300 s: -15 leaves it at t=285.
    # Then trunc(current * 0.9) once per 60 s period, down to minReplicas 2.
    assert changes == [
        (285.0, 9),
        (345.0, 8),
        (405.0, 7),
        (465.0, 6),
        (525.0, 5),
        (585.0, 4),
        (645.0, 3),
        (705.0, 2),
    ]


def test_legacy_path_without_behavior_doubles_per_sync() -> None:
    spec = HPASpec(max_replicas=100, metrics=(MetricSpec.external_average("queue", 1000),))
    changes = _drive(spec, 3, [(15.0 * k, 40) for k in range(0, 6)])
    assert [r for _, r in changes] == [6, 12, 24, 40]


def test_first_sight_blocks_scale_down_for_the_window() -> None:
    spec = HPASpec(max_replicas=10, metrics=(MetricSpec.external_average("queue", 1000),))
    changes = _drive(spec, 5, [(15.0 * k, 1) for k in range(0, 22)])
    assert changes == [(315.0, 1)]
