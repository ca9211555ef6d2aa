"""The PrometheusRule and the Grafana dashboard query metrics that exist, in valid PromQL
that means what the alert says.

Every metric they name is exported by ``ragtide.observability`` (or is a kube-state-metrics
series); ``promtool`` (Prometheus' own parser and rule engine, from Debian's prometheus
package that ``scripts/services`` installs) checks the syntax and evaluates the alert
expressions on synthetic series.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import prometheus_client
import pytest
import yaml

from ragtide import observability

from .render import CHART, EVERYTHING, render

DASHBOARD = json.loads((CHART / "dashboards" / "ragtide.json").read_text())
KUBE_STATE_METRICS = {
    "kube_horizontalpodautoscaler_status_current_replicas",
    "kube_horizontalpodautoscaler_status_desired_replicas",
    "kube_horizontalpodautoscaler_spec_max_replicas",
}
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
}
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"\b([a-zA-Z_:][a-zA-Z0-9_:]*)\s*\{")
_RAGTIDE = re.compile(r"\bragtide_[a-z0-9_]+")


def exported_series() -> set[str]:
    """Every series name ``ragtide.observability``'s metrics expose on /metrics."""
    names: set[str] = set()
    for obj in vars(observability).values():
        if isinstance(obj, prometheus_client.metrics.MetricWrapperBase):
            for metric in obj.describe():
                names.update(metric.name + suffix for suffix in _SUFFIXES[metric.type])
    return names


def metric_names(expr: str) -> set[str]:
    """Metric names an expression selects (string literals removed first)."""
    bare = _STRING.sub('""', expr)
    return set(_SELECTOR.findall(bare)) | set(_RAGTIDE.findall(bare))


def alert_rules() -> list[dict[str, Any]]:
    rule = render(EVERYTHING).one("PrometheusRule")
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


def dashboard_exprs() -> list[str]:
    return [t["expr"] for panel in DASHBOARD["panels"] for t in panel["targets"]]


def test_metric_name_extraction() -> None:
    expr = 'sum(rate(ragtide_x_total{a="b{c}"}[5m])) / up{job="x"} + kube_y'
    assert metric_names(expr) == {"ragtide_x_total", "up"}
    assert "ragtide_http_requests_total" in exported_series()
    assert "ragtide_http_requests" not in exported_series()  # a counter is *_total


@pytest.mark.parametrize("source", ["alerts", "dashboard"])
def test_every_metric_referenced_is_exported(source: str) -> None:
    exprs = [r["expr"] for r in alert_rules()] if source == "alerts" else dashboard_exprs()
    known = exported_series() | KUBE_STATE_METRICS
    referenced = set().union(*(metric_names(e) for e in exprs))
    assert referenced, "no metric found: the extraction is broken"
    assert referenced - known == set()


def test_alerts_cover_the_issue() -> None:
    names = {r["alert"] for r in alert_rules()}
    assert {
        "RagtideHighLatencyP99",
        "RagtideHighErrorRate",
        "RagtideAutoscalerAtMax",
        "RagtideReplicaNotReady",
    } <= names
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    without_hpa = render({**EVERYTHING, "autoscaling": {"enabled": False}})
    rules = without_hpa.one("PrometheusRule")["spec"]["groups"][0]["rules"]
    assert "RagtideAutoscalerAtMax" not in {r["alert"] for r in rules}


def _covers(pattern: str) -> bool:
    return any(re.search(pattern, e) for e in dashboard_exprs())


def test_dashboard_shows_what_an_operator_needs() -> None:
    assert _covers(r"rate\(ragtide_http_requests_total")  # request rate
    for q in ("0.5", "0.95", "0.99"):  # p50/p95/p99 latency
        assert _covers(rf"histogram_quantile\({q}, .*ragtide_http_request_duration_seconds_bucket")
    assert _covers(r"ragtide_http_requests_in_flight")
    assert _covers(r"kube_horizontalpodautoscaler_status_current_replicas")  # replicas
    assert _covers(r"by \(le, stage\) \(rate\(ragtide_stage_duration_seconds_bucket")
    assert _covers(r'ragtide_answer_cache_total\{[^}]*result="hit"')  # cache hit rate
    assert _covers(r"ragtide_tasks_queue_depth")  # queue depth
    assert _covers(r"rate\(ragtide_llm_tokens_total")  # token usage


