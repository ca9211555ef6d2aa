"""Hypothesis properties of the controller over random proposal sequences.

* replicas always stay within [minReplicas, maxReplicas] (starting inside them);
* no scale-down while a higher recommendation is inside the stabilization window;
* the rate-limit policies are never exceeded, checked against an independent replay
  of the replica history (not against the controller's own event log).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragtide.planner.hpa import (
    Behavior,
    ControllerConfig,
    ControllerState,
    HPASpec,
    MetricSpec,
    PolicyType,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
    Snapshot,
    reconcile,
)

SYNC = 15.0
CONFIG = ControllerConfig()
policies = st.builds(
    ScalingPolicy,
    st.sampled_from(list(PolicyType)),
    st.integers(1, 200),
    st.sampled_from([15, 30, 60, 120]),
)
rules = st.builds(
    ScalingRules,
    stabilization_window_seconds=st.sampled_from([0, 15, 45, 60, 120, 300]),
    select_policy=st.just(SelectPolicy.MAX),
    policies=st.lists(policies, min_size=1, max_size=2).map(tuple),
)
behaviors = st.one_of(st.none(), st.builds(Behavior, rules, rules))


@dataclass(frozen=True)
class Run:
    spec: HPASpec
    replicas: list[int]  # replicas before each sync, then the final count
    proposals: list[int]  # what the metric asked for at each sync (pre-normalization)
    stabilized: list[int | None]


@st.composite
def runs(draw: st.DrawFn) -> Run:
    minimum = draw(st.integers(1, 10))
    maximum = draw(st.integers(minimum, 40))
    spec = HPASpec(
        max_replicas=maximum,
        metrics=(MetricSpec.external_average("q", 1000),),
        min_replicas=minimum,
        behavior=draw(behaviors),
    )
    current = draw(st.integers(minimum, maximum))
    blocks = draw(
        st.lists(st.tuples(st.integers(0, 80), st.integers(1, 8)), min_size=1, max_size=8)
    )
    asks = [value for value, repeat in blocks for _ in range(repeat)]  # sustained levels
    state = ControllerState()
    replicas, proposals, stabilized = [current], [], []
    for step, ask in enumerate(asks):
        snapshot = Snapshot(step * SYNC, current, current, external_metrics={"q": (ask * 1000,)})
        result = reconcile(spec, snapshot, state, CONFIG)
        state = result.state
        proposals.append(result.proposal if result.proposal is not None else current)
        stabilized.append(result.stabilized)
        current = result.desired_replicas
        replicas.append(current)
    return Run(spec, replicas, proposals, stabilized)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_replicas_stay_within_bounds(run: Run) -> None:
    assert all(run.spec.min_replicas <= r <= run.spec.max_replicas for r in run.replicas)


def _down_window(spec: HPASpec) -> float:
    if spec.behavior is None or spec.behavior.scale_down is None:
        return CONFIG.downscale_stabilization
    window = spec.behavior.scale_down.stabilization_window_seconds
    return CONFIG.downscale_stabilization if window is None else float(window)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_no_scale_down_within_window_of_higher_recommendation(run: Run) -> None:
    window = _down_window(run.spec)
    legacy = run.spec.behavior is None
    for k, (before, after) in enumerate(zip(run.replicas, run.replicas[1:], strict=False)):
        if after >= before:
            continue
        now = k * SYNC
        # this sync's proposal and every one recorded inside the window
        # (legacy: age <= W, behavior: age < W)
        inside = [run.proposals[k]] + [
            p
            for j, p in enumerate(run.proposals[:k])
            if (now - j * SYNC <= window if legacy else now - j * SYNC < window)
        ]
        initial = run.replicas[0]  # first sight records the starting count at t=0
        if (now <= window if legacy else now < window) and initial > after:
            raise AssertionError(f"scaled down to {after} while first-sight {initial} in window")
        assert after >= max(inside), (k, inside, after)


def _allowed(rules: ScalingRules, replicas: list[int], k: int, up: bool) -> int:
    """The bound at sync ``k`` from an independent replay of the replica history."""
    bounds = []
    for policy in rules.policies or ():
        periods_back = math.ceil(policy.period_seconds / SYNC)
        # replicas right after the last change at or before now - period (strict window)
        start = replicas[max(0, k - periods_back + 1)] if k - periods_back + 1 > 0 else replicas[0]
        if policy.type == PolicyType.PODS:
            bounds.append(start + policy.value if up else start - policy.value)
        elif up:
            bounds.append(math.ceil(start * (1 + policy.value / 100)))
        else:
            bounds.append(int(start * (1 - policy.value / 100)))
    return max(bounds) if up else min(bounds)


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(runs())
def test_rate_limits_are_never_exceeded(run: Run) -> None:
    behavior = run.spec.behavior
    if behavior is None:
        for before, after in zip(run.replicas, run.replicas[1:], strict=False):
            assert after <= max(before, int(max(2 * before, 4)))
        return
    assert behavior.scale_up is not None and behavior.scale_down is not None
    for k, (before, after) in enumerate(zip(run.replicas, run.replicas[1:], strict=False)):
        if after > before:
            assert after <= max(before, _allowed(behavior.scale_up, run.replicas, k, True))
        elif after < before:
            floor = min(before, _allowed(behavior.scale_down, run.replicas, k, False))
            assert after >= max(floor, run.spec.min_replicas)
