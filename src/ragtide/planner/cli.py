"""``ragtide plan``: replay a trace through the chart's autoscaling and recommend values.

Examples::

    ragtide plan --synthetic busy-day --out plan/
    ragtide plan --trace trace.csv --values values.yaml --capacity capacity.json
    ragtide plan --synthetic diurnal --peak 300 --slo-p99-ms 600
    ragtide plan --synthetic busy-day --values values.yaml \
        --adapter-values deploy/prometheus-adapter/values.yaml

With ``--adapter-values`` it first prints the exact PromQL each HPA Pods metric
resolves to and refuses values whose metric names no adapter rule publishes.
Writes ``timeline.json``, ``timeline.png`` and ``recommended-values.yaml`` into
``--out`` and prints a summary. Exit status: 0 on success, 2 on invalid input.
"""

from __future__ import annotations

import argparse
import inspect
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from ragtide.errors import ConfigError
from ragtide.planner.adapter import PipelineParams
from ragtide.planner.adapter_rules import MetricQuery, hpa_metric_queries, load_rules
from ragtide.planner.capacity import default_capacity, load_capacity
from ragtide.planner.hpa import ControllerConfig
from ragtide.planner.plan import make_plan
from ragtide.planner.report import format_summary, write_plan
from ragtide.planner.simulate import SimulationParams
from ragtide.planner.traffic import SHAPES, Trace, load_trace
from ragtide.planner.values import ChartValues, load_values

__all__ = ["build_parser", "main"]

_SHAPE_ARGS = (
    "base",
    "peak",
    "at",
    "ramp_seconds",
    "duration",
    "spike_seconds",
    "hold",
    "noise",
    "seed",
    "queue_ratio",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="ragtide plan",
        description="Replay a traffic trace through the HPA/KEDA model of the chart values.",
    )
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--trace", type=Path, help="CSV with timestamp,rps[,queue_arrivals]")
    source.add_argument("--synthetic", choices=sorted(SHAPES), help="a built-in traffic shape")
    shape = parser.add_argument_group("synthetic shape parameters (defaults per shape)")
    shape.add_argument("--base", type=float, help="quiet load, req/s")
    shape.add_argument("--peak", type=float, help="peak load, req/s")
    shape.add_argument("--at", type=int, help="second the change starts")
    shape.add_argument("--ramp-seconds", type=int, help="ramp length (ramp, busy-day)")
    shape.add_argument("--hold", type=int, help="seconds at the peak (busy-day)")
    shape.add_argument("--duration", type=int, help="trace length in seconds (step, ramp, spike)")
    shape.add_argument("--spike-seconds", type=int, help="spike length (spike)")
    shape.add_argument("--noise", type=float, help="relative noise (diurnal)")
    shape.add_argument("--seed", type=int, help="noise seed (diurnal)")
    shape.add_argument("--queue-ratio", type=float, help="worker messages per API request")
    parser.add_argument(
        "--values", type=Path, help="chart values YAML (missing keys: chart defaults)"
    )
    parser.add_argument("--capacity", type=Path, help="capacity.json from `ragtide bench capacity`")
    parser.add_argument(
        "--adapter-values",
        type=Path,
        help="prometheus-adapter values: show each HPA metric's PromQL, refuse unknown names",
    )
    parser.add_argument(
        "--namespace", default="ragtide", help="release namespace for the PromQL shown"
    )
    parser.add_argument("--slo-p99-ms", type=float, default=800.0, help="p99 SLO (default 800)")
    parser.add_argument(
        "--deadline-seconds",
        type=float,
        default=90.0,
        help="a surge's need must be ready within this many seconds (0: no deadline; default 90)",
    )
    parser.add_argument("--initial-replicas", type=int, help="API replicas at t=0 (busy-day: 4)")
    parser.add_argument(
        "--model-slo-p99-ms",
        type=float,
        help="p99 of a model call (with model_server in capacity.json; default: a call's "
        "prefill + decode plus --slo-p99-ms)",
    )
    parser.add_argument(
        "--initial-model-replicas",
        type=int,
        help="model server replicas at t=0 (default: its autoscaler's steady state)",
    )
    parser.add_argument("--out", type=Path, default=Path("plan"), help="output directory")
    parser.add_argument("--no-recommend", action="store_true", help="skip the values search")
    parser.add_argument("--no-chart", action="store_true", help="skip timeline.png")
    pipe = parser.add_argument_group("metrics pipeline and cluster (defaults in docs/planner.md)")
    pipe.add_argument("--sync-period", type=float, default=15.0, help="HPA sync period, s")
    pipe.add_argument("--metric-resolution", type=float, default=15.0, help="metrics-server, s")
    pipe.add_argument("--scrape-interval", type=float, default=30.0, help="Prometheus, s")
    pipe.add_argument("--rate-window", type=float, default=120.0, help="rate() window, s")
    pipe.add_argument("--pod-pending-seconds", type=float, default=5.0, help="schedule + pull, s")
    pipe.add_argument("--request-timeout", type=float, default=30.0, help="drop after, s")
    return parser