def test_dashboard_is_well_formed() -> None:
    panels = DASHBOARD["panels"]
    assert len({p["id"] for p in panels}) == len(panels)
    cells: set[tuple[int, int]] = set()
    for panel in panels:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not mine & cells, f"panel {panel['title']} overlaps another"
        cells |= mine
        assert panel["datasource"]["uid"] == "${datasource}"
        assert panel["targets"] and all(t["refId"] for t in panel["targets"])
    variables = {v["name"] for v in DASHBOARD["templating"]["list"]}
    assert variables == {"datasource", "namespace", "job"}
    for expr in dashboard_exprs():
        assert "$namespace" in expr, expr


# --- promtool: syntax and meaning ------------------------------------------------------------

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None, reason="promtool missing: scripts/services installs Debian's prometheus"
)


def _promtool(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    assert PROMTOOL is not None
    return subprocess.run(
        [PROMTOOL, *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=False
    )


def _grafana_to_promql(expr: str) -> str:
    return (
        expr.replace("$__rate_interval", "2m")
        .replace("$namespace", "ragtide")
        .replace("$job", "ragtide")
    )


@pytest.mark.integration
@needs_promtool
def test_rules_and_dashboard_queries_parse(tmp_path: Path) -> None:
    rule = render(EVERYTHING).one("PrometheusRule")
    (tmp_path / "alerts.yaml").write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}))
    dashboard = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{n}", "expr": _grafana_to_promql(e)}
                    for n, e in enumerate(dashboard_exprs())
                ],
            }
        ]
    }
    (tmp_path / "dashboard.yaml").write_text(yaml.safe_dump(dashboard))
    checked = _promtool("check", "rules", "alerts.yaml", "dashboard.yaml", cwd=tmp_path)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in checked.stdout


def _series(
    name: str, labels: dict[str, str], per_minute: float, minutes: int = 30
) -> dict[str, str]:
    rendered = ", ".join(f'{k}="{v}"' for k, v in labels.items())
    return {"series": f"{name}{{{rendered}}}", "values": f"0+{per_minute}x{minutes}"}


def _expr(alert: str) -> str:
    return str(next(r["expr"] for r in alert_rules() if r.get("alert") == alert))


