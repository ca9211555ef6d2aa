"""prometheus-adapter's rules in the package: each HPA metric's PromQL, unknown names refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragtide.errors import ConfigError
from ragtide.planner.adapter_rules import hpa_metric_queries, load_rules
from ragtide.planner.cli import adapter_queries, main
from ragtide.planner.values import load_values

ADAPTER = Path(__file__).parents[2] / "deploy" / "prometheus-adapter" / "values.yaml"


def test_default_values_resolve_to_the_adapters_promql() -> None:
    queries = {q.metric_name: q for q in adapter_queries(load_values(), ADAPTER, "prod")}
    rate = queries["http_requests_per_second"]
    assert rate.series == "ragtide_http_requests_total"
    assert rate.promql == (
        'sum(rate(ragtide_http_requests_total{namespace="prod",pod="<pod>",'
        'route!~"/healthz|/ready|/metrics"}[2m])) by (pod)'
    )
    assert queries["http_requests_in_flight"].series == "ragtide_http_requests_in_flight"


def test_a_metric_name_no_rule_publishes_is_refused_with_the_published_names() -> None:
    with pytest.raises(ConfigError, match=r"'http_requests_per_sec' matches no") as caught:
        hpa_metric_queries(["http_requests_per_sec"], load_rules(ADAPTER))
    assert "http_requests_per_second" in str(caught.value)


def test_a_disabled_metric_needs_no_rule() -> None:
    values = load_values({"autoscaling": {"requestRate": {"enabled": False}}})
    names = [q.metric_name for q in adapter_queries(values, ADAPTER)]
    assert names == ["http_requests_in_flight"]


def test_a_file_that_is_not_adapter_values_is_a_config_error(tmp_path: Path) -> None:
    bad = tmp_path / "adapter.yaml"
    bad.write_text("rules: {default: true}\n")
    with pytest.raises(ConfigError, match=r"rules\.custom"):
        load_rules(bad)


def test_plan_prints_the_promql_and_refuses_unknown_names(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["--synthetic", "step", "--duration", "300", "--no-recommend", "--no-chart"]
    args += ["--out", str(tmp_path / "out"), "--adapter-values", str(ADAPTER)]
    assert main(args) == 0
    assert "HPA metric http_requests_per_second (series ragtide_http_requests_total)" in (
        capsys.readouterr().out
    )
    values = tmp_path / "values.yaml"
    values.write_text("autoscaling: {inflightRequests: {metricName: inflight}}\n")
    assert main([*args, "--values", str(values)]) == 2
    assert "'inflight' matches no prometheus-adapter rule" in capsys.readouterr().err