def _trace(args: argparse.Namespace) -> Trace:
    if args.trace is not None:
        try:
            return load_trace(args.trace)
        except OSError as exc:
            raise ConfigError(f"cannot read trace {args.trace}: {exc}") from exc
    generator: Callable[..., Trace] = SHAPES[args.synthetic]
    accepted = inspect.signature(generator).parameters
    kwargs: dict[str, Any] = {
        name: getattr(args, name)
        for name in _SHAPE_ARGS
        if getattr(args, name) is not None and name in accepted
    }
    return generator(**kwargs)


def _params(args: argparse.Namespace) -> SimulationParams:
    initial = args.initial_replicas
    if initial is None and args.synthetic == "busy-day":
        initial = 4
    return SimulationParams(
        pipeline=PipelineParams(
            hpa_sync_period=args.sync_period,
            metric_resolution=args.metric_resolution,
            scrape_interval=args.scrape_interval,
            rate_window=args.rate_window,
        ),
        controller=ControllerConfig(sync_period=args.sync_period),
        pod_pending_seconds=args.pod_pending_seconds,
        request_timeout_seconds=args.request_timeout,
        initial_replicas=initial,
        initial_model_replicas=args.initial_model_replicas,
    )


def adapter_queries(
    values: ChartValues, adapter_values: Path, namespace: str = "ragtide"
) -> list[MetricQuery]:
    """The PromQL of every enabled HPA Pods metric; ``ConfigError`` if one has no rule."""
    scaling = values.autoscaling
    names = [m.metric_name for m in (scaling.request_rate, scaling.inflight_requests) if m.enabled]
    return hpa_metric_queries(names, load_rules(adapter_values), namespace=namespace)


def main(argv: list[str] | None = None) -> int:
    """Run ``ragtide plan``; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        if args.values is not None and not args.values.is_file():
            raise ConfigError(f"values file {args.values} does not exist")
        values = load_values(args.values)
        queries = []
        if args.adapter_values is not None:
            queries = adapter_queries(values, args.adapter_values, args.namespace)
        capacity = load_capacity(args.capacity) if args.capacity else default_capacity()
        trace = _trace(args)
        plan = make_plan(
            trace,
            values,
            capacity,
            _params(args),
            slo_p99_ms=args.slo_p99_ms,
            deadline_s=args.deadline_seconds or None,
            search=not args.no_recommend,
            model_slo_p99_ms=args.model_slo_p99_ms,
        )
        written = write_plan(plan, args.out, chart=not args.no_chart)
    except ConfigError as exc:
        print(f"ragtide plan: error: {exc}", file=sys.stderr)
        return 2
    for query in queries:
        print(f"HPA metric {query.metric_name} (series {query.series}): {query.promql}")
    print(format_summary(plan))
    print("wrote " + ", ".join(str(p) for p in written))
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