@pytest.mark.integration
@needs_promtool
def test_alert_expressions_fire_on_what_they_name(tmp_path: Path) -> None:
    """Each alert's expression, evaluated by Prometheus' engine on synthetic series."""
    pod = {"namespace": "ragtide", "job": "ragtide", "pod": "ragtide-a", "method": "POST"}
    chat = {**pod, "route": "/v1/namespaces/{namespace}/chat"}
    ok, errors, probes = 540.0, 60.0, 6000.0  # per minute: 10% 5xx; /ready 503s are no traffic
    latency = "ragtide_http_request_duration_seconds_bucket"
    slow = [  # every request between 5 s and 10 s
        _series(latency, {**chat, "le": le}, n) for le, n in (("5", 0), ("10", 60), ("+Inf", 60))
    ]
    fast = {**chat, "route": "/v1/namespaces/{namespace}/search"}
    quick = [_series(latency, {**fast, "le": le}, 60) for le in ("0.1", "5", "10", "+Inf")]
    hpa = {"namespace": "ragtide", "horizontalpodautoscaler": "ragtide"}
    ready = {"namespace": "ragtide", "job": "ragtide"}
    tasks = {"namespace": "ragtide", "job": "ragtide-worker", "pod": "ragtide-worker-a"}
    dead = {**tasks, "kind": "chat", "reason": "failed"}
    backlog, dead_per_minute = 2500, 1.0  # above the default 100 x 20 messages
    series = [
        _series("ragtide_http_requests_total", {**chat, "status": "200"}, ok),
        _series("ragtide_http_requests_total", {**chat, "status": "500"}, errors),
        _series("ragtide_http_requests_total", {**pod, "route": "/ready", "status": "503"}, probes),
        *slow,
        *quick,
        _gauge("ragtide_ready", {**ready, "pod": "ragtide-a"}, "1x30"),
        _gauge("ragtide_ready", {**ready, "pod": "ragtide-b"}, "0x30"),
        _gauge("kube_horizontalpodautoscaler_status_current_replicas", hpa, "20x30"),
        _gauge("kube_horizontalpodautoscaler_spec_max_replicas", hpa, "20x30"),
        _gauge("ragtide_tasks_queue_depth", {**tasks, "queue": "ragtide.tasks"}, f"{backlog}x30"),
        _gauge("ragtide_tasks_queue_depth", {**tasks, "queue": "other.tasks"}, f"{backlog}x30"),
        _series("ragtide_tasks_dead_lettered_total", dead, dead_per_minute),
        # One pod stuck once every 2 minutes (7.5 in 15), the other once in all
        _series("ragtide_event_loop_blocked_total", {**ready, "pod": "ragtide-a"}, 0.5),
        _gauge("ragtide_event_loop_blocked_total", {**ready, "pod": "ragtide-b"}, "0x10 1x20"),
    ]
    tests = {
        "rule_files": [],
        "evaluation_interval": "1m",
        "tests": [
            {
                "interval": "1m",
                "input_series": series,
                "promql_expr_test": [
                    {
                        "expr": _expr("RagtideHighErrorRate"),
                        "eval_time": "20m",
                        "exp_samples": [{"labels": "{}", "value": errors / (ok + errors)}],
                    },
                    {
                        "expr": _expr("RagtideReplicaNotReady"),
                        "eval_time": "20m",
                        "exp_samples": [{"labels": '{pod="ragtide-b"}', "value": 0}],
                    },
                    {
                        "expr": _expr("RagtideAutoscalerAtMax"),
                        "eval_time": "20m",
                        "exp_samples": [{"labels": "{" + _labels(hpa) + "}", "value": 20}],
                    },
                    {"expr": _expr("RagtideNoReadyReplica"), "eval_time": "20m", "exp_samples": []},
                    {
                        "expr": _expr("RagtideTaskBacklog"),
                        "eval_time": "20m",
                        "exp_samples": [{"labels": '{queue="ragtide.tasks"}', "value": backlog}],
                    },
                    {
                        "expr": _expr("RagtideEventLoopBlocked"),
                        "eval_time": "20m",
                        "exp_samples": [{"labels": '{pod="ragtide-a"}', "value": 7.5}],
                    },
                    {
                        "expr": _expr("RagtideTasksDeadLettered"),
                        "eval_time": "20m",
                        "exp_samples": [
                            {
                                "labels": '{kind="chat", reason="failed"}',
                                "value": dead_per_minute * 15,
                            }
                        ],
                    },
                ],
            },
            {
                "interval": "1m",
                "input_series": slow,
                "promql_expr_test": [
                    {
                        "expr": _expr("RagtideHighLatencyP99"),
                        "eval_time": "20m",
                        # histogram_quantile interpolates inside the (5, 10] bucket
                        "exp_samples": [{"labels": "{}", "value": 5 + (10 - 5) * 0.99}],
                    }
                ],
            },
            {
                "interval": "1m",
                "input_series": [
                    *quick,
                    _series("ragtide_http_requests_total", {**chat, "status": "200"}, ok),
                    _series("ragtide_http_requests_total", {**chat, "status": "503"}, ok / 100),
                    _gauge("kube_horizontalpodautoscaler_status_current_replicas", hpa, "7x30"),
                    _gauge("kube_horizontalpodautoscaler_spec_max_replicas", hpa, "20x30"),
                    _gauge(
                        "ragtide_tasks_queue_depth", {**tasks, "queue": "ragtide.tasks"}, "40x30"
                    ),
                    _series("ragtide_tasks_dead_lettered_total", dead, 0),
                    _series("ragtide_event_loop_blocked_total", {**ready, "pod": "ragtide-a"}, 0),
                ],
                "promql_expr_test": [
                    {"expr": _expr(name), "eval_time": "20m", "exp_samples": []}
                    for name in (
                        "RagtideHighLatencyP99",
                        "RagtideHighErrorRate",
                        "RagtideAutoscalerAtMax",
                        "RagtideTaskBacklog",
                        "RagtideTasksDeadLettered",
                        "RagtideEventLoopBlocked",
                    )
                ]
                + [
                    {
                        "expr": _expr("RagtideNoReadyReplica"),
                        "eval_time": "20m",
                        "exp_samples": [
                            {"labels": '{job="ragtide", namespace="ragtide"}', "value": 1}
                        ],
                    }
                ],
            },
        ],
    }
    (tmp_path / "tests.yaml").write_text(yaml.safe_dump(tests, sort_keys=False))
    result = _promtool("test", "rules", "tests.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def _gauge(name: str, labels: dict[str, str], values: str) -> dict[str, str]:
    return {"series": f"{name}{{{_labels(labels)}}}", "values": values}


def _labels(labels: dict[str, str]) -> str:
    return ", ".join(f'{k}="{v}"' for k, v in labels.items())
