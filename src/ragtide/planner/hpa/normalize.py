"""From a raw proposal to the replica count the controller writes (spec §1.3, §5, §6).

Two paths, chosen by whether ``spec.behavior`` is set:

* legacy (``behavior is None``): max over a 300 s recommendation window, then a clamp
  of ``max(2 * current, 4)`` per sync and the min/max bounds;
* behavior: ``clamp(current, min over the up-window, max over the down-window)``, then
  the rate-limit policies measured against the scale events of both directions.

Windows are compared with upstream's exact boundaries: the legacy window keeps
``age <= W``; the behavior windows and policy periods keep ``age < W`` (strictly inside).
All functions are pure: they return new histories instead of mutating them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace

from ragtide.planner.hpa.types import (
    Behavior,
    PolicyType,
    Recommendation,
    ScaleEvent,
    ScalingPolicy,
    ScalingRules,
    SelectPolicy,
)

__all__ = [
    "DEFAULT_SCALE_DOWN_RULES",
    "DEFAULT_SCALE_UP_RULES",
    "Limited",
    "Stabilized",
    "calculate_scale_down_limit",
    "calculate_scale_up_limit",
    "convert_desired_replicas_with_behavior_rate",
    "convert_desired_replicas_with_rules",
    "generate_scale_down_rules",
    "generate_scale_up_rules",
    "replicas_change_per_period",
    "stabilize_recommendation",
    "stabilize_recommendation_with_behaviors",
    "store_scale_event",
]

#: ``defaultHPAScaleUpRules``: no window, the larger of +4 pods or +100 % per 15 s.
DEFAULT_SCALE_UP_RULES = ScalingRules(
    stabilization_window_seconds=0,
    select_policy=SelectPolicy.MAX,
    policies=(ScalingPolicy(PolicyType.PODS, 4, 15), ScalingPolicy(PolicyType.PERCENT, 100, 15)),
)
#: ``defaultHPAScaleDownRules``: -100 % per 15 s; the window comes from the controller flag.
DEFAULT_SCALE_DOWN_RULES = ScalingRules(
    stabilization_window_seconds=None,
    select_policy=SelectPolicy.MAX,
    policies=(ScalingPolicy(PolicyType.PERCENT, 100, 15),),
)


@dataclass(frozen=True, slots=True)
class Stabilized:
    """A stabilized recommendation, the condition reason and the updated history."""

    replicas: int
    reason: str
    recommendations: tuple[Recommendation, ...]


@dataclass(frozen=True, slots=True)
class Limited:
    """The replica count after the rate limits and bounds, with the ScalingLimited reason."""

    replicas: int
    reason: str


def _merge_rules(user: ScalingRules | None, default: ScalingRules) -> ScalingRules:
    """``copyHPAScalingRules``: each field the user sets replaces the default as a whole."""
    if user is None:
        return default
    return ScalingRules(
        stabilization_window_seconds=(
            user.stabilization_window_seconds
            if user.stabilization_window_seconds is not None
            else default.stabilization_window_seconds
        ),
        select_policy=user.select_policy or default.select_policy,
        policies=user.policies if user.policies is not None else default.policies,
        tolerance=user.tolerance if user.tolerance is not None else default.tolerance,
    )


def generate_scale_up_rules(rules: ScalingRules | None) -> ScalingRules:
    """Fill the unset fields of ``behavior.scaleUp`` from the API defaults."""
    return _merge_rules(rules, DEFAULT_SCALE_UP_RULES)


def generate_scale_down_rules(
    rules: ScalingRules | None, downscale_stabilization: float | None = None
) -> ScalingRules:
    """Fill ``behavior.scaleDown``; a still-unset window takes the controller flag (300 s)."""
    merged = _merge_rules(rules, DEFAULT_SCALE_DOWN_RULES)
    if merged.stabilization_window_seconds is None and downscale_stabilization is not None:
        merged = replace(merged, stabilization_window_seconds=int(downscale_stabilization))
    return merged


def stabilize_recommendation(
    recommendations: Sequence[Recommendation], desired: int, now: float, window: float
) -> Stabilized:
    """Legacy stabilization (§5.1): the max of ``desired`` and every entry with age <= W.

    The new entry overwrites the last entry older than ``window``, else it is appended.
    Its value is the pre-normalized ``desired``, not the final replica count.
    """
    stabilized = desired
    old_index = -1
    cutoff = now - window
    for i, rec in enumerate(recommendations):
        if rec.timestamp < cutoff:
            old_index = i
        elif rec.replicas > stabilized:
            stabilized = rec.replicas
    history = _record(recommendations, old_index, Recommendation(desired, now))
    reason = "ScaleDownStabilized" if stabilized != desired else "ReadyForNewScale"
    return Stabilized(stabilized, reason, history)


def _record(
    recommendations: Sequence[Recommendation], old_index: int, new: Recommendation
) -> tuple[Recommendation, ...]:
    history = list(recommendations)
    if old_index >= 0:
        history[old_index] = new
    else:
        history.append(new)
    return tuple(history)


def convert_desired_replicas_with_rules(
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    *,
    scale_up_limit_factor: float = 2.0,
    scale_up_limit_minimum: float = 4.0,
) -> Limited:
    """Legacy clamp (§5.2): at most ``max(factor * current, minimum)`` and the bounds."""
    scale_up_limit = int(max(scale_up_limit_factor * current, scale_up_limit_minimum))
    if max_replicas > scale_up_limit:
        maximum, limiting = scale_up_limit, "ScaleUpLimit"
    else:
        maximum, limiting = max_replicas, "TooManyReplicas"
    if desired < min_replicas:
        return Limited(min_replicas, "TooFewReplicas")
    if desired > maximum:
        return Limited(maximum, limiting)
    return Limited(desired, "DesiredWithinRange")


def stabilize_recommendation_with_behaviors(
    recommendations: Sequence[Recommendation],
    desired: int,
    current: int,
    up_window: float,
    down_window: float,
    now: float,
) -> Stabilized:
    """Behavior stabilization (§6.2): ``clamp(current, min up-window, max down-window)``.

    Entries strictly inside a window (``timestamp > now - window``) count. The new entry
    overwrites the last entry outside both windows, else it is appended. The reason is
    ``ScaleUpStabilized`` when ``desired >= current`` else ``ScaleDownStabilized``; the
    controller reports it only when the result differs from ``desired``.
    """
    up_rec = down_rec = desired
    up_cutoff, down_cutoff = now - up_window, now - down_window
    old_index = -1
    for i, rec in enumerate(recommendations):
        if rec.timestamp > up_cutoff:
            up_rec = min(up_rec, rec.replicas)
        if rec.timestamp > down_cutoff:
            down_rec = max(down_rec, rec.replicas)
        if rec.timestamp < up_cutoff and rec.timestamp < down_cutoff:
            old_index = i
    result = min(max(current, up_rec), down_rec)
    history = _record(recommendations, old_index, Recommendation(desired, now))
    reason = "ScaleUpStabilized" if desired >= current else "ScaleDownStabilized"
    return Stabilized(result, reason, history)


def replicas_change_per_period(period: float, events: Sequence[ScaleEvent], now: float) -> int:
    """Sum of the replica changes of events strictly younger than ``period`` seconds."""
    cutoff = now - period
    return sum(e.replica_change for e in events if e.timestamp > cutoff)


def _period_start(
    current: int,
    policy: ScalingPolicy,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    now: float,
) -> int:
    return (
        current
        - replicas_change_per_period(policy.period_seconds, up_events, now)
        + replicas_change_per_period(policy.period_seconds, down_events, now)
    )


def calculate_scale_up_limit(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now: float,
) -> int:
    """Upper bound from the scale-up policies (§6.3); ``Max`` picks the most permissive."""
    if rules.select_policy == SelectPolicy.DISABLED:
        return current
    proposals = []
    for policy in rules.policies or ():
        start = _period_start(current, policy, up_events, down_events, now)
        if policy.type == PolicyType.PODS:
            proposals.append(start + policy.value)
        else:
            proposals.append(math.ceil(start * (1 + policy.value / 100)))
    if not proposals:
        return current
    return min(proposals) if rules.select_policy == SelectPolicy.MIN else max(proposals)


def calculate_scale_down_limit(
    current: int,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    rules: ScalingRules,
    now: float,
) -> int:
    """Lower bound from the scale-down policies (§6.3); Percent truncates toward zero."""
    if rules.select_policy == SelectPolicy.DISABLED:
        return current
    proposals = []
    for policy in rules.policies or ():
        start = _period_start(current, policy, up_events, down_events, now)
        if policy.type == PolicyType.PODS:
            proposals.append(start - policy.value)
        else:
            proposals.append(int(start * (1 - policy.value / 100)))
    if not proposals:
        return current
    return max(proposals) if rules.select_policy == SelectPolicy.MIN else min(proposals)


def convert_desired_replicas_with_behavior_rate(
    current: int,
    desired: int,
    min_replicas: int,
    max_replicas: int,
    up_rules: ScalingRules,
    down_rules: ScalingRules,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    now: float,
) -> Limited:
    """Rate limits plus bounds in the direction of travel only (§6.3).

    Scaling up never enforces ``min_replicas``; scaling down never enforces
    ``max_replicas``; ``desired == current`` is returned unchanged.
    """
    if desired > current:
        limit = max(
            calculate_scale_up_limit(current, up_events, down_events, up_rules, now), current
        )
        if max_replicas > limit:
            maximum, reason = limit, "ScaleUpLimit"
        else:
            maximum, reason = max_replicas, "TooManyReplicas"
        if desired > maximum:
            return Limited(maximum, reason)
    elif desired < current:
        limit = min(
            calculate_scale_down_limit(current, up_events, down_events, down_rules, now), current
        )
        if min_replicas < limit:
            minimum, reason = limit, "ScaleDownLimit"
        else:
            minimum, reason = min_replicas, "TooFewReplicas"
        if desired < minimum:
            return Limited(minimum, reason)
    return Limited(desired, "DesiredWithinRange")


def _longest_period(rules: ScalingRules | None) -> int:
    return max((p.period_seconds for p in (rules.policies or ())), default=0) if rules else 0


def _store(
    events: Sequence[ScaleEvent], longest: int, change: int, now: float
) -> tuple[ScaleEvent, ...]:
    marked = [replace(e, outdated=True) if e.timestamp < now - longest else e for e in events]
    new = ScaleEvent(change, now)
    outdated = [i for i, e in enumerate(marked) if e.outdated]
    if outdated:
        marked[outdated[-1]] = new
    else:
        marked.append(new)
    return tuple(marked)


def store_scale_event(
    behavior: Behavior | None,
    up_events: Sequence[ScaleEvent],
    down_events: Sequence[ScaleEvent],
    previous: int,
    new: int,
    now: float,
) -> tuple[tuple[ScaleEvent, ...], tuple[ScaleEvent, ...]]:
    """Record a rescale (§6.4); returns ``(up_events, down_events)``.

    Nothing is stored when ``behavior`` is ``None``. Otherwise events of the direction
    older than its longest policy period are marked outdated and the last outdated one
    is overwritten by the new event (else it is appended).
    """
    up, down = tuple(up_events), tuple(down_events)
    if behavior is None:
        return up, down
    if new > previous:
        return _store(up, _longest_period(behavior.scale_up), new - previous, now), down
    return up, _store(down, _longest_period(behavior.scale_down), previous - new, now)
