"""The model tier in the plan's outputs: its series, summary, breaches, values and panel.

Every function here returns nothing (or an empty block) for a plan without a model tier,
so a plan without ``model_server`` in its capacity writes exactly what it did before.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

import numpy as np

from ragtide.planner.model_analysis import ModelTierSummary
from ragtide.planner.model_values import model_values_fragment
from ragtide.planner.plan import Plan

__all__ = [
    "breaches_json",
    "draw_model_latency",
    "draw_model_panel",
    "model_fragment",
    "model_json",
    "model_summary_lines",
    "model_timeline",
]

#: ``series(values, how)``: a per-second array bucketed for the JSON ("mean" or "max")
Series = Callable[[np.ndarray, str], list[float | None]]


def model_timeline(plan: Plan, series: Series) -> dict[str, Any]:
    """The model tier's per-second series for ``timeline`` (empty without a model tier)."""
    m = plan.result.model
    if m is None:
        return {}
    return {
        "model_calls_per_s": series(m.calls, "mean"),
        "model_replicas_desired": series(m.replicas_desired, "max"),
        "model_replicas_ready": series(m.replicas_ready, "max"),
        "model_requests_per_replica": series(m.in_system_per_replica, "max"),
        "model_busy_slots_pct": series(100 * m.busy_slots, "mean"),
        "model_waiting": series(m.backlog, "max"),
        "model_p99_ms": series(m.p99_ms, "max"),
        "model_dropped": series(m.dropped, "mean"),
    }


def _summary(summary: ModelTierSummary | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    data = asdict(summary)
    data["meets_slo"] = summary.breach_seconds == 0
    return data


def model_json(plan: Plan, series: Series) -> dict[str, Any] | None:
    """The ``model_tier`` block of ``timeline.json`` (``None`` without a model tier)."""
    if plan.result.model is None:
        return None
    rec = plan.model_recommendation
    recommended: dict[str, Any] | None = None
    if rec is not None:
        recommended = {
            "values": model_fragment(plan),
            "utilization": rec.candidate.utilization if rec.candidate else None,
            "replays": rec.evaluated,
            "notes": list(rec.notes),
            "summary": _summary(plan.recommended_model_summary),
        }
        api = plan.recommendation.result if plan.recommendation else None
        if api is not None and api.model is not None:
            recommended["replicas_desired"] = series(api.model.replicas_desired, "max")
            recommended["p99_ms"] = series(api.model.p99_ms, "max")
    return {
        "summary": _summary(plan.model_summary),
        "replica_hours": {
            "api": round(plan.summary.replica_hours, 3),
            "model": round(plan.result.model.replica_hours, 3),
        },
        "recommendation": recommended,
    }


def breaches_json(plan: Plan) -> list[dict[str, Any]]:
    """The SLO breaches as intervals ``{start, end, tier}`` (tier: api, model, api+model)."""
    return [asdict(b) for b in plan.breaches]


def model_fragment(plan: Plan) -> dict[str, Any] | None:
    """``modelServer.autoscaling`` as recommended, in the chart's keys (or ``None``)."""
    rec = plan.model_recommendation
    if rec is None or rec.candidate is None:
        return None
    return model_values_fragment(rec.candidate.autoscaling)


def _ms(value: float) -> str:
    return "n/a" if not math.isfinite(value) else f"{value:.0f} ms"


def _tier_lines(summary: ModelTierSummary) -> list[str]:
    lines = [
        f"  model tier: replica-hours {summary.replica_hours:.1f}; call p99 max "
        f"{_ms(summary.max_p99_ms)}; {summary.breach_seconds} s over {summary.slo_p99_ms:.0f} "
        f"ms; {summary.dropped_calls:.0f} calls failed; max replicas {summary.max_replicas} "
        f"({summary.peak_needed_replicas} needed at the peak)"
    ]
    if summary.surge_needed is not None:
        after = summary.surge_ready_after
        lines.append(
            f"  model tier at the surge: {summary.surge_needed} replicas needed, ready "
            + ("never" if after is None else f"+{after} s")
        )
    return lines


def _by_tier(plan: Plan) -> str:
    seconds: dict[str, int] = {"api": 0, "model": 0}
    for b in plan.breaches:
        for tier in b.tier.split("+"):
            seconds[tier] += b.end - b.start + 1
    first = {
        tier: next((b for b in plan.breaches if tier in b.tier.split("+")), None)
        for tier in seconds
    }
    parts = []
    for tier, total in seconds.items():
        where = first[tier]
        since = f", first t={where.start}-{where.end} s" if where is not None else ""
        parts.append(f"{tier} tier {total} s{since}")
    return "  SLO breaches caused by: " + "; ".join(parts)


def model_summary_lines(plan: Plan, where: str) -> list[str]:
    """Lines for the printed summary: ``where`` is ``current`` or ``recommended``."""
    if plan.result.model is None:
        return []
    if where == "current":
        s = plan.model_summary
        if s is None:
            return []
        header = (
            f"  model tier: one call {s.seconds_per_call_ms:.0f} ms in a slot, one replica "
            f"{s.replica_calls_per_second:.2f} calls/s; peak {s.peak_calls_per_second:g} "
            f"calls/s; SLO p99 {s.slo_p99_ms:.0f} ms per call"
        )
        return [header, *_tier_lines(s), _by_tier(plan)]
    rec = plan.model_recommendation
    if rec is None:
        return []
    if rec.candidate is None:
        return ["  model tier: no recommendation (" + "; ".join(rec.notes) + ")"]
    c = rec.candidate.autoscaling
    lines = [
        f"  modelServer.autoscaling: minReplicas {c.min_replicas}, maxReplicas "
        f"{c.max_replicas}, targetRequestsPerReplica {c.target_requests_per_replica:g}, "
        f"{'fast' if rec.candidate.fast_scale_up else 'current'} scale-up "
        f"({rec.evaluated} model replays)"
    ]
    if plan.recommended_model_summary is not None:
        lines.extend(_tier_lines(plan.recommended_model_summary))
    lines.extend(f"  note: {n}" for n in rec.notes)
    return lines


def draw_model_panel(ax: Any, plan: Plan, minutes: np.ndarray) -> None:
    """Model replicas (desired, ready, recommended) and requests per replica vs target."""
    m = plan.result.model
    if m is None:
        return
    ax.step(minutes, m.replicas_desired, where="post", label="model desired", color="tab:orange")
    ax.step(minutes, m.replicas_ready, where="post", label="model ready", color="tab:green")
    rec = plan.recommendation.result if plan.recommendation else None
    if rec is not None and rec.model is not None:
        ax.step(
            minutes,
            rec.model.replicas_desired,
            where="post",
            ls="--",
            color="tab:purple",
            label="model recommended",
        )
    ax.set_ylabel("model replicas")
    ax.legend(loc="upper left", fontsize=8)
    twin = ax.twinx()
    twin.plot(minutes, m.in_system_per_replica, color="tab:cyan", label="requests per replica")
    twin.axhline(m.target_requests_per_replica, color="tab:cyan", ls=":", label="target")
    twin.set_ylabel("running + waiting")
    twin.legend(loc="upper right", fontsize=8)


def draw_model_latency(ax: Any, plan: Plan, minutes: np.ndarray) -> None:
    """A model call's p99 and the model SLO on the latency panel."""
    m, summary = plan.result.model, plan.model_summary
    if m is None or summary is None:
        return
    ax.plot(minutes, m.p99_ms, label="model call p99", color="tab:olive")
    ax.axhline(summary.slo_p99_ms, color="tab:olive", ls=":", label="model SLO")
