"""Plan outputs: the timeline as JSON and PNG, the values fragment, the printed summary.

matplotlib is imported inside ``write_chart`` (Agg backend), so importing the planner
never loads it; it ships in the ``plan`` extra.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from ragtide.planner.analysis import PlanSummary
from ragtide.planner.model_report import (
    breaches_json,
    draw_model_latency,
    draw_model_panel,
    model_fragment,
    model_json,
    model_summary_lines,
    model_timeline,
)
from ragtide.planner.plan import Plan
from ragtide.planner.schedule import describe
from ragtide.planner.traffic import Trace
from ragtide.planner.values import values_fragment

__all__ = [
    "format_summary",
    "timeline_json",
    "write_chart",
    "write_plan",
    "write_values",
]

MAX_POINTS = 4000


def _stride(length: int) -> int:
    return max(1, math.ceil(length / MAX_POINTS))


def _series(values: np.ndarray, stride: int, how: str = "mean") -> list[float | None]:
    """Downsample by ``stride`` (max or mean per bucket); NaN becomes ``None`` in JSON."""
    if stride > 1:
        pad = (-values.size) % stride
        padded = np.concatenate([values, np.full(pad, np.nan)]).reshape(-1, stride)
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore", RuntimeWarning)  # all-NaN buckets become NaN
            values = np.nanmax(padded, axis=1) if how == "max" else np.nanmean(padded, axis=1)
    return [None if not math.isfinite(v) else round(float(v), 3) for v in values]


def _summary_dict(summary: PlanSummary | None) -> dict[str, Any] | None:
    if summary is None:
        return None
    data = asdict(summary)
    data["saved_replica_hours"] = summary.saved_replica_hours
    data["meets_slo"] = summary.meets_slo
    return data


def timeline_json(plan: Plan) -> dict[str, Any]:
    """The JSON document: summary, conflicts, decisions, recommendation, per-second series.

    Traces longer than ``MAX_POINTS`` seconds are bucketed (``stride`` seconds per point):
    p99 and replicas take the bucket's max, the rest its mean.
    """
    r = plan.result
    stride = _stride(r.load_rps.size)
    timeline: dict[str, Any] = {
        "stride_seconds": stride,
        "t": list(range(0, r.load_rps.size, stride)),
        "load_rps": _series(r.load_rps, stride),
        "served_rps": _series(r.served_rps, stride),
        "dropped": _series(r.dropped, stride),
        "replicas_desired": _series(r.replicas_desired, stride, "max"),
        "replicas_ready": _series(r.replicas_ready, stride, "max"),
        "cpu_utilization_pct": _series(r.cpu_utilization, stride),
        "inflight_per_pod": _series(r.inflight_per_pod, stride),
        "p50_ms": _series(r.p50_ms, stride, "max"),
        "p99_ms": _series(r.p99_ms, stride, "max"),
    }
    if r.queue_length is not None and r.worker_desired is not None:
        timeline["queue_length"] = _series(r.queue_length, stride, "max")
        timeline["worker_replicas"] = _series(r.worker_desired, stride, "max")

    def series(values: np.ndarray, how: str) -> list[float | None]:
        return _series(values, stride, how)

    timeline.update(model_timeline(plan, series))
    rec = plan.recommendation
    recommended: dict[str, Any] | None = None
    if rec is not None:
        recommended = {
            "values": values_fragment(rec.candidate.autoscaling) if rec.candidate else None,
            "utilization": rec.candidate.utilization if rec.candidate else None,
            "summary": _summary_dict(plan.recommended_summary),
            "replays": rec.evaluated,
            "notes": list(rec.notes),
        }
        if rec.result is not None:
            recommended["replicas_desired"] = _series(rec.result.replicas_desired, stride, "max")
            recommended["p99_ms"] = _series(rec.result.p99_ms, stride, "max")
    schedule: dict[str, Any] | None = None
    if plan.schedule is not None:
        option = plan.schedule
        schedule = {
            "values": values_fragment(option.autoscaling),
            "scale_up_policy": option.policy,
            "min_replicas": option.min_replicas,
            "window_seconds_of_day": [option.window.start, option.window.end],
            "desired_replicas": option.window.desired,
            "replica_hours": round(option.replica_hours, 3),
            "compared_to": option.compared_to,
            "compared_replica_hours": option.warm_fleet_replica_hours,
            "max_p99_ms": float(np.nanmax(option.result.p99_ms)),
            "replicas_desired": _series(option.result.replicas_desired, stride, "max"),
        }
    doc = {
        "trace": r.trace.name,
        "traffic_assumption": traffic_assumption(r.trace),
        "replica_rps": round(r.replica_rps, 3),
        "reaction_seconds": plan.reaction_seconds,
        "summary": _summary_dict(plan.summary),
        "conflicts": list(plan.conflicts),
        "decisions": [asdict(d) for d in r.decisions],
        "recommendation": recommended,
        "schedule": schedule,
        "timeline": timeline,
    }
    tier = model_json(plan, series)
    if tier is not None:  # only with a model tier: the keys of a plain plan stay as they were
        doc["model_tier"] = tier
        doc["breaches"] = breaches_json(plan)
    return doc


def traffic_assumption(trace: Trace) -> str:
    """The traffic the savings rest on, in words (synthetic shapes state their parameters)."""
    n = trace.notes
    if trace.name == "diurnal" and {"base", "peak", "peak_at"} <= n.keys():
        return (
            f"one 24 h day of raised-cosine traffic, {n['base']:g} req/s at night to "
            f"{n['peak']:g} req/s at {int(n['peak_at']) // 3600:02d}:00, repeating daily"
        )
    if n:
        params = ", ".join(f"{k} {v:g}" for k, v in n.items())
        return f"synthetic {trace.name}: {params}"
    return f"the {trace.seconds} s trace as given"


def write_chart(plan: Plan, path: Path) -> None:
    """A PNG with load, replicas, p99 and CPU panels (recommended replay dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    r = plan.result
    minutes = np.arange(r.load_rps.size) / 60
    rec = plan.recommendation.result if plan.recommendation else None
    panels = 5 if r.queue_length is not None else 4
    panels += 1 if r.model is not None else 0
    fig, axes = plt.subplots(panels, 1, figsize=(11, 2.4 * panels), sharex=True)
    ax = axes[0]
    ax.plot(minutes, r.load_rps, label="load (req/s)", color="black")
    ax.plot(
        minutes, r.replicas_ready * r.replica_rps, label="ready capacity (req/s)", color="tab:green"
    )
    ax.plot(minutes, r.served_rps, label="served (req/s)", color="tab:blue", alpha=0.6)
    ax.set_ylabel("req/s")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[1]
    ax.step(minutes, r.replicas_desired, where="post", label="desired", color="tab:orange")
    ax.step(minutes, r.replicas_ready, where="post", label="ready", color="tab:green")
    ax.axhline(plan.summary.peak_needed_replicas, color="grey", ls=":", label="needed at peak")
    if rec is not None:
        ax.step(
            minutes,
            rec.replicas_desired,
            where="post",
            ls="--",
            color="tab:purple",
            label="recommended",
        )
    ax.set_ylabel("replicas")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[2]
    ax.plot(minutes, r.p99_ms, label="p99", color="tab:red")
    ax.plot(minutes, r.p50_ms, label="p50", color="tab:pink", alpha=0.7)
    if rec is not None:
        ax.plot(minutes, rec.p99_ms, ls="--", color="tab:purple", label="p99 recommended")
    ax.axhline(plan.summary.slo_p99_ms, color="black", ls=":", label="SLO")
    draw_model_latency(ax, plan, minutes)
    ax.set_yscale("log")
    ax.set_ylabel("ms")
    ax.legend(loc="upper left", fontsize=8)
    ax = axes[3]
    ax.plot(minutes, r.cpu_utilization, label="CPU % of request", color="tab:brown")
    ax.set_ylabel("CPU %")
    ax.legend(loc="upper left", fontsize=8)
    twin = ax.twinx()
    twin.plot(minutes, r.inflight_per_pod, label="in-flight per pod", color="tab:cyan")
    twin.set_yscale("symlog")
    twin.set_ylabel("in-flight")
    twin.legend(loc="upper right", fontsize=8)
    if r.queue_length is not None and r.worker_desired is not None:
        ax = axes[4]
        ax.plot(minutes, r.queue_length, label="queue length", color="tab:gray")
        twin = ax.twinx()
        twin.step(minutes, r.worker_desired, where="post", color="tab:olive", label="workers")
        ax.set_ylabel("messages")
        twin.set_ylabel("workers")
        ax.legend(loc="upper left", fontsize=8)
        twin.legend(loc="upper right", fontsize=8)
    if r.model is not None:
        draw_model_panel(axes[-1], plan, minutes)
    axes[-1].set_xlabel("minutes")
    fig.suptitle(f"ragtide plan: {r.trace.name}")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_values(plan: Plan, path: Path) -> bool:
    """Write ``recommended-values.yaml``; ``False`` (nothing written) without a candidate."""
    rec = plan.recommendation
    if rec is None or rec.candidate is None:
        return False
    header = (
        "# Recommended by `ragtide plan` for trace "
        f"{plan.result.trace.name!r} (p99 SLO {plan.summary.slo_p99_ms:g} ms).\n"
        f"# Knob: aim each replica at {rec.candidate.utilization:.0%} of its measured "
        "throughput.\n"
    )
    fragment = values_fragment(rec.candidate.autoscaling)
    model = model_fragment(plan)
    if model is not None and plan.model_summary is not None:
        header += (
            f"# modelServer: p99 of a model call within {plan.model_summary.slo_p99_ms:.0f} ms.\n"
        )
        fragment.update(model)
    body = yaml.safe_dump(fragment, sort_keys=False)
    path.write_text(header + body)
    return True


def _surge_lines(summary: PlanSummary) -> list[str]:
    surge = summary.surge
    if surge is None:
        return []

    def after(value: int | None) -> str:
        return "never" if value is None else f"+{value} s"

    return [
        f"  surge at t={surge.start} s: load outgrows the warm replicas "
        f"{after(surge.outgrown_after)}; {surge.needed} replicas needed: desired reaches it "
        f"{after(surge.desired_after)}, ready {after(surge.ready_after)}; "
        f"max p99 meanwhile {summary_ms(surge.max_p99_ms)}, {surge.breach_seconds} s over SLO"
    ]


def summary_ms(value: float) -> str:
    return "n/a (no ready replica)" if not math.isfinite(value) else f"{value:.0f} ms"


def _block(title: str, summary: PlanSummary) -> list[str]:
    saved = summary.saved_replica_hours
    share = saved / summary.fixed_peak_replica_hours if summary.fixed_peak_replica_hours else 0.0
    return [
        title,
        f"  replica-hours {summary.replica_hours:.1f} (fixed peak provisioning of "
        f"{summary.peak_needed_replicas}: {summary.fixed_peak_replica_hours:.1f}; "
        f"saved {saved:.1f}, {share:.0%})",
        f"  p99 max {summary_ms(summary.max_p99_ms)}; {summary.breach_seconds} s over "
        f"{summary.slo_p99_ms:g} ms; {summary.dropped_requests:.0f} requests dropped; "
        f"max replicas {summary.max_replicas}",
        *_surge_lines(summary),
    ]


def format_summary(plan: Plan) -> str:
    """The text ``ragtide plan`` prints."""
    s = plan.summary
    lines = [
        f"trace {plan.result.trace.name}: {s.seconds} s, peak {s.peak_rps:g} req/s; "
        f"one replica serves {plan.result.replica_rps:.1f} req/s; "
        f"reaction chain ~{plan.reaction_seconds:.0f} s (metric lag + sync + pending + startup)",
        *_block("current values:", s),
    ]
    if plan.result.worker_desired is not None:
        lines.append(f"  worker replica-hours {s.worker_replica_hours:.1f}")
    lines.extend(model_summary_lines(plan, "current"))
    if s.seconds >= 86_400 or plan.result.trace.name == "diurnal":
        lines.append(
            f"  scale-to-minimum at night vs fixed peak provisioning of "
            f"{s.peak_needed_replicas}: saves {s.saved_replica_hours:.1f} of "
            f"{s.fixed_peak_replica_hours:.1f} replica-hours; assumes "
            f"{traffic_assumption(plan.result.trace)}"
        )
    if plan.conflicts:
        lines.append("conflicts:")
        lines.extend(f"  - {c}" for c in plan.conflicts)
    rec = plan.recommendation
    if rec is not None:
        if rec.candidate is None or plan.recommended_summary is None:
            lines.append("recommendation: none found (" + "; ".join(rec.notes) + ")")
        else:
            c = rec.candidate
            lines.extend(
                _block(
                    f"recommended values (u={c.utilization:.2f}, minReplicas {c.min_replicas}, "
                    f"{'fast' if c.fast_scale_up else 'current'} scale-up; "
                    f"{rec.evaluated} replays):",
                    plan.recommended_summary,
                )
            )
            lines.extend(f"  note: {n}" for n in rec.notes)
    lines.extend(model_summary_lines(plan, "recommended"))
    if plan.schedule is not None:
        lines.extend(describe(plan.schedule))
    return "\n".join(lines)


def write_plan(plan: Plan, out: Path, *, chart: bool = True) -> Sequence[Path]:
    """Write timeline.json, timeline.png and recommended-values.yaml into ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "timeline.json"]
    written[0].write_text(json.dumps(timeline_json(plan), indent=1))
    if chart:
        write_chart(plan, out / "timeline.png")
        written.append(out / "timeline.png")
    if write_values(plan, out / "recommended-values.yaml"):
        written.append(out / "recommended-values.yaml")
    return written
