"""The chart's ``behavior`` blocks (``autoscaling.behavior``,
``modelServer.autoscaling.behavior``) and the HPA ``behavior`` they render."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from ragtide.planner.hpa import Behavior, PolicyType, ScalingPolicy, ScalingRules, SelectPolicy

__all__ = ["BehaviorValues", "PolicyValues", "RulesValues", "behavior_spec", "rules_spec"]

_STRICT = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)


class PolicyValues(BaseModel):
    """One ``behavior.*.policies`` entry."""

    model_config = _STRICT
    type: Literal["Pods", "Percent"]
    value: int = Field(gt=0)
    period_seconds: int = Field(alias="periodSeconds", gt=0, le=1800)


class RulesValues(BaseModel):
    """``behavior.scaleUp`` or ``behavior.scaleDown``; ``None`` = not rendered."""

    model_config = _STRICT
    stabilization_window_seconds: int | None = Field(
        None, alias="stabilizationWindowSeconds", ge=0, le=3600
    )
    select_policy: Literal["Max", "Min", "Disabled"] | None = Field(None, alias="selectPolicy")
    policies: tuple[PolicyValues, ...] | None = Field(None, min_length=1)


class BehaviorValues(BaseModel):
    """``autoscaling.behavior``."""

    model_config = _STRICT
    scale_up: RulesValues | None = Field(None, alias="scaleUp")
    scale_down: RulesValues | None = Field(None, alias="scaleDown")


def rules_spec(values: RulesValues | None) -> ScalingRules | None:
    if values is None:
        return None
    return ScalingRules(
        stabilization_window_seconds=values.stabilization_window_seconds,
        select_policy=SelectPolicy(values.select_policy) if values.select_policy else None,
        policies=None
        if values.policies is None
        else tuple(
            ScalingPolicy(PolicyType(p.type), p.value, p.period_seconds) for p in values.policies
        ),
    )


def behavior_spec(values: BehaviorValues | None) -> Behavior | None:
    """The HPA ``behavior`` a chart ``behavior`` block renders (``None``: the legacy path)."""
    if values is None:
        return None
    return Behavior(rules_spec(values.scale_up), rules_spec(values.scale_down))
